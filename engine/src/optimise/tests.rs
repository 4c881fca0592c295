//! The optimiser against brute force on tiny problems, its bound, its plans' feasibility, its
//! independence from the thread count, and the explicit form's checks.

use proptest::prelude::*;

use super::*;

fn solve_quietly(problem: &Problem) -> Solution {
    solve(problem, &SolveOptions::default(), &|| false, &mut |_| {})
}

/// Loads per node of a solution; panics if an order's choice is not one of its options.
fn loads(problem: &Problem, s: &Solution) -> Vec<f64> {
    let mut load = vec![0.0; problem.agents.len()];
    for (j, c) in s.choice.iter().enumerate() {
        if let Some(c) = c {
            let o = problem.options_of(j)[*c as usize];
            load[o.agent as usize] += o.load;
        }
    }
    load
}

/// The optimum over every assignment that serves every order, if any.
fn brute_force(problem: &Problem) -> Option<f64> {
    let n = problem.n_orders();
    let mut best: Option<f64> = None;
    let mut choice = vec![0usize; n];
    loop {
        let mut load = vec![0.0; problem.agents.len()];
        let mut cost = 0.0;
        for (j, &c) in choice.iter().enumerate() {
            let o = problem.options_of(j)[c];
            load[o.agent as usize] += o.load;
            cost += o.cost;
        }
        if load.iter().zip(&problem.agents).all(|(l, a)| *l <= a.capacity) && best.is_none_or(|b| cost < b) {
            best = Some(cost);
        }
        // Next assignment (odometer).
        let mut j = 0;
        loop {
            if j == n {
                return best;
            }
            choice[j] += 1;
            if choice[j] < problem.options_of(j).len() {
                break;
            }
            choice[j] = 0;
            j += 1;
        }
    }
}

