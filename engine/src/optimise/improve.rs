//! From the relaxation's assignment to a feasible plan, and then a better one.
//!
//! 1. **Repair**: the relaxed choice may overfill nodes. Each over-full node (in index order)
//!    hands orders to other nodes with room, cheapest extra cost per unit of load freed first;
//!    an order that fits nowhere else leaves the plan (reported unassigned) only when nothing
//!    else frees the node.
//! 2. **Insert** orders left out wherever they fit, cheapest first.
//! 3. **Shift** and **swap** moves until none improves: every order's best move is found in
//!    parallel against the current loads, then the moves are applied one by one in order of
//!    gain (ties by order index), each re-checked against the loads as they now are. Evaluating
//!    in parallel and applying in a fixed order keeps the result independent of the thread count.

use rayon::prelude::*;

use super::Problem;

/// A feasible plan (every node within capacity).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub choice: Vec<Option<u32>>,
    pub cost: f64,
    pub unassigned: usize,
}

impl Plan {
    /// Fewer orders left out first, then lower cost.
    pub fn better_than(&self, other: &Plan) -> bool {
        (self.unassigned, self.cost) < (other.unassigned, other.cost)
    }
}

/// Loads may exceed capacities by this relative slack (floating-point sums).
fn fits(load: f64, capacity: f64) -> bool {
    load <= capacity + 1e-9 * capacity.abs().max(1.0)
}

/// Shift and swap passes at most (each pass is cheap; this only bounds a pathological case).
const PASSES_MAX: usize = 100;
/// Swaps look at every pair of orders: only for problems with at most this many pairs
/// (orders^2), so that a pass stays a few seconds at worst and large problems never run one.
const SWAP_PAIRS_MAX: usize = 25_000_000;
/// ...and whose (order, node) option table (4 bytes a cell) stays this small.
const SWAP_CELLS_MAX: usize = 4_000_000;
/// Orders between two looks at `stop` in the loops that place orders one at a time.
const STOP_EVERY: usize = 64;

struct State<'a> {
    problem: &'a Problem,
    choice: Vec<Option<u32>>,
    load: Vec<f64>,
}

/// A move that empties an over-full node: order `j` to its option `to`, at `per_load` extra
/// cost per unit of load freed. Ordered for a max-heap so that the cheapest, then the lowest
/// order index, comes out first.
#[derive(Clone, Copy, Debug)]
struct RepairMove {
    per_load: f64,
    j: usize,
    to: u32,
}

impl Ord for RepairMove {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .per_load
            .total_cmp(&self.per_load)
            .then(other.j.cmp(&self.j))
    }
}

impl PartialOrd for RepairMove {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for RepairMove {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for RepairMove {}

impl State<'_> {
    fn agent_of(&self, j: usize) -> Option<usize> {
        self.choice[j].map(|c| self.problem.options_of(j)[c as usize].agent as usize)
    }

    fn cost_of(&self, j: usize) -> Option<f64> {
        self.choice[j].map(|c| self.problem.options_of(j)[c as usize].cost)
    }

    fn assign(&mut self, j: usize, to: Option<u32>) {
        if let Some(c) = self.choice[j] {
            let o = self.problem.options_of(j)[c as usize];
            self.load[o.agent as usize] -= o.load;
        }
        if let Some(c) = to {
            let o = self.problem.options_of(j)[c as usize];
            self.load[o.agent as usize] += o.load;
        }
        self.choice[j] = to;
    }

    /// The cheapest option of `j` on another node that has room for it now: (option, extra cost).
    fn best_move(&self, j: usize) -> Option<(u32, f64)> {
        let here = self.agent_of(j);
        let cost = self.cost_of(j).unwrap_or(0.0);
        let mut best: Option<(u32, f64)> = None;
        for (i, o) in self.problem.options_of(j).iter().enumerate() {
            let a = o.agent as usize;
            if Some(a) == here || !fits(self.load[a] + o.load, self.problem.agents[a].capacity) {
                continue;
            }
            let extra = o.cost - cost;
            if best.is_none_or(|b| extra < b.1) {
                best = Some((i as u32, extra));
            }
        }
        best
    }

