//! Holds and allocations, and the request table that makes every command idempotent.
//!
//! A hold's id is the request id that placed it. The record lives in the request shard its id
//! hashes to, together with the "done" records of feed commands, and outlives its last state
//! change by the retention window so that retries get the first answer. The operations applied to
//! a hold (commit, release, cancel, ship) are remembered on the hold itself, so the hot
//! hold-then-commit path touches one request shard, not two.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use smallvec::SmallVec;

use crate::capacity::Routed;
use crate::ids::{Day, NodeId, RequestId, SkuId, Timestamp};

/// Marks an `Any` line of a partial hold that found no node.
pub(crate) const NO_NODE: NodeId = NodeId::from_raw(u32::MAX);

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HoldState {
    /// Units reserved for a cart until the hold expires.
    Held = 0,
    /// An allocation: units promised to an order until shipped or cancelled.
    Committed = 1,
    Released = 2,
    Expired = 3,
    Shipped = 4,
    Cancelled = 5,
}

impl HoldState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Shipped => "shipped",
            Self::Cancelled => "cancelled",
        }
    }
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Held | Self::Committed)
    }
}

/// One line of a hold: what was asked, what was granted, and what is still reserved or allocated.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct HoldLine {
    pub sku: SkuId,
    pub node: NodeId,
    pub need_day: Day,
    /// The claim was placed against future supply (need day after the day it was placed), so the
    /// position's dated claims carry it.
    pub future: bool,
    pub requested: u32,
    pub granted: u32,
    /// Still reserved (state held) or allocated (state committed).
    pub remaining: u32,
}

/// The kind of operation applied to a hold, for idempotent retries.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HoldOp {
    Commit = 0,
    Release = 1,
    Cancel = 2,
    Ship = 3,
}

impl HoldOp {
    pub fn name(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Release => "release",
            Self::Cancel => "cancel_allocation",
            Self::Ship => "ship",
        }
    }
}

/// A remembered operation on a hold: its request id, kind and the answer it got.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct OpRecord {
    pub request: RequestId,
    pub op: HoldOp,
    /// The hold's state right after the operation (`Expired` for a refused commit).
    pub state_after: HoldState,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hold {
    pub id: RequestId,
    /// Inline for the common one- or two-line cart: no allocation per hold.
    pub lines: SmallVec<[HoldLine; 2]>,
    pub placed_at: Timestamp,
    pub expires_at: Timestamp,
    pub state: HoldState,
    pub partial: bool,
    /// Commit plus one ship or cancel fit inline: the usual life of an order allocates nothing.
    pub ops: SmallVec<[OpRecord; 2]>,
    /// For a routed order: the node capacity its packages took and what it promised.
    pub routed: Option<Box<Routed>>,
}

impl Hold {
    pub fn op(&self, request: RequestId) -> Option<&OpRecord> {
        self.ops.iter().find(|o| o.request == request)
    }
    pub fn line_index(&self, sku: SkuId, node: NodeId) -> Option<usize> {
        self.lines.iter().position(|l| l.sku == sku && l.node == node)
    }
}

/// A remembered feed command, so a retry returns the first answer (feeds always answer `Fed`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DoneRecord {
    pub kind: &'static str,
}

/// What a request id names: a hold (placed by it) or a finished feed command.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Record {
    Hold(Hold),
    Done(DoneRecord),
}

/// Request records: a compact index from request id to a slot, and the records themselves in a
/// slab whose freed slots are reused first. The index stays small enough to live in cache (24
/// bytes a bucket instead of a whole hold), and a new hold is written into a slot that was freed
/// recently and is still warm, instead of a cold bucket of a large table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Records {
    /// Keyed with a per-process random seed: iteration order never reaches the state.
    index: HashMap<RequestId, u32, ahash::RandomState>,
    slab: Slab,
    free: Vec<u32>,
}

