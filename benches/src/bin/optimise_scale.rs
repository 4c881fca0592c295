//! The optimiser's core at scale: random assignment problems of N orders, each with K options
//! among M nodes (costs 10-100, loads 1-10, capacities at `--tightness` of the average load
//! they would carry), solved on the configured threads. Prints seconds, cost, bound and gap.
//!
//! `cargo run --release -p promised-benches --bin optimise_scale -- --orders 1000000 [--nodes 1000]
//! [--options 8] [--tightness 1.2] [--threads N]`

use std::time::Instant;

use clap::Parser;
use promised_engine::optimise::{Agent, OrderOption, Problem, SolveOptions, solve};
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    #[arg(long, default_value_t = 8)]
    options: usize,
    /// Capacity over the average load per node.
    #[arg(long, default_value_t = 1.2)]
    tightness: f64,
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(args.seed);
    let mut p = Problem::default();
    let mut total = 0.0;
    for _ in 0..args.orders {
        let mut nodes: Vec<u32> = Vec::with_capacity(args.options);
        while nodes.len() < args.options.min(args.nodes) {
            let n = rng.random_range(0..args.nodes as u32);
            if !nodes.contains(&n) {
                nodes.push(n);
            }
        }
        let load = f64::from(rng.random_range(1..=10u32));
        total += load;
        p.push_order(nodes.into_iter().map(|agent| OrderOption {
            agent,
            cost: f64::from(rng.random_range(10..=100u32)),
            load,
        }));
    }
    let capacity = (total / args.nodes as f64 * args.tightness).ceil();
    p.agents = vec![Agent { capacity }; args.nodes];
    let t = Instant::now();
    let s = solve(&p, &SolveOptions::for_problem(&p), &|| false, &mut |_| {});
    println!(
        "{} orders x {} options over {} nodes (tightness {}), {} threads: {:.2} s, cost {}, bound {:.1}, gap {:.3}%, {} unassigned, {} iterations",
        args.orders,
        args.options,
        args.nodes,
        args.tightness,
        rayon::current_num_threads(),
        t.elapsed().as_secs_f64(),
        s.cost,
        s.lower_bound,
        100.0 * s.gap.unwrap_or(f64::NAN),
        s.unassigned(),
        s.iterations
    );
    Ok(())
}
