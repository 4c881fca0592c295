//! The optimiser on the public GAP instances (minimisation): each instance's cost, the gap to
//! its optimal or best-known value, the gap to the optimiser's own lower bound, and the time.
//! `--convert DIR` instead writes each instance in the explicit JSON form, for `promised solve`.
//!
//! `cargo run --release -p promised-benches --bin gap_bench -- [--filter gap1] [--threads N]`

use std::time::Instant;

use clap::Parser;
use promised_benches::gap::{data_dir, known_minima, read_orlib, to_explicit_json};
use promised_engine::optimise::{SolveOptions, solve};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// Only instances whose name or file contains this.
    #[arg(long, default_value = "")]
    filter: String,
    #[arg(long)]
    threads: Option<usize>,
    /// Write the instances as explicit-form JSON files into this directory and stop.
    #[arg(long)]
    convert: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    let dir = data_dir();
    let known = known_minima(&dir)?;
    let mut gaps = Vec::new();
    let mut worst: (f64, String) = (0.0, String::new());
    let started = Instant::now();
    for k in known
        .iter()
        .filter(|k| k.instance.contains(&args.filter) || k.file.contains(&args.filter))
    {
        let problems = read_orlib(&dir.join(&k.file))?;
        let p = problems
            .get(k.problem - 1)
            .ok_or_else(|| anyhow::anyhow!("{}: no problem {}", k.file, k.problem))?;
        if let Some(out) = &args.convert {
            std::fs::create_dir_all(out)?;
            std::fs::write(out.join(format!("{}.json", k.instance)), to_explicit_json(p))?;
            continue;
        }
        let t = Instant::now();
        let s = solve(p, &SolveOptions::for_problem(p), &|| false, &mut |_| {});
        let secs = t.elapsed().as_secs_f64();
        let to_known = (s.cost - k.value) / k.value;
        println!(
            "{:<10} m {:>2} n {:>4}: cost {:>8} ({} {:>8}) gap to it {:>6.2}%, bound {:>10.1} own gap {:>6.2}%, {} unassigned, {:.2} s",
            k.instance,
            p.agents.len(),
            p.n_orders(),
            s.cost,
            k.status,
            k.value,
            100.0 * to_known,
            s.lower_bound,
            100.0 * s.gap.unwrap_or(f64::NAN),
            s.unassigned(),
            secs
        );
        if s.unassigned() == 0 {
            gaps.push(to_known);
            if to_known > worst.0 {
                worst = (to_known, k.instance.clone());
            }
        }
    }
    if !gaps.is_empty() {
        println!(
            "{} instances: mean gap to the known value {:.3}%, worst {:.3}% ({}), {:.1} s in all",
            gaps.len(),
            100.0 * gaps.iter().sum::<f64>() / gaps.len() as f64,
            100.0 * worst.0,
            worst.1,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
