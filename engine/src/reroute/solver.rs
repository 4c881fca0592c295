//! Assignment under many shared limits: every order takes one of its candidate plans, each plan
//! uses some units of several resources (stock at a position, orders and units a node can ship
//! on a day), no resource is used past its capacity, least total cost.
//!
//! The explicit form's solver ([`crate::optimise`]) has one resource per option; a routed order's
//! plan draws on a position per line and on a node's day per package, so this one prices every
//! resource:
//!
//! - **Presolve** ([`super::presolve`]): resources no assignment can overfill (most stock
//!   positions) are dropped, and so are candidates dearer than one that draws on nothing left.
//! - **Bound**: the Lagrangian relaxation of every capacity. At prices `λ ≥ 0` each order takes
//!   its plan of least `cost + Σ λ_r · use_r`; the sum of those minima less `Σ λ_r · capacity_r`
//!   is a lower bound on the least cost of any assignment of a candidate to every order.
//!   Subgradient steps (Polyak's rule, aimed at the best plan but at most 5% above the bound)
//!   raise it, until the gap target, a stall, or the iteration limit.
//! - **Plans**: at the current prices, orders in order of regret (how much they lose if their
//!   best plan is taken from them) take the cheapest-priced candidate that still fits; then
//!   passes move each order to a cheaper plan that fits; `settle` keeps orders on their own
//!   plans where needed. The best plan then gets ejection moves: an order reaches a cheaper
//!   candidate by moving others off the resources it lacks; then chains of two moves for the
//!   orders still far from a fair price ([`super::chain`]).
//!
//! Orders are priced in parallel (rayon); the sums, the greedy and the moves run in a fixed
//! order (order index, or regret then index), so the same instance gives the same plan, bound
//! and gap on any number of threads.

use super::pricing::{Priced, Pricer};
use crate::optimise::{Solution, relative_gap};

/// One candidate plan: its cost and the resources it uses (`uses[first..first + len]`).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Candidate {
    pub cost: f64,
    pub first: u32,
    pub len: u32,
}

/// Orders, their candidates (order `j`'s are `candidates[starts[j]..starts[j + 1]]`), and the
/// resources with their capacities. Amounts are whole units.
#[derive(Clone, Debug, Default)]
pub struct Instance {
    pub capacity: Vec<u64>,
    pub starts: Vec<usize>,
    pub candidates: Vec<Candidate>,
    /// (resource, amount) pairs, `first..first + len` per candidate.
    pub uses: Vec<(u32, u32)>,
    /// Per order (or empty: none), the candidate it keeps when no other fits: an order that
    /// already holds a plan is never left with none, so it keeps what that plan uses.
    pub stay: Vec<Option<u32>>,
}

impl Instance {
    pub fn n_orders(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    pub fn candidates_of(&self, order: usize) -> &[Candidate] {
        &self.candidates[self.starts[order]..self.starts[order + 1]]
    }

    /// `c`'s cost plus what its uses cost at `prices`.
    pub(super) fn priced(&self, c: &Candidate, prices: &[f64]) -> f64 {
        c.cost
            + self
                .uses_of(c)
                .iter()
                .map(|&(r, a)| prices[r as usize] * f64::from(a))
                .sum::<f64>()
    }

    /// `c` fits in what `used` leaves of every resource (sums in u64: each use is a u32).
    fn fits(&self, c: &Candidate, used: &[u64]) -> bool {
        self.uses_of(c)
            .iter()
            .all(|&(r, a)| used[r as usize] + u64::from(a) <= self.capacity[r as usize])
    }

    /// What order `j` draws on with its candidate `c` (nothing when it has none).
    pub fn uses_at(&self, j: usize, c: Option<u32>) -> &[(u32, u32)] {
        c.map_or(&[][..], |c| self.uses_of(&self.candidates_of(j)[c as usize]))
    }

    /// The cost of order `j`'s cheapest candidate (infinite when it has none).
    pub fn cheapest(&self, j: usize) -> f64 {
        self.candidates_of(j)
            .iter()
            .map(|c| c.cost)
            .fold(f64::INFINITY, f64::min)
    }

    pub fn uses_of(&self, c: &Candidate) -> &[(u32, u32)] {
        &self.uses[c.first as usize..(c.first + c.len) as usize]
    }

    /// Appends an order; each candidate is its cost and its uses.
    pub fn push_order<'a>(&mut self, candidates: impl IntoIterator<Item = (f64, &'a [(u32, u32)])>) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        for (cost, uses) in candidates {
            let first = self.uses.len() as u32;
            self.uses.extend_from_slice(uses);
            self.candidates.push(Candidate {
                cost,
                first,
                len: uses.len() as u32,
            });
        }
        self.starts.push(self.candidates.len());
    }
}

/// How long and how hard to work.
#[derive(Clone, Debug)]
pub struct Effort {
    pub iterations_max: u32,
    /// Build a plan every this many iterations.
    pub plan_every: u32,
    /// Stop once the best plan is within this fraction of the bound.
    pub gap_target: f64,
}

impl Default for Effort {
    fn default() -> Self {
        Self {
            iterations_max: 300,
            plan_every: 10,
            gap_target: 5e-4,
        }
    }
}

/// The subgradient's target above the bound before any plan is found.
const TARGET_ABOVE_BOUND: f64 = 0.05;
/// Iterations over which the bound must rise by a millionth for the steps to go on.
const STALL_ITERATIONS: usize = 40;
/// Instances with at most this many candidates in all are small (a few hundred orders).
const SMALL_CANDIDATES_MAX: usize = 5_000;
/// Instances with more candidates than this are large (several hundred thousand orders): a
/// plan costs seconds there, so plans are made only at the first iteration and at the end.
const LARGE_CANDIDATES_MIN: usize = 5_000_000;
/// Deflection: each step goes along the subgradient plus this share of the previous step's
/// direction (Camerini, Fratta and Maffioli), which damps the zigzag of plain subgradient steps
/// between resources whose prices trade off. On the 1M-order `peak` re-route the bound after
/// 90 iterations rose from 2.512 to 2.593 billion cents, and after 300 from 2.585 to 2.642.
const DEFLECTION: f64 = 0.8;
/// Weight of the newest prices in the running average the last plan is also built at.
const AVERAGE_WEIGHT: f64 = 0.05;

