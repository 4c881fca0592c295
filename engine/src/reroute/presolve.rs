//! Presolve: the same problem with far less in it, and the same optimum and bound.
//!
//! - A resource whose capacity covers the most every order could draw on it (most stock
//!   positions in a re-route) can never be overfilled: it is dropped.
//! - A candidate that needs more of a resource than there is can never be taken: it is dropped
//!   (an order's own plan, its `stay`, is kept whatever it needs).
//! - A candidate that draws on no resource left always fits; every dearer candidate of the same
//!   order is worse at any prices and in any plan, so it is dropped. An order whose cheapest
//!   candidate draws on nothing left is settled.
//!
//! Dropping candidates lowers what orders could draw, so more resources drop: the rounds repeat
//! until one drops no resource or under 2% of the candidates (at most six). On the 1M-order
//! `peak` re-route this leaves 69% of the candidates to price each iteration, 4,072 of 11,844
//! resources.
//!
//! Each order is worked alone and the demand sums are integers: the result is the same on any
//! number of threads.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::solver::{Candidate, Instance};

/// Rounds at most: each after the first drops what the one before made free.
const ROUNDS_MAX: usize = 6;
/// A round that drops at most this fraction of the candidates is the last. On the 1M-order
/// `peak` re-route the rounds drop 31%, 5%, 1.2%, 0.1% of what they get, at about a second
/// each.
const ROUND_LITTLE: f64 = 0.02;
/// Orders a parallel task works at once.
const CHUNK_ORDERS: usize = 2_048;

/// A reduced problem, and where its candidates came from.
pub struct Reduced {
    pub instance: Instance,
    /// Per candidate of `instance` (flat), its index among its order's candidates in the
    /// original problem.
    pub origin: Vec<u32>,
    pub rounds: usize,
}

impl Reduced {
    /// A choice in the reduced problem as a choice in the original one.
    pub fn original_choice(&self, choice: &[Option<u32>]) -> Vec<Option<u32>> {
        choice
            .iter()
            .enumerate()
            .map(|(j, c)| c.map(|c| self.origin[self.instance.starts[j] + c as usize]))
            .collect()
    }
}

/// `instance` reduced (see the module's doc).
pub fn reduce(instance: &Instance) -> Reduced {
    let started = std::time::Instant::now();
    let mut reduced = round(instance, None);
    let mut rounds = 1;
    while rounds < ROUNDS_MAX {
        let before = reduced.instance.capacity.len();
        tracing::debug!(
            target: "promised::reroute",
            round = rounds,
            resources = before,
            candidates = reduced.instance.candidates.len(),
            seconds = started.elapsed().as_secs_f64(),
            "presolve round"
        );
        let candidates = reduced.instance.candidates.len();
        let next = round(&reduced.instance, Some(&reduced.origin));
        rounds += 1;
        let dropped = next.instance.capacity.len() < before;
        // A round costs about the same whatever it drops: stop once one drops little.
        let little = (candidates - next.instance.candidates.len()) as f64 <= ROUND_LITTLE * candidates as f64;
        reduced = next;
        if !dropped || little {
            break;
        }
    }
    reduced.rounds = rounds;
    reduced
}

/// One order's part of a reduced problem.
#[derive(Default)]
struct Part {
    /// Per order: (first candidate, stay) within this part.
    orders: Vec<(usize, Option<u32>)>,
    candidates: Vec<Candidate>,
    uses: Vec<(u32, u32)>,
    origin: Vec<u32>,
}

