//! A SKU shard: the positions of every SKU whose id maps to it, behind one lock.
//!
//! A position is 20 bytes inline (the hot numbers every hold touches); its inbound lots and
//! future-dated claims live out of line in the shard's `dated` slab, only for positions that have
//! them. A SKU keeps its stocking nodes in a sorted array of their own, beside the positions: a
//! lookup binary-searches 4-byte node ids (two or three adjacent cache lines for a typical SKU)
//! and then touches one position. Searching node ids inside the 20-byte positions instead costs a
//! dependent cache miss per probe, which measured 2-3x slower on a 4M-position ledger.

use std::sync::Arc;

use crate::atp::{self, Dated};
use crate::ids::{Day, NodeId, SkuId};
use crate::network::{Capabilities, Network};
use crate::snapshot::SnapshotSink;

/// Marks a position with nothing dated.
pub(crate) const NO_DATED: u32 = u32::MAX;

/// One SKU at one node (the node is the parallel entry of `SkuEntry::nodes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub on_hand: u32,
    pub safety_stock: u32,
    /// Units held for carts (holds not yet committed).
    pub reserved: u32,
    /// Units committed to orders and not yet shipped.
    pub allocated: u32,
    /// Index into the shard's `dated` slab, or `NO_DATED`.
    pub(crate) dated: u32,
}

const _: () = assert!(std::mem::size_of::<Position>() == 20);

impl Position {
    pub(crate) fn new() -> Self {
        Self {
            on_hand: 0,
            safety_stock: 0,
            reserved: 0,
            allocated: 0,
            dated: NO_DATED,
        }
    }
    pub fn base(&self) -> i64 {
        atp::base(self.on_hand, self.safety_stock, self.reserved, self.allocated)
    }
}

/// A SKU as its shard sees it.
#[derive(Clone, Debug)]
pub(crate) struct SkuEntry {
    pub name: Arc<str>,
    pub required: Capabilities,
    /// The nodes that stock this SKU, sorted.
    pub nodes: Vec<NodeId>,
    /// `positions[i]` is the position at `nodes[i]`.
    pub positions: Vec<Position>,
}

/// Everything one SKU-shard lock protects.
#[derive(Debug)]
pub(crate) struct Shard {
    /// This shard's copy of the network; replaced while all shard locks are held.
    pub network: Arc<Network>,
    /// SKUs of this shard, indexed by `sku_id >> shard_bits`.
    pub skus: Vec<SkuEntry>,
    /// Out-of-line dated data; `free` lists reusable slots.
    pub dated: Vec<Dated>,
    pub free: Vec<u32>,
    /// Set while a snapshot in progress has not copied this shard yet: the first writer copies
    /// it out before changing it (copy-on-write at shard grain).
    pub capture: Option<Arc<SnapshotSink>>,
}

impl Shard {
    pub fn new(network: Arc<Network>) -> Self {
        Self {
            network,
            skus: Vec::new(),
            dated: Vec::new(),
            free: Vec::new(),
            capture: None,
        }
    }

    /// A copy for a snapshot in progress (see `RequestShard::snapshot_copy`).
    pub fn snapshot_copy(&self) -> Shard {
        Shard {
            network: self.network.clone(),
            skus: self.skus.clone(),
            dated: self.dated.clone(),
            free: self.free.clone(),
            capture: None,
        }
    }

    pub fn position(&self, slot: usize, node: NodeId) -> Option<&Position> {
        let entry = self.skus.get(slot)?;
        entry.nodes.binary_search(&node).ok().map(|i| &entry.positions[i])
    }

    /// The position's index in its SKU's vector, created empty if the node does not stock it yet.
    pub fn position_index_or_insert(&mut self, slot: usize, node: NodeId) -> usize {
        let entry = &mut self.skus[slot];
        match entry.nodes.binary_search(&node) {
            Ok(i) => i,
            Err(i) => {
                entry.nodes.insert(i, node);
                entry.positions.insert(i, Position::new());
                i
            }
        }
    }

    pub fn position_index(&self, slot: usize, node: NodeId) -> Option<usize> {
        self.skus[slot].nodes.binary_search(&node).ok()
    }

    pub fn dated_of(&self, p: &Position) -> Option<&Dated> {
        (p.dated != NO_DATED).then(|| &self.dated[p.dated as usize])
    }

    /// ATP of a position on day `t`, seen on day `today`.
    pub fn atp(&self, p: &Position, today: Day, t: Day) -> i64 {
        atp::atp_on(p.base(), self.dated_of(p), today, t)
    }

    /// The dated record of position `(slot, idx)`, allocated on first use.
    pub fn dated_mut(&mut self, slot: usize, idx: usize) -> &mut Dated {
        let p = &mut self.skus[slot].positions[idx];
        if p.dated == NO_DATED {
            let i = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.dated.push(Dated::default());
                    (self.dated.len() - 1) as u32
                }
            };
            p.dated = i;
        }
        &mut self.dated[p.dated as usize]
    }

    /// Frees the dated record of `(slot, idx)` if it became empty, so lookups stay on the fast path.
    pub fn release_dated_if_empty(&mut self, slot: usize, idx: usize) {
        let p = &mut self.skus[slot].positions[idx];
        if p.dated != NO_DATED && self.dated[p.dated as usize].is_empty() {
            self.dated[p.dated as usize] = Dated::default();
            self.free.push(p.dated);
            p.dated = NO_DATED;
        }
    }
}

/// Maps SKU ids to shards: the low bits pick the shard, the rest are the slot inside it, so
/// consecutive (often related) SKUs spread over all shards.
#[derive(Copy, Clone, Debug)]
pub(crate) struct ShardMap {
    pub bits: u32,
}

impl ShardMap {
    pub fn shard_of(self, sku: SkuId) -> usize {
        (sku.raw() & ((1 << self.bits) - 1)) as usize
    }
    pub fn slot_of(self, sku: SkuId) -> usize {
        (sku.raw() >> self.bits) as usize
    }
}
