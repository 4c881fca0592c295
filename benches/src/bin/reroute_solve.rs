//! Solves a saved re-route instance (`reroute_bench --save-instance FILE`) and prints what the
//! solver found: for measuring the solver alone, without a minute of set-up per run.
//!
//! `RUST_LOG=promised::reroute=debug cargo run --release -p promised-benches --bin reroute_solve -- FILE [--threads N] [--iterations N]`

use std::time::Instant;

use clap::Parser;
use promised_engine::reroute::ReroutePolicy;
use promised_engine::reroute::solver::{Effort, solve};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    file: std::path::PathBuf,
    #[arg(long)]
    threads: Option<usize>,
    /// Most subgradient iterations (the engine's default when not given).
    #[arg(long)]
    iterations: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    promised_benches::reroute_setup(args.threads)?;
    promised_benches::tune_allocator();
    let t = Instant::now();
    let instance = promised_benches::instance_file::load(&args.file)?;
    eprintln!(
        "loaded {} orders, {} candidates, {} resources in {:.1} s",
        instance.n_orders(),
        instance.candidates.len(),
        instance.capacity.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut effort = Effort::default();
    if let Some(n) = args.iterations {
        effort.iterations_max = n;
    }
    let solution = solve(&instance, &effort, &|| false);
    let seconds = t.elapsed().as_secs_f64();
    let (cost, left) = promised_engine::reroute::solver::cost_of(&instance, &solution.choice);
    // Orders kept on a plan that no longer ships carry the policy's penalty in their cost.
    let penalty = ReroutePolicy::default().unserved_cents as f64;
    let kept_broken = solution
        .choice
        .iter()
        .enumerate()
        .filter(|&(j, c)| c.is_some_and(|c| instance.candidates_of(j)[c as usize].cost >= penalty))
        .count();
    println!(
        "solved on {} thread(s) in {seconds:.2} s: cost {cost:.0}, {kept_broken} kept on a broken plan, {left} with no plan, bound {:.0}, gap {}, {} iterations",
        rayon::current_num_threads(),
        solution.lower_bound,
        solution
            .gap
            .map_or("none".to_string(), |g| format!("{:.4}%", 100.0 * g)),
        solution.iterations,
    );
    Ok(())
}