/// Solves `instance`; `stop` is asked once an iteration.
pub fn solve(instance: &Instance, effort: &Effort, stop: &(dyn Fn() -> bool + Sync)) -> Solution {
    let started = std::time::Instant::now();
    let original = instance;
    let reduced = super::presolve::reduce(original);
    let instance = &reduced.instance;
    let pricer = Pricer::new(instance);
    let tighten_s = started.elapsed().as_secs_f64();
    let n = instance.n_orders();
    // Small problems cost little an iteration: many more, and a plan from each.
    let small = instance.candidates.len() <= SMALL_CANDIDATES_MAX;
    // Large ones cost seconds a plan: one at the start (it gives the steps a target), and the
    // last ones at the best and the averaged prices.
    let large = instance.candidates.len() > LARGE_CANDIDATES_MIN;
    let (iterations_max, plan_every, stall) = if small {
        (effort.iterations_max.max(3_000), 1, 10 * STALL_ITERATIONS)
    } else if large {
        (effort.iterations_max, u32::MAX, STALL_ITERATIONS)
    } else {
        (effort.iterations_max, effort.plan_every.max(1), STALL_ITERATIONS)
    };
    let m = instance.capacity.len();
    let mut prices = vec![0.0f64; m];
    let mut best: Option<(Vec<Option<u32>>, f64, usize)> = None;
    let mut best_bound = f64::NEG_INFINITY;
    let mut theta = 2.0f64;
    let mut since_better = 0u32;
    let mut iterations = 0u32;
    let mut stopped = false;
    let mut used = vec![0u64; m];
    // The step direction (deflected subgradient), the prices at the best bound, and a running
    // average of the prices: plans built at the last two are better than at the current prices,
    // which swing around the optimum.
    let mut direction = vec![0.0f64; m];
    let mut best_prices = vec![0.0f64; m];
    let mut average_prices = vec![0.0f64; m];
    let mut priced = Vec::new();
    // The bound STALL_ITERATIONS ago: when it has barely moved since, more steps do not pay.
    let mut bounds: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut plans_s = 0.0;
    while iterations < iterations_max.max(1) {
        // The first iteration always runs: it gives the bound at zero prices.
        if iterations > 0 && stop() {
            stopped = true;
            break;
        }
        pricer.price(&prices, &mut priced, &mut used);
        // Sums in order index order: the same bound on any number of threads.
        // Orders with no candidate at all are left out of the bound (and of every plan).
        let mut bound: f64 = priced.iter().filter(|p| p.0 != u32::MAX).map(|p| p.1).sum();
        bound -= prices
            .iter()
            .zip(&instance.capacity)
            .map(|(p, &c)| p * c as f64)
            .sum::<f64>();
        if n == 0 {
            bound = 0.0;
        }
        if best_bound == f64::NEG_INFINITY || bound > best_bound + 1e-9 * best_bound.abs().max(1.0) {
            best_bound = bound;
            best_prices.clone_from(&prices);
            since_better = 0;
        } else {
            since_better += 1;
            if since_better >= 8 {
                theta = (theta / 2.0).max(1e-4);
                since_better = 0;
            }
        }
        if iterations.is_multiple_of(50) {
            tracing::debug!(target: "promised::reroute", iterations, bound, best_bound, theta, "bound");
        }
        if iterations.is_multiple_of(plan_every) {
            let plan_started = std::time::Instant::now();
            // From the orders' own plans every other plan round (every round on large
            // instances, where greedy's plans leave many out, and then not from greedy as
            // well unless the orders have no plans: on the 1M-order `peak` re-route greedy's
            // first plan was never the better one, the same plan and bound 0.8 s sooner).
            let stays = large || (iterations / plan_every).is_multiple_of(2);
            for plan in plans_at(instance, &priced, &prices, !large, stays) {
                keep_better(&mut best, instance, plan);
            }
            plans_s += plan_started.elapsed().as_secs_f64();
        }
        iterations += 1;
        bounds.push_back(best_bound);
        if bounds.len() > stall {
            let then = bounds.pop_front().expect("non-empty");
            if best_bound - then <= 1e-6 * best_bound.abs().max(1.0) {
                break;
            }
        }
        let upper = best.as_ref().filter(|b| b.2 == 0).map(|b| b.1);
        if let Some(u) = upper
            && u - best_bound <= effort.gap_target.max(1e-9) * u.abs().max(1.0)
        {
            break;
        }
        // The subgradient (`used` summed while pricing): use less capacity.
        // A free resource whose price is already 0 cannot go lower.
        let slope = |u: u64, c: u64, p: f64| {
            let g = u as f64 - c as f64;
            if p <= 0.0 && g < 0.0 { 0.0 } else { g }
        };
        // In one pass: the subgradient's norm, and the direction (deflected) with its norm.
        let (mut norm, mut direction_norm) = (0.0f64, 0.0f64);
        for (((d, &u), &c), &p) in direction
            .iter_mut()
            .zip(&used)
            .zip(&instance.capacity)
            .zip(&prices)
        {
            let g = slope(u, c, p);
            norm += g * g;
            *d = g + DEFLECTION * *d;
            // A free resource whose price is 0 cannot go lower, whatever the old direction.
            if p <= 0.0 && *d < 0.0 {
                *d = 0.0;
            }
            direction_norm += *d * *d;
        }
        // The old direction can cancel this subgradient (+5 then -4 gives -4 + 0.8 * 5 = 0):
        // a step along almost nothing would be huge. Then step along the subgradient alone.
        if direction_norm <= 1e-12 * norm {
            for (((d, &u), &c), &p) in direction
                .iter_mut()
                .zip(&used)
                .zip(&instance.capacity)
                .zip(&prices)
            {
                *d = slope(u, c, p);
            }
            direction_norm = norm;
        }
        if norm == 0.0 {
            // The relaxed choice fits every capacity: it is optimal, and its plan is built below.
            let choice: Vec<Option<u32>> = priced.iter().map(|p| (p.0 != u32::MAX).then_some(p.0)).collect();
            keep_better(&mut best, instance, settle(instance, choice));
            break;
        }
        // Aim at the best plan (Polyak's step with it for the optimum), but at most |bound|
        // (at least 1) above the bound; with no plan yet, 5% above the bound. On the 1M-order
        // `peak` re-route, aiming 5% above the bound (the plan 30% above) rose the bound by
        // half as much in 90 iterations as aiming at the plan.
        let near = bound + TARGET_ABOVE_BOUND * bound.abs().max(1.0);
        let target = upper.map_or(near, |u| u.min(bound + bound.abs().max(1.0)));
        let step = theta * (target - bound).max(1e-6 * target.abs().max(1.0))
            / direction_norm.max(f64::MIN_POSITIVE);
        for ((p, &d), a) in prices.iter_mut().zip(&direction).zip(&mut average_prices) {
            *p = (*p + step * d).max(0.0);
            *a = (1.0 - AVERAGE_WEIGHT) * *a + AVERAGE_WEIGHT * *p;
        }
    }
    // The last plans, at the best bound's prices and at the averaged prices, unless a plan
    // already meets the gap target; when the caller stopped the solve, at the best bound's
    // prices only (on a large instance the only other plan was made at prices of zero).
    let met = best
        .as_ref()
        .is_some_and(|b| b.2 == 0 && b.1 - best_bound <= effort.gap_target.max(1e-9) * b.1.abs().max(1.0));
    if !met && n > 0 {
        let plan_started = std::time::Instant::now();
        let at_prices: &[&Vec<f64>] = if stopped {
            &[&best_prices]
        } else {
            &[&best_prices, &average_prices]
        };
        for &at in at_prices {
            pricer.price(at, &mut priced, &mut used);
            // On a large instance greedy's plans leave many more out than those from the
            // orders' own plans (46k against 23k orders far from a fair price at 1M orders).
            for plan in plans_at(instance, &priced, at, !large, true) {
                keep_better(&mut best, instance, plan);
            }
        }
        plans_s += plan_started.elapsed().as_secs_f64();
    }
    let (choice, _, _) = best.unwrap_or_else(|| {
        pricer.price(&prices, &mut priced, &mut used);
        let plan = settle(instance, improve(instance, greedy(instance, &priced, &prices)));
        (plan, 0.0, 0)
    });
    let iterations_s = started.elapsed().as_secs_f64() - tighten_s;
    tracing::debug!(
        target: "promised::reroute",
        far = far_orders(instance, &choice),
        cost = cost_of(instance, &choice).0,
        "best plan before ejection"
    );
    let (choice, cut) = if stopped {
        (choice, false)
    } else {
        eject(instance, choice, best_bound, stop)
    };
    let eject_s = started.elapsed().as_secs_f64() - tighten_s - iterations_s;
    stopped |= cut;
    let (cost, left) = cost_of(instance, &choice);
    // The bound is below every plan that serves everyone: clamp the rounding of long sums.
    let lower_bound = match (n, left) {
        (0, _) => 0.0,
        (_, 0) => best_bound.min(cost),
        _ => best_bound,
    };
    // Candidates priced out (infinite) are no part of the problem's scale.
    let costs = (0..n).map(|j| {
        original
            .candidates_of(j)
            .iter()
            .map(|c| c.cost)
            .filter(|c| c.is_finite())
    });
    let gap = relative_gap(cost, lower_bound, left, costs);
    // Field values are worked out only when the event is logged.
    tracing::info!(
        target: "promised::reroute",
        free = free_orders(instance),
        binding_resources = m,
        candidates_left = instance.candidates.len(),
        presolve_rounds = reduced.rounds,
        iterations,
        tighten_s,
        iterations_s,
        plans_s,
        eject_s,
        cost,
        lower_bound,
        left,
        "re-route solved"
    );
    Solution {
        choice: reduced.original_choice(&choice),
        cost,
        lower_bound,
        gap,
        iterations,
        stopped,
    }
}