fn problem() -> impl Strategy<Value = Problem> {
    (2usize..=4, 1usize..=7).prop_flat_map(|(m, n)| {
        (
            prop::collection::vec(0u32..20, m),
            prop::collection::vec(prop::collection::vec((any::<bool>(), 0u32..30, 1u32..9), m), n),
        )
            .prop_map(move |(caps, orders)| {
                let mut p = Problem {
                    agents: caps
                        .iter()
                        .map(|&c| Agent {
                            capacity: f64::from(c),
                        })
                        .collect(),
                    ..Problem::default()
                };
                for row in orders {
                    let mut options: Vec<OrderOption> = row
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.0)
                        .map(|(a, &(_, cost, load))| OrderOption {
                            agent: a as u32,
                            cost: f64::from(cost),
                            load: f64::from(load),
                        })
                        .collect();
                    if options.is_empty() {
                        let (_, cost, load) = row[0];
                        options.push(OrderOption {
                            agent: 0,
                            cost: f64::from(cost),
                            load: f64::from(load),
                        });
                    }
                    p.push_order(options);
                }
                p
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Every plan fits the capacities; the bound never exceeds the optimum; a tiny problem's
    /// plan is its optimum whenever one exists.
    #[test]
    fn tiny_problems_match_brute_force(p in problem()) {
        let s = solve_quietly(&p);
        for (l, a) in loads(&p, &s).iter().zip(&p.agents) {
            prop_assert!(*l <= a.capacity + 1e-9, "load {} over capacity {}", l, a.capacity);
        }
        let cost: f64 = s.choice.iter().enumerate().filter_map(|(j, c)| c.map(|c| p.options_of(j)[c as usize].cost)).sum();
        prop_assert!((cost - s.cost).abs() < 1e-9);
        match brute_force(&p) {
            Some(optimum) => {
                prop_assert_eq!(s.unassigned(), 0);
                prop_assert!((s.cost - optimum).abs() < 1e-9, "cost {} but the optimum is {}", s.cost, optimum);
                prop_assert!(s.lower_bound <= optimum + 1e-9);
                prop_assert_eq!(s.gap, Some(0.0));
            }
            None => prop_assert!(s.unassigned() > 0, "no plan serves every order, yet {:?}", s.choice),
        }
    }
}

/// A problem too big to search exhaustively: 300 orders over 12 nodes, tight capacities.
fn medium(seed: u64) -> Problem {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let (m, n) = (12usize, 300usize);
    let mut p = Problem::default();
    let mut total = 0.0;
    for _ in 0..n {
        let mut options: Vec<OrderOption> = Vec::new();
        for a in 0..m {
            if rng.random_bool(0.7) {
                let load = f64::from(rng.random_range(5..25u32));
                let cost = f64::from(rng.random_range(10..50u32));
                options.push(OrderOption {
                    agent: a as u32,
                    cost,
                    load,
                });
            }
        }
        total += options.iter().map(|o| o.load).sum::<f64>() / options.len().max(1) as f64;
        p.push_order(options);
    }
    p.agents = (0..m)
        .map(|_| Agent {
            capacity: (total / m as f64 * 1.15).round(),
        })
        .collect();
    p
}

#[test]
fn bound_below_cost_and_the_same_plan_on_one_and_two_threads() {
    for seed in 0..3 {
        let p = medium(seed);
        let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
        let one = pool(1).install(|| solve_quietly(&p));
        let two = pool(2).install(|| solve_quietly(&p));
        assert_eq!(one, two, "seed {seed}");
        assert!(one.lower_bound <= one.cost + 1e-9);
        for (l, a) in loads(&p, &one).iter().zip(&p.agents) {
            assert!(*l <= a.capacity + 1e-9);
        }
        let gap = one.gap.expect("every order fits");
        assert!(gap < 0.05, "seed {seed}: gap {gap}");
    }
}

#[test]
fn a_stopped_solve_still_returns_a_feasible_plan() {
    let p = medium(7);
    let calls = std::sync::atomic::AtomicU32::new(0);
    let stop = || calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 3;
    let s = solve(&p, &SolveOptions::default(), &stop, &mut |_| {});
    assert!(s.stopped);
    assert_eq!(s.iterations, 3);
    for (l, a) in loads(&p, &s).iter().zip(&p.agents) {
        assert!(*l <= a.capacity + 1e-9);
    }
}

#[test]
fn the_explicit_form_reads_and_refuses_with_the_place() {
    let ok = r#"{"nodes": [{"id": "A", "capacity": 36}, {"id": "B", "capacity": 10}],
                 "orders": [{"id": "o1", "options": [{"node": "A", "cost": 17, "load": 8}, {"node": "B", "cost": 5, "load": 11}]},
                            {"id": "o2", "options": [{"node": "B", "cost": 3, "load": 10}]}]}"#;
    let e = explicit::parse(ok).unwrap();
    assert_eq!((e.problem.n_orders(), e.problem.agents.len()), (2, 2));
    let s = solve_quietly(&e.problem);
    // o1 does not fit on B (11 > 10): A; o2 on B.
    assert_eq!((s.cost, s.gap), (20.0, Some(0.0)));
    assert_eq!(
        explicit::plan_json(&e, &s),
        r#"{"assignments":[{"order":"o1","node":"A"},{"order":"o2","node":"B"}],"unassigned":[]}"#
    );
    let refused = |text: &str, at: &str, reason: &str| {
        let err = explicit::parse(text).unwrap_err();
        assert!(
            err.at.contains(at) && err.reason.contains(reason),
            "{text}: {err}"
        );
    };
    let one = |order: &str| format!(r#"{{"nodes": [{{"id": "A", "capacity": 5}}], "orders": [{order}]}}"#);
    refused("{\"nodes\": [", "line 1, column 11", "EOF");
    refused(
        r#"{"nodes": [], "orders": [], "extra": 1}"#,
        "line 1",
        "unknown field",
    );
    refused(
        r#"{"nodes": [{"id": "A", "capacity": -1}], "orders": []}"#,
        "nodes[0]",
        "capacity -1",
    );
    refused(
        r#"{"nodes": [{"id": "A", "capacity": 1}, {"id": "A", "capacity": 2}], "orders": []}"#,
        "nodes[1]",
        "twice",
    );
    refused(&one(r#"{"id": "o", "options": []}"#), "orders[0]", "no options");
    refused(
        &one(r#"{"id": "o", "options": [{"node": "Z", "cost": 1, "load": 1}]}"#),
        "orders[0].options[0]",
        "unknown node \"Z\"",
    );
    refused(
        &one(r#"{"id": "o", "options": [{"node": "A", "cost": 1, "load": -2}]}"#),
        "orders[0].options[0]",
        "load -2",
    );
    refused(
        &one(
            r#"{"id": "o", "options": [{"node": "A", "cost": 1, "load": 1}, {"node": "A", "cost": 2, "load": 1}]}"#,
        ),
        "orders[0].options[1]",
        "listed twice",
    );
    refused(
        &one(
            r#"{"id": "o", "options": [{"node": "A", "cost": 1, "load": 1}]}, {"id": "o", "options": [{"node": "A", "cost": 1, "load": 1}]}"#,
        ),
        "orders[1]",
        "again",
    );
    // JSON has no NaN or infinity literals, and numbers beyond f64 are refused by the parser.
    refused(
        &one(r#"{"id": "o", "options": [{"node": "A", "cost": 1e999, "load": 1}]}"#),
        "line 1",
        "number out of range",
    );
}
