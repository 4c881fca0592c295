//! The harness as a binary: against the no-op server (which acknowledges everything and stores
//! nothing, so `--verify` must fail), its outputs, its refusals, and the Redis target against a
//! real `redis-server` (Debian package `redis-server`; CI installs it).

use std::net::TcpListener;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_promised-load");

/// A no-op server on a port of its own, for the life of the test process.
fn noop() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || promised_load::noop::serve(listener));
    addr
}

fn harness(args: &[&str]) -> Output {
    Command::new(BIN).args(args).arg("--quiet").output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn verify_catches_a_server_that_acknowledges_holds_it_never_made() {
    let addr = noop();
    let out = harness(&[
        "--addr",
        &addr,
        "--scenario",
        "hold",
        "--commit-ratio",
        "1",
        "--duration",
        "0.5",
        "--warmup",
        "0",
        "--verify",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("verify: FAILED"), "{t}");
    // The ledger shows none of the acknowledged commits (the first 50 mismatches are listed,
    // the rest counted: every position and every hold).
    assert!(t.contains("the acknowledged writes imply 0, 0, "), "{t}");
    assert!(t.contains(" more"), "{t}");
}

#[test]
fn writes_json_a_plot_and_a_latency_against_load_table() {
    let addr = noop();
    let dir = tempfile::tempdir().unwrap();
    let (json, png) = (dir.path().join("r.json"), dir.path().join("r.png"));
    let out = harness(&[
        "--addr",
        &addr,
        "--scenario",
        "atp",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--steps",
        "50,100",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("latency against offered load"), "{t}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["scenario"], "atp");
    assert_eq!(r["steps"].as_array().unwrap().len(), 2, "{r:#}");
    let atp = &r["ops"][0];
    assert_eq!(atp["op"], "atp");
    assert!(atp["count"].as_u64().unwrap() > 0);
    assert!(atp["p50_us"].as_u64().unwrap() <= atp["p99_us"].as_u64().unwrap());
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn refuses_what_it_cannot_run_with_a_reason() {
    let addr = noop();
    for (args, says) in [
        (
            vec!["--addr", &addr, "--pipeline", "5000"],
            "frames in flight the server allows",
        ),
        (
            vec!["--target", "redis", "--scenario", "feed"],
            "runs the hold workloads only",
        ),
        (
            vec!["--addr", &addr, "--set", "huge"],
            "expected small, retail or peak",
        ),
        (vec!["--addr", "127.0.0.1:1"], "connecting to 127.0.0.1:1"),
        (vec!["--rate", "100", "--steps", "50"], "leave out --rate"),
    ] {
        let out = harness(&args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains(says), "{args:?}: {t}");
    }
}

#[test]
fn redis_target_holds_and_reconciles() {
    for (scenario, fsync) in [
        ("hold", "always"),
        ("flash-sale", "everysec"),
        ("checkout", "always"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("r.json");
        let out = harness(&[
            "--target",
            "redis",
            "--redis-fsync",
            fsync,
            "--scenario",
            scenario,
            "--lines",
            "5",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--verify",
            "--json",
            json.to_str().unwrap(),
        ]);
        let t = text(&out);
        assert!(out.status.success(), "{scenario}: {t}");
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let hold = r["ops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["op"] == "hold")
            .unwrap();
        assert!(hold["count"].as_u64().unwrap() > 0, "{r:#}");
        assert_eq!(hold["errors"], 0, "{r:#}");
        assert!(r["verify"]["acknowledged_holds"].as_u64().unwrap() > 0, "{r:#}");
    }
}
