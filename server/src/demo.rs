//! `promised demo`: the engine on a generated data set, end to end, in one process.
//!
//! It loads the set through ordinary commands, then plays checkouts (Zipf-popular SKUs, carts of
//! 1 to 5 lines held at any node, most committed, some released, some left to expire) from several
//! threads, ticks the clock past every hold's expiry, and checks that the ledger reconciles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use promised_engine::dataset::{DataSet, DataSetSpec, PopularitySampler};
use promised_engine::{
    Command, Engine, EngineConfig, HoldLineRequest, HoldOutcome, NodeChoice, Outcome, Quantity, RequestId,
    Timestamp,
};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Data set: small, retail or peak.
    #[arg(long, default_value = "retail")]
    set: String,
    /// Seed of the data set and of the simulated shoppers.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Carts to check out.
    #[arg(long, default_value_t = 1_000_000)]
    carts: u64,
    /// Shopper threads.
    #[arg(long, default_value_t = 2)]
    threads: u64,
}

const CART_TTL_MS: u64 = 15 * 60_000;

#[derive(Default)]
struct Tally {
    granted: AtomicU64,
    refused: AtomicU64,
    committed: AtomicU64,
    released: AtomicU64,
    abandoned: AtomicU64,
    lines: AtomicU64,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let Some(spec) = DataSetSpec::by_name(&args.set) else {
        bail!(
            "unknown data set {:?}: choose one of {:?}",
            args.set,
            DataSetSpec::NAMES
        );
    };
    if args.threads == 0 || args.threads > 256 {
        bail!("--threads must be between 1 and 256");
    }
    let spec = spec.with_seed(args.seed);
    let rss_before = rss_bytes();
    let t = Instant::now();
    let ds = DataSet::generate(&spec);
    let generated = t.elapsed();
    let engine = Engine::new(EngineConfig::default());
    let start = spec.start_day.start().saturating_add_ms(9 * 3_600_000);
    let t = Instant::now();
    let report = promised::alloc::bulk_load(|| ds.load(&engine, start)).context("loading the data set")?;
    let loaded = t.elapsed();
    // Forget the load's request records, as a day of uptime would: what is left is the ledger.
    let now = start.saturating_add_ms(engine.config().retention_ms);
    engine.apply(now, &Command::Tick)?;
    engine.shrink_to_fit();
    let rss_after = rss_bytes();
    println!("promised demo: data set {:?} (seed {})", spec.name, spec.seed);
    println!(
        "  generated {} nodes, {} SKUs, {} lanes in {:.2?}",
        ds.nodes.len(),
        ds.skus.len(),
        ds.lanes.len(),
        generated
    );
    println!(
        "  loaded {} positions ({} with safety stock, {} inbound lots) through {} commands in {:.2?}",
        report.positions, report.safety_stocked, report.lots, report.commands, loaded
    );
    if let (Some(a), Some(b)) = (rss_before, rss_after) {
        println!(
            "  resident memory grew by {:.1} MiB, {:.1} bytes per stocked position, counting the generator's data and\n    pages the allocator keeps (the engine alone: cargo run --release -p promised-benches --bin memory)",
            (b.saturating_sub(a)) as f64 / (1 << 20) as f64,
            (b.saturating_sub(a)) as f64 / report.positions as f64
        );
    }

