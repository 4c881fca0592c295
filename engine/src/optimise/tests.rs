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
                // No relative gap for a plan that costs nothing.
                prop_assert_eq!(s.gap, (s.cost != 0.0).then_some(0.0));
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
    // Magnitudes beyond 1e15: sums of them lose the precision the bound and the gap need.
    refused(
        &one(r#"{"id": "o", "options": [{"node": "A", "cost": -2e15, "load": 1}]}"#),
        "orders[0].options[0]",
        "cost -2000000000000000 (at most 1e15 in magnitude)",
    );
    refused(
        &one(r#"{"id": "o", "options": [{"node": "A", "cost": 1, "load": 1e16}]}"#),
        "orders[0].options[0]",
        "load 10000000000000000 (at most 1e15)",
    );
    refused(
        r#"{"nodes": [{"id": "A", "capacity": 1e300}], "orders": []}"#,
        "nodes[0]",
        "(at most 1e15)",
    );
    // A node listed once by each of two orders is fine; twice by one order, even apart, is not.
    let two = r#"{"nodes": [{"id": "A", "capacity": 5}, {"id": "B", "capacity": 5}], "orders": [
        {"id": "o1", "options": [{"node": "A", "cost": 1, "load": 1}, {"node": "B", "cost": 1, "load": 1}]},
        {"id": "o2", "options": [{"node": "B", "cost": 1, "load": 1}, {"node": "A", "cost": 1, "load": 1}]}]}"#;
    assert!(explicit::parse(two).is_ok());
    let again = r#"{"nodes": [{"id": "A", "capacity": 5}, {"id": "B", "capacity": 5}], "orders": [
        {"id": "o1", "options": [{"node": "A", "cost": 1, "load": 1}]},
        {"id": "o2", "options": [{"node": "B", "cost": 1, "load": 1}, {"node": "A", "cost": 1, "load": 1},
                                 {"node": "B", "cost": 2, "load": 1}]}]}"#;
    refused(again, "orders[1].options[2]", "node \"B\" is listed twice");
    // JSON has no NaN or infinity literals, and numbers beyond f64 are refused by the parser.
    refused(
        &one(r#"{"id": "o", "options": [{"node": "A", "cost": 1e999, "load": 1}]}"#),
        "line 1",
        "number out of range",
    );
}

/// The repair rule, one move at a time: while the node is over-full, the move that costs least
/// per unit of load freed (ties by order index) among every order still on it, each priced
/// against the loads as they are now; when none is left, the order that frees the most load
/// (ties by order index) leaves the plan.
fn repair_reference(p: &Problem, relaxed: &[u32]) -> Vec<Option<u32>> {
    let fits = |load: f64, cap: f64| load <= cap + 1e-9 * cap.abs().max(1.0);
    let mut choice: Vec<Option<u32>> = relaxed.iter().map(|&c| (c != u32::MAX).then_some(c)).collect();
    let mut load = vec![0.0; p.agents.len()];
    let option = |j: usize, c: u32| p.options_of(j)[c as usize];
    for (j, c) in choice.iter().enumerate() {
        if let Some(c) = c {
            load[option(j, *c).agent as usize] += option(j, *c).load;
        }
    }
    for a in 0..p.agents.len() {
        let on_a =
            |choice: &[Option<u32>], j: usize| choice[j].is_some_and(|c| option(j, c).agent as usize == a);
        while !fits(load[a], p.agents[a].capacity) {
            let mut pick: Option<(f64, usize, u32)> = None;
            for j in (0..p.n_orders()).filter(|&j| on_a(&choice, j)) {
                let here = option(j, choice[j].unwrap());
                let mut best: Option<(u32, f64)> = None;
                for (i, o) in p.options_of(j).iter().enumerate() {
                    let b = o.agent as usize;
                    if b == a || !fits(load[b] + o.load, p.agents[b].capacity) {
                        continue;
                    }
                    let extra = o.cost - here.cost;
                    if best.is_none_or(|x| extra < x.1) {
                        best = Some((i as u32, extra));
                    }
                }
                if let Some((to, extra)) = best {
                    let per_load = extra / here.load.max(1e-12);
                    if pick.is_none_or(|x| per_load < x.0) {
                        pick = Some((per_load, j, to));
                    }
                }
            }
            let (j, to) = match pick {
                Some((_, j, to)) => (j, Some(to)),
                None => {
                    let j = (0..p.n_orders())
                        .filter(|&j| on_a(&choice, j))
                        .fold(None, |acc: Option<usize>, j| match acc {
                            Some(k)
                                if option(k, choice[k].unwrap()).load
                                    >= option(j, choice[j].unwrap()).load =>
                            {
                                Some(k)
                            }
                            _ => Some(j),
                        })
                        .expect("an over-full node has orders");
                    (j, None)
                }
            };
            let here = option(j, choice[j].unwrap());
            load[a] -= here.load;
            if let Some(to) = to {
                load[option(j, to).agent as usize] += option(j, to).load;
            }
            choice[j] = to;
        }
    }
    choice
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The repair (priced once, re-priced only when a move's target filled up) makes the same
    /// moves as re-pricing every order after every move.
    #[test]
    fn repair_matches_the_one_move_at_a_time_rule(
        (p, picks) in (2usize..=5, 1usize..=40).prop_flat_map(|(m, n)| (
            prop::collection::vec(0u32..40, m),
            prop::collection::vec(prop::collection::vec((any::<bool>(), 0u32..8, 1u32..9), m), n),
            prop::collection::vec(any::<prop::sample::Index>(), n),
        )).prop_map(|(caps, orders, picks)| {
            let mut p = Problem {
                agents: caps.iter().map(|&c| Agent { capacity: f64::from(c) }).collect(),
                ..Problem::default()
            };
            for row in orders {
                let mut options: Vec<OrderOption> = row
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.0)
                    .map(|(a, &(_, cost, load))| OrderOption { agent: a as u32, cost: f64::from(cost), load: f64::from(load) })
                    .collect();
                if options.is_empty() {
                    options.push(OrderOption { agent: 0, cost: f64::from(row[0].1), load: f64::from(row[0].2) });
                }
                p.push_order(options);
            }
            let picks: Vec<u32> = picks
                .iter()
                .enumerate()
                .map(|(j, i)| i.index(p.options_of(j).len()) as u32)
                .collect();
            (p, picks)
        })
    ) {
        prop_assert_eq!(improve::repaired(&p, &picks), repair_reference(&p, &picks));
    }
}

