//! Promise latency in the engine: carts of 1, 5 and 10 lines (SKUs drawn by popularity, Zipf
//! exponent 1, quantity 1-3), to a random zone, each asked for ground, two-day and next-day at
//! once, on a generated data set. Prints p50, p99, p99.9 and max per cart size, and how many
//! carts got a plan at every level.
//!
//! `cargo run --release -p promised-benches --bin promise_bench -- [--set retail] [--carts 20000]`

use std::time::Instant;

use clap::Parser;
use promised_benches::BenchWorld;
use promised_engine::dataset::DataSetSpec;
use promised_engine::promise::lanes::SHIPPING;
use promised_engine::promise::{CartLine, Destination, PromiseOptions, PromiseRequest};
use promised_engine::{Quantity, ZoneId};
use rand::Rng;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "retail")]
    set: String,
    #[arg(long, default_value_t = 20_000)]
    carts: usize,
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
    for size in [1usize, 5, 10] {
        let mut rng = BenchWorld::rng(size as u64);
        let carts: Vec<PromiseRequest> = (0..args.carts)
            .map(|_| {
                let mut skus = Vec::with_capacity(size);
                while skus.len() < size {
                    let s = world.sku_ids[popularity.sample(&mut rng) as usize];
                    if !skus.contains(&s) {
                        skus.push(s);
                    }
                }
                PromiseRequest {
                    lines: skus
                        .into_iter()
                        .map(|sku| CartLine {
                            sku,
                            quantity: Quantity::new(rng.random_range(1..=3)).expect("in range"),
                        })
                        .collect(),
                    destination: Destination {
                        zone: ZoneId(rng.random_range(0..zones)),
                        point: None,
                    },
                    levels: SHIPPING.to_vec(),
                    options: PromiseOptions::default(),
                }
            })
            .collect();
        let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
        let mut complete = 0usize;
        let run = Instant::now();
        for cart in &carts {
            let t = Instant::now();
            let answer = world.engine.promise(world.now, cart)?;
            hist.record(t.elapsed().as_nanos() as u64)?;
            complete += usize::from(answer.iter().all(|a| a.plan.is_some()));
        }
        let secs = run.elapsed().as_secs_f64();
        println!(
            "{size:>2}-line carts x 3 levels: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us; {:.0} promises/s on one thread; {:.1}% planned at every level",
            hist.value_at_quantile(0.5) as f64 / 1e3,
            hist.value_at_quantile(0.99) as f64 / 1e3,
            hist.value_at_quantile(0.999) as f64 / 1e3,
            hist.max() as f64 / 1e3,
            carts.len() as f64 / secs,
            100.0 * complete as f64 / carts.len() as f64
        );
    }
    Ok(())
}
