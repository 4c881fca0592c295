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
/// Swaps look at every pair of orders: only for problems this small (orders x nodes).
const SWAP_CELLS_MAX: usize = 4_000_000;

struct State<'a> {
    problem: &'a Problem,
    choice: Vec<Option<u32>>,
    load: Vec<f64>,
}

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

    fn repair(&mut self) {
        let problem = self.problem;
        let mut by_agent: Vec<Vec<usize>> = vec![Vec::new(); problem.agents.len()];
        for j in 0..problem.n_orders() {
            if let Some(a) = self.agent_of(j) {
                by_agent[a].push(j);
            }
        }
        for (a, mut on_a) in by_agent.into_iter().enumerate() {
            if fits(self.load[a], problem.agents[a].capacity) {
                continue;
            }
            while !fits(self.load[a], problem.agents[a].capacity) {
                // The move that costs least per unit of load it frees.
                let pick = on_a
                    .iter()
                    .enumerate()
                    .filter_map(|(k, &j)| {
                        let (to, extra) = self.best_move(j)?;
                        let load = problem.options_of(j)[self.choice[j]? as usize].load.max(1e-12);
                        Some((extra / load, k, to))
                    })
                    .min_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
                match pick {
                    Some((_, k, to)) => {
                        let j = on_a.swap_remove(k);
                        self.assign(j, Some(to));
                    }
                    None => {
                        // Nothing can go elsewhere: leave out the order that frees the most.
                        let Some((k, _)) = on_a.iter().enumerate().max_by(|x, y| {
                            let load =
                                |j: usize| problem.options_of(j)[self.choice[j].unwrap() as usize].load;
                            load(*x.1).total_cmp(&load(*y.1)).then(y.0.cmp(&x.0))
                        }) else {
                            break;
                        };
                        let j = on_a.swap_remove(k);
                        self.assign(j, None);
                    }
                }
            }
        }
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

/// A feasible plan built from a relaxed choice (`u32::MAX`: none) and improved.
pub fn plan_from(problem: &Problem, relaxed: &[u32]) -> Plan {
    let mut state = State {
        problem,
        choice: relaxed.iter().map(|&c| (c != u32::MAX).then_some(c)).collect(),
        load: vec![0.0; problem.agents.len()],
    };
    for j in 0..problem.n_orders() {
        if let Some(c) = state.choice[j] {
            let o = problem.options_of(j)[c as usize];
            state.load[o.agent as usize] += o.load;
        }
    }
    state.repair();
    state.insert_left_out();
    let m = problem.agents.len();
    let n = problem.n_orders();
    // Option index by (order, node), for swaps on problems small enough to afford the table.
    let index: Option<Vec<u32>> = (n.saturating_mul(m) <= SWAP_CELLS_MAX).then(|| {
        let mut index = vec![u32::MAX; n * m];
        for j in 0..n {
            for (i, o) in problem.options_of(j).iter().enumerate() {
                index[j * m + o.agent as usize] = i as u32;
            }
        }
        index
    });
    for _ in 0..PASSES_MAX {
        let shifted = state.shift_pass();
        let swapped = index.as_ref().is_some_and(|ix| state.swap_pass(ix, m));
        if !shifted && !swapped {
            break;
        }
    }
    state.insert_left_out();
    let mut cost = 0.0;
    let mut unassigned = 0;
    for j in 0..n {
        match state.cost_of(j) {
            Some(c) => cost += c,
            None => unassigned += 1,
        }
    }
    Plan {
        choice: state.choice,
        cost,
        unassigned,
    }
}
