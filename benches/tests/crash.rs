//! The real crash test: a child process (`durable_load --acks`) writes to a data directory from
//! several threads and prints every write the WAL acknowledged; this test kills it with SIGKILL at
//! random moments, at least 20 times, restarting it each time on the same directory, and after
//! each restart checks that every write ever acknowledged is there and the ledger reconciles.
//!
//! Runs in CI in well under a minute. `PROMISED_CRASH_ROUNDS=N` runs a longer soak;
//! `PROMISED_TEST_SEED` picks the kill schedule.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use promised_engine::durable::{DurableEngine, DurableOptions};
use promised_engine::storage::FsStorage;
use promised_engine::{HoldState, NodeId, RequestId, SkuId};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

const BIN: &str = env!("CARGO_BIN_EXE_durable_load");

/// Everything the child acknowledged, over all runs.
#[derive(Default)]
struct Acked {
    holds: HashSet<u128>,
    commits: HashSet<u128>,
    releases: HashSet<u128>,
    shipments: HashSet<u128>,
    /// Per node: the highest acknowledged feed (sequence, SKU, quantity).
    feeds: HashMap<u32, (u64, u32, u32)>,
    lines: u64,
}

impl Acked {
    fn record(&mut self, line: &str) {
        let parts: Vec<&str> = line.split(' ').collect();
        let id = |s: &str| u128::from_str_radix(s, 16).expect("hex request id");
        match parts.as_slice() {
            ["H", h] => assert!(self.holds.insert(id(h)), "hold {h} acknowledged twice"),
            ["C", h] => assert!(self.commits.insert(id(h)), "commit of {h} acknowledged twice"),
            ["R", h] => assert!(self.releases.insert(id(h)), "release of {h} acknowledged twice"),
            ["P", h] => assert!(self.shipments.insert(id(h)), "shipment of {h} acknowledged twice"),
            ["S", node, seq, sku, qty] => {
                let feed = (seq.parse().unwrap(), sku.parse().unwrap(), qty.parse().unwrap());
                let e = self.feeds.entry(node.parse().unwrap()).or_insert(feed);
                if feed.0 > e.0 {
                    *e = feed;
                }
            }
            _ => panic!("unexpected line from the child: {line:?}"),
        }
        self.lines += 1;
    }
}

fn child(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--data-dir").arg(dir).args(args);
    c
}

/// Opens the directory in this process (recovery runs here) and checks every acknowledged write.
fn verify(dir: &std::path::Path, acked: &Acked, round: usize, seed: u64) {
    let storage = Arc::new(FsStorage::open(dir).unwrap());
    let options = DurableOptions {
        snapshot_every_records: 0,
        snapshot_every: None,
        ..DurableOptions::default()
    };
    let db = DurableEngine::open(storage, options)
        .unwrap_or_else(|e| panic!("seed {seed} round {round}: recovery failed: {e}"));
    let engine = db.engine();
    let ctx = format!("seed {seed} round {round}");
    for &h in &acked.holds {
        let hold = engine
            .hold(RequestId(h))
            .unwrap_or_else(|| panic!("{ctx}: acknowledged hold {h:x} is lost"));
        let want = if acked.shipments.contains(&h) {
            Some(HoldState::Shipped)
        } else if acked.commits.contains(&h) {
            Some(HoldState::Committed)
        } else if acked.releases.contains(&h) {
            Some(HoldState::Released)
        } else {
            None
        };
        if let Some(want) = want {
            // A shipment applied but killed before its acknowledgement may follow a commit.
            let later_ok = want == HoldState::Committed && hold.state == HoldState::Shipped;
            assert!(
                hold.state == want || later_ok,
                "{ctx}: hold {h:x} is {:?}: lost its acknowledged {want:?}",
                hold.state
            );
        }
    }
    for h in acked.shipments.iter() {
        assert!(
            acked.commits.contains(h),
            "{ctx}: hold {h:x} was shipped before its commit was acknowledged"
        );
    }
    for h in acked.commits.iter().chain(&acked.releases) {
        assert!(
            acked.holds.contains(h),
            "{ctx}: a change to hold {h:x} was acknowledged before the hold"
        );
    }
    for (&node, &(seq, sku, qty)) in &acked.feeds {
        let node = NodeId::from_raw(node);
        let applied = engine.feed_seq(node);
        assert!(
            applied >= seq,
            "{ctx}: node {node:?} feed {seq} was acknowledged, recovered {applied}"
        );
        if applied == seq {
            let p = engine
                .position(SkuId::from_raw(sku), node)
                .unwrap()
                .expect("a stocked position");
            assert_eq!(
                p.on_hand, qty,
                "{ctx}: acknowledged on-hand feed lost at node {node:?}"
            );
        }
    }
    engine
        .check_invariants()
        .unwrap_or_else(|e| panic!("{ctx}: ledger does not reconcile: {e}"));
    db.close().unwrap();
}

fn run_and_kill(dir: &std::path::Path, round: usize, kill_after: Duration, acked: &mut Acked) {
    let run = (round + 1).to_string();
    let mut c: Child = child(
        dir,
        &[
            "--run",
            &run,
            "--threads",
            "3",
            "--pipeline",
            "16",
            "--seconds",
            "30",
            "--acks",
            "--snapshot-every-records",
            "3000",
            "--segment-mb",
            "1",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("start the child");
    let stdout = c.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        // Only whole lines count: a kill can cut the last one.
        let mut lines = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n') {
                lines.push(line.trim_end().to_string());
            }
            line.clear();
        }
        lines
    });
    thread::sleep(kill_after);
    c.kill().expect("SIGKILL the child");
    let status = c.wait().unwrap();
    assert!(status.code().is_none(), "the child exited by itself: {status}");
    for line in reader.join().unwrap() {
        acked.record(&line);
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let seed: u64 = std::env::var("PROMISED_TEST_SEED").map_or(7, |s| s.parse().unwrap());
    let rounds: usize = std::env::var("PROMISED_CRASH_ROUNDS").map_or(22, |s| s.parse().unwrap());
    let mut rng = Pcg64::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let init = child(dir.path(), &["--init"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(init.success(), "loading the data set failed");
    let mut acked = Acked::default();
    for round in 0..rounds {
        let kill_after = Duration::from_millis(rng.random_range(150..900));
        run_and_kill(dir.path(), round, kill_after, &mut acked);
        // Every third round the next child recovers from the crash by itself.
        if round % 3 != 1 {
            verify(dir.path(), &acked, round, seed);
        }
    }
    verify(dir.path(), &acked, rounds, seed);
    // The kills must have landed under load, not all during start-up.
    assert!(
        acked.holds.len() > 1_000 && !acked.commits.is_empty() && !acked.feeds.is_empty(),
        "seed {seed}: too little was acknowledged to prove anything ({} lines)",
        acked.lines
    );
    eprintln!(
        "seed {seed}: {rounds} kills, {} acknowledged writes checked",
        acked.lines
    );
}
