//! Exact search for tiny problems: depth-first over orders (fewest options first), each order's
//! options cheapest first (sorted once, before the search), cut when the cost so far plus every
//! remaining order's cheapest option cannot beat the incumbent. Returns the optimum when the
//! search finishes within its budget and before `stop`.

use super::Problem;
use super::improve::Plan;

/// Problems with at most this many orders are searched exhaustively.
pub const ORDERS_MAX: usize = 16;
/// Branches at most: a tiny problem needs far fewer; this only bounds a pathological one.
const BRANCHES_MAX: u64 = 5_000_000;
/// Branches between two looks at `stop`.
const STOP_EVERY: u64 = 4_096;

/// How the search ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Exact {
    /// It finished: the optimal plan that assigns every order, if one exists and beats (or
    /// proves) the incumbent.
    Done(Option<Plan>),
    /// It ran out of branches: nothing proven.
    Budget,
    /// `stop` said time is up: nothing proven.
    Stopped,
}

struct Search<'a> {
    problem: &'a Problem,
    order: Vec<usize>,
    /// Per order, its options as (index, cost), cheapest first (ties by index); laid out like
    /// `problem.options`.
    sorted: Vec<(u32, f64)>,
    /// Cheapest option cost of the orders from depth k on.
    rest: Vec<f64>,
    load: Vec<f64>,
    choice: Vec<Option<u32>>,
    best: Option<(f64, Vec<Option<u32>>)>,
    branches: u64,
    stop: &'a (dyn Fn() -> bool + Sync),
    stopped: bool,
}

impl Search<'_> {
    fn go(&mut self, depth: usize, cost: f64) {
        if self.stopped || self.branches > BRANCHES_MAX {
            return;
        }
        self.branches += 1;
        if self.branches > BRANCHES_MAX {
            return;
        }
        if self.branches.is_multiple_of(STOP_EVERY) && (self.stop)() {
            self.stopped = true;
            return;
        }
        if self
            .best
            .as_ref()
            .is_some_and(|b| cost + self.rest[depth] >= b.0 - 1e-9)
        {
            return;
        }
        if depth == self.order.len() {
            self.best = Some((cost, self.choice.clone()));
            return;
        }
        let j = self.order[depth];
        let problem = self.problem;
        for k in problem.starts[j]..problem.starts[j + 1] {
            let (i, c) = self.sorted[k];
            let o = problem.options_of(j)[i as usize];
            let a = o.agent as usize;
            let cap = problem.agents[a].capacity;
            if self.load[a] + o.load > cap + 1e-9 * cap.abs().max(1.0) {
                continue;
            }
            self.load[a] += o.load;
            self.choice[j] = Some(i);
            self.go(depth + 1, cost + c);
            self.choice[j] = None;
            self.load[a] -= o.load;
        }
    }
}

/// Searches every assignment, cut by `incumbent` (when it is complete). `stop` is asked every few
/// thousand branches.
pub fn solve(problem: &Problem, incumbent: &Plan, stop: &(dyn Fn() -> bool + Sync)) -> Exact {
    let n = problem.n_orders();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&j| (problem.options_of(j).len(), j));
    let mut sorted: Vec<(u32, f64)> = Vec::with_capacity(problem.options.len());
    for j in 0..n {
        let start = sorted.len();
        sorted.extend(
            problem
                .options_of(j)
                .iter()
                .enumerate()
                .map(|(i, o)| (i as u32, o.cost)),
        );
        sorted[start..].sort_by(|x, y| x.1.total_cmp(&y.1).then(x.0.cmp(&y.0)));
    }
    let mut rest = vec![0.0; n + 1];
    for d in (0..n).rev() {
        let cheapest = problem
            .options_of(order[d])
            .iter()
            .map(|o| o.cost)
            .fold(f64::INFINITY, f64::min);
        rest[d] = rest[d + 1] + cheapest;
    }
    let mut s = Search {
        problem,
        order,
        sorted,
        rest,
        load: vec![0.0; problem.agents.len()],
        choice: vec![None; n],
        // Start from the incumbent only if it is complete: a search must beat or equal it.
        best: (incumbent.unassigned == 0).then(|| {
            (
                incumbent.cost + 1e-9 * incumbent.cost.abs().max(1.0),
                incumbent.choice.clone(),
            )
        }),
        branches: 0,
        stop,
        stopped: false,
    };
    s.go(0, 0.0);
    if s.stopped {
        return Exact::Stopped;
    }
    if s.branches > BRANCHES_MAX {
        return Exact::Budget;
    }
    let Some((_, choice)) = s.best else {
        return Exact::Done(None);
    };
    let cost = (0..n)
        .map(|j| problem.options_of(j)[choice[j].expect("complete") as usize].cost)
        .sum();
    Exact::Done(Some(Plan {
        choice,
        cost,
        unassigned: 0,
    }))
}
