//! The batch re-routing optimiser's core: assign every order to one of its options (a node, at a
//! cost, using some of the node's capacity), no node over capacity, at the least total cost,
//! with a certificate: a lower bound on the optimum and the gap between the two.
//!
//! This is the generalised assignment problem (GAP). Planners bring it as a cost matrix (the
//! explicit form, [`explicit`]); re-routing open allocations builds it from the network.
//!
//! - [`bound`]: the Lagrangian relaxation of the capacities, maximised by subgradient steps; its
//!   value at any multipliers is a lower bound on the optimum.
//! - [`improve`]: from the relaxation's assignment at the current multipliers, a feasible plan
//!   (repair over-full nodes, then shift, swap and ejection moves); the best plan seen is
//!   polished with ejections and, for small problems, an iterated local search (seeded kicks).
//! - `exact`: problems of a few orders are settled by searching every assignment, so a tiny
//!   problem's answer is its optimum, proven (bound = cost).
//!
//! Every step that looks at all orders runs on rayon's threads; each order's part is computed
//! independently and combined in order index order, so the same problem gives the same plan,
//! bound and gap on any number of threads. The engine reads no clock: the caller's `stop` says
//! when time is up (a stopped solve depends on when that was, and says so in `stopped`).

pub mod bound;
mod exact;
pub mod explicit;
pub mod improve;

/// A node's capacity, in the units its options' loads use.
#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    pub capacity: f64,
}

/// One way to serve an order: which node, at what cost, using how much of its capacity.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct OrderOption {
    pub agent: u32,
    pub cost: f64,
    pub load: f64,
}

/// An assignment problem, its options stored flat: order `j`'s options are
/// `options[starts[j]..starts[j + 1]]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Problem {
    pub agents: Vec<Agent>,
    pub starts: Vec<usize>,
    pub options: Vec<OrderOption>,
}

impl Problem {
    pub fn n_orders(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    pub fn options_of(&self, order: usize) -> &[OrderOption] {
        &self.options[self.starts[order]..self.starts[order + 1]]
    }

    /// Appends an order with these options.
    pub fn push_order(&mut self, options: impl IntoIterator<Item = OrderOption>) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        self.options.extend(options);
        self.starts.push(self.options.len());
    }
}

/// How long and how hard to work.
#[derive(Clone, Debug)]
pub struct SolveOptions {
    /// Subgradient iterations at most (each one a pass over every order).
    pub iterations_max: u32,
    /// Build a plan from the relaxation every this many iterations.
    pub improve_every: u32,
    /// Stop once the best plan is within this fraction of the bound (0: only when proven).
    pub gap_target: f64,
}

impl SolveOptions {
    /// The defaults, with more iterations and a plan from every one for small problems (they
    /// cost little, and a small problem's plans are where the relaxation's detail matters).
    pub fn for_problem(problem: &Problem) -> Self {
        if problem.options.len() <= SMALL_OPTIONS_MAX {
            Self {
                iterations_max: 3_000,
                improve_every: 1,
                gap_target: 0.0,
            }
        } else if problem.options.len() > LARGE_OPTIONS_MIN {
            // A pass over millions of options is dear: stop at a gap far below anything a
            // planner would notice.
            Self {
                gap_target: 1e-4,
                ..Self::default()
            }
        } else {
            Self::default()
        }
    }
}

/// Problems with at most this many options in all are small (a few hundred orders).
const SMALL_OPTIONS_MAX: usize = 5_000;
/// Problems with more options than this are large (hundreds of thousands of orders).
const LARGE_OPTIONS_MIN: usize = 1_000_000;

impl Default for SolveOptions {
    fn default() -> Self {
        Self {
            iterations_max: 400,
            improve_every: 10,
            gap_target: 0.0,
        }
    }
}

/// Where a solve stands, for a progress display.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Progress {
    pub iteration: u32,
    pub iterations_max: u32,
    pub best_cost: Option<f64>,
    pub lower_bound: f64,
}

/// A plan and its certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    /// Per order, the index of its chosen option within its own options, or `None` when no plan
    /// found room for it.
    pub choice: Vec<Option<u32>>,
    /// Total cost of the assigned orders.
    pub cost: f64,
    /// No plan that serves every order costs less.
    pub lower_bound: f64,
    /// (cost - bound) / cost, when every order is assigned.
    pub gap: Option<f64>,
    pub iterations: u32,
    /// The caller stopped the solve before it finished its iterations.
    pub stopped: bool,
}

impl Solution {
    pub fn unassigned(&self) -> usize {
        self.choice.iter().filter(|c| c.is_none()).count()
    }
}