    let sku_ids: Vec<_> = ds
        .skus
        .iter()
        .map(|s| engine.sku_id(&s.name))
        .collect::<Result<_, _>>()?;
    let tally = Tally::default();
    let t = Instant::now();
    std::thread::scope(|scope| {
        for thread_idx in 0..args.threads {
            let (engine, tally, sku_ids, ds) = (&engine, &tally, &sku_ids, &ds);
            let carts = args.carts / args.threads + u64::from(thread_idx < args.carts % args.threads);
            scope.spawn(move || shop(engine, tally, sku_ids, ds, args.seed, thread_idx, carts, now));
        }
    });
    let elapsed = t.elapsed();
    let ops = tally.granted.load(Ordering::Relaxed)
        + tally.refused.load(Ordering::Relaxed)
        + tally.committed.load(Ordering::Relaxed)
        + tally.released.load(Ordering::Relaxed);
    println!(
        "  checkout: {} carts ({} lines) on {} threads in {:.2?}: {:.0} engine operations/s",
        args.carts,
        tally.lines.load(Ordering::Relaxed),
        args.threads,
        elapsed,
        ops as f64 / elapsed.as_secs_f64()
    );
    println!(
        "    holds granted {}, refused (not enough stock) {}; committed {}, released {}, left to expire {}",
        tally.granted.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.committed.load(Ordering::Relaxed),
        tally.released.load(Ordering::Relaxed),
        tally.abandoned.load(Ordering::Relaxed),
    );
    let later = now.saturating_add_ms(CART_TTL_MS + 1);
    let Outcome::Ticked { expired, .. } = engine.apply(later, &Command::Tick)? else {
        bail!("tick answered something else")
    };
    println!("  tick 15 minutes later: {expired} abandoned carts expired");
    engine
        .check_invariants()
        .map_err(anyhow::Error::msg)
        .context("ledger invariants")?;
    let stats = engine.stats();
    println!(
        "  ledger reconciles: {} allocations open, {} holds held, invariants hold",
        stats.committed, stats.held
    );

    let best = sku_ids[0];
    println!(
        "  best seller {}: network ATP {} today",
        ds.skus[0].name,
        engine.network_atp(best, later, None)?
    );
    if let Some((i, p)) = (0..ds.skus.len() as u32)
        .flat_map(|i| ds.positions_of(i).into_iter().map(move |p| (i, p)))
        .find(|(_, p)| p.lots.iter().any(|l| l.2 > later.day().plus(1)))
    {
        let sku = sku_ids[i as usize];
        let node = ds.nodes[p.node.index()].name.clone();
        let timeline = engine.timeline(sku, p.node, later)?;
        let points: Vec<String> = timeline.iter().map(|t| format!("{}: {}", t.day, t.atp)).collect();
        println!(
            "  timeline of {} at {}: {}",
            ds.skus[i as usize].name,
            node,
            points.join(", ")
        );
    }
    println!(
        "  state digest {} ({})",
        engine.state_digest(),
        if args.threads == 1 {
            "the same on every run with these arguments"
        } else {
            "threads race for the last units, so it differs from run to run; --threads 1 repeats"
        }
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn shop(
    engine: &Engine,
    tally: &Tally,
    sku_ids: &[promised_engine::SkuId],
    ds: &DataSet,
    seed: u64,
    thread_idx: u64,
    carts: u64,
    now: Timestamp,
) {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x5EED ^ (thread_idx << 32));
    let popularity = PopularitySampler::new(ds.skus.len() as u32, 1.0);
    let mut next_id = (u128::from(thread_idx + 1) << 96) | (u128::from(seed) << 32);
    let mut id = || {
        next_id += 1;
        RequestId(next_id)
    };
    for _ in 0..carts {
        let n_lines = rng.random_range(1..=5);
        let mut lines: Vec<HoldLineRequest> = Vec::with_capacity(n_lines);
        while lines.len() < n_lines {
            let sku = sku_ids[popularity.sample(&mut rng) as usize];
            if lines.iter().any(|l| l.sku == sku) {
                continue;
            }
            let quantity = Quantity::new(rng.random_range(1..=2)).expect("in range");
            lines.push(HoldLineRequest {
                sku,
                node: NodeChoice::Any,
                quantity,
                need_day: None,
            });
        }
        tally.lines.fetch_add(n_lines as u64, Ordering::Relaxed);
        let hold = id();
        let command = Command::Hold {
            hold,
            lines,
            ttl_ms: CART_TTL_MS,
            partial: false,
        };
        match engine.apply(now, &command) {
            Ok(Outcome::Hold(HoldOutcome::Granted { .. })) => {
                tally.granted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) => panic!("demo hold failed: {e}"),
        }
        let roll: f64 = rng.random();
        let request = id();
        if roll < 0.7 {
            engine
                .apply(now, &Command::Commit { request, hold })
                .expect("commit");
            tally.committed.fetch_add(1, Ordering::Relaxed);
        } else if roll < 0.9 {
            engine
                .apply(
                    now,
                    &Command::Release {
                        request,
                        hold,
                        lines: vec![],
                    },
                )
                .expect("release");
            tally.released.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Resident set size from /proc (Linux); `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
