//! Promise latency in the engine: carts of 1, 5 and 10 lines (SKUs drawn by popularity, Zipf
//! exponent 1, quantity 1-3), to a random zone, each asked for ground, two-day and next-day at
//! once, on a generated data set. Prints p50, p99, p99.9 and max per cart size, and how many
//! carts got a plan at every level.
//!
//! `cargo run --release -p promised-benches --bin promise_bench -- [--set retail] [--carts 20000]`

use std::time::Instant;

use clap::Parser;
use promised_benches::BenchWorld;
use promised_engine::ZoneId;
use promised_engine::dataset::DataSetSpec;
use promised_engine::promise::lanes::SHIPPING;
use promised_engine::promise::{Destination, ListingPair, PromiseRequest, Shortfall};
use rand::Rng;

/// The server's allocator: promises allocate their candidate lists, and glibc's malloc made
/// that a tenth of the time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "retail")]
    set: String,
    #[arg(long, default_value_t = 20_000)]
    carts: usize,
    /// Cart sizes (lines) to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 5, 10])]
    sizes: Vec<usize>,
    /// Ask only ground instead of ground, two-day and next-day at once.
    #[arg(long)]
    ground_only: bool,
    /// Skip the listing-page measurement.
    #[arg(long)]
    no_listing: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec =
        DataSetSpec::by_name(&args.set).ok_or_else(|| anyhow::anyhow!("--set: small, retail or peak"))?;
    let started = Instant::now();
    let world = BenchWorld::new(&spec);
    eprintln!("{} loaded in {:.1} s", args.set, started.elapsed().as_secs_f64());
    let popularity = world.popularity();
    let zones = world.dataset.zones.len() as u32;
    let levels = if args.ground_only {
        vec![SHIPPING[0]]
    } else {
        SHIPPING.to_vec()
    };
    for &size in &args.sizes {
        let mut rng = BenchWorld::rng(size as u64);
        let carts: Vec<PromiseRequest> = (0..args.carts)
            .map(|_| world.cart(&mut rng, &popularity, size, 1..=3, &levels))
            .collect();
        let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
        let mut complete = 0usize;
        // Unplanned (cart, level) answers by the first line's reason, by `Shortfall as u8`.
        let mut why = [0usize; Shortfall::ALL.len()];
        let run = Instant::now();
        for cart in &carts {
            let t = Instant::now();
            let answer = world.engine.promise(world.now, cart)?;
            hist.record(t.elapsed().as_nanos() as u64)?;
            complete += usize::from(answer.iter().all(|a| a.plan.is_some()));
            for a in answer.iter().filter(|a| a.plan.is_none()) {
                if let Some(&(_, reason)) = a.unserved.first() {
                    why[reason as usize] += 1;
                }
            }
        }
        let secs = run.elapsed().as_secs_f64();
        println!(
            "{size:>2}-line carts x {} level(s): p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us; {:.0} promises/s on one thread; {:.1}% planned at every level",
            levels.len(),
            hist.value_at_quantile(0.5) as f64 / 1e3,
            hist.value_at_quantile(0.99) as f64 / 1e3,
            hist.value_at_quantile(0.999) as f64 / 1e3,
            hist.max() as f64 / 1e3,
            carts.len() as f64 / secs,
            100.0 * complete as f64 / carts.len() as f64
        );
        let reasons: Vec<String> = Shortfall::ALL
            .into_iter()
            .filter(|&r| why[r as usize] > 0)
            .map(|r| format!("{} {}", r.name(), why[r as usize]))
            .collect();
        if !reasons.is_empty() {
            println!("    unplanned levels by reason: {}", reasons.join(", "));
        }
    }
    if args.no_listing {
        return Ok(());
    }
    // Listing pages: 1,000 (SKU, zone) pairs a request, SKUs by popularity, one zone a request.
    let mut rng = BenchWorld::rng(99);
    let pages: Vec<Vec<ListingPair>> = (0..args.carts / 100)
        .map(|_| {
            let zone = ZoneId(rng.random_range(0..zones));
            (0..1000)
                .map(|_| ListingPair {
                    sku: world.sku_ids[popularity.sample(&mut rng) as usize],
                    destination: Destination { zone, point: None },
                })
                .collect()
        })
        .collect();
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let run = Instant::now();
    let mut found = 0usize;
    for page in &pages {
        let t = Instant::now();
        let answers = world.engine.earliest_deliveries(world.now, page, SHIPPING[0])?;
        hist.record(t.elapsed().as_micros() as u64)?;
        found += answers.iter().filter(|a| a.is_some()).count();
    }
    let secs = run.elapsed().as_secs_f64();
    println!(
        "listing pages of 1,000 pairs (ground): {:.0} pairs/s on {} threads; a page p50 {} us, p99 {} us; {:.1}% of pairs deliverable",
        (pages.len() * 1000) as f64 / secs,
        rayon::current_num_threads(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        100.0 * found as f64 / (pages.len() * 1000) as f64
    );
    Ok(())
}