/// Slots in fixed chunks that never move. A doubling vector copies every record at each growth
/// and, since all request shards grow in step, leaves each shard's old buffer behind where no
/// other shard needs one of that size: replaying 2.8M records peaked at 900 MB for 520 MB of
/// tables, and the kernel zeroing the fresh pages was a third of the replay. A chunk is a vector
/// allocated at its full size and filled as slots are taken, so a new chunk is not written
/// through (12 KiB of `None`s) before its first record.
#[derive(Clone, Debug, Default)]
struct Slab {
    chunks: Vec<Vec<Option<Record>>>,
    len: usize,
}

/// 64 slots of 192 bytes: 12 KiB, a size every shard allocates again and again. A request shard
/// with any record has at least one chunk: 48 MiB over the 4,096 shards of the default config.
const SLAB_CHUNK: usize = 64;
const _: () = assert!(std::mem::size_of::<Option<Record>>() == 192);

impl Slab {
    fn with_capacity(slots: usize) -> Self {
        Self {
            chunks: Vec::with_capacity(slots.div_ceil(SLAB_CHUNK)),
            len: 0,
        }
    }

    fn get(&self, slot: u32) -> &Option<Record> {
        let slot = slot as usize;
        &self.chunks[slot / SLAB_CHUNK][slot % SLAB_CHUNK]
    }

    fn get_mut(&mut self, slot: u32) -> &mut Option<Record> {
        let slot = slot as usize;
        &mut self.chunks[slot / SLAB_CHUNK][slot % SLAB_CHUNK]
    }