/// One round: drops the resources that cannot bind and the candidates that cannot pay.
fn round(instance: &Instance, origin: Option<&[u32]>) -> Reduced {
    let m = instance.capacity.len();
    let n = instance.n_orders();
    let stay = |j: usize| instance.stay.get(j).copied().flatten();
    // A candidate no assignment can take (more of a resource than there is), unless it is the
    // order's own plan.
    let takeable = |j: usize, i: usize, c: &Candidate| {
        stay(j) == Some(i as u32)
            || (c.cost.is_finite()
                && instance
                    .uses_of(c)
                    .iter()
                    .all(|&(r, a)| u64::from(a) <= instance.capacity[r as usize]))
    };
    // What the orders could draw on each resource at most: per order the most any of its
    // takeable candidates uses.
    let demand: Vec<AtomicU64> = (0..m).map(|_| AtomicU64::new(0)).collect();
    (0..n).into_par_iter().with_min_len(CHUNK_ORDERS).for_each_init(
        Vec::new,
        |most: &mut Vec<(u32, u32)>, j| {
            most.clear();
            for (i, c) in instance.candidates_of(j).iter().enumerate() {
                if takeable(j, i, c) {
                    most.extend_from_slice(instance.uses_of(c));
                }
            }
            most.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            most.dedup_by_key(|u| u.0);
            for &(r, a) in most.iter() {
                demand[r as usize].fetch_add(u64::from(a), Ordering::Relaxed);
            }
        },
    );
    let mut id = vec![u32::MAX; m];
    let mut capacity = Vec::new();
    for r in 0..m {
        if demand[r].load(Ordering::Relaxed) > instance.capacity[r] {
            id[r] = capacity.len() as u32;
            capacity.push(instance.capacity[r]);
        }
    }
    let parts: Vec<Part> = (0..n.div_ceil(CHUNK_ORDERS))
        .into_par_iter()
        .map(|chunk| {
            let mut part = Part::default();
            let mut kept: Vec<(usize, usize, usize)> = Vec::new();
            for j in chunk * CHUNK_ORDERS..((chunk + 1) * CHUNK_ORDERS).min(n) {
                kept.clear();
                let base = instance.starts[j];
                // (candidate, its binding uses' range in `part.uses`) for the takeable ones.
                let uses_at = part.uses.len();
                let mut free_cost = f64::INFINITY;
                for (i, c) in instance.candidates_of(j).iter().enumerate() {
                    if !takeable(j, i, c) {
                        continue;
                    }
                    let from = part.uses.len();
                    part.uses.extend(
                        instance
                            .uses_of(c)
                            .iter()
                            .filter(|u| id[u.0 as usize] != u32::MAX)
                            .map(|&(r, a)| (id[r as usize], a)),
                    );
                    if part.uses.len() == from && c.cost < free_cost {
                        free_cost = c.cost;
                    }
                    kept.push((i, from, part.uses.len()));
                }
                // The first of the cheapest candidates that draw on nothing always fits: no
                // dearer candidate ever pays (nor one as dear after it). The order's own plan,
                // if it is one of them, is the one kept: staying put is no move.
                let is_free = |&(i, from, to): &(usize, usize, usize)| {
                    from == to && instance.candidates_of(j)[i].cost == free_cost
                };
                let free = kept
                    .iter()
                    .position(|k| is_free(k) && stay(j) == Some(k.0 as u32))
                    .or_else(|| kept.iter().position(is_free));
                // Emitted in place: kept candidates' uses move down over dropped ones'.
                let first = part.candidates.len();
                let mut to_at = uses_at;
                let (mut new_stay, mut free_at) = (None, None);
                for (k, &(i, from, to)) in kept.iter().enumerate() {
                    let c = instance.candidates_of(j)[i];
                    if free.is_some_and(|f| k != f && c.cost >= free_cost) {
                        continue;
                    }
                    let index = Some((part.candidates.len() - first) as u32);
                    if stay(j) == Some(i as u32) {
                        new_stay = index;
                    }
                    if free == Some(k) {
                        free_at = index;
                    }
                    part.uses.copy_within(from..to, to_at);
                    part.candidates.push(Candidate {
                        cost: c.cost,
                        first: to_at as u32,
                        len: (to - from) as u32,
                    });
                    to_at += to - from;
                    part.origin.push(origin.map_or(i as u32, |o| o[base + i]));
                }
                part.uses.truncate(to_at);
                // An order whose own plan was dropped keeps its free candidate instead: it fits
                // whatever the others do.
                if stay(j).is_some() && new_stay.is_none() {
                    new_stay = free_at;
                }
                part.orders.push((first, new_stay));
            }
            part
        })
        .collect();
    stitch(capacity, parts)
}

/// Joins the parts into one problem, in order.
fn stitch(capacity: Vec<u64>, parts: Vec<Part>) -> Reduced {
    let candidates: usize = parts.iter().map(|p| p.candidates.len()).sum();
    let uses: usize = parts.iter().map(|p| p.uses.len()).sum();
    let n: usize = parts.iter().map(|p| p.orders.len()).sum();
    let mut out = Instance {
        capacity,
        starts: Vec::with_capacity(n + 1),
        candidates: Vec::with_capacity(candidates),
        uses: Vec::with_capacity(uses),
        stay: Vec::with_capacity(n),
    };
    let mut origin = Vec::with_capacity(candidates);
    for part in parts {
        let (c0, u0) = (out.candidates.len(), out.uses.len() as u32);
        for &(first, stay) in &part.orders {
            out.starts.push(c0 + first);
            out.stay.push(stay);
        }
        out.candidates.extend(part.candidates.iter().map(|c| Candidate {
            first: c.first + u0,
            ..*c
        }));
        out.uses.extend_from_slice(&part.uses);
        origin.extend_from_slice(&part.origin);
    }
    out.starts.push(out.candidates.len());
    Reduced {
        instance: out,
        origin,
        rounds: 1,
    }
}