/// Solves `problem`: the best plan found, the best lower bound, the gap. `stop` is asked once an
/// iteration, and every so often in the final polish and searches; `progress` hears about each
/// iteration.
pub fn solve(
    problem: &Problem,
    options: &SolveOptions,
    stop: &(dyn Fn() -> bool + Sync),
    progress: &mut dyn FnMut(Progress),
) -> Solution {
    let n = problem.n_orders();
    let mut relaxation = bound::Relaxation::new(problem);
    let mut best: Option<improve::Plan> = None;
    let mut iteration = 0;
    let mut stopped = false;
    // The cost of a relaxed choice that fit every node with complete slackness, every order
    // assigned: the optimum itself.
    let mut optimum: Option<f64> = None;
    while iteration < options.iterations_max {
        if stop() {
            stopped = true;
            break;
        }
        let step = relaxation.evaluate(problem);
        let built = iteration % options.improve_every.max(1) == 0;
        if built {
            let plan = improve::plan_from(problem, &step.choice);
            if best.as_ref().is_none_or(|b| plan.better_than(b)) {
                best = Some(plan);
            }
        }
        iteration += 1;
        let upper = best.as_ref().filter(|b| b.unassigned == 0).map(|b| b.cost);
        progress(Progress {
            iteration,
            iterations_max: options.iterations_max,
            best_cost: upper,
            lower_bound: relaxation.best_bound,
        });
        let close = options.gap_target.max(1e-9);
        if upper.is_some_and(|u| u - relaxation.best_bound <= close * u.abs().max(1.0)) {
            break; // Proven optimal, or as close as asked.
        }
        match relaxation.step(&step, upper) {
            bound::Step::Moved => {}
            bound::Step::Small => break, // The steps became too small to move the bound.
            bound::Step::Feasible => {
                // The relaxed choice fits: a plan from it (repair has nothing to do) is optimal
                // when it assigns every order.
                if !built {
                    let plan = improve::plan_from(problem, &step.choice);
                    if best.as_ref().is_none_or(|b| plan.better_than(b)) {
                        best = Some(plan);
                    }
                }
                if step.choice.iter().all(|&c| c != u32::MAX) {
                    optimum = Some(relaxed_cost(problem, &step.choice));
                }
                break;
            }
        }
    }
    let mut plan = best.unwrap_or_else(|| improve::plan_from(problem, &relaxation.evaluate(problem).choice));
    let mut lower_bound = if n == 0 { 0.0 } else { relaxation.best_bound };
    if let Some(optimum) = optimum
        && plan.unassigned == 0
    {
        // The optimum is known: no plan costs less (up to rounding in the sums).
        lower_bound = lower_bound.max(optimum.min(plan.cost));
    }
    let proven = |plan: &improve::Plan, bound: f64| {
        plan.unassigned == 0 && plan.cost - bound <= 1e-9 * plan.cost.abs().max(1.0)
    };
    if !stopped {
        let mut cut;
        (plan, cut) = improve::polish(problem, &plan, stop);
        stopped |= cut;
        // Tiny problems are settled exactly below; proven plans need nothing more.
        if !stopped
            && problem.options.len() <= SMALL_OPTIONS_MAX
            && n > exact::ORDERS_MAX
            && !proven(&plan, lower_bound)
        {
            (plan, cut) = improve::kick_and_polish(problem, plan, stop);
            stopped |= cut;
        }
    }
    if n <= exact::ORDERS_MAX && !stopped {
        // Small enough to settle: search every assignment, cut by the plan found so far.
        match exact::solve(problem, &plan, stop) {
            exact::Exact::Done(Some(exact)) => {
                lower_bound = exact.cost;
                plan = exact;
            }
            exact::Exact::Done(None) | exact::Exact::Budget => {}
            exact::Exact::Stopped => stopped = true,
        }
    }
    let gap = gap_of(problem, &plan, lower_bound);
    Solution {
        choice: plan.choice,
        cost: plan.cost,
        lower_bound,
        gap,
        iterations: iteration,
        stopped,
    }
}

/// The cost of a relaxed choice in which every order has an option.
fn relaxed_cost(problem: &Problem, choice: &[u32]) -> f64 {
    choice
        .iter()
        .enumerate()
        .map(|(j, &c)| problem.options_of(j)[c as usize].cost)
        .sum()
}

/// `(cost - bound) / |cost|`, at least 0, when every order is assigned and a relative gap means
/// something: not when some option costs less than 0 (costs of both signs can cancel out, and
/// the ratio then says nothing about how far from the optimum the plan is), nor when the plan's
/// cost is 0 or negligible against the problem's cost scale (the sum over orders of their
/// largest absolute option cost).
fn gap_of(problem: &Problem, plan: &improve::Plan, lower_bound: f64) -> Option<f64> {
    let costs = (0..problem.n_orders()).map(|j| problem.options_of(j).iter().map(|o| o.cost));
    relative_gap(plan.cost, lower_bound, plan.unassigned, costs)
}

/// (cost - bound) / cost, or `None` when an order is left out, a cost is negative, or the cost
/// is 0 or negligible against the problem's scale (the sum over orders of their dearest option
/// cost, from `costs`, one iterator per order): a relative gap of nothing says nothing.
pub(crate) fn relative_gap<O: Iterator<Item = f64>>(
    cost: f64,
    lower_bound: f64,
    unassigned: usize,
    costs: impl Iterator<Item = O>,
) -> Option<f64> {
    if unassigned > 0 {
        return None;
    }
    let mut scale = 0.0;
    for order in costs {
        let mut dearest = 0.0f64;
        for c in order {
            if c < 0.0 {
                return None;
            }
            dearest = dearest.max(c);
        }
        scale += dearest;
    }
    if cost.abs() <= GAP_COST_NEGLIGIBLE * scale || cost == 0.0 {
        return None;
    }
    Some(((cost - lower_bound) / cost.abs()).max(0.0))
}

/// A plan's cost at most this fraction of the problem's cost scale counts as 0 (see `gap_of`).
const GAP_COST_NEGLIGIBLE: f64 = 1e-9;

#[cfg(test)]
mod tests;