/// Plans at `prices` (`priced` is what they give): greedy from nothing when asked or when the
/// orders have no plans of their own, and one from their own plans when asked and they have.
fn plans_at(
    instance: &Instance,
    priced: &[Priced],
    prices: &[f64],
    greedy_too: bool,
    stays: bool,
) -> Vec<Vec<Option<u32>>> {
    let stays = stays && !instance.stay.is_empty();
    let mut plans = Vec::with_capacity(2);
    if greedy_too || !stays {
        plans.push(settle(
            instance,
            improve(instance, greedy(instance, priced, prices)),
        ));
    }
    if stays {
        plans.push(improve(instance, from_stays(instance, priced, prices)));
    }
    plans
}

/// Keeps `plan` if it leaves fewer orders out than the best so far, or as many for less.
fn keep_better(
    best: &mut Option<(Vec<Option<u32>>, f64, usize)>,
    instance: &Instance,
    plan: Vec<Option<u32>>,
) {
    let (cost, left) = cost_of(instance, &plan);
    if best.as_ref().is_none_or(|b| (left, cost) < (b.2, b.1)) {
        *best = Some((plan, cost, left));
    }
}

/// Orders whose cheapest candidate draws on no binding resource: at any prices that candidate
/// is theirs (how much of the problem a split into fixed and contested orders would remove).
fn free_orders(instance: &Instance) -> usize {
    (0..instance.n_orders())
        .filter(|&j| {
            let min = instance.cheapest(j);
            instance
                .candidates_of(j)
                .iter()
                .any(|c| c.cost == min && c.len == 0)
        })
        .count()
}

