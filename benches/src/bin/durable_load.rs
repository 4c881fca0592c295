//! Durable write load on a data directory: the group-commit benchmark and the child process of
//! the crash test.
//!
//! `cargo run --release -p promised-benches --bin durable_load -- --data-dir DIR --init [--set S]`
//! creates the directory and loads a data set (restocked so holds never run out);
//! `... --data-dir DIR [--threads T] [--pipeline D] [--seconds S] [--fsync always|never|interval-ms=N]`
//! then plays checkout writes from T threads, each keeping D writes in flight (T x D writers):
//! holds of 1-3 lines, commits (60%) or releases of earlier holds, shipments of earlier orders,
//! and on-hand feeds (3%). Every write is
//! acknowledged only once the WAL made it durable. It prints writes per second, the group-commit
//! batch sizes, and the raw `fdatasync` rate of the same disk measured in the same run.
//!
//! With `--acks` every acknowledged write is printed on stdout as it is acknowledged (the crash
//! test kills this process with SIGKILL and checks that each printed write survived).

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use promised_benches::{bulk_load, open_positions, restock, tune_allocator, zipf_positions};
use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_engine::durable::{DurableEngine, DurableOptions, Ticket};
use promised_engine::storage::FsStorage;
use promised_engine::wal::WalOptions;
use promised_engine::{
    Command, HoldLineRequest, HoldOutcome, NodeChoice, NodeId, Outcome, Quantity, RequestId, SkuId, Timestamp,
};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    data_dir: PathBuf,
    /// Create the directory and load the data set, then exit.
    #[arg(long)]
    init: bool,
    #[arg(long, default_value = "small")]
    set: String,
    /// Distinguishes runs on one directory (request ids are unique per run).
    #[arg(long, default_value_t = 0)]
    run: u64,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Writes each thread keeps in flight.
    #[arg(long, default_value_t = 64)]
    pipeline: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Run this long before measuring, so that the request tables reach their steady size.
    #[arg(long, default_value_t = 0.0)]
    warmup_seconds: f64,
    /// always, never, or interval-ms=N.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Snapshot every this many records (0: none).
    #[arg(long, default_value_t = 0)]
    snapshot_every_records: u64,
    #[arg(long, default_value_t = 64)]
    segment_mb: u64,
    /// Append to new segments instead of writing over segments zero-filled ahead.
    #[arg(long)]
    no_preallocate: bool,
    /// Syncs in flight at once under fsync always (1: each batch waits for the last one's sync).
    #[arg(long, default_value_t = WalOptions::default().concurrent_syncs)]
    concurrent_syncs: usize,
    /// Instead of threads: this many shoppers as tasks on a 2-thread tokio runtime, each with one
    /// write in flight, as a server's connections would be (waking a task is a queue push, waking
    /// a blocked thread a context switch).
    #[arg(long, default_value_t = 0)]
    tasks: usize,
    /// Worker threads of the tokio runtime in `--tasks` mode.
    #[arg(long, default_value_t = 2)]
    runtime_threads: usize,
    /// Print every acknowledged write on stdout.
    #[arg(long)]
    acks: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tune_allocator();
    let spec = DataSetSpec::by_name(&args.set).context("--set: small, retail or peak")?;
    let storage = Arc::new(FsStorage::open(&args.data_dir).context("data directory")?);
    let options = DurableOptions {
        wal: WalOptions {
            fsync: promised::config::fsync_policy(&args.fsync, None)?,
            segment_bytes: args.segment_mb << 20,
            preallocate: !args.no_preallocate,
            concurrent_syncs: args.concurrent_syncs,
        },
        snapshot_every_records: args.snapshot_every_records,
        snapshot_every: None,
        ..DurableOptions::default()
    };
    let started = Instant::now();
    let db = bulk_load(|| DurableEngine::open(storage, options)).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &db.recovery().warnings {
        eprintln!("durable_load: warning: {w}");
    }
    let recovery = db.recovery();
    eprintln!(
        "durable_load: recovered to LSN {} in {:.2?} (snapshot {:?} loaded in {:.2?}, {} records replayed in {:.2?}: {:.2}M/s)",
        recovery.next_lsn - 1,
        started.elapsed(),
        recovery.snapshot.as_ref().map(|s| s.0),
        recovery.snapshot_load,
        recovery.replayed,
        recovery.replay,
        recovery.replayed as f64 / recovery.replay.as_secs_f64().max(1e-9) / 1e6
    );
    let dataset = DataSet::generate(&spec);
    let now = spec.start_day.start().saturating_add_ms(9 * 3_600_000);
    if args.init {
        if db.engine().n_skus() > 0 {
            bail!("{} already holds data", args.data_dir.display());
        }
        bulk_load(|| dataset.load(db.engine(), now)).context("load")?;
        restock(db.engine(), &dataset, now);
        db.wait(Ticket {
            lsn: db.engine().next_seq() - 1,
        })?;
        let info = db.snapshot()?;
        eprintln!("durable_load: loaded {}; snapshot at LSN {}", spec.name, info.lsn);
        db.close()?;
        return Ok(());
    }
    // The workload's data lives as long as the process: tokio tasks need 'static borrows.
    let positions: &'static [(SkuId, NodeId)] =
        Box::leak(open_positions(db.engine(), &dataset).into_boxed_slice());
    let picks: &'static [(SkuId, NodeId)] =
        Box::leak(zipf_positions(positions, dataset.skus.len(), 1 << 16, args.run).into_boxed_slice());
    let args: &'static Args = Box::leak(Box::new(args));
    let db_static: &'static DurableEngine = Box::leak(Box::new(db.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let measure = |stop: &AtomicBool| {
        std::thread::sleep(Duration::from_secs_f64(args.warmup_seconds));
        let (w0, s0, t0) = (writes.load(Ordering::Relaxed), db.wal_stats(), Instant::now());
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        let (w1, s1) = (writes.load(Ordering::Relaxed), db.wal_stats());
        stop.store(true, Ordering::Relaxed);
        (w1 - w0, s1.since(&s0), t0.elapsed().as_secs_f64())
    };
    let measured = if args.tasks > 0 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()?;
        let mut set = tokio::task::JoinSet::new();
        for id in 0..args.tasks {
            let mut shopper = Shopper::new(db_static, args.run, id, picks, positions);
            let (stop, writes) = (stop.clone(), writes.clone());
            set.spawn_on(
                async move {
                    while !stop.load(Ordering::Relaxed) {
                        let w = shopper.step(now, false)?;
                        db_static.wal().durable(w.ticket.lsn).await?;
                        writes.fetch_add(1, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                },
                runtime.handle(),
            );
        }
        let measured = measure(&stop);
        runtime.block_on(async {
            while let Some(r) = set.join_next().await {
                r??;
            }
            anyhow::Ok(())
        })?;
        measured
    } else {
        std::thread::scope(|s| -> anyhow::Result<_> {
            let mut workers = Vec::new();
            for t in 0..args.threads {
                let (db, stop, writes, out) = (&db, stop.clone(), writes.clone(), out.clone());
                workers
                    .push(s.spawn(move || worker(db, args, t, now, picks, positions, &stop, &writes, &out)));
            }
            let measured = measure(&stop);
            for w in workers {
                w.join().expect("worker")?;
            }
            Ok(measured)
        })?
    };
    let (n, stats, elapsed) = measured;
    db.close()?;
    let fsync_rate = raw_fdatasync_rate(&args.data_dir, Duration::from_secs(1), false)?;
    let overwrite_rate = raw_fdatasync_rate(&args.data_dir, Duration::from_secs(1), true)?;
    let shape = if args.tasks > 0 {
        format!("{} tasks x 1 in flight", args.tasks)
    } else {
        format!("{} threads x {} in flight", args.threads, args.pipeline)
    };
    println!(
        "writers {} ({shape}), fsync {}: {:.0} durable writes/s, {:.1} MB/s of log; \
         {} batches, mean {:.1} records/batch, {} syncs ({:.0}/s, mean {:.0} us), {} segments prepared; raw fdatasync rate of this disk {:.0}/s \
         appending ({:.0}/s overwriting a zero-filled file): {:.1}x the appending rate, {:.1}x the overwriting rate",
        if args.tasks > 0 {
            args.tasks
        } else {
            args.threads * args.pipeline
        },
        args.fsync,
        n as f64 / elapsed,
        stats.bytes as f64 / elapsed / 1e6,
        stats.batches,
        stats.mean_batch(),
        stats.syncs,
        stats.syncs as f64 / elapsed,
        stats.sync_nanos as f64 / stats.syncs.max(1) as f64 / 1e3,
        stats.segments_prepared,
        fsync_rate,
        overwrite_rate,
        n as f64 / elapsed / fsync_rate,
        n as f64 / elapsed / overwrite_rate
    );
    Ok(())
}

