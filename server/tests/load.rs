//! `promised-load` against a real `promised serve`: every scenario for a few seconds with
//! `--verify`, so that each acknowledged hold, commit, release, route, cancel, re-route move
//! and feed is reconciled with the server's ledger afterwards.

mod common;

use clap::Parser;
use common::Server;
use promised_load::cli::{Args, run};

/// Runs the harness as its binary would; returns whether it passed, and its JSON results.
fn load(server: &Server, extra: &[&str]) -> (bool, serde_json::Value) {
    let json = tempfile::NamedTempFile::new().unwrap();
    let json_path = json.path().to_str().unwrap().to_string();
    let mut argv = vec![
        "promised-load",
        "--addr",
        &server.addr,
        "--set",
        "small",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
        "--connections",
        "2",
        "--pipeline",
        "8",
        "--verify",
        "--quiet",
        "--json",
        &json_path,
    ];
    argv.extend_from_slice(extra);
    let passed = run(Args::parse_from(argv)).expect("the run starts");
    let results = serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    (passed, results)
}

fn ops(results: &serde_json::Value, op: &str) -> u64 {
    results["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["op"] == op)
        .map_or(0, |r| r["count"].as_u64().unwrap())
}

#[test]
fn every_scenario_reconciles_with_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--demo", "small"]);
    for (scenario, must_see) in [
        ("checkout", &["promise", "hold", "commit"][..]),
        ("flash-sale", &["hold", "commit"]),
        ("feed", &["feed"]),
        ("reroute", &["promise", "route-order"]),
        ("mixed", &["promise", "atp", "feed"]),
        ("hold", &["hold", "release"]),
        ("atp", &["atp"]),
    ] {
        let (passed, r) = load(&server, &["--scenario", scenario]);
        assert!(passed, "{scenario}: {r:#}");
        for op in must_see {
            assert!(ops(&r, op) > 0, "{scenario}: no {op} measured: {r:#}");
        }
        let errors: u64 = r["ops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["errors"].as_u64().unwrap())
            .sum();
        assert_eq!(errors, 0, "{scenario}: {r:#}");
        assert!(
            r["verify"]["positions_checked"].as_u64().unwrap() > 9_000,
            "{r:#}"
        );
        if scenario == "reroute" {
            // Partial: the moves that still fit are applied, whatever the load did meanwhile.
            assert!(r["reroute"]["orders"].as_u64().unwrap() > 0, "{r:#}");
            assert_eq!(r["reroute"]["applied"], true, "{r:#}");
        }
    }
    // Open loop, batched 5-line holds (SKUs drawn uniformly: the best sellers are sold out by
    // now): the same reconciliation.
    let (passed, r) = load(
        &server,
        &[
            "--scenario",
            "hold",
            "--lines",
            "5",
            "--uniform",
            "--batch",
            "16",
            "--rate",
            "20000",
        ],
    );
    assert!(passed, "{r:#}");
    assert!(r["verify"]["holds_checked"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["rate"].as_f64() == Some(20_000.0), "{r:#}");
}