/// Orders left out or on a plan far above their cheapest candidate (a broken plan kept).
fn far_orders(instance: &Instance, choice: &[Option<u32>]) -> usize {
    choice
        .iter()
        .enumerate()
        .filter(|&(j, c)| {
            c.is_none_or(|c| {
                instance.candidates_of(j)[c as usize].cost > EJECT_FAR_RATIO * instance.cheapest(j)
            })
        })
        .count()
}

/// Total cost of the served orders, and how many are left out.
pub fn cost_of(instance: &Instance, choice: &[Option<u32>]) -> (f64, usize) {
    let mut cost = 0.0;
    let mut left = 0;
    for (j, c) in choice.iter().enumerate() {
        match c {
            Some(c) => cost += instance.candidates_of(j)[*c as usize].cost,
            None => left += 1,
        }
    }
    (cost, left)
}

/// Passes over the orders from every order on its own plan, at most (after the first, only
/// orders not on their cheapest candidate at the prices are visited: a pass costs little).
const FROM_STAYS_PASSES: usize = 10;

/// From every order on its own plan (those that have one; the others left out), passes in
/// regret order move each order to its cheapest candidate at `prices` that fits. The plan fits
/// throughout, so no order is sent back by `settle`; and orders leave the resources the prices
/// say are contested, which later in the pass, or in the next, orders left out or on a broken
/// plan take. Greedy from nothing cannot promise that: an order it cannot place goes back to
/// its own plan in `settle` and can push out whoever took the room. On the 1M-order `peak`
/// re-route greedy's best plan left 46k orders far from any fair price, this one 23k.
fn from_stays(instance: &Instance, priced: &[Priced], prices: &[f64]) -> Vec<Option<u32>> {
    let n = instance.n_orders();
    let mut choice: Vec<Option<u32>> = (0..n).map(|j| instance.stay.get(j).copied().flatten()).collect();
    let uses_of = |j: usize, c: Option<u32>| instance.uses_at(j, c);
    let mut used = vec![0u64; instance.capacity.len()];
    for (j, &c) in choice.iter().enumerate() {
        for &(r, a) in uses_of(j, c) {
            used[r as usize] += u64::from(a);
        }
    }
    let mut order = by_regret(priced);
    for _ in 0..FROM_STAYS_PASSES {
        let mut changed = false;
        for &j in &order {
            let j = j as usize;
            let here = choice[j];
            for &(r, a) in uses_of(j, here) {
                used[r as usize] -= u64::from(a);
            }
            let mut pick = here;
            let mut pick_priced = here.map_or(f64::INFINITY, |c| {
                let c = &instance.candidates_of(j)[c as usize];
                if instance.fits(c, &used) {
                    instance.priced(c, prices)
                } else {
                    f64::INFINITY
                }
            });
            for (i, c) in instance.candidates_of(j).iter().enumerate() {
                let p = instance.priced(c, prices);
                if p < pick_priced - 1e-9 && instance.fits(c, &used) {
                    pick = Some(i as u32);
                    pick_priced = p;
                }
            }
            changed |= pick != here;
            choice[j] = pick;
            for &(r, a) in uses_of(j, pick) {
                used[r as usize] += u64::from(a);
            }
        }
        if !changed {
            break;
        }
        // An order on its cheapest candidate at these prices, which fits, has nowhere cheaper
        // to go: the next passes visit only the others. (Every move of a pass fits, but an
        // order's own plan can start over a limit that was lowered since it was placed.)
        let capacity = &instance.capacity;
        order.retain(|&j| {
            let j = j as usize;
            choice[j].is_none_or(|c| c != priced[j].0)
                || uses_of(j, choice[j])
                    .iter()
                    .any(|&(r, _)| used[r as usize] > capacity[r as usize])
        });
    }
    choice
}

/// Order indices by regret (second cheapest less cheapest priced candidate), most first.
fn by_regret(priced: &[Priced]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..priced.len() as u32).collect();
    let regret = |j: u32| {
        let p = priced[j as usize];
        if p.2.is_finite() { p.2 - p.1 } else { f64::INFINITY }
    };
    order.sort_by(|&a, &b| regret(b).total_cmp(&regret(a)).then(a.cmp(&b)));
    order
}

/// Orders by regret, most first, each taking the cheapest-priced candidate that still fits.
fn greedy(instance: &Instance, priced: &[Priced], prices: &[f64]) -> Vec<Option<u32>> {
    let n = instance.n_orders();
    let order = by_regret(priced);
    let mut used = vec![0u64; instance.capacity.len()];
    let mut choice = vec![None; n];
    let mut ranked: Vec<(f64, u32)> = Vec::new();
    for j in order {
        let j = j as usize;
        ranked.clear();
        ranked.extend(
            instance
                .candidates_of(j)
                .iter()
                .enumerate()
                .map(|(i, c)| (instance.priced(c, prices), i as u32)),
        );
        ranked.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        for &(_, i) in &ranked {
            let c = &instance.candidates_of(j)[i as usize];
            let uses = instance.uses_of(c);
            if instance.fits(c, &used) {
                for &(r, a) in uses {
                    used[r as usize] += u64::from(a);
                }
                choice[j] = Some(i);
                break;
            }
        }
    }
    choice
}

