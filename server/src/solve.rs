//! `promised solve`: the optimiser on a problem file (`docs/solve-format.md`), offline. Prints a
//! JSON summary on stdout, writes the plan to `--out`, shows a progress bar on stderr when the
//! solve takes longer than a second.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use promised_engine::optimise::{Progress, SolveOptions, explicit, solve};
use promised_engine::reroute::{network, solver::Effort};

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
    if args.threads == Some(0) {
        return Err(Refused("--threads must be at least 1".into()).into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("starting the worker threads")?;
    let deadline = args.time_limit.map(|s| started + Duration::from_secs_f64(s));
    let stop = || deadline.is_some_and(|d| Instant::now() >= d);
    if network::is_network_form(&text) {
        return run_network(args, &text, &pool, started, &stop);
    }
    let threads = pool.current_num_threads();
    let e = explicit::parse(&text).map_err(|err| Refused(format!("{}: {err}", args.problem.display())))?;
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

/// The network form: the engine's re-route on the orders of the file (a spinner on stderr when
/// it takes more than a second: the solve reports no iterations as it goes).
fn run_network(
    args: &SolveArgs,
    text: &str,
    pool: &rayon::ThreadPool,
    started: Instant,
    stop: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<()> {
    let p = pool
        .install(|| network::parse(text))
        .map_err(|err| Refused(format!("{}: {err}", args.problem.display())))?;
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    spinner
        .set_style(ProgressStyle::with_template("{elapsed:>4} {spinner} {msg}").expect("a valid template"));
    spinner.set_message(format!("placing {} orders", p.orders.len()));
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let ticker = {
        let spinner = spinner.clone();
        std::thread::spawn(move || {
            // Shown only when the solve is still running after a second.
            if finished.recv_timeout(Duration::from_secs(1)).is_err() {
                spinner.set_draw_target(ProgressDrawTarget::stderr());
                spinner.enable_steady_tick(Duration::from_millis(200));
                let _ = finished.recv();
            }
        })
    };
    let report = pool.install(|| {
        p.engine
            .plan_orders(p.now, &p.orders, &p.policy, &Effort::default(), stop)
    });
    drop(done);
    let _ = ticker.join();
    spinner.finish_and_clear();
    let report = report.map_err(|err| Refused(format!("{}: {err}", args.problem.display())))?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(out) = &args.out {
        std::fs::write(out, network::plan_json(&p, &report) + "\n")
            .with_context(|| format!("writing the plan to {}", out.display()))?;
    }
    let summary = serde_json::json!({
        "orders": report.orders,
        "assigned": report.orders - report.left_out.len(),
        "unassigned": report.left_out.len(),
        "cost": report.cost_after + report.penalties,
        "shipping_cost": report.cost_after,
        "penalties": report.penalties,
        "lower_bound": report.lower_bound,
        "gap": report.gap,
        "seconds": seconds,
        "iterations": report.iterations,
        "stopped": report.stopped,
        "threads": pool.current_num_threads(),
    });
    println!("{summary}");
    Ok(())
}
