//! Replay speed: decode + apply of logged commands, single-threaded, as recovery will run it.
//!
//! `cargo run --release -p promised-benches --bin replay -- [--set small|retail] [--pairs N]`
//!
//! Loads a data set into an engine whose `CommandLog` encodes every command (codec v1), plays N
//! checkout pairs (1-line hold + commit, Zipf-popular positions, UUID-like ids), then replays the
//! log into a fresh engine: the load part untimed, the checkout part timed. Reports records per
//! second and checks that the replica's state digest equals the original's.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use promised_benches::{bulk_load, open_positions, tune_allocator, zipf_positions};
use promised_engine::codec;
use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_engine::{
    Command, CommandLog, Engine, EngineConfig, HoldLineRequest, NodeChoice, Quantity, RequestId, Timestamp,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Default)]
struct BytesLog(Mutex<Vec<(Timestamp, Vec<u8>)>>);

impl CommandLog for BytesLog {
    fn append(&self, _seq: u64, now: Timestamp, command: &Command) {
        let mut bytes = Vec::with_capacity(64);
        codec::encode(command, &mut bytes);
        self.0.lock().expect("log lock").push((now, bytes));
    }
}

fn main() {
    let mut set = "retail".to_string();
    let mut pairs: u64 = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--set" => set = args.next().expect("--set NAME"),
            "--pairs" => pairs = args.next().and_then(|n| n.parse().ok()).expect("--pairs N"),
            other => {
                eprintln!("usage: replay [--set small|retail|peak] [--pairs N] (got {other:?})");
                std::process::exit(2);
            }
        }
    }
    tune_allocator();
    let spec = DataSetSpec::by_name(&set).expect("--set: small, retail or peak");
    let ds = DataSet::generate(&spec);
    let log = Arc::new(BytesLog::default());
    let engine = Engine::with_log(EngineConfig::default(), Some(log.clone()));
    let now = spec.start_day.start();
    bulk_load(|| ds.load(&engine, now)).expect("load");
    let load_records = log.0.lock().expect("log lock").len();

    // Zipf-popular positions, as checkout traffic picks them (same picker as the benches).
    let picks = zipf_positions(&open_positions(&engine, &ds), ds.skus.len(), 1 << 16, 1);
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
                .expect("commit");
        }
    }
    let records = std::mem::take(&mut *log.0.lock().expect("log lock"));
    let bytes: usize = records.iter().map(|r| r.1.len()).sum();

    let replica = Engine::new(EngineConfig::default());
    bulk_load(|| {
        for (at, b) in &records[..load_records] {
            replica
                .apply(*at, &codec::decode(b).expect("decodes"))
                .expect("replays");
        }
    });
    let t = Instant::now();
    for (at, b) in &records[load_records..] {
        replica
            .apply(*at, &codec::decode(b).expect("decodes"))
            .expect("replays");
    }
    let s = t.elapsed().as_secs_f64();
    let n = records.len() - load_records;
    assert_eq!(replica.state_digest(), engine.state_digest(), "replay diverged");
    println!(
        "set {set}: replayed {n} checkout records ({:.1} MB encoded log incl. load) in {s:.2} s = {:.2} M records/s; digest matches",
        bytes as f64 / 1e6,
        n as f64 / s / 1e6
    );
}