/// Puts every order left out that has a plan to keep back on it, and sends back to their own
/// plans (or out, for orders with none) the moved orders that then overfill a resource, in
/// order index order, until nothing is over. The plans orders keep fitted together before the
/// re-route, so this ends with a plan that fits unless the limits themselves were lowered below
/// what the kept plans use (the check then reports it).
fn settle(instance: &Instance, mut choice: Vec<Option<u32>>) -> Vec<Option<u32>> {
    if instance.stay.is_empty() {
        return choice;
    }
    let uses_of = |j: usize, c: Option<u32>| instance.uses_at(j, c);
    let mut used = vec![0u64; instance.capacity.len()];
    for (j, c) in choice.iter_mut().enumerate() {
        if c.is_none() {
            *c = instance.stay[j];
        }
        for &(r, a) in uses_of(j, *c) {
            used[r as usize] += u64::from(a);
        }
    }
    let over = |used: &[u64], r: u32| used[r as usize] > instance.capacity[r as usize];
    loop {
        let mut changed = false;
        for (j, slot) in choice.iter_mut().enumerate() {
            let c = *slot;
            if c.is_none() || c == instance.stay[j] || !uses_of(j, c).iter().any(|&(r, _)| over(&used, r)) {
                continue;
            }
            for &(r, a) in uses_of(j, c) {
                used[r as usize] -= u64::from(a);
            }
            *slot = instance.stay[j];
            for &(r, a) in uses_of(j, *slot) {
                used[r as usize] += u64::from(a);
            }
            changed = true;
        }
        if !changed {
            return choice;
        }
    }
}

/// Orders a blocked resource's users are tried in, at most, per ejection.
const EJECT_TRIES: usize = 64;
/// Entries of a resource's user list an ejection looks at, at most.
const EJECT_SCAN_MAX: usize = 4 * EJECT_TRIES;
/// Cheaper candidates an order tries to reach by ejection, cheapest first.
const EJECT_TARGETS: usize = 4;
/// Cheaper candidates tried by an order on a plan dearer than `EJECT_FAR_RATIO` times its
/// cheapest one.
const EJECT_TARGETS_FAR: usize = 16;
pub(super) const EJECT_FAR_RATIO: f64 = 8.0;
/// Orders on a plan dearer than this many times their cheapest one try ejections.
const EJECT_RATIO: f64 = 1.5;
/// Ejection passes at most.
const EJECT_PASSES: usize = 3;
/// A pass that closes less than this share of what is left between the plan and the bound
/// (placing no order left out) is the last: on the 1M-order `peak` re-route the second pass
/// lowers the cost by a tenth of the first's, the third by a third of that, 4 s each.
const EJECT_PASS_MIN_SHARE: f64 = 0.1;

/// Ejection moves for the final plan: an order takes a cheaper candidate that does not fit yet
/// by moving other orders off the resources it lacks (each to its cheapest candidate that fits
/// without them), when the orders' costs together go down. Frees the days and positions that
/// greedy filled in its order, so orders it left on dear plans get cheap ones. Orders far from
/// any fair price first, then the others, each in order index order, re-checked against the
/// loads as they are: the same on any number of threads.
/// Asks `stop` every 4,096 orders; returns the plan and whether it was cut short.
fn eject(
    instance: &Instance,
    mut choice: Vec<Option<u32>>,
    bound: f64,
    stop: &(dyn Fn() -> bool + Sync),
) -> (Vec<Option<u32>>, bool) {
    let m = instance.capacity.len();
    let uses_of = |j: usize, c: Option<u32>| instance.uses_at(j, c);
    let cost_at =
        |j: usize, c: Option<u32>| c.map_or(f64::INFINITY, |c| instance.candidates_of(j)[c as usize].cost);
    let mut used = vec![0u64; m];
    // Who uses each resource: (order, the candidate that uses it). An entry whose order has
    // moved on is stale; ejections drop those as they meet them.
    let mut users: Vec<Vec<User>> = vec![Vec::new(); m];
    for (j, &c) in choice.iter().enumerate() {
        for &(r, a) in uses_of(j, c) {
            used[r as usize] += u64::from(a);
            users[r as usize].push(User::new(instance, j, c.expect("uses come from a candidate")));
        }
    }
    let mut ranked: Vec<u32> = Vec::new();
    // The (resource, amount) pairs the order's earlier targets could not free room for: a
    // later target needing as much there would almost surely fail the same way (the same users
    // to move, as much gain or less), so it is not tried. A heuristic: it never makes a plan
    // infeasible. On the 1M-order `peak` re-route most ejection time went to orders failing
    // every target, many of them on one sold-out position or full day.
    let mut blocked: Vec<(u32, u32)> = Vec::new();
    let cheapest: Vec<f64> = (0..choice.len()).map(|j| instance.cheapest(j)).collect();
    let by_cost = by_cost(instance);
    let mut before = cost_of(instance, &choice);
    for pass in 0..EJECT_PASSES {
        let mut changed = false;
        let (mut tried, mut moved_orders, mut skipped) = (0usize, 0usize, 0usize);
        let pass_started = std::time::Instant::now();
        // Orders far from any fair price first (left out, or on a broken plan): the room moves
        // free goes to them before orders that would only save a little.
        let far = |j: usize| cost_at(j, choice[j]) > EJECT_FAR_RATIO * cheapest[j];
        let visit: Vec<usize> = (0..choice.len())
            .filter(|&j| far(j))
            .chain((0..choice.len()).filter(|&j| !far(j)))
            .collect();
        for (step, &j) in visit.iter().enumerate() {
            if step % 4096 == 4095 && stop() {
                return (choice, true);
            }
            let here = choice[j];
            let cheapest = cheapest[j];
            // Only orders far from their cheapest plan (left out, or on a much dearer plan):
            // where ejection pays, and few enough that a million orders take seconds.
            if cost_at(j, here) <= EJECT_RATIO * cheapest {
                continue;
            }
            ranked.clear();
            ranked.extend(
                (0..instance.candidates_of(j).len() as u32)
                    .filter(|&i| cost_at(j, Some(i)) < cost_at(j, here) - 1e-9),
            );
            ranked.sort_by(|&a, &b| {
                cost_at(j, Some(a))
                    .total_cmp(&cost_at(j, Some(b)))
                    .then(a.cmp(&b))
            });
            // An order far from any fair price (left on a plan that no longer ships) tries
            // more of its candidates: its cheapest nodes are where everyone is.
            let far = cost_at(j, here) > EJECT_FAR_RATIO * cheapest;
            ranked.truncate(if far { EJECT_TARGETS_FAR } else { EJECT_TARGETS });
            tried += 1;
            blocked.clear();
            for &to in &ranked {
                let needs = uses_of(j, Some(to));
                if needs
                    .iter()
                    .any(|&(r, a)| blocked.iter().any(|&(b, least)| b == r && least <= a))
                {
                    skipped += 1;
                    continue;
                }
                match try_eject(instance, &by_cost, &mut choice, &mut used, &mut users, j, to) {
                    Ok(moved) => {
                        moved_orders += 1;
                        for (k, c) in moved {
                            let user = User::new(instance, k, c.expect("uses come from a candidate"));
                            for &(r, _) in uses_of(k, c) {
                                users[r as usize].push(user);
                            }
                        }
                        changed = true;
                        break;
                    }
                    Err(Some(full)) => blocked.push(full),
                    Err(None) => {}
                }
            }
        }
        tracing::debug!(
            target: "promised::reroute",
            pass,
            tried,
            skipped,
            moved = moved_orders,
            seconds = pass_started.elapsed().as_secs_f64(),
            "ejection pass"
        );
        let after = cost_of(instance, &choice);
        if !changed || (after.1 >= before.1 && before.0 - after.0 < EJECT_PASS_MIN_SHARE * (after.0 - bound))
        {
            break;
        }
        before = after;
    }
    let started = std::time::Instant::now();
    let mut state = super::chain::State {
        instance,
        choice: &mut choice,
        used: &mut used,
        users: &mut users,
    };
    let (placed, cut) = super::chain::pass(&mut state, &cheapest, stop);
    tracing::debug!(
        target: "promised::reroute",
        placed,
        seconds = started.elapsed().as_secs_f64(),
        "chain pass"
    );
    (choice, cut)
}

