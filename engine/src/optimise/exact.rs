//! Exact search for tiny problems: depth-first over orders (fewest options first), each order's
//! options cheapest first, cut when the cost so far plus every remaining order's cheapest option
//! cannot beat the incumbent. Returns the optimum when the search finishes within its budget.

use super::Problem;
use super::improve::Plan;

/// Problems with at most this many orders are searched exhaustively.
pub const ORDERS_MAX: usize = 16;
/// Branches at most: a tiny problem needs far fewer; this only bounds a pathological one.
const BRANCHES_MAX: u64 = 5_000_000;

struct Search<'a> {
    problem: &'a Problem,
    order: Vec<usize>,
    /// Cheapest option cost of the orders from depth k on.
    rest: Vec<f64>,
    load: Vec<f64>,
    choice: Vec<Option<u32>>,
    best: Option<(f64, Vec<Option<u32>>)>,
    branches: u64,
}

impl Search<'_> {
    fn go(&mut self, depth: usize, cost: f64) {
        self.branches += 1;
        if self.branches > BRANCHES_MAX {
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
        let mut options: Vec<(usize, f64)> = problem
            .options_of(j)
            .iter()
            .enumerate()
            .map(|(i, o)| (i, o.cost))
            .collect();
        options.sort_by(|x, y| x.1.total_cmp(&y.1).then(x.0.cmp(&y.0)));
        for (i, c) in options {
            let o = problem.options_of(j)[i];
            let a = o.agent as usize;
            let cap = problem.agents[a].capacity;
            if self.load[a] + o.load > cap + 1e-9 * cap.abs().max(1.0) {
                continue;
            }
            self.load[a] += o.load;
            self.choice[j] = Some(i as u32);
            self.go(depth + 1, cost + c);
            self.choice[j] = None;
            self.load[a] -= o.load;
        }
    }
}

/// The optimal plan that assigns every order, if the search finished and one exists and beats
/// (or proves) `incumbent`.
pub fn solve(problem: &Problem, incumbent: &Plan) -> Option<Plan> {
    let n = problem.n_orders();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&j| (problem.options_of(j).len(), j));
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
    };
    s.go(0, 0.0);
    if s.branches > BRANCHES_MAX {
        return None;
    }
    let (_, choice) = s.best?;
    let cost = (0..n)
        .map(|j| problem.options_of(j)[choice[j].expect("complete") as usize].cost)
        .sum();
    Some(Plan {
        choice,
        cost,
        unassigned: 0,
    })
}