#[test]
fn repair_empties_a_node_of_many_orders_quickly() {
    // 50,000 orders all on node 0, which holds a tenth of them: re-pricing every order after
    // every move would take minutes.
    let n = 50_000u32;
    let mut p = Problem {
        agents: vec![
            Agent {
                capacity: f64::from(n / 10),
            },
            Agent {
                capacity: f64::from(n),
            },
        ],
        ..Problem::default()
    };
    for j in 0..n {
        p.push_order([
            OrderOption {
                agent: 0,
                cost: 0.0,
                load: 1.0,
            },
            OrderOption {
                agent: 1,
                cost: f64::from(j % 97),
                load: 1.0,
            },
        ]);
    }
    let choice = improve::repaired(&p, &vec![0; n as usize]);
    let on_0 = choice.iter().filter(|c| **c == Some(0)).count();
    assert_eq!(on_0, (n / 10) as usize);
    // The dearest moves stay: every order left on node 0 costs at least as much elsewhere as
    // any order moved.
    let elsewhere = |j: usize| p.options_of(j)[1].cost;
    let kept = (0..n as usize)
        .filter(|&j| choice[j] == Some(0))
        .map(elsewhere)
        .fold(f64::INFINITY, f64::min);
    let moved = (0..n as usize)
        .filter(|&j| choice[j] == Some(1))
        .map(elsewhere)
        .fold(0.0, f64::max);
    assert!(kept >= moved, "kept {kept}, moved {moved}");
}

#[test]
fn a_stop_during_the_polish_is_reported() {
    let p = medium(7);
    let calls = std::sync::atomic::AtomicU32::new(0);
    // Every iteration runs; the first look at `stop` after them (in the polish) says stop.
    let stop = || calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 5;
    let options = SolveOptions {
        iterations_max: 5,
        improve_every: 1,
        gap_target: 0.0,
    };
    let s = solve(&p, &options, &stop, &mut |_| {});
    assert_eq!(s.iterations, 5);
    assert!(s.stopped, "the polish was cut short");
    for (l, a) in loads(&p, &s).iter().zip(&p.agents) {
        assert!(*l <= a.capacity + 1e-9);
    }
    // The polish and the kicks report a stop themselves, and keep a feasible plan.
    let plan = improve::plan_from(&p, &vec![0; p.n_orders()]);
    let (polished, stopped) = improve::polish(&p, &plan, &|| true);
    assert!(stopped);
    assert_eq!(polished, plan);
    let (kicked, stopped) = improve::kick_and_polish(&p, plan.clone(), &|| true);
    assert!(stopped);
    assert_eq!(kicked, plan);
    let (_, stopped) = improve::kick_and_polish(&p, plan, &|| false);
    assert!(!stopped);
}

#[test]
fn the_exact_search_honours_stop() {
    // 16 orders of load 1 on two nodes of 7: no plan fits, and finding that out takes more
    // than one look at `stop`.
    let mut p = Problem {
        agents: vec![Agent { capacity: 7.0 }, Agent { capacity: 7.0 }],
        ..Problem::default()
    };
    for j in 0..16 {
        p.push_order([
            OrderOption {
                agent: 0,
                cost: f64::from(j),
                load: 1.0,
            },
            OrderOption {
                agent: 1,
                cost: f64::from(16 - j),
                load: 1.0,
            },
        ]);
    }
    let none = improve::Plan {
        choice: vec![None; 16],
        cost: 0.0,
        unassigned: 16,
    };
    assert_eq!(exact::solve(&p, &none, &|| false), exact::Exact::Done(None));
    assert_eq!(exact::solve(&p, &none, &|| true), exact::Exact::Stopped);
}

