//! A peak-sale re-route: route N orders (carts of 1 to 3 lines, SKUs by popularity, random
//! zones, ground) on a generated data set, close the busiest nodes, then re-route every open
//! order at once. Prints the selection and solve times, the moves, the cost before and after,
//! the bound and the gap, and how long the all-or-nothing apply held the locks.
//!
//! `cargo run --release -p promised-benches --bin reroute_bench -- [--set retail] [--orders 100000]
//! [--close 5] [--threads N] [--no-apply]`

use std::time::Instant;

use clap::Parser;
use promised_benches::BenchWorld;
use promised_engine::RequestId;
use promised_engine::command::{Command, Outcome};
use promised_engine::dataset::DataSetSpec;
use promised_engine::network::{NodeStatus, ServiceLevel};
use promised_engine::promise::PromiseRequest;
use promised_engine::reroute::{RerouteFilter, ReroutePolicy, solver::Effort};
use rand::Rng;
use rayon::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Orders planned against one state before they are applied.
const ROUTE_BATCH: usize = 8_192;
/// Rounds of planning again the orders a batch refused.
const ROUTE_ROUNDS: usize = 8;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "retail")]
    set: String,
    #[arg(long, default_value_t = 100_000)]
    orders: usize,
    /// Nodes to close, busiest first.
    #[arg(long, default_value_t = 5)]
    close: usize,
    #[arg(long)]
    threads: Option<usize>,
    /// Plan only (a dry run).
    #[arg(long)]
    no_apply: bool,
    /// Also write the solver's instance to this file, for `reroute_solve`.
    #[arg(long)]
    save_instance: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The engine logs each phase's seconds (candidates, instance, presolve, iterations,
    // ejection) at info under `promised::reroute`.
    promised_benches::reroute_setup(args.threads)?;
    let spec =
        DataSetSpec::by_name(&args.set).ok_or_else(|| anyhow::anyhow!("--set: small, retail or peak"))?;
    // As the server runs: huge pages, freed memory kept a second; purging off while loading.
    promised_benches::tune_allocator();
    let t = Instant::now();
    let world = promised_benches::bulk_load(|| BenchWorld::new(&spec));
    eprintln!("{} loaded in {:.1} s", args.set, t.elapsed().as_secs_f64());
    let popularity = world.popularity();
    let mut rng = BenchWorld::rng(42);
    let carts: Vec<PromiseRequest> = (0..args.orders)
        .map(|_| {
            let size = rng.random_range(1..=3usize);
            world.cart(&mut rng, &popularity, size, 1..=1, &[ServiceLevel::Ground])
        })
        .collect();
    let t = Instant::now();
    let now = world.now;
    // Routed in parallel yet the same every run: a batch is planned against one state and
    // applied in order; an order refused because the batch took its stock or day plans again
    // in the next round (under a new request id: a refusal is remembered).
    let mut pending: Vec<usize> = (0..carts.len()).collect();
    let mut routed = 0usize;
    for round in 0..ROUTE_ROUNDS {
        let mut again = Vec::new();
        for batch in pending.chunks(ROUTE_BATCH) {
            let id = |i: usize| RequestId((round as u128) << 64 | (1_000_000_000 + i as u128));
            let plans: Vec<_> = batch
                .par_iter()
                .map(|&i| {
                    world
                        .engine
                        .plan_route(now, &carts[i], id(i))
                        .ok()
                        .and_then(|p| p.command)
                })
                .collect();
            for (&i, command) in batch.iter().zip(plans) {
                let Some(command) = command else { continue };
                match world.engine.apply(now, &command) {
                    Ok(Outcome::Route(promised_engine::command::HoldOutcome::Granted { .. })) => routed += 1,
                    _ => again.push(i),
                }
            }
        }
        pending = again;
        if pending.is_empty() {
            break;
        }
    }
    eprintln!(
        "routed {routed} of {} orders in {:.1} s",
        args.orders,
        t.elapsed().as_secs_f64()
    );
    // Close the busiest nodes.
    let all = world.engine.open_orders(&RerouteFilter::default())?;
    let network = world.engine.network();
    let mut per_node = vec![0usize; network.n_nodes()];
    for o in &all {
        for p in &o.packages {
            per_node[p.node.index()] += 1;
        }
    }
    let mut busiest: Vec<usize> = (0..per_node.len()).collect();
    busiest.sort_by_key(|&n| std::cmp::Reverse(per_node[n]));
    let mut hit = 0;
    for &n in busiest.iter().take(args.close) {
        let id = promised_engine::NodeId::from_raw(n as u32);
        let mut spec = network.node(id).expect("a node").clone();
        hit += per_node[n];
        spec.status = NodeStatus::Closed;
        world.engine.apply(now, &Command::UpsertNode(spec))?;
    }
    eprintln!("closed the {} busiest nodes: {hit} packages stranded", args.close);
    let t = Instant::now();
    let orders = world.engine.open_orders(&RerouteFilter::default())?;
    let select_s = t.elapsed().as_secs_f64();
    if let Some(path) = &args.save_instance {
        let instance = world
            .engine
            .reroute_instance(now, &orders, &ReroutePolicy::default())?;
        promised_benches::instance_file::save(&instance, path)?;
        eprintln!("instance written to {}", path.display());
    }
    let t = Instant::now();
    let report = world.engine.plan_orders(
        now,
        &orders,
        &ReroutePolicy::default(),
        &Effort::default(),
        &|| false,
    )?;
    let plan_s = t.elapsed().as_secs_f64();
    println!(
        "{} on {} thread(s): {} open orders ({} candidates), {} broken; select {select_s:.2} s, plan {plan_s:.2} s; {} moves, {} left out; cost {:.0} -> {:.0} + {:.0} penalties, bound {:.0}, gap {}; {} iterations; {} resources over",
        args.set,
        rayon::current_num_threads(),
        report.orders,
        report.candidates,
        report.broken_before,
        report.moves.len(),
        report.left_out.len(),
        report.cost_before,
        report.cost_after,
        report.penalties,
        report.lower_bound,
        report
            .gap
            .map_or("none (orders with no plan at all)".to_string(), |g| format!(
                "{:.4}%",
                100.0 * g
            )),
        report.iterations,
        report.check.over,
    );
    if !args.no_apply {
        match report.command(RequestId(42), false) {
            Ok(command) => {
                let t = Instant::now();
                let outcome = world.engine.apply(now, &command)?;
                println!(
                    "apply: {:?} in {:.1} ms (every request shard and the moved SKUs' shards locked for that long)",
                    match outcome {
                        Outcome::Reroute(o) => format!("{o:?}").chars().take(400).collect::<String>(),
                        other => format!("{other:?}"),
                    },
                    t.elapsed().as_secs_f64() * 1e3
                );
            }
            Err(e) => println!("apply: not in one command: {e}"),
        }
    }
    Ok(())
}