    /// Empties over-full nodes, in index order. A node's orders are priced once (each one's best
    /// move: extra cost per unit of load freed, and where to) and taken cheapest first from a
    /// heap, ties by order index. Moving orders off the node only fills the others, so a priced
    /// move can only get dearer: one whose target no longer fits is priced again and put back,
    /// and the one taken is always the cheapest move there is now. Orders that can go nowhere
    /// leave the plan, those that free the most load first (ties by order index), only once no
    /// move is left.
    fn repair(&mut self) {
        use std::collections::BinaryHeap;
        let problem = self.problem;
        let by_agent = self.by_agent();
        for (a, on_a) in by_agent.into_iter().enumerate() {
            let capacity = problem.agents[a].capacity;
            if fits(self.load[a], capacity) {
                continue;
            }
            let state = &*self;
            let priced: Vec<Option<RepairMove>> = on_a
                .par_iter()
                .with_min_len(1024)
                .map(|&j| state.repair_move(j))
                .collect();
            let mut heap: BinaryHeap<RepairMove> = priced.into_iter().flatten().collect();
            while !fits(self.load[a], capacity) {
                let Some(m) = heap.pop() else { break };
                let o = problem.options_of(m.j)[m.to as usize];
                let b = o.agent as usize;
                if fits(self.load[b] + o.load, problem.agents[b].capacity) {
                    self.assign(m.j, Some(m.to));
                } else if let Some(again) = self.repair_move(m.j) {
                    heap.push(again);
                }
            }
            if fits(self.load[a], capacity) {
                continue;
            }
            // Nothing more can go elsewhere: leave out the orders that free the most.
            let mut left: Vec<(f64, usize)> = on_a
                .iter()
                .filter(|&&j| self.agent_of(j) == Some(a))
                .map(|&j| {
                    (
                        problem.options_of(j)[self.choice[j].expect("on a") as usize].load,
                        j,
                    )
                })
                .collect();
            left.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            for (_, j) in left {
                if fits(self.load[a], capacity) {
                    break;
                }
                self.assign(j, None);
            }
        }
    }

    /// Order `j`'s best move off its node, priced per unit of load it frees.
    fn repair_move(&self, j: usize) -> Option<RepairMove> {
        let (to, extra) = self.best_move(j)?;
        let load = self.problem.options_of(j)[self.choice[j]? as usize]
            .load
            .max(1e-12);
        Some(RepairMove {
            per_load: extra / load,
            j,
            to,
        })
    }

    fn insert_left_out(&mut self) {
        for j in 0..self.problem.n_orders() {
            if self.choice[j].is_none()
                && let Some((to, _)) = self.best_move(j)
            {
                self.assign(j, Some(to));
            }
        }
    }

    /// One pass of shift moves; true if any applied.
    fn shift_pass(&mut self) -> bool {
        let state = &*self;
        let mut moves: Vec<(f64, usize, u32)> = (0..self.problem.n_orders())
            .into_par_iter()
            .with_min_len(1024)
            .filter_map(|j| {
                state.choice[j]?;
                let (to, extra) = state.best_move(j)?;
                (extra < -1e-9).then_some((-extra, j, to))
            })
            .collect();
        moves.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let mut applied = false;
        for (_, j, to) in moves {
            let o = self.problem.options_of(j)[to as usize];
            let a = o.agent as usize;
            if fits(self.load[a] + o.load, self.problem.agents[a].capacity) {
                self.assign(j, Some(to));
                applied = true;
            }
        }
        applied
    }