/// An entry of a resource's user list: an order, the candidate by which it uses the resource,
/// and the least that moving the order to another candidate adds to its cost. An ejection skips
/// users no move of which its gain can pay for without reading their candidates (cold in
/// memory, a million orders apart): on the 1M-order `peak` re-route, 10.8 s -> 9.1 s of
/// ejection with the floor read from a table beside the lists, less with it in them.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) struct User {
    pub order: u32,
    pub candidate: u32,
    pub floor: f64,
}

impl User {
    pub fn new(instance: &Instance, order: usize, candidate: u32) -> Self {
        let candidates = instance.candidates_of(order);
        let others = candidates
            .iter()
            .enumerate()
            .filter(|&(i, _)| i as u32 != candidate)
            .map(|(_, c)| c.cost)
            .fold(f64::INFINITY, f64::min);
        Self {
            order: order as u32,
            candidate,
            floor: others - candidates[candidate as usize].cost,
        }
    }
}

/// Per order, its candidates' indices cheapest first (ties by index), at the order's range of
/// `starts`: a scan for the cheapest candidate that fits stops at the first that does.
fn by_cost(instance: &Instance) -> Vec<u32> {
    use rayon::prelude::*;
    (0..instance.n_orders())
        .into_par_iter()
        .flat_map_iter(|j| {
            let candidates = instance.candidates_of(j);
            let mut order: smallvec::SmallVec<[u32; 16]> = (0..candidates.len() as u32).collect();
            // `+ 0.0` makes -0 equal to 0, as the `<` of a plain scan sees them.
            order.sort_by(|&a, &b| {
                (candidates[a as usize].cost + 0.0)
                    .total_cmp(&(candidates[b as usize].cost + 0.0))
                    .then(a.cmp(&b))
            });
            order
        })
        .collect()
}

/// The orders an ejection moved (with their new candidates), or the (resource, amount) it could
/// not free room for, if that was why it failed.
type Ejected = Result<Vec<(usize, Option<u32>)>, Option<(u32, u32)>>;

