//! The lower bound: relax the capacities with a multiplier (a price per unit of load) per node.
//! At prices `lambda`, every order simply takes its option with the least `cost + lambda * load`,
//! and `L(lambda) = sum of those minima - sum of lambda * capacity` is at most the optimum (a
//! feasible plan pays no more than its relaxed cost, and its loads fit the capacities). Subgradient
//! steps raise the prices of over-full nodes and lower those of slack ones (Polyak step sizes
//! towards the best plan's cost, halved when the bound stalls); the best `L` seen is the bound.

use rayon::prelude::*;

use super::Problem;

/// The multipliers and the best bound so far.
#[derive(Clone, Debug)]
pub struct Relaxation {
    pub lambda: Vec<f64>,
    pub best_bound: f64,
    /// Step-size factor (Polyak's theta).
    theta: f64,
    /// Iterations since the bound last improved.
    stall: u32,
}

/// The relaxation at the current multipliers.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// Per order, the option with the least relaxed cost (`u32::MAX`: the order has none).
    pub choice: Vec<u32>,
    pub value: f64,
    /// Load minus capacity, per node.
    pub subgradient: Vec<f64>,
}

/// What a subgradient step did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The prices moved.
    Moved,
    /// The steps have become too small to move the bound.
    Small,
    /// The relaxed choice fits every node, and every priced node exactly: it is feasible, its
    /// cost equals the bound at these prices, so (when every order has an option) it is optimal.
    Feasible,
}

/// Iterations without a better bound before the step halves.
const STALL_MAX: u32 = 10;
/// Below this the steps no longer move the bound.
const THETA_MIN: f64 = 1e-4;

impl Relaxation {
    pub fn new(problem: &Problem) -> Self {
        Self {
            lambda: vec![0.0; problem.agents.len()],
            best_bound: f64::NEG_INFINITY,
            theta: 2.0,
            stall: 0,
        }
    }

    /// Each order's cheapest relaxed option (in parallel), and the bound at these prices.
    pub fn evaluate(&mut self, problem: &Problem) -> Evaluation {
        let lambda = &self.lambda;
        let picks: Vec<(u32, f64)> = (0..problem.n_orders())
            .into_par_iter()
            .with_min_len(1024)
            .map(|j| {
                let mut best = (u32::MAX, f64::INFINITY);
                for (i, o) in problem.options_of(j).iter().enumerate() {
                    let relaxed = o.cost + lambda[o.agent as usize] * o.load;
                    if relaxed < best.1 {
                        best = (i as u32, relaxed);
                    }
                }
                best
            })
            .collect();
        // Summed in order: the same value on any number of threads.
        let mut value = 0.0;
        let mut subgradient: Vec<f64> = problem.agents.iter().map(|a| -a.capacity).collect();
        for (j, &(pick, relaxed)) in picks.iter().enumerate() {
            if pick == u32::MAX {
                continue; // No option: it cannot be served, and bounds nothing.
            }
            value += relaxed;
            let o = &problem.options_of(j)[pick as usize];
            subgradient[o.agent as usize] += o.load;
        }
        for (a, l) in problem.agents.iter().zip(lambda) {
            value -= l * a.capacity;
        }
        if value > self.best_bound + 1e-9 * value.abs().max(1.0) {
            self.best_bound = value;
            self.stall = 0;
        } else {
            self.stall += 1;
        }
        Evaluation {
            choice: picks.into_iter().map(|p| p.0).collect(),
            value,
            subgradient,
        }
    }

    /// Moves the prices along the subgradient towards `upper` (the best plan's cost, if any).
    pub fn step(&mut self, at: &Evaluation, upper: Option<f64>) -> Step {
        if self.stall >= STALL_MAX {
            self.theta /= 2.0;
            self.stall = 0;
        }
        // A node with slack and price 0 cannot go lower: it does not steer the step.
        let norm: f64 = at
            .subgradient
            .iter()
            .zip(&self.lambda)
            .filter(|(g, l)| **g > 0.0 || **l > 0.0)
            .map(|(g, _)| g * g)
            .sum();
        if norm <= 0.0 {
            // No node is over-full, and every priced node is exactly full: complementary
            // slackness holds, so the relaxed choice costs exactly the bound.
            return Step::Feasible;
        }
        if self.theta < THETA_MIN {
            return Step::Small;
        }
        let target = upper.unwrap_or(at.value + 0.05 * at.value.abs().max(1.0));
        let t = self.theta * (target - at.value).max(1e-9 * at.value.abs().max(1.0)) / norm;
        for (l, g) in self.lambda.iter_mut().zip(&at.subgradient) {
            *l = (*l + t * g).max(0.0);
        }
        Step::Moved
    }
}
