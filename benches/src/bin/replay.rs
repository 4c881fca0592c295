//! Replay speed: recovery's replay of logged checkout commands, as a restart runs it.
//!
//! `cargo run --release -p promised-benches --bin replay -- [--set small|retail] [--pairs N]
//! [--data-dir DIR]`
//!
//! Loads a data set into a durable engine (a real write-ahead log in a fresh directory, fsync
//! off: only the replay is measured), takes a snapshot, plays N checkout pairs (1-line hold +
//! commit, Zipf-popular positions, UUID-like ids), closes, and opens the directory again: the
//! snapshot loads and the checkout records replay (read, checked and decoded on one thread,
//! applied on another). Reports records per second of the replay and checks that the restarted
//! state digest equals the original's.

use std::sync::Arc;

use anyhow::Context;
use promised_benches::{bulk_load, open_positions, tune_allocator, zipf_positions};
use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_engine::durable::{DurableEngine, DurableOptions};
use promised_engine::storage::FsStorage;
use promised_engine::wal::{FsyncPolicy, WalOptions};
use promised_engine::{Command, HoldLineRequest, NodeChoice, Quantity, RequestId};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut set = "retail".to_string();
    let mut pairs: u64 = 1_000_000;
    let mut data_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--set" => set = args.next().context("--set NAME")?,
            "--pairs" => pairs = args.next().and_then(|n| n.parse().ok()).context("--pairs N")?,
            "--data-dir" => data_dir = Some(args.next().context("--data-dir DIR")?),
            other => {
                eprintln!(
                    "usage: replay [--set small|retail|peak] [--pairs N] [--data-dir DIR] (got {other:?})"
                );
                std::process::exit(2);
            }
        }
    }
    tune_allocator();
    let spec = DataSetSpec::by_name(&set).context("--set: small, retail or peak")?;
    let ds = DataSet::generate(&spec);
    let temp;
    let dir: std::path::PathBuf = match data_dir {
        Some(dir) => dir.into(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    anyhow::ensure!(
        std::fs::read_dir(&dir).map_or(true, |mut entries| entries.next().is_none()),
        "{} is not empty: the bench writes a data directory from scratch",
        dir.display()
    );
    let storage = Arc::new(FsStorage::open(&dir).context("data directory")?);
    let options = DurableOptions {
        wal: WalOptions {
            fsync: FsyncPolicy::Never,
            ..WalOptions::default()
        },
        snapshot_every_records: 0,
        snapshot_every: None,
        ..DurableOptions::default()
    };
    let db = DurableEngine::open(storage.clone(), options.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = db.engine();
    let now = spec.start_day.start();
    bulk_load(|| ds.load(engine, now)).context("load")?;
    db.snapshot().context("snapshot")?;

    // Zipf-popular positions, as checkout traffic picks them (same picker as the benches).
    let picks = zipf_positions(&open_positions(engine, &ds), ds.skus.len(), 1 << 16, 1);
    for i in 0..pairs {
        let (sku, node) = picks[(i as usize) & 0xFFFF];
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let hold = RequestId((u128::from(x) << 64) | u128::from(i) << 1);
        let line = HoldLineRequest {
            sku,
            node: NodeChoice::Node(node),
            quantity: Quantity::new(1).expect("1"),
            need_day: None,
        };
        let out = engine.apply(
            now,
            &Command::Hold {
                hold,
                lines: vec![line],
                ttl_ms: 900_000,
                partial: false,
            },
        );
        if matches!(
            out,
            Ok(promised_engine::Outcome::Hold(
                promised_engine::HoldOutcome::Granted { .. }
            ))
        ) {
            engine
                .apply(
                    now,
                    &Command::Commit {
                        request: RequestId(hold.0 | 1),
                        hold,
                    },
                )
                .context("commit")?;
        }
    }
    let digest = engine.state_digest();
    db.close().map_err(|e| anyhow::anyhow!("{e}"))?;
    drop(db);

    let db = bulk_load(|| DurableEngine::open(storage, options)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let report = db.recovery();
    let s = report.replay.as_secs_f64();
    anyhow::ensure!(db.engine().state_digest() == digest, "replay diverged");
    println!(
        "set {set}: snapshot loaded in {:.2} s, then {} checkout records replayed in {s:.2} s = {:.2} M records/s; digest matches",
        report.snapshot_load.as_secs_f64(),
        report.replayed,
        report.replayed as f64 / s / 1e6
    );
    Ok(())
}
