//! `promised solve`: the optimiser on a problem file (`docs/solve-format.md`), offline. Prints a
//! JSON summary on stdout, writes the plan to `--out`, shows a progress bar on stderr when the
//! solve takes longer than a second.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use promised_engine::optimise::{Progress, SolveOptions, explicit, solve};

#[derive(Args, Debug)]
pub struct SolveArgs {
    /// The problem file (JSON; see docs/solve-format.md).
    #[arg(long)]
    problem: PathBuf,
    /// Worker threads (default: one per core). The plan is the same for any number.
    #[arg(long)]
    threads: Option<usize>,
    /// Stop after this many seconds with the best plan found by then.
    #[arg(long, value_parser = positive_seconds)]
    time_limit: Option<f64>,
    /// Write the plan (JSON) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// A problem file that was refused (exit status 2, like a usage error: the input is wrong).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

pub fn run(args: &SolveArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.problem)
        .with_context(|| format!("reading {}", args.problem.display()))?;
    let started = Instant::now();
    let e = explicit::parse(&text).map_err(|err| Refused(format!("{}: {err}", args.problem.display())))?;
    if args.threads == Some(0) {
        return Err(Refused("--threads must be at least 1".into()).into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("starting the worker threads")?;
    let threads = pool.current_num_threads();
    let deadline = args.time_limit.map(|s| started + Duration::from_secs_f64(s));
    let stop = || deadline.is_some_and(|d| Instant::now() >= d);
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} iterations  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut shown = false;
    let mut progress = |p: Progress| {
        if !shown && started.elapsed() > Duration::from_secs(1) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
        bar.set_length(u64::from(p.iterations_max));
        bar.set_position(u64::from(p.iteration));
        bar.set_message(match p.best_cost {
            Some(cost) => format!("cost {cost} bound {:.1}", p.lower_bound),
            None => format!("no complete plan yet, bound {:.1}", p.lower_bound),
        });
    };
    let solution = pool.install(|| {
        solve(
            &e.problem,
            &SolveOptions::for_problem(&e.problem),
            &stop,
            &mut progress,
        )
    });
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if let Some(out) = &args.out {
        std::fs::write(out, explicit::plan_json(&e, &solution) + "\n")
            .with_context(|| format!("writing the plan to {}", out.display()))?;
    }
    let summary = serde_json::json!({
        "orders": e.problem.n_orders(),
        "assigned": e.problem.n_orders() - solution.unassigned(),
        "unassigned": solution.unassigned(),
        "cost": solution.cost,
        "lower_bound": solution.lower_bound,
        "gap": solution.gap,
        "seconds": seconds,
        "iterations": solution.iterations,
        "stopped": solution.stopped,
        "threads": threads,
    });
    println!("{summary}");
    Ok(())
}