    /// One pass of swap moves (two orders on different nodes trade nodes); true if any applied.
    fn swap_pass(&mut self, index: &[u32], m: usize) -> bool {
        let n = self.problem.n_orders();
        let state = &*self;
        let option_at = |j: usize, a: usize| match index[j * m + a] {
            u32::MAX => None,
            i => Some(i),
        };
        let mut swaps: Vec<(f64, usize, usize, u32, u32)> = (0..n)
            .into_par_iter()
            .with_min_len(64)
            .filter_map(|j| {
                let a = state.agent_of(j)?;
                let cj = state.cost_of(j)?;
                let lj = state.problem.options_of(j)[state.choice[j]? as usize].load;
                let mut best: Option<(f64, usize, usize, u32, u32)> = None;
                for k in j + 1..n {
                    let Some(b) = state.agent_of(k) else { continue };
                    if a == b {
                        continue;
                    }
                    let (Some(jb), Some(ka)) = (option_at(j, b), option_at(k, a)) else {
                        continue;
                    };
                    let (oj, ok) = (
                        state.problem.options_of(j)[jb as usize],
                        state.problem.options_of(k)[ka as usize],
                    );
                    let lk = state.problem.options_of(k)[state.choice[k].unwrap() as usize].load;
                    let gain = cj + state.cost_of(k).unwrap() - oj.cost - ok.cost;
                    if gain <= 1e-9 || best.is_some_and(|x| gain <= x.0) {
                        continue;
                    }
                    let caps = &state.problem.agents;
                    if fits(state.load[a] - lj + ok.load, caps[a].capacity)
                        && fits(state.load[b] - lk + oj.load, caps[b].capacity)
                    {
                        best = Some((gain, j, k, jb, ka));
                    }
                }
                best
            })
            .collect();
        swaps.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let mut applied = false;
        let mut touched = vec![false; n];
        for (_, j, k, jb, ka) in swaps {
            if touched[j] || touched[k] {
                continue; // Its gain was worked out against assignments that changed.
            }
            let (a, b) = (self.agent_of(j).unwrap(), self.agent_of(k).unwrap());
            let (oj, ok) = (
                self.problem.options_of(j)[jb as usize],
                self.problem.options_of(k)[ka as usize],
            );
            let lj = self.problem.options_of(j)[self.choice[j].unwrap() as usize].load;
            let lk = self.problem.options_of(k)[self.choice[k].unwrap() as usize].load;
            let caps = &self.problem.agents;
            if fits(self.load[a] - lj + ok.load, caps[a].capacity)
                && fits(self.load[b] - lk + oj.load, caps[b].capacity)
            {
                self.assign(j, None);
                self.assign(k, Some(ka));
                self.assign(j, Some(jb));
                touched[j] = true;
                touched[k] = true;
                applied = true;
            }
        }
        applied
    }
}

impl State<'_> {
    fn by_agent(&self) -> Vec<Vec<usize>> {
        let mut by_agent = vec![Vec::new(); self.problem.agents.len()];
        for j in 0..self.problem.n_orders() {
            if let Some(a) = self.agent_of(j) {
                by_agent[a].push(j);
            }
        }
        by_agent
    }

    /// The best ejection for order `j` (assigned or not): `j` takes its option `to` on a node
    /// where it only fits once order `k` leaves that node for its option `k_to`. Returns
    /// (cost change, to, k, k_to); `k_to` may be `j`'s current node, which `j` frees.
    fn best_ejection(&self, j: usize, by_agent: &[Vec<usize>]) -> Option<(f64, u32, usize, u32)> {
        let p = self.problem;
        let here = self.agent_of(j);
        let (cj, lj) = match self.choice[j] {
            Some(c) => (p.options_of(j)[c as usize].cost, p.options_of(j)[c as usize].load),
            None => (0.0, 0.0),
        };
        let mut best: Option<(f64, u32, usize, u32)> = None;
        for (to, oj) in p.options_of(j).iter().enumerate() {
            let b = oj.agent as usize;
            let cap_b = p.agents[b].capacity;
            if Some(b) == here || fits(self.load[b] + oj.load, cap_b) {
                continue; // A plain shift, or not allowed.
            }
            for &k in &by_agent[b] {
                let ok_here = p.options_of(k)[self.choice[k].expect("on b") as usize];
                if !fits(self.load[b] - ok_here.load + oj.load, cap_b) {
                    continue;
                }
                for (k_to, ok) in p.options_of(k).iter().enumerate() {
                    let c = ok.agent as usize;
                    if c == b {
                        continue;
                    }
                    let freed = if Some(c) == here { lj } else { 0.0 };
                    if !fits(self.load[c] - freed + ok.load, p.agents[c].capacity) {
                        continue;
                    }
                    let change = oj.cost - cj + ok.cost - ok_here.cost;
                    if best.is_none_or(|x| change < x.0) {
                        best = Some((change, to as u32, k, k_to as u32));
                    }
                }
            }
        }
        best
    }