/// Open carts (and open orders) per shopper before the oldest is finished.
const OPEN_MAX: usize = 256;

/// A write in flight: its durability ticket and what to print once it is durable.
struct InFlight {
    ticket: Ticket,
    ack: Option<Ack>,
}

/// An acknowledged write as the crash test reads it: one line each, formatted only with `--acks`.
enum Ack {
    Hold(RequestId),
    Commit(RequestId),
    Release(RequestId),
    Ship(RequestId),
    Feed(NodeId, u64, SkuId, u32),
}

impl std::fmt::Display for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hold(h) => write!(f, "H {:x}", h.0),
            Self::Commit(h) => write!(f, "C {:x}", h.0),
            Self::Release(h) => write!(f, "R {:x}", h.0),
            Self::Ship(h) => write!(f, "P {:x}", h.0),
            Self::Feed(node, seq, sku, qty) => write!(f, "S {} {seq} {} {qty}", node.raw(), sku.raw()),
        }
    }
}

/// One stream of checkout writes (a thread, or a task in `--tasks` mode).
struct Shopper<'a> {
    db: &'a DurableEngine,
    run: u64,
    id: usize,
    rng: Pcg64Mcg,
    counter: u64,
    picks: &'a [(SkuId, NodeId)],
    next_pick: usize,
    /// The node this shopper sends on-hand feeds for (one shopper per node, so feed sequence
    /// numbers never race), and some of its SKUs that no cart takes.
    feed_node: Option<NodeId>,
    feed_skus: Vec<SkuId>,
    held: VecDeque<RequestId>,
    committed: VecDeque<RequestId>,
}

