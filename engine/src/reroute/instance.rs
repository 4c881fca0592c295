//! The solver's instance from the orders' candidates: each resource that could run short gets a
//! dense id and its capacity now, each candidate its cost and uses.
//!
//! A million-order re-route has tens of millions of uses of a few million resources, and on a
//! VM every fresh page costs (the kernel zeroes it on first touch), so the build avoids both
//! work and memory:
//!
//! - A SKU whose every position has on hand every unit the orders ask of it can never run
//!   short anywhere: its positions are left out (most SKUs; presolve would drop them anyway).
//!   Other positions are interned; presolve drops those that cannot bind.
//! - Orders are worked in chunks in parallel, each interning its resources in a small map of
//!   its own (reading their capacities), then the chunks' resources are merged into global ids
//!   in partitions by hash, also in parallel, and the chunks copied into the instance.
//!
//! A resource's id is its partition's offset plus its rank by first use (order index order)
//! within the partition, and its capacity is the one read by the chunk that used it first: the
//! same instance on any number of threads (while the engine does not change under it; when it
//! does, each resource still has one capacity, read at some moment of the build, and the apply
//! checks every move again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use rayon::prelude::*;

use super::OpenOrder;
use super::candidates::{self, Freed, PlanCandidate, Resource};
use super::solver::{Candidate, Instance};
use crate::capacity::CapacityBook;
use crate::ids::{Day, SkuId};
use crate::ledger::Engine;
use crate::network::Network;

/// Partitions of the merge (a power of two): work for every core, small maps.
const PARTITIONS: usize = 64;
/// Orders a chunk holds.
const CHUNK_ORDERS: usize = 4_096;
/// Elements a task copies at once.
const COPY_MIN: usize = 1 << 14;

/// The capacity read for a resource without a limit (a node with no daily limit).
const UNLIMITED: u64 = u64::MAX;

/// What the build reads besides the orders.
pub(crate) struct Sources<'a> {
    pub engine: &'a Engine,
    pub network: &'a Network,
    pub book: &'a CapacityBook,
    pub freed: &'a Freed,
    pub today: Day,
}

/// A chunk of orders, its resources numbered locally in order of first use.
#[derive(Default)]
struct Chunk {
    candidates: Vec<Candidate>,
    /// (local resource, amount); `first` in `candidates` counts from this chunk's first use.
    uses: Vec<(u32, u32)>,
    /// Candidates per order.
    counts: Vec<u32>,
    stay: Vec<Option<u32>>,
    resources: Vec<Resource>,
    capacity: Vec<u64>,
    /// Per partition, the local resources in it, in local order.
    by_partition: Vec<Vec<u32>>,
    /// Local resource -> global id, once merged.
    global: Vec<u32>,
}

