//! `promised solve` as users run it: the real binary on problem files.

use std::path::Path;
use std::process::{Command, Output};

fn solve(dir: &Path, problem: &str, extra: &[&str]) -> Output {
    let file = dir.join("problem.json");
    std::fs::write(&file, problem).unwrap();
    Command::new(env!("CARGO_BIN_EXE_promised"))
        .arg("solve")
        .arg("--problem")
        .arg(&file)
        .args(extra)
        .output()
        .unwrap()
}

/// 40 orders over 4 nodes, every node an option for most orders, capacities tight.
fn problem() -> String {
    let nodes: Vec<String> = (0..4)
        .map(|i| format!(r#"{{"id": "DC-{i}", "capacity": {}}}"#, 60 + 10 * i))
        .collect();
    let orders: Vec<String> = (0..40)
        .map(|j| {
            let options: Vec<String> = (0..4)
                .filter(|i| (i + j) % 5 != 0)
                .map(|i| {
                    format!(
                        r#"{{"node": "DC-{i}", "cost": {}, "load": {}}}"#,
                        10 + (7 * i + 3 * j) % 23,
                        3 + (i * j) % 5
                    )
                })
                .collect();
            format!(r#"{{"id": "order-{j}", "options": [{}]}}"#, options.join(", "))
        })
        .collect();
    format!(
        r#"{{"nodes": [{}], "orders": [{}]}}"#,
        nodes.join(", "),
        orders.join(", ")
    )
}

#[test]
fn solves_prints_a_summary_and_writes_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let plan = |name: &str| dir.path().join(name);
    let out = solve(
        dir.path(),
        &problem(),
        &["--out", plan("one.json").to_str().unwrap(), "--threads", "1"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (summary["orders"].as_u64(), summary["unassigned"].as_u64()),
        (Some(40), Some(0))
    );
    assert_eq!(summary["assigned"].as_u64(), Some(40));
    let (cost, bound, gap) = (
        summary["cost"].as_f64().unwrap(),
        summary["lower_bound"].as_f64().unwrap(),
        summary["gap"].as_f64().unwrap(),
    );
    assert!(bound <= cost && (0.0..0.05).contains(&gap), "{summary}");
    assert_eq!(summary["threads"].as_u64(), Some(1));
    assert!(summary["seconds"].as_f64().is_some() && summary["iterations"].as_u64().is_some());
    // The plan assigns each order once, to one of its options, within capacities.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan("one.json")).unwrap()).unwrap();
    let assignments = written["assignments"].as_array().unwrap();
    assert_eq!(assignments.len(), 40);
    let mut load = [0u64; 4];
    let mut total = 0u64;
    for a in assignments {
        let j: u64 = a["order"].as_str().unwrap()["order-".len()..].parse().unwrap();
        let i: u64 = a["node"].as_str().unwrap()["DC-".len()..].parse().unwrap();
        assert_ne!((i + j) % 5, 0, "order-{j} sent to a node it has no option at");
        load[i as usize] += 3 + (i * j) % 5;
        total += 10 + (7 * i + 3 * j) % 23;
    }
    for (i, l) in load.iter().enumerate() {
        assert!(*l <= 60 + 10 * i as u64, "DC-{i} holds {l}");
    }
    assert_eq!(total as f64, cost);
    // Two threads: the same plan.
    let out = solve(
        dir.path(),
        &problem(),
        &["--out", plan("two.json").to_str().unwrap(), "--threads", "2"],
    );
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(plan("one.json")).unwrap(),
        std::fs::read_to_string(plan("two.json")).unwrap()
    );
}

#[test]
fn a_bad_problem_file_is_refused_with_the_place_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    for (text, place) in [
        (
            r#"{"nodes": [{"id": "A", "capacity": 5}], "orders": [{"id": "o", "options": [{"node": "B", "cost": 1, "load": 1}]}]}"#,
            "orders[0].options[0]",
        ),
        (
            r#"{"nodes": [{"id": "A", "capacity": 5}], "orders": [{"id": "o", "options": []}]}"#,
            "orders[0]",
        ),
        (
            r#"{"nodes": [{"id": "A", "capacity": 5}], "orders": [{"id": "o", "options": [{"node": "A", "cost": "x", "load": 1}]}]}"#,
            "line 1, column",
        ),
    ] {
        let out = solve(dir.path(), text, &["--out", plan.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(place), "{err}");
        assert!(out.stdout.is_empty());
        assert!(!plan.exists());
    }
    let out = solve(dir.path(), &problem(), &["--time-limit", "-3"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A network-form problem: two DCs, one nearer with room for two orders a day, stock of two
/// SKUs, four orders (one asks for more mugs than exist anywhere).
fn network_problem() -> String {
    r#"{"now_ms": 1795424400000,
        "zones": [{"id": 1, "lat": 40.7, "lon": -74.0}],
        "nodes": [{"id": "NJ", "lat": 40.73, "lon": -74.17, "orders_per_day": 2},
                  {"id": "PA", "lat": 40.0, "lon": -75.1}],
        "lanes": [{"node": "NJ", "zone": 1, "level": "ground", "transit_days": 1,
                   "cost_per_package_cents": 400, "cost_per_unit_cents": 10}],
        "stock": [{"sku": "TEE", "node": "NJ", "on_hand": 5}, {"sku": "TEE", "node": "PA", "on_hand": 5},
                  {"sku": "MUG", "node": "PA", "on_hand": 2}],
        "orders": [{"id": "o1", "zone": 1, "lines": [{"sku": "TEE", "quantity": 2}]},
                   {"id": "o2", "zone": 1, "lines": [{"sku": "TEE", "quantity": 1}, {"sku": "MUG", "quantity": 1}]},
                   {"id": "o3", "zone": 1, "lines": [{"sku": "TEE", "quantity": 1}]},
                   {"id": "o4", "zone": 1, "lines": [{"sku": "MUG", "quantity": 5}]}]}"#
        .to_string()
}

#[test]
fn the_network_form_places_orders_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    let out = solve(dir.path(), &network_problem(), &["--out", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            summary["orders"].as_u64(),
            summary["assigned"].as_u64(),
            summary["unassigned"].as_u64()
        ),
        (Some(4), Some(3), Some(1))
    );
    // NJ's lane: 400 + 10 a unit; it takes two orders today. o2's mug is only at PA, and one
    // package from PA beats two packages.
    let cost = summary["shipping_cost"].as_f64().unwrap();
    assert_eq!(
        summary["penalties"].as_f64(),
        Some(50_000.0),
        "o4 cannot be served"
    );
    assert_eq!(summary["cost"].as_f64(), Some(cost + 50_000.0));
    assert_eq!(
        summary["gap"].as_f64(),
        Some(0.0),
        "o4's plan needs 5 mugs: priced out, proven"
    );
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(plan["unassigned"], serde_json::json!(["o4"]));
    let assignments = plan["assignments"].as_array().unwrap();
    let node_of = |order: &str| -> Vec<String> {
        let a = assignments.iter().find(|a| a["order"] == order).unwrap();
        a["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["node"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(node_of("o1"), ["NJ"]);
    assert_eq!(node_of("o3"), ["NJ"]);
    assert_eq!(node_of("o2"), ["PA", "PA"]);
    let total: f64 = assignments.iter().map(|a| a["cost"].as_f64().unwrap()).sum();
    assert_eq!(total, cost);
}

#[test]
fn a_bad_network_file_is_refused_with_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let good = network_problem();
    for (text, place) in [
        (
            good.replace(r#""node": "PA", "on_hand": 2"#, r#""node": "XX", "on_hand": 2"#),
            "stock[2]",
        ),
        (
            good.replace(r#""quantity": 5"#, r#""quantity": 0"#),
            "orders[3].lines[0]",
        ),
        (good.replace(r#""id": "o3""#, r#""id": "o1""#), "orders[2]"),
        (
            good.replace(
                r#""zone": 1, "lines": [{"sku": "MUG""#,
                r#""zone": 9, "lines": [{"sku": "MUG""#,
            ),
            "orders[3]",
        ),
        (
            good.replace(r#""level": "ground""#, r#""level": "pickup""#),
            "lanes[0]",
        ),
        (good.replace(r#""now_ms""#, r#""when""#), "line 1"),
    ] {
        let out = solve(dir.path(), &text, &[]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(place), "{place}: {err}");
        assert!(out.stdout.is_empty());
    }
}