/// Moves order `j` to its candidate `to`, first moving other orders off the resources `to`
/// lacks, if that lowers the total cost; returns the orders moved (with their new candidates),
/// or the (resource, amount) it could not free room for, if that was why not.
fn try_eject(
    instance: &Instance,
    by_cost: &[u32],
    choice: &mut [Option<u32>],
    used: &mut [u64],
    users: &mut [Vec<User>],
    j: usize,
    to: u32,
) -> Ejected {
    let uses_of = |j: usize, c: Option<u32>| instance.uses_at(j, c);
    let cost_at = |j: usize, c: Option<u32>| c.map_or(0.0, |c| instance.candidates_of(j)[c as usize].cost);
    let apply = |used: &mut [u64], k: usize, from: Option<u32>, to: Option<u32>| {
        for &(r, a) in uses_of(k, from) {
            used[r as usize] -= u64::from(a);
        }
        for &(r, a) in uses_of(k, to) {
            used[r as usize] += u64::from(a);
        }
    };
    let here = choice[j];
    apply(used, j, here, None);
    let target = instance.candidates_of(j)[to as usize];
    // Serving an order left out is worth any price.
    let mut gain = here.map_or(f64::INFINITY, |_| cost_at(j, here) - target.cost);
    let mut moved: Vec<(usize, Option<u32>, Option<u32>)> = Vec::new();
    let mut full = None;
    for &(r, a) in instance.uses_of(&target) {
        let cap = instance.capacity[r as usize];
        let mut tries = 0;
        // Users in list order. A stale entry (its order moved on in an earlier ejection) is
        // dropped for good, one this ejection moved is only skipped: an undo puts it back.
        let (mut at, mut scanned) = (0, 0);
        while at < users[r as usize].len() && scanned < EJECT_SCAN_MAX {
            if used[r as usize] + u64::from(a) <= cap || tries >= EJECT_TRIES {
                break;
            }
            let User {
                order: k,
                candidate: c,
                floor,
            } = users[r as usize][at];
            let k = k as usize;
            if choice[k] != Some(c) && !moved.iter().any(|m| m.0 == k) {
                users[r as usize].swap_remove(at);
                continue;
            }
            at += 1;
            scanned += 1;
            let from = choice[k];
            if k == j || from != Some(c) {
                continue;
            }
            tries += 1;
            // No other candidate of k is cheap enough for the gain to pay for the move.
            if gain - floor <= 1e-9 {
                continue;
            }
            let from_cost = cost_at(k, from);
            // k's cheapest other candidate that fits and leaves r alone, cheapest first: past
            // the first that would cost the move its gain, none can pay, so the scan stops.
            apply(used, k, from, None);
            let mut pick: Option<(u32, f64)> = None;
            let candidates = instance.candidates_of(k);
            for &i in &by_cost[instance.starts[k]..instance.starts[k + 1]] {
                let c = &candidates[i as usize];
                if gain - (c.cost - from_cost) <= 1e-9 {
                    break;
                }
                if Some(i) != from && !instance.uses_of(c).iter().any(|u| u.0 == r) && instance.fits(c, used)
                {
                    pick = Some((i, c.cost));
                    break;
                }
            }
            match pick {
                Some((i, cost)) if gain - (cost - cost_at(k, from)) > 1e-9 => {
                    gain -= cost - cost_at(k, from);
                    apply(used, k, None, Some(i));
                    choice[k] = Some(i);
                    moved.push((k, from, Some(i)));
                }
                _ => apply(used, k, None, from),
            }
        }
        if used[r as usize] + u64::from(a) > cap {
            full = Some((r, a));
            break;
        }
    }
    if full.is_none() && gain > 1e-9 && instance.fits(&target, used) {
        apply(used, j, None, Some(to));
        choice[j] = Some(to);
        let mut out: Vec<(usize, Option<u32>)> = moved.iter().map(|m| (m.0, m.2)).collect();
        out.push((j, Some(to)));
        return Ok(out);
    }
    // Undo, last first.
    for &(k, from, to) in moved.iter().rev() {
        apply(used, k, to, from);
        choice[k] = from;
    }
    apply(used, j, None, here);
    Err(full)
}

/// Passes at most of the move phase.
const PASSES_MAX: usize = 4;