/// The instance and its resources (by id).
pub(crate) fn build(
    src: &Sources<'_>,
    orders: &[OpenOrder],
    plans: &[Vec<PlanCandidate>],
) -> (Instance, Vec<Resource>) {
    let started = std::time::Instant::now();
    // Per SKU, the units all the orders' lines of it add up to: the most they could ever take
    // from one of its positions.
    let asked: Vec<AtomicU64> = (0..src.engine.n_skus()).map(|_| AtomicU64::new(0)).collect();
    orders.par_iter().with_min_len(CHUNK_ORDERS).for_each(|o| {
        for l in &o.lines {
            if let Some(a) = asked.get(l.0.index()) {
                a.fetch_add(u64::from(l.1), Ordering::Relaxed);
            }
        }
    });
    let covered = Covered {
        asked: &asked,
        state: (0..asked.len()).map(|_| AtomicU8::new(UNKNOWN)).collect(),
    };
    let hasher = ahash::RandomState::with_seeds(0x5EED, 0xC0DE, 0xFACE, 0xBEEF);
    let partition = |r: &Resource| (hasher.hash_one(r) >> (64 - PARTITIONS.trailing_zeros())) as usize;
    let mut chunks: Vec<Chunk> = orders
        .par_chunks(CHUNK_ORDERS)
        .zip(plans.par_chunks(CHUNK_ORDERS))
        .map(|(orders, plans)| chunk(src, &covered, &partition, orders, plans))
        .collect();
    let chunked_s = started.elapsed().as_secs_f64();
    let (resources, capacity) = merge(&mut chunks);
    let merged_s = started.elapsed().as_secs_f64();
    // Each chunk's uses with global ids, then everything copied into place in parallel.
    chunks.par_iter_mut().for_each(|c| {
        let global = std::mem::take(&mut c.global);
        c.uses.iter_mut().for_each(|u| u.0 = global[u.0 as usize]);
    });
    let total: usize = chunks.iter().map(|c| c.uses.len()).sum();
    assert!(
        u32::try_from(total).is_ok(),
        "{total} uses: more than a re-route instance holds"
    );
    let mut cand_at = vec![0usize];
    let mut use_at = vec![0usize];
    let mut order_at = vec![0usize];
    for c in &chunks {
        cand_at.push(cand_at.last().expect("non-empty") + c.candidates.len());
        use_at.push(use_at.last().expect("non-empty") + c.uses.len());
        order_at.push(order_at.last().expect("non-empty") + c.counts.len());
    }
    // Which chunk holds flat element `i`, by the chunks' first elements.
    let chunk_of = |at: &[usize], i: usize| at.partition_point(|&a| a <= i) - 1;
    let mut instance = Instance {
        capacity,
        ..Instance::default()
    };
    (0..*cand_at.last().expect("non-empty"))
        .into_par_iter()
        .with_min_len(COPY_MIN)
        .map(|i| {
            let k = chunk_of(&cand_at, i);
            let c = chunks[k].candidates[i - cand_at[k]];
            Candidate {
                first: c.first + use_at[k] as u32,
                ..c
            }
        })
        .collect_into_vec(&mut instance.candidates);
    (0..*use_at.last().expect("non-empty"))
        .into_par_iter()
        .with_min_len(COPY_MIN)
        .map(|i| {
            let k = chunk_of(&use_at, i);
            chunks[k].uses[i - use_at[k]]
        })
        .collect_into_vec(&mut instance.uses);
    instance.starts.reserve(orders.len() + 1);
    instance.starts.push(0);
    for c in &chunks {
        for &n in &c.counts {
            let last = *instance.starts.last().expect("starts at 0");
            instance.starts.push(last + n as usize);
        }
        instance.stay.extend_from_slice(&c.stay);
    }
    debug_assert_eq!(*order_at.last().expect("non-empty"), orders.len());
    tracing::debug!(
        target: "promised::reroute",
        chunked_s,
        merged_s,
        copied_s = started.elapsed().as_secs_f64(),
        "instance build"
    );
    (instance, resources)
}

/// One chunk of orders: candidates, uses and resources with local ids.
fn chunk(
    src: &Sources<'_>,
    covered: &Covered<'_>,
    partition: &(impl Fn(&Resource) -> usize + Sync),
    orders: &[OpenOrder],
    plans: &[Vec<PlanCandidate>],
) -> Chunk {
    /// Marks a resource that can never run short in the local map.
    const NEVER_SHORT: u32 = u32::MAX;
    let mut out = Chunk {
        by_partition: vec![Vec::new(); PARTITIONS],
        ..Chunk::default()
    };
    let mut local: HashMap<Resource, u32, ahash::RandomState> = HashMap::default();
    for (order, plans) in orders.iter().zip(plans) {
        for c in plans {
            let first = out.uses.len() as u32;
            for (r, amount) in candidates::uses_of(order, c) {
                // Positions are never removed, and a plan's lines are at positions of theirs.
                if let Resource::Stock(sku, _) = r
                    && covered.covered(src, sku)
                {
                    continue;
                }
                let id = *local.entry(r).or_insert_with(|| {
                    let cap =
                        candidates::capacity_of(src.engine, src.network, src.book, src.freed, src.today, r)
                            .unwrap_or(UNLIMITED);
                    // A node's days without a limit. (A position is decided per SKU above,
                    // once for the whole build: chunks reading it at different moments of a
                    // changing engine could disagree.)
                    if cap == UNLIMITED {
                        return NEVER_SHORT;
                    }
                    let id = out.resources.len() as u32;
                    out.by_partition[partition(&r)].push(id);
                    out.resources.push(r);
                    out.capacity.push(cap);
                    id
                });
                if id != NEVER_SHORT {
                    out.uses.push((id, amount));
                }
            }
            out.candidates.push(Candidate {
                cost: c.cost,
                first,
                len: out.uses.len() as u32 - first,
            });
        }
        out.counts.push(plans.len() as u32);
        out.stay
            .push(plans.iter().position(|c| c.current).map(|i| i as u32));
    }
    out
}