    /// Files a record in a new slot at the end.
    fn push(&mut self, record: Record) -> u32 {
        if self.len == self.chunks.len() * SLAB_CHUNK {
            self.chunks.push(Vec::with_capacity(SLAB_CHUNK));
        }
        let slot = self.len as u32;
        self.len += 1;
        self.chunks
            .last_mut()
            .expect("a chunk with room")
            .push(Some(record));
        slot
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Records {
    pub fn get(&self, id: &RequestId) -> Option<&Record> {
        let slot = *self.index.get(id)?;
        self.slab.get(slot).as_ref()
    }

    pub fn get_mut(&mut self, id: &RequestId) -> Option<&mut Record> {
        let slot = *self.index.get(id)?;
        self.slab.get_mut(slot).as_mut()
    }

    /// Files a record under a request id that has none.
    pub fn insert(&mut self, id: RequestId, record: Record) {
        let slot = match self.free.pop() {
            Some(slot) => {
                *self.slab.get_mut(slot) = Some(record);
                slot
            }
            None => self.slab.push(record),
        };
        let previous = self.index.insert(id, slot);
        assert!(previous.is_none(), "a request id is filed once");
    }

    pub fn remove(&mut self, id: &RequestId) -> Option<Record> {
        let slot = self.index.remove(id)?;
        self.free.push(slot);
        self.slab.get_mut(slot).take()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RequestId, &Record)> {
        self.index
            .iter()
            .map(|(id, &slot)| (id, self.slab.get(slot).as_ref().expect("indexed slots are full")))
    }

    /// Compacts the slab and returns spare capacity to the allocator.
    pub fn shrink_to_fit(&mut self) {
        let mut slab = Slab::with_capacity(self.index.len());
        for slot in self.index.values_mut() {
            *slot = slab.push(self.slab.get_mut(*slot).take().expect("indexed slots are full"));
        }
        self.slab = slab;
        self.free = Vec::new();
        self.index.shrink_to_fit();
    }

    /// Checks that index, slab and free list agree.
    pub fn check(&self) -> Result<(), String> {
        let chunks = &self.slab.chunks;
        if chunks.len() != self.slab.len().div_ceil(SLAB_CHUNK)
            || chunks.iter().map(Vec::len).sum::<usize>() != self.slab.len()
            || chunks.iter().rev().skip(1).any(|c| c.len() != SLAB_CHUNK)
        {
            return Err(format!(
                "the request slab has {} chunks for {} slots, or a chunk short of slots",
                chunks.len(),
                self.slab.len()
            ));
        }
        let mut used = vec![false; self.slab.len()];
        for &slot in self.index.values() {
            if slot as usize >= self.slab.len() || used[slot as usize] || self.slab.get(slot).is_none() {
                return Err(format!(
                    "request index points at slot {slot}, which is bad or shared"
                ));
            }
            used[slot as usize] = true;
        }
        for &slot in &self.free {
            if slot as usize >= self.slab.len() || used[slot as usize] || self.slab.get(slot).is_some() {
                return Err(format!("free request slot {slot} is bad, used or listed twice"));
            }
            used[slot as usize] = true;
        }
        if used.iter().any(|u| !u) {
            return Err("a request slot is neither indexed nor free".into());
        }
        Ok(())
    }
}

/// Holds by expiry, earliest first: pops come in ascending (expiry, request id) order, as from
/// one binary heap. Holds arrive mostly in expiry order (placed now, for the same time to live),
/// and those are appended to a sorted queue, touching only its end; a hold that expires before
/// the queue's last entry goes to a heap beside it. A heap alone reads a parent slot far from its
/// end at every push, a cache miss per hold in a large table (a tenth of a replay's time).
#[derive(Clone, Debug, Default)]
pub(crate) struct ExpiryQueue {
    sorted: VecDeque<(Timestamp, RequestId)>,
    early: BinaryHeap<Reverse<(Timestamp, RequestId)>>,
}

impl ExpiryQueue {
    pub fn from_entries(mut entries: Vec<(Timestamp, RequestId)>) -> Self {
        entries.sort_unstable();
        Self {
            sorted: entries.into(),
            early: BinaryHeap::new(),
        }
    }

    pub fn push(&mut self, at: Timestamp, id: RequestId) {
        let entry = (at, id);
        if self.sorted.back().is_none_or(|last| *last <= entry) {
            self.sorted.push_back(entry);
        } else {
            self.early.push(Reverse(entry));
        }
    }

    /// The earliest entry.
    pub fn peek(&self) -> Option<(Timestamp, RequestId)> {
        match (self.sorted.front(), self.early.peek()) {
            (Some(s), Some(Reverse(e))) => Some(*s.min(e)),
            (s, e) => s.copied().or(e.map(|e| e.0)),
        }
    }

    pub fn pop(&mut self) -> Option<(Timestamp, RequestId)> {
        let earliest = self.peek()?;
        if self.sorted.front() == Some(&earliest) {
            self.sorted.pop_front()
        } else {
            self.early.pop().map(|e| e.0)
        }
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.early.len()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Timestamp, RequestId)> + '_ {
        self.sorted.iter().copied().chain(self.early.iter().map(|e| e.0))
    }

    pub fn shrink_to_fit(&mut self) {
        self.sorted.shrink_to_fit();
        self.early.shrink_to_fit();
    }
}

/// Everything one request-shard lock protects.
#[derive(Debug, Default)]
pub(crate) struct RequestShard {
    /// Holds and done records in one map, so that checking an unknown request id (every new
    /// request does) costs one probe, not one per kind.
    pub records: Records,
    /// Held holds by expiry. Entries are not removed when a hold is committed or released: `tick`
    /// skips entries whose hold is no longer held at that expiry (lazy deletion).
    pub expiry: ExpiryQueue,
    /// Finished records in the order they finished, for forgetting them after the window.
    pub retention: VecDeque<(Timestamp, RequestId)>,
    /// Set while a snapshot in progress has not copied this shard yet (see `Shard::capture`).
    pub capture: Option<std::sync::Arc<crate::snapshot::SnapshotSink>>,
}

impl RequestShard {
    pub fn hold(&self, id: &RequestId) -> Option<&Hold> {
        match self.records.get(id) {
            Some(Record::Hold(h)) => Some(h),
            _ => None,
        }
    }

    pub fn hold_mut(&mut self, id: &RequestId) -> Option<&mut Hold> {
        match self.records.get_mut(id) {
            Some(Record::Hold(h)) => Some(h),
            _ => None,
        }
    }