impl<'a> Shopper<'a> {
    fn new(
        db: &'a DurableEngine,
        run: u64,
        id: usize,
        picks: &'a [(SkuId, NodeId)],
        positions: &[(SkuId, NodeId)],
    ) -> Self {
        let feed_node = (id < db.engine().network().n_nodes()).then(|| NodeId::from_raw(id as u32));
        // Positions no cart takes from: shipments never move their on-hand count, so the crash
        // test can check an acknowledged feed's count exactly.
        let picked: std::collections::HashSet<(SkuId, NodeId)> = picks.iter().copied().collect();
        let feed_skus = feed_node
            .map(|n| {
                positions
                    .iter()
                    .filter(|p| p.1 == n && !picked.contains(p))
                    .map(|p| p.0)
                    .take(64)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            db,
            run,
            id,
            rng: Pcg64Mcg::seed_from_u64(run << 16 | id as u64),
            counter: 0,
            picks,
            next_pick: id * 7919,
            feed_node,
            feed_skus,
            held: VecDeque::new(),
            committed: VecDeque::new(),
        }
    }

    fn next_id(&mut self) -> RequestId {
        self.counter += 1;
        let raw = (u128::from(self.run) << 80 | (self.id as u128) << 64 | u128::from(self.counter))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        RequestId(raw | 1)
    }

    /// Applies the next write; returns its ticket and, with `acks`, the line that reports it.
    /// Each cart is held, then committed (60%) or released once the shopper has enough carts
    /// open; each order is shipped later. Live holds and allocations stay bounded: a steady
    /// state, as in a server that has run for a while.
    fn step(&mut self, now: Timestamp, acks: bool) -> anyhow::Result<InFlight> {
        let roll = self.rng.random_range(0..100u32);
        let (command, ack) = if self.held.len() >= OPEN_MAX {
            let hold = self.held.pop_front().expect("non-empty");
            let request = self.next_id();
            if roll < 60 {
                self.committed.push_back(hold);
                (Command::Commit { request, hold }, Ack::Commit(hold))
            } else {
                let release = Command::Release {
                    request,
                    hold,
                    lines: Vec::new(),
                };
                (release, Ack::Release(hold))
            }
        } else if self.committed.len() >= OPEN_MAX {
            let hold = self.committed.pop_front().expect("non-empty");
            let ship = Command::Ship {
                request: self.next_id(),
                hold,
                lines: Vec::new(),
            };
            (ship, Ack::Ship(hold))
        } else if roll < 3
            && let Some(node) = self.feed_node
            && !self.feed_skus.is_empty()
        {
            let sku = self.feed_skus[self.rng.random_range(0..self.feed_skus.len())];
            let qty = promised_benches::BENCH_ON_HAND - self.rng.random_range(0..1_000u32);
            let seq = self.db.engine().feed_seq(node) + 1;
            let feed = Command::SetOnHand {
                request: self.next_id(),
                node,
                feed_seq: seq,
                counts: vec![(sku, qty)],
            };
            (feed, Ack::Feed(node, seq, sku, qty))
        } else {
            let n_lines = 1
                + (self.rng.random_range(0..10u32) / 7) as usize
                + (self.rng.random_range(0..10u32) / 9) as usize;
            let mut lines: Vec<HoldLineRequest> = Vec::with_capacity(n_lines);
            while lines.len() < n_lines {
                let (sku, node) = self.picks[self.next_pick & 0xFFFF];
                self.next_pick = self.next_pick.wrapping_add(1);
                if lines.iter().any(|l| l.sku == sku) {
                    continue;
                }
                lines.push(HoldLineRequest {
                    sku,
                    node: NodeChoice::Node(node),
                    quantity: Quantity::new(1).expect("1"),
                    need_day: None,
                });
            }
            let hold = self.next_id();
            let command = Command::Hold {
                hold,
                lines,
                ttl_ms: 86_400_000,
                partial: false,
            };
            (command, Ack::Hold(hold))
        };
        let submitted = self.db.submit(now, &command)?;
        let (outcome, ticket) = (submitted.result?, submitted.ticket);
        let refused = matches!(outcome, Outcome::Hold(HoldOutcome::Refused { .. }));
        if let (Command::Hold { hold, .. }, false) = (&command, refused) {
            self.held.push_back(*hold);
        }
        Ok(InFlight {
            ticket,
            ack: (acks && !refused).then_some(ack),
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn worker(
    db: &DurableEngine,
    args: &Args,
    thread: usize,
    now: Timestamp,
    picks: &[(SkuId, NodeId)],
    positions: &[(SkuId, NodeId)],
    stop: &AtomicBool,
    writes: &AtomicU64,
    out: &Mutex<std::io::Stdout>,
) -> anyhow::Result<()> {
    let mut shopper = Shopper::new(db, args.run, thread, picks, positions);
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(args.pipeline);
    let drain = |in_flight: &mut VecDeque<InFlight>, keep: usize| -> anyhow::Result<()> {
        let mut lines = String::new();
        while in_flight.len() > keep {
            let w = in_flight.pop_front().expect("non-empty");
            db.wait(w.ticket)?;
            writes.fetch_add(1, Ordering::Relaxed);
            if let Some(line) = w.ack {
                lines.push_str(&line.to_string());
                lines.push('\n');
            }
        }
        if !lines.is_empty() {
            let mut o = out.lock().expect("stdout lock");
            o.write_all(lines.as_bytes())?;
            o.flush()?;
        }
        Ok(())
    };
    while !stop.load(Ordering::Relaxed) {
        in_flight.push_back(shopper.step(now, args.acks)?);
        if in_flight.len() >= args.pipeline {
            drain(&mut in_flight, args.pipeline / 2)?;
        }
    }
    drain(&mut in_flight, 0)
}

/// How much of the overwrite probe's file is zero-filled (and then written over, again and again).
const PROBE_FILL_BYTES: u64 = 64 << 20;

/// `fdatasync` calls per second on a small file in `dir`, each after a 4 KiB write: the rate the
/// disk allows one writer without group commit. Appending (as the log does) grows the file, so
/// each sync also writes the inode; `overwrite` writes over a file zero-filled and synced first,
/// which syncs data alone (what a log with preallocated segments would pay).
fn raw_fdatasync_rate(dir: &std::path::Path, for_how_long: Duration, overwrite: bool) -> anyhow::Result<f64> {
    use std::io::{Seek, SeekFrom};
    let path = dir.join("fdatasync-probe.tmp");
    let mut f = std::fs::File::create(&path)?;
    let block = [0x5Au8; 4096];
    if overwrite {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..PROBE_FILL_BYTES >> 20 {
            f.write_all(&zeros)?;
        }
        f.sync_all()?;
    }
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < for_how_long {
        if overwrite && n.is_multiple_of(PROBE_FILL_BYTES / 4096) {
            // Back to the start before running past the zero-filled part.
            f.seek(SeekFrom::Start(0))?;
        }
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}
