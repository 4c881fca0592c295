//! The optimiser on public GAP instances with proven optima (`../shared/benchmarks/gap`).

use promised_benches::gap::{data_dir, known_minima, read_orlib};
use promised_engine::optimise::{SolveOptions, solve};

fn solve_known(file: &str) -> Vec<(String, f64, f64, f64)> {
    let dir = data_dir();
    let problems = read_orlib(&dir.join(file)).unwrap();
    known_minima(&dir)
        .unwrap()
        .into_iter()
        .filter(|k| k.file == file)
        .map(|k| {
            let p = &problems[k.problem - 1];
            let s = solve(p, &SolveOptions::for_problem(p), &|| false, &mut |_| {});
            assert_eq!(s.unassigned(), 0, "{}", k.instance);
            assert!(
                s.lower_bound <= k.value + 1e-6,
                "{}: bound {} above the optimum {}",
                k.instance,
                s.lower_bound,
                k.value
            );
            (k.instance, s.cost, k.value, s.lower_bound)
        })
        .collect()
}

#[test]
fn fifteen_order_instances_are_solved_to_their_proven_optimum() {
    let solved = solve_known("orlib/gap1.txt");
    assert_eq!(solved.len(), 5);
    for (name, cost, optimum, bound) in solved {
        assert_eq!(cost, optimum, "{name}");
        assert_eq!(bound, optimum, "{name}: the exhaustive search proves it");
    }
}

#[test]
fn thirty_order_instances_come_within_two_percent_of_their_optimum() {
    let solved = solve_known("orlib/gap4.txt");
    assert_eq!(solved.len(), 5);
    for (name, cost, optimum, _) in solved {
        assert!(
            cost >= optimum,
            "{name}: {cost} below the proven optimum {optimum}"
        );
        assert!((cost - optimum) / optimum <= 0.02, "{name}: {cost} vs {optimum}");
    }
}