    /// Applies an ejection if the loads still allow it; true if applied.
    fn eject(&mut self, j: usize, to: u32, k: usize, k_to: u32) -> bool {
        let p = self.problem;
        let (oj, ok) = (p.options_of(j)[to as usize], p.options_of(k)[k_to as usize]);
        let (b, c) = (oj.agent as usize, ok.agent as usize);
        if self.agent_of(k) != Some(b) || self.agent_of(j) == Some(b) {
            return false;
        }
        let lk = p.options_of(k)[self.choice[k].expect("on b") as usize].load;
        let freed = match self.choice[j] {
            Some(cj) if p.options_of(j)[cj as usize].agent as usize == c => p.options_of(j)[cj as usize].load,
            _ => 0.0,
        };
        if !fits(self.load[b] - lk + oj.load, p.agents[b].capacity)
            || !fits(self.load[c] - freed + ok.load, p.agents[c].capacity)
        {
            return false;
        }
        self.assign(j, None);
        self.assign(k, Some(k_to));
        self.assign(j, Some(to));
        true
    }

    /// Places left-out orders by ejecting another order, the cheapest way first. False when
    /// `stop` cut it short (the plan is still feasible).
    fn insert_by_ejection(&mut self, stop: &(dyn Fn() -> bool + Sync)) -> bool {
        let mut tried = 0usize;
        for j in 0..self.problem.n_orders() {
            if self.choice[j].is_none() {
                if tried.is_multiple_of(STOP_EVERY) && stop() {
                    return false;
                }
                tried += 1;
                let by_agent = self.by_agent();
                if let Some((_, to, k, k_to)) = self.best_ejection(j, &by_agent) {
                    self.eject(j, to, k, k_to);
                }
            }
        }
        true
    }

    /// One pass of improving ejections, found in parallel, applied in order of gain.
    fn eject_pass(&mut self) -> bool {
        let by_agent = self.by_agent();
        let state = &*self;
        let mut moves: Vec<(f64, usize, u32, usize, u32)> = (0..self.problem.n_orders())
            .into_par_iter()
            .with_min_len(16)
            .filter_map(|j| {
                state.choice[j]?;
                let (change, to, k, k_to) = state.best_ejection(j, &by_agent)?;
                (change < -1e-9).then_some((change, j, to, k, k_to))
            })
            .collect();
        moves.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        let mut touched = vec![false; self.problem.n_orders()];
        let mut applied = false;
        for (_, j, to, k, k_to) in moves {
            if touched[j] || touched[k] {
                continue;
            }
            if self.eject(j, to, k, k_to) {
                touched[j] = true;
                touched[k] = true;
                applied = true;
            }
        }
        applied
    }
}

/// Ejection passes look at every (order, option, order on that node, option) chain: only for
/// problems this small (orders^2 x nodes), or once on the final plan.
const EJECT_WORK_MAX: usize = 20_000_000;

/// The final polish of the best plan may afford ejections on problems up to this size (orders^2
/// x nodes): every public GAP instance, not a million orders.
const POLISH_EJECT_WORK_MAX: usize = 1_000_000_000;

/// Improves the best plan once more, with ejection chains when the problem is small enough.
/// `stop` is asked between passes; the flag is true when it cut the polish short (the plan is
/// feasible and no worse either way).
pub fn polish(problem: &Problem, plan: &Plan, stop: &(dyn Fn() -> bool + Sync)) -> (Plan, bool) {
    let (n, m) = (problem.n_orders(), problem.agents.len());
    let eject = n.saturating_mul(n).saturating_mul(m) <= POLISH_EJECT_WORK_MAX;
    let mut state = State::from_choice(problem, plan.choice.clone());
    let finished = (!eject || state.insert_by_ejection(stop)) && local_search(&mut state, eject, stop);
    (state.finish(), !finished)
}

/// Kicks of the iterated local search at most.
const KICKS_MAX: usize = 3_000;
/// Work per kick, counted as orders^2 x nodes (an ejection pass), summed over all kicks.
const KICK_WORK_MAX: usize = 1_000_000_000;