const UNKNOWN: u8 = 0;
const COVERED: u8 = 1;
const NOT_COVERED: u8 = 2;

/// Per SKU, whether every one of its positions has on hand today all the units the orders ask
/// of the SKU, so none can run short: worked out once per SKU on first need (one lock, its
/// positions' ATP), instead of once per position per chunk. Two threads may both work it out;
/// the first answer stored is the one every chunk uses.
struct Covered<'a> {
    asked: &'a [AtomicU64],
    state: Vec<AtomicU8>,
}

impl Covered<'_> {
    fn covered(&self, src: &Sources<'_>, sku: SkuId) -> bool {
        let Some(state) = self.state.get(sku.index()) else {
            return false;
        };
        match state.load(Ordering::Relaxed) {
            COVERED => true,
            NOT_COVERED => false,
            _ => {
                let asked = self.asked[sku.index()].load(Ordering::Relaxed);
                let e = src.engine;
                let shard = e.shards[e.map.shard_of(sku)].read();
                let all = shard.skus.get(e.map.slot_of(sku)).is_some_and(|entry| {
                    entry
                        .positions
                        .iter()
                        .all(|p| shard.atp(p, src.today, src.today).max(0) as u64 >= asked)
                });
                // The first answer stands: every chunk sees the same one.
                let mine = if all { COVERED } else { NOT_COVERED };
                match state.compare_exchange(UNKNOWN, mine, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => all,
                    Err(first) => first == COVERED,
                }
            }
        }
    }
}

/// One partition of the merge: its resources and their capacities by first use, and per chunk
/// (local id, id in the partition).
struct Partition {
    resources: Vec<Resource>,
    capacity: Vec<u64>,
    ids: Vec<Vec<(u32, u32)>>,
}

/// Global ids for the chunks' resources (in `Chunk::global`); returns the resources and their
/// capacities by global id.
fn merge(chunks: &mut [Chunk]) -> (Vec<Resource>, Vec<u64>) {
    let parts: Vec<Partition> = (0..PARTITIONS)
        .into_par_iter()
        .map(|p| {
            let mut index: HashMap<Resource, u32, ahash::RandomState> = HashMap::default();
            let (mut resources, mut capacity) = (Vec::new(), Vec::new());
            let mut ids = Vec::with_capacity(chunks.len());
            for c in chunks.iter() {
                let mut mine = Vec::with_capacity(c.by_partition[p].len());
                for &l in &c.by_partition[p] {
                    let r = c.resources[l as usize];
                    let id = *index.entry(r).or_insert_with(|| {
                        resources.push(r);
                        capacity.push(c.capacity[l as usize]);
                        resources.len() as u32 - 1
                    });
                    mine.push((l, id));
                }
                ids.push(mine);
            }
            Partition {
                resources,
                capacity,
                ids,
            }
        })
        .collect();
    let mut offsets = Vec::with_capacity(PARTITIONS);
    let (mut resources, mut capacity) = (Vec::new(), Vec::new());
    for part in &parts {
        offsets.push(resources.len() as u32);
        resources.extend_from_slice(&part.resources);
        capacity.extend_from_slice(&part.capacity);
    }
    chunks.par_iter_mut().enumerate().for_each(|(k, c)| {
        c.global = vec![0; c.resources.len()];
        for (part, &offset) in parts.iter().zip(&offsets) {
            for &(l, id) in &part.ids[k] {
                c.global[l as usize] = offset + id;
            }
        }
    });
    (resources, capacity)
}
