//! Snapshots on a big data set: write time and size, load time, and how long requests stall
//! while one is taken.
//!
//! `cargo run --release -p promised-benches --bin snapshot_bench -- --set retail|peak [--threads N]`
//!
//! Loads the set into a durable engine in a temporary directory, then runs checkout writes (a
//! 1-line hold and its release, Zipf-popular positions) from N threads, timing every command's
//! apply (the request path up to the WAL hand-off; the fsync wait is not the snapshot's doing).
//! Prints the latency percentiles for a quiet period and for the period a snapshot is being
//! written, the snapshot's size and times, and the time a restart takes to load it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use promised_benches::{bulk_load, open_positions, tune_allocator, zipf_positions};
use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_engine::durable::{DurableEngine, DurableOptions, Ticket};
use promised_engine::storage::FsStorage;
use promised_engine::{Command, HoldLineRequest, NodeChoice, Quantity, RequestId};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "retail")]
    set: String,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Directory for the data (default: a temporary one, removed afterwards).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

const QUIET: u8 = 0;
const SNAPSHOT: u8 = 1;
const STOP: u8 = 2;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tune_allocator();
    let spec = DataSetSpec::by_name(&args.set).context("--set: small, retail or peak")?;
    let tmp = tempfile::tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let options = DurableOptions {
        snapshot_every_records: 0,
        snapshot_every: None,
        ..DurableOptions::default()
    };
    let db = DurableEngine::open(Arc::new(FsStorage::open(&dir)?), options.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let dataset = DataSet::generate(&spec);
    let now = spec.start_day.start().saturating_add_ms(9 * 3_600_000);
    let t = Instant::now();
    bulk_load(|| dataset.load(db.engine(), now)).context("load")?;
    db.wait(Ticket {
        lsn: db.engine().next_seq() - 1,
    })?;
    eprintln!("loaded {} through the WAL in {:.1?}", spec.name, t.elapsed());
    let picks = zipf_positions(
        &open_positions(db.engine(), &dataset),
        dataset.skus.len(),
        1 << 16,
        3,
    );

    let phase = AtomicU8::new(QUIET);
    let (quiet, during, info) = std::thread::scope(|s| -> anyhow::Result<_> {
        let workers: Vec<_> = (0..args.threads)
            .map(|t| {
                let (db, picks, phase) = (&db, &picks, &phase);
                s.spawn(move || {
                    let mut hist = [
                        Histogram::<u64>::new(3).unwrap(),
                        Histogram::<u64>::new(3).unwrap(),
                    ];
                    let mut i = t * 7919;
                    let mut n = 0u128;
                    loop {
                        let p = phase.load(Ordering::Relaxed);
                        if p == STOP {
                            return hist;
                        }
                        let (sku, node) = picks[i & 0xFFFF];
                        i += 1;
                        n += 1;
                        let hold = RequestId((t as u128) << 100 | n << 1 | 1);
                        let commands = [
                            Command::Hold {
                                hold,
                                lines: vec![HoldLineRequest {
                                    sku,
                                    node: NodeChoice::Node(node),
                                    quantity: Quantity::new(1).unwrap(),
                                    need_day: None,
                                }],
                                ttl_ms: 900_000,
                                partial: false,
                            },
                            Command::Release {
                                request: RequestId(hold.0 ^ 1),
                                hold,
                                lines: Vec::new(),
                            },
                        ];
                        for c in &commands {
                            let started = Instant::now();
                            let _ = db.submit(now, c).map(|s| s.result);
                            let ns = started.elapsed().as_nanos() as u64;
                            hist[usize::from(p)].record(ns.max(1)).unwrap();
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        phase.store(SNAPSHOT, Ordering::Relaxed);
        let info = db.snapshot()?;
        phase.store(STOP, Ordering::Relaxed);
        let mut quiet = Histogram::<u64>::new(3).unwrap();
        let mut during = Histogram::<u64>::new(3).unwrap();
        for w in workers {
            let [q, d] = w.join().expect("worker");
            quiet.add(q).unwrap();
            during.add(d).unwrap();
        }
        Ok((quiet, during, info))
    })?;
    let line = |name: &str, h: &Histogram<u64>| {
        println!(
            "{name:>16}: {:>9} commands, p50 {:>7.1} us, p99 {:>7.1} us, p99.9 {:>8.1} us, max {:>8.1} us",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3,
            h.max() as f64 / 1e3
        )
    };
    println!(
        "snapshot of {} ({} threads writing): LSN {}, {:.1} MiB, written in {:.2?}; barrier {:.2?}; \
         {} shards copied by writers",
        spec.name,
        args.threads,
        info.lsn,
        info.bytes as f64 / (1 << 20) as f64,
        info.total,
        info.barrier,
        info.copied_by_writers
    );
    line("quiet", &quiet);
    line("during snapshot", &during);
    let digest = db.engine().state_digest();
    db.close()?;
    drop(db);
    let t = Instant::now();
    let db =
        DurableEngine::open(Arc::new(FsStorage::open(&dir)?), options).map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = db.recovery();
    println!(
        "restart: snapshot loaded in {:.2?}, {} records replayed in {:.2?}, open total {:.2?}; digest {}",
        r.snapshot_load,
        r.replayed,
        r.replay,
        t.elapsed(),
        if db.engine().state_digest() == digest {
            "matches"
        } else {
            "DIFFERS"
        }
    );
    Ok(())
}