/// Iterated local search for small problems: move a few orders to other options (chosen by a
/// fixed-seed generator, so the result is the same every run), improve, keep the result if it
/// is better. Escapes the local optima that shift, swap and ejection moves stop in. The flag is
/// true when `stop` cut the kicks short.
pub fn kick_and_polish(problem: &Problem, mut best: Plan, stop: &(dyn Fn() -> bool + Sync)) -> (Plan, bool) {
    use rand::{Rng, SeedableRng};
    let (n, m) = (problem.n_orders(), problem.agents.len());
    if n < 2 || best.unassigned > 0 {
        return (best, false);
    }
    let work = n.saturating_mul(n).saturating_mul(m).max(1);
    let kicks = KICKS_MAX.min(KICK_WORK_MAX / work);
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(0x0005_EED0_F6A9);
    for kick in 0..kicks {
        if kick.is_multiple_of(STOP_EVERY) && stop() {
            return (best, true);
        }
        let mut state = State::from_choice(problem, best.choice.clone());
        for _ in 0..rng.random_range(2..=4usize) {
            let j = rng.random_range(0..n);
            let options = problem.options_of(j);
            let to = rng.random_range(0..options.len()) as u32;
            let o = options[to as usize];
            let a = o.agent as usize;
            if state.agent_of(j) != Some(a) && fits(state.load[a] + o.load, problem.agents[a].capacity) {
                state.assign(j, Some(to));
            } else {
                let by_agent = state.by_agent();
                if let Some((_, to, k, k_to)) = state.best_ejection(j, &by_agent) {
                    state.eject(j, to, k, k_to);
                }
            }
        }
        let finished = local_search(&mut state, true, stop);
        let plan = state.finish();
        if plan.better_than(&best) {
            best = plan;
        }
        if !finished {
            return (best, true);
        }
    }
    (best, false)
}

impl<'a> State<'a> {
    fn from_choice(problem: &'a Problem, choice: Vec<Option<u32>>) -> Self {
        let mut state = State {
            problem,
            choice,
            load: vec![0.0; problem.agents.len()],
        };
        for j in 0..problem.n_orders() {
            if let Some(c) = state.choice[j] {
                let o = problem.options_of(j)[c as usize];
                state.load[o.agent as usize] += o.load;
            }
        }
        state
    }

    fn finish(self) -> Plan {
        let mut cost = 0.0;
        let mut unassigned = 0;
        for j in 0..self.problem.n_orders() {
            match self.cost_of(j) {
                Some(c) => cost += c,
                None => unassigned += 1,
            }
        }
        Plan {
            choice: self.choice,
            cost,
            unassigned,
        }
    }
}

/// Shift, swap (small problems) and, with `eject`, ejection passes until none improves. `stop`
/// is asked before each pass; false when it cut the search short.
fn local_search(state: &mut State<'_>, eject: bool, stop: &(dyn Fn() -> bool + Sync)) -> bool {
    let (n, m) = (state.problem.n_orders(), state.problem.agents.len());
    // Swaps cost orders^2 a pass: only for problems small enough, with the option index by
    // (order, node) that they need.
    let swaps = n.saturating_mul(n) <= SWAP_PAIRS_MAX && n.saturating_mul(m) <= SWAP_CELLS_MAX;
    let index: Option<Vec<u32>> = swaps.then(|| {
        let mut index = vec![u32::MAX; n * m];
        for j in 0..n {
            for (i, o) in state.problem.options_of(j).iter().enumerate() {
                index[j * m + o.agent as usize] = i as u32;
            }
        }
        index
    });
    for _ in 0..PASSES_MAX {
        if stop() {
            return false;
        }
        let shifted = state.shift_pass();
        let swapped = index.as_ref().is_some_and(|ix| state.swap_pass(ix, m));
        let ejected = !shifted && !swapped && eject && state.eject_pass();
        if !(shifted || swapped || ejected) {
            break;
        }
    }
    true
}

/// A feasible plan built from a relaxed choice (`u32::MAX`: none) and improved.
pub fn plan_from(problem: &Problem, relaxed: &[u32]) -> Plan {
    let choice = relaxed.iter().map(|&c| (c != u32::MAX).then_some(c)).collect();
    let mut state = State::from_choice(problem, choice);
    state.repair();
    state.insert_left_out();
    let (n, m) = (problem.n_orders(), problem.agents.len());
    let eject = n.saturating_mul(n).saturating_mul(m) <= EJECT_WORK_MAX;
    // Not stopped: a plan is built in one go (the solve asks `stop` between iterations).
    let never = || false;
    if eject {
        state.insert_by_ejection(&never);
    }
    local_search(&mut state, eject, &never);
    state.insert_left_out();
    state.finish()
}

/// The repair step alone, from a relaxed choice (`u32::MAX`: none): the tests compare it with
/// the one-move-at-a-time rule it implements.
#[cfg(test)]
pub(super) fn repaired(problem: &Problem, relaxed: &[u32]) -> Vec<Option<u32>> {
    let choice = relaxed.iter().map(|&c| (c != u32::MAX).then_some(c)).collect();
    let mut state = State::from_choice(problem, choice);
    state.repair();
    state.choice
}