/// Moves each order to its cheapest candidate that fits once its own plan is given back, and
/// places orders left out, until a pass changes nothing.
fn improve(instance: &Instance, mut choice: Vec<Option<u32>>) -> Vec<Option<u32>> {
    let mut used = vec![0u64; instance.capacity.len()];
    for (j, c) in choice.iter().enumerate() {
        if let Some(c) = c {
            for &(r, a) in instance.uses_of(&instance.candidates_of(j)[*c as usize]) {
                used[r as usize] += u64::from(a);
            }
        }
    }
    for _ in 0..PASSES_MAX {
        let mut changed = false;
        for (j, slot) in choice.iter_mut().enumerate() {
            let cands = instance.candidates_of(j);
            let here = slot.map(|c| &cands[c as usize]);
            if let Some(h) = here {
                for &(r, a) in instance.uses_of(h) {
                    used[r as usize] -= u64::from(a);
                }
            }
            let mut pick = *slot;
            let mut pick_cost = here.map_or(f64::INFINITY, |h| h.cost);
            for (i, c) in cands.iter().enumerate() {
                if c.cost < pick_cost - 1e-9 && instance.fits(c, &used) {
                    pick = Some(i as u32);
                    pick_cost = c.cost;
                }
            }
            if pick != *slot {
                changed = true;
                *slot = pick;
            }
            if let Some(c) = pick {
                for &(r, a) in instance.uses_of(&cands[c as usize]) {
                    used[r as usize] += u64::from(a);
                }
            }
        }
        if !changed {
            break;
        }
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(instance: &Instance) -> Option<f64> {
        fn go(inst: &Instance, j: usize, used: &mut Vec<u64>, cost: f64, best: &mut Option<f64>) {
            if j == inst.n_orders() {
                if best.is_none_or(|b| cost < b) {
                    *best = Some(cost);
                }
                return;
            }
            for c in inst.candidates_of(j) {
                let uses = inst.uses_of(c);
                if inst.fits(c, used) {
                    uses.iter().for_each(|&(r, a)| used[r as usize] += u64::from(a));
                    go(inst, j + 1, used, cost + c.cost, best);
                    uses.iter().for_each(|&(r, a)| used[r as usize] -= u64::from(a));
                }
            }
        }
        let mut best = None;
        go(instance, 0, &mut vec![0; instance.capacity.len()], 0.0, &mut best);
        best
    }

    fn random_instance(seed: u64, orders: usize, resources: usize) -> Instance {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
        let mut inst = Instance {
            capacity: (0..resources).map(|_| rng.random_range(1..6u64)).collect(),
            ..Default::default()
        };
        for _ in 0..orders {
            let cands: Vec<(f64, Vec<(u32, u32)>)> = (0..rng.random_range(1..4usize))
                .map(|_| {
                    let mut uses: Vec<(u32, u32)> = (0..rng.random_range(1..3usize))
                        .map(|_| (rng.random_range(0..resources as u32), rng.random_range(1..3u32)))
                        .collect();
                    uses.sort_unstable();
                    uses.dedup_by_key(|u| u.0);
                    (f64::from(rng.random_range(1..50u32)), uses)
                })
                .collect();
            inst.push_order(cands.iter().map(|(c, u)| (*c, u.as_slice())));
        }
        inst
    }

    /// Plans always fit; the bound never exceeds the optimum; the plan is never worse than the
    /// bound allows.
    #[test]
    fn plans_fit_and_the_bound_is_below_the_optimum() {
        for seed in 0..300 {
            let inst = random_instance(seed, 6, 4);
            let a = solve(&inst, &Effort::default(), &|| false);
            let mut used = vec![0u64; inst.capacity.len()];
            for (j, c) in a.choice.iter().enumerate() {
                if let Some(c) = c {
                    for &(r, q) in inst.uses_of(&inst.candidates_of(j)[*c as usize]) {
                        used[r as usize] += u64::from(q);
                    }
                }
            }
            assert!(
                used.iter().zip(&inst.capacity).all(|(u, c)| u <= c),
                "seed {seed}"
            );
            if let Some(opt) = brute(&inst) {
                assert!(
                    a.lower_bound <= opt + 1e-6,
                    "seed {seed}: bound {} > optimum {opt}",
                    a.lower_bound
                );
                if a.unassigned() == 0 {
                    assert!(a.cost >= opt - 1e-6);
                }
            }
        }
    }

    /// Presolve changes no optimum; it drops the resources no assignment can overfill and the
    /// candidates dearer than one that always fits, and its candidates name the original ones.
    #[test]
    fn presolve_keeps_the_optimum() {
        let (mut resources, mut candidates) = (0, 0);
        for seed in 0..300 {
            let mut inst = random_instance(seed, 5, 4);
            // One resource nobody can overfill.
            inst.capacity[0] = 1_000;
            if seed % 2 == 0 {
                inst.stay = (0..5)
                    .map(|j| Some((seed as usize + j) as u32 % inst.candidates_of(j).len() as u32))
                    .collect();
            }
            let reduced = super::super::presolve::reduce(&inst);
            let out = &reduced.instance;
            resources += inst.capacity.len() - out.capacity.len();
            candidates += inst.candidates.len() - out.candidates.len();
            assert!(out.capacity.len() < inst.capacity.len(), "seed {seed}");
            assert_eq!(brute(out), brute(&inst), "seed {seed}");
            for j in 0..5 {
                for (k, c) in out.candidates_of(j).iter().enumerate() {
                    let i = reduced.origin[out.starts[j] + k] as usize;
                    assert_eq!(c.cost, inst.candidates_of(j)[i].cost, "seed {seed}");
                }
                if inst.stay.get(j).copied().flatten().is_some() {
                    let s = out.stay[j].expect("an order with a plan keeps one") as usize;
                    assert!(s < out.candidates_of(j).len(), "seed {seed}");
                }
            }
        }
        assert!(resources >= 300);
        assert!(candidates > 0);
    }

    /// From every order on its own plan, an order on a contested resource moves off it at its
    /// price, and an order on a broken plan takes the room; the plan fits at every step.
    #[test]
    fn from_stays_frees_a_contested_resource_for_an_order_on_a_broken_plan() {
        let mut inst = Instance {
            capacity: vec![1, 1, 1],
            ..Default::default()
        };
        inst.push_order([(5.0, &[(0, 1)][..]), (6.0, &[(1, 1)][..])]);
        inst.push_order([(50_000.0, &[(2, 1)][..]), (10.0, &[(0, 1)][..])]);
        inst.stay = vec![Some(0), Some(0)];
        let (mut priced, mut used) = (Vec::new(), vec![0; 3]);
        // Resource 0 is worth 2 to whoever holds it: order 0 does better elsewhere.
        let prices = [2.0, 0.0, 0.0];
        Pricer::new(&inst).price(&prices, &mut priced, &mut used);
        assert_eq!(from_stays(&inst, &priced, &prices), vec![Some(1), Some(1)]);
        // At no price nobody moves: order 0 keeps its cheaper plan, order 1 its broken one.
        let prices = [0.0; 3];
        Pricer::new(&inst).price(&prices, &mut priced, &mut used);
        assert_eq!(from_stays(&inst, &priced, &prices), vec![Some(0), Some(0)]);
    }

    /// Of equally cheap candidates that always fit, the order's own plan is the one kept.
    #[test]
    fn presolve_keeps_the_own_plan_among_equals() {
        let mut inst = Instance {
            capacity: vec![1_000],
            ..Default::default()
        };
        inst.push_order([(5.0, &[(0, 1)][..]), (5.0, &[(0, 1)][..]), (9.0, &[(0, 1)][..])]);
        inst.stay = vec![Some(1)];
        let reduced = super::super::presolve::reduce(&inst);
        assert_eq!(reduced.instance.candidates.len(), 1);
        assert_eq!(reduced.origin, vec![1]);
        assert_eq!(reduced.instance.stay, vec![Some(0)]);
    }

    #[test]
    fn the_same_plan_on_any_number_of_threads() {
        let inst = random_instance(7, 3_000, 400);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| solve(&inst, &Effort::default(), &|| false))
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn a_stop_is_reported() {
        let inst = random_instance(3, 50, 10);
        let a = solve(&inst, &Effort::default(), &|| true);
        assert!(a.stopped);
        assert_eq!(a.choice.len(), 50);
    }
}