#[test]
fn a_relaxed_choice_that_fits_is_feasible() {
    // A holds two of the three orders; the one cheapest elsewhere goes to B.
    let mut p = Problem {
        agents: vec![Agent { capacity: 10.0 }, Agent { capacity: 100.0 }],
        ..Problem::default()
    };
    for b in [10.0, 11.0, 12.0] {
        p.push_order([
            OrderOption {
                agent: 0,
                cost: 0.0,
                load: 5.0,
            },
            OrderOption {
                agent: 1,
                cost: b,
                load: 5.0,
            },
        ]);
    }
    let mut r = bound::Relaxation::new(&p);
    r.lambda = vec![2.1, 0.0];
    let at = r.evaluate(&p);
    assert_eq!(at.choice, vec![1, 0, 0]);
    assert_eq!(r.step(&at, Some(10.0)), bound::Step::Feasible);
    // Its cost is the bound at these prices: it is optimal.
    assert!((at.value - 10.0).abs() < 1e-9, "{}", at.value);
    // Over-full at zero prices: the step moves them.
    let mut r = bound::Relaxation::new(&p);
    let at = r.evaluate(&p);
    assert_eq!(r.step(&at, Some(10.0)), bound::Step::Moved);
}

#[test]
fn no_relative_gap_for_negative_costs_or_a_plan_that_costs_nothing() {
    let one = |cost: f64| {
        let mut p = Problem {
            agents: vec![Agent { capacity: 10.0 }],
            ..Problem::default()
        };
        p.push_order([OrderOption {
            agent: 0,
            cost,
            load: 1.0,
        }]);
        p.push_order([OrderOption {
            agent: 0,
            cost: 1.0,
            load: 1.0,
        }]);
        solve_quietly(&p)
    };
    assert_eq!(one(2.0).gap, Some(0.0));
    // Costs of both signs: a plan of cost 0 (or near it) makes the ratio meaningless.
    let s = one(-1.0);
    assert_eq!((s.cost, s.gap, s.unassigned()), (0.0, None, 0));
    let s = one(-0.5);
    assert_eq!((s.cost, s.gap), (0.5, None));
    // Every cost 0.
    let mut p = Problem {
        agents: vec![Agent { capacity: 10.0 }],
        ..Problem::default()
    };
    p.push_order([OrderOption {
        agent: 0,
        cost: 0.0,
        load: 1.0,
    }]);
    assert_eq!(solve_quietly(&p).gap, None);
}

/// 30 orders over three nodes, loads 1 to 4 against integer capacities: prices come where the
/// relaxed choice fills the priced nodes exactly.
fn three_nodes(seed: u64) -> Problem {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let mut p = Problem {
        agents: [20.0, 25.0, 30.0].map(|capacity| Agent { capacity }).to_vec(),
        ..Problem::default()
    };
    for _ in 0..30 {
        let options: Vec<OrderOption> = (0..3)
            .map(|a| OrderOption {
                agent: a,
                cost: f64::from(rng.random_range(0..100u32)),
                load: f64::from(rng.random_range(1..5u32)),
            })
            .collect();
        p.push_order(options);
    }
    p
}

#[test]
fn a_relaxed_choice_that_fits_becomes_the_plan() {
    // One plan, from the first iteration (a repaired one, 40 over the optimum); the subgradient
    // then finds prices at which the relaxed choice fits every node: that choice is optimal.
    let p = three_nodes(3);
    let options = SolveOptions {
        iterations_max: 200,
        improve_every: 1_000,
        gap_target: 0.0,
    };
    let full = solve(&p, &options, &|| false, &mut |_| {});
    assert!(full.iterations < options.iterations_max, "{full:?}");
    assert_eq!(full.gap, Some(0.0));
    // Stopped right after the iterations, before any polish: the plan is still the optimum,
    // from the relaxed choice, and proven.
    let calls = std::sync::atomic::AtomicU32::new(0);
    let stop = || calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= full.iterations;
    let s = solve(&p, &options, &stop, &mut |_| {});
    assert!(s.stopped);
    assert_eq!(
        (s.iterations, s.cost, s.gap),
        (full.iterations, full.cost, Some(0.0))
    );
    assert!(s.lower_bound >= s.cost - 1e-9, "{s:?}");
    for (l, a) in loads(&p, &s).iter().zip(&p.agents) {
        assert!(*l <= a.capacity + 1e-9);
    }
}