    pub fn holds(&self) -> impl Iterator<Item = &Hold> {
        self.records.iter().filter_map(|(_, r)| match r {
            Record::Hold(h) => Some(h),
            Record::Done(_) => None,
        })
    }

    /// What a request id was first used for, if anything.
    pub fn first_use(&self, id: RequestId) -> Option<&'static str> {
        self.records.get(&id).map(|r| match r {
            Record::Hold(_) => "hold",
            Record::Done(d) => d.kind,
        })
    }

    /// A copy of the records and retention queue for a snapshot in progress (the expiry queue is
    /// rebuilt from the holds when a snapshot loads). Cloning is mostly memory copies, several
    /// times cheaper than encoding, and it runs in the path of the command that triggered it.
    pub fn snapshot_copy(&self) -> RequestShard {
        RequestShard {
            records: self.records.clone(),
            expiry: ExpiryQueue::default(),
            retention: self.retention.clone(),
            capture: None,
        }
    }

    /// Drops the expiry entries of holds that are no longer held once they outnumber the records
    /// (lazy deletion leaves one per committed or released hold until its expiry time), so the
    /// queue stays within twice the records. Which holds expire when does not change.
    pub fn needs_compaction(&self) -> bool {
        self.expiry.len() > 2 * self.records.len() + 64
    }

    pub fn compact_expiry(&mut self) {
        if !self.needs_compaction() {
            return;
        }
        let live: Vec<_> = self
            .holds()
            .filter(|h| h.state == HoldState::Held)
            .map(|h| (h.expires_at, h.id))
            .collect();
        self.expiry = ExpiryQueue::from_entries(live);
    }

    /// Remembers that `id` finished at `now`; forgets the oldest record past `cap`.
    pub fn retain(&mut self, now: Timestamp, id: RequestId, cap: usize) -> u32 {
        self.retention.push_back((now, id));
        let mut forgotten = 0;
        while self.retention.len() > cap {
            let (_, old) = self.retention.pop_front().expect("non-empty");
            self.forget(old);
            forgotten += 1;
        }
        forgotten
    }

    /// Forgets records that finished at or before `horizon`.
    pub fn forget_before(&mut self, horizon: Timestamp) -> u32 {
        let mut forgotten = 0;
        while let Some(&(at, id)) = self.retention.front() {
            if at > horizon {
                break;
            }
            self.retention.pop_front();
            self.forget(id);
            forgotten += 1;
        }
        forgotten
    }

    fn forget(&mut self, id: RequestId) {
        let removed = self.records.remove(&id).is_some();
        assert!(removed, "a retained record exists until forgotten");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The queue gives what one binary heap gives, in the same order, whatever the pushes
        /// (in order, out of order, repeated) and pops between them.
        #[test]
        fn the_expiry_queue_pops_as_one_heap_does(
            ops in proptest::collection::vec((0u64..40, 0u128..6, proptest::bool::weighted(0.3)), 0..200),
            start in proptest::collection::vec((0u64..40, 0u128..6), 0..20),
        ) {
            let mut queue = ExpiryQueue::from_entries(start.iter().map(|&(t, id)| (Timestamp(t), RequestId(id))).collect());
            let mut heap: BinaryHeap<_> = start.iter().map(|&(t, id)| Reverse((Timestamp(t), RequestId(id)))).collect();
            let mut clock = 0;
            for (dt, id, pop) in ops {
                if pop {
                    prop_assert_eq!(queue.pop(), heap.pop().map(|e| e.0));
                } else {
                    // Mostly later than the last push, as holds placed now are.
                    clock += dt % 8;
                    let at = Timestamp(if dt > 30 { clock.saturating_sub(dt) } else { clock });
                    queue.push(at, RequestId(id));
                    heap.push(Reverse((at, RequestId(id))));
                }
                prop_assert_eq!(queue.peek(), heap.peek().map(|e| e.0));
                prop_assert_eq!(queue.len(), heap.len());
            }
            while let Some(e) = heap.pop() {
                prop_assert_eq!(queue.pop(), Some(e.0));
            }
            prop_assert_eq!(queue.pop(), None);
        }
    }
}
