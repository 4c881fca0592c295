//! The command line ([`Args`]) and one invocation ([`run`]), in the library so that integration
//! tests drive the harness exactly as the binary does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::Midway;
use crate::catalog::Catalog;
use crate::driver::{self, Plan};
use crate::plot::{self, StepPoint};
use crate::stats::{self, Row, Tick, human_rate, human_us};
use crate::target::{RedisAdmin, RedisServer, TargetKind};
use crate::verify::{self, Journal, Verdict};
use crate::workload::{Mix, Scenario, run_nonce};
use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use promised_client::{Client, ClientConfig, RequestId, Reroute};

#[derive(Parser, Debug)]
#[command(
    name = "promised-load",
    version,
    about = "Load generator and verifier for promised (and the same hold workloads against Redis + Lua)"
)]
pub struct Args {
    /// The target's address (for Redis: one this harness did not start; see --redis-server).
    #[arg(long, default_value = "127.0.0.1:7411")]
    addr: String,
    #[arg(long, value_enum, default_value = "promised")]
    target: TargetKind,
    #[arg(long, value_enum, default_value = "checkout")]
    scenario: Scenario,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Frames in flight per connection (closed loop; open loop has up to the server's limit).
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Operations per frame (promised: a Batch; Redis: that many commands written together).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Open loop: operations per second in total, each latency measured from its intended send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: each connection's writer wakes at most once every this many microseconds and
    /// sends every frame due by then in one write (wrk2 does the same at 1 ms). A frame sent
    /// late counts the wait in its latency. A wake-up per frame would cost the harness more CPU
    /// than the server it measures on a shared machine.
    #[arg(long, default_value_t = 250)]
    tick_us: u64,
    /// A latency-versus-load table: after a closed-loop run finds the peak, open-loop runs of
    /// --duration at these percentages of it (e.g. 10,25,50,75,90,100,110,120).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<f64>,
    /// The demo data set the server was started with (`promised serve --demo SET`).
    #[arg(long, default_value = "small")]
    set: String,
    /// Checkout SKUs (the most popular) the run draws from.
    #[arg(long)]
    skus: Option<u32>,
    /// Lines per hold (hold scenario; checkout carts draw 1-10 lines otherwise).
    #[arg(long)]
    lines: Option<u32>,
    /// Share of granted holds committed, the rest released (default: 0.7; 0 for hold, atp, feed).
    #[arg(long)]
    commit_ratio: Option<f64>,
    /// Share of promised carts that go on to a hold.
    #[arg(long, default_value_t = 0.5)]
    hold_ratio: f64,
    /// Share of routed orders cancelled (reroute scenario).
    #[arg(long, default_value_t = 0.1)]
    cancel_ratio: f64,
    /// Draw SKUs uniformly instead of by popularity.
    #[arg(long)]
    uniform: bool,
    /// SKUs per feed message.
    #[arg(long, default_value_t = 50)]
    feed_skus: usize,
    /// Re-route scenario: the batch re-route's time limit, seconds.
    #[arg(long, default_value_t = 5.0)]
    reroute_time_limit: f64,
    /// Reconcile every acknowledged write with the target afterwards; exit 1 on any mismatch.
    #[arg(long)]
    verify: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw latency percentiles and throughput over time as a PNG here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// A TrueType font for the plot's text (default: DejaVu Sans from the system).
    #[arg(long)]
    font: Option<PathBuf>,
    /// The auth token (a `write` token for writes; `admin` for the re-route scenario).
    #[arg(long, env = "PROMISED_TOKEN")]
    token: Option<String>,
    /// Redis: the `redis-server` binary to start on loopback when --redis-addr is not given.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Redis: an already running server instead (its `s:*`, `h:*` and `a:*` keys are overwritten).
    #[arg(long)]
    redis_addr: Option<String>,
    /// Redis: `appendfsync` of the server this harness starts (always or everysec).
    #[arg(long, default_value = "always")]
    redis_fsync: String,
    /// Seconds to wait for the last answers once the run ends.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(serde::Serialize)]
struct Results<'a> {
    tool: &'static str,
    version: &'static str,
    target: TargetKind,
    scenario: Scenario,
    set: &'a str,
    addr: &'a str,
    connections: usize,
    pipeline: usize,
    batch: usize,
    rate: Option<f64>,
    tick_us: u64,
    warmup_s: f64,
    duration_s: f64,
    redis_fsync: Option<&'a str>,
    ops: Vec<Row>,
    timeline: Vec<Tick>,
    steps: Vec<StepPoint>,
    reroute: Option<Midway>,
    verify: Option<Verdict>,
    broken: Vec<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn client_config(args: &Args) -> ClientConfig {
    let mut c = ClientConfig::new(args.addr.clone());
    c.client_name = "promised-load verify".into();
    c.request_timeout = Duration::from_secs(60);
    c.pool_size = 1;
    if let Some(t) = &args.token {
        c = c.token(t.clone());
    }
    c
}

/// The re-route scenario's batch re-route: every open order, applied, under a time limit.
fn reroute(args: &Args, cat: &Catalog) -> anyhow::Result<Midway> {
    runtime()?.block_on(async {
        let client = Client::connect(client_config(args)).await?;
        let started = Instant::now();
        // Under load, stock moves between the plan and its apply: the apply is partial (the
        // moves that still fit), which the server never refuses as a whole.
        let mut ask = Reroute::at_nodes(&[]);
        ask.time_limit = Some(Duration::from_secs_f64(args.reroute_time_limit));
        ask.moves_max = 200_000;
        ask.apply = Some(RequestId::random());
        ask.partial = true;
        let a = client.reroute(ask).await.context("the batch re-route")?;
        let moved = if a.applied {
            let skipped: std::collections::HashSet<RequestId> = a.skipped.iter().copied().collect();
            a.moves
                .iter()
                .filter(|m| !skipped.contains(&m.order))
                .map(|m| {
                    let nodes = m
                        .line_nodes
                        .iter()
                        .map(|n| cat.node_index(n).unwrap_or(u32::MAX))
                        .collect();
                    (m.order, nodes)
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Midway {
            seconds: started.elapsed().as_secs_f64(),
            orders: a.orders,
            moves: a.moves_total,
            applied_moves: a.moved,
            skipped: a.skipped.len(),
            left_out: a.left_out.len(),
            gap: a.gap,
            applied: a.applied,
            moved,
        })
    })
}

fn progress(args: &Args, seconds: f64, label: &str) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(seconds.ceil() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} s  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Runs one invocation; `Ok(false)`: a connection broke or `--verify` found a mismatch.
pub fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.connections > 0 && args.pipeline > 0 && args.batch > 0,
        "--connections, --pipeline and --batch must be at least 1"
    );
    anyhow::ensure!(
        args.duration > 0.0 && args.warmup >= 0.0,
        "--duration must be positive and --warmup not negative"
    );
    anyhow::ensure!(
        args.steps.is_empty() || args.rate.is_none(),
        "--steps finds the peak itself: leave out --rate"
    );
    anyhow::ensure!(
        args.steps.iter().all(|p| *p > 0.0),
        "--steps are percentages above 0"
    );
    let redis = args.target == TargetKind::Redis;
    if redis {
        anyhow::ensure!(
            matches!(
                args.scenario,
                Scenario::Checkout | Scenario::FlashSale | Scenario::Hold | Scenario::Atp
            ),
            "--target redis runs the hold workloads only: checkout (carts held without a promise), flash-sale, hold, atp"
        );
        anyhow::ensure!(
            matches!(args.redis_fsync.as_str(), "always" | "everysec"),
            "--redis-fsync: always or everysec"
        );
    }
    let cat = Catalog::generate(&args.set, args.skus)?;
    let mix = Mix {
        scenario: args.scenario,
        lines: args.lines,
        hold_ratio: args.hold_ratio,
        commit_ratio: args.commit_ratio.unwrap_or(args.scenario.default_commit_ratio()),
        cancel_ratio: args.cancel_ratio,
        uniform: args.uniform,
        feed_skus: args.feed_skus.max(1),
        hold_only: redis,
    };
    // The target.
    let mut redis_server = None;
    let mut redis_admin = None;
    let mut addr = args.addr.clone();
    let scripts = if redis {
        if let Some(a) = &args.redis_addr {
            addr = a.clone();
        } else {
            let s = RedisServer::start(&args.redis_server, &args.redis_fsync)?;
            addr = s.addr.clone();
            redis_server = Some(s);
        }
        let mut admin =
            RedisAdmin::connect(&addr).with_context(|| format!("connecting to Redis at {addr}"))?;
        let scripts = admin.prepare(&cat)?;
        redis_admin = Some(admin);
        Some(scripts)
    } else {
        None
    };
    // The ledger before, for --verify.
    let watched = if args.verify && !redis {
        verify::watched(&cat)
    } else {
        Vec::new()
    };
    let before = if watched.is_empty() {
        Vec::new()
    } else {
        runtime()?.block_on(async {
            let client = Client::connect(client_config(&args)).await?;
            verify::read_positions(&client, &cat, &watched).await
        })?
    };
    let mut plan = Plan {
        addr: addr.clone(),
        token: args.token.clone(),
        target: args.target,
        scripts,
        connections: args.connections,
        pipeline: args.pipeline,
        batch: args.batch,
        rate: args.rate,
        tick: Duration::from_micros(args.tick_us),
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        drain_timeout: Duration::from_secs_f64(args.drain_timeout),
        journal: args.verify,
    };
    let nonce = run_nonce();
    let midway_fn = |/* halfway */| reroute(&args, &cat);
    let midway: Option<&(dyn Fn() -> anyhow::Result<Midway> + Sync)> =
        (args.scenario == Scenario::Reroute).then_some(&midway_fn);
    let bar = progress(&args, args.warmup + args.duration, &args.scenario.name());
    let outcome = driver::run(&cat, &mix, &plan, nonce, midway, |t| {
        bar.set_position(t.t.round() as u64);
        bar.set_message(format!(
            "{}{} ops/s, p99 {}",
            if t.warmup { "warm-up: " } else { "" },
            human_rate(t.per_second),
            human_us(t.p99_us)
        ));
    })?;
    bar.finish_and_clear();
    let seconds = args.duration;
    let mut journal: Journal = outcome.journal;
    let mut broken = outcome.broken;
    let reroute_report = match outcome.midway {
        Some(Ok(m)) => {
            journal.moved.extend(m.moved.iter().cloned());
            Some(m)
        }
        Some(Err(e)) => {
            broken.push(format!("the batch re-route failed: {e:#}"));
            None
        }
        None => None,
    };
    let rows = stats::rows(&outcome.stats, seconds);
    println!(
        "{} on {} ({}), {} connections x {} frames x {} ops{}, {:.1} s measured after {:.1} s warm-up",
        args.scenario.name(),
        match args.target {
            TargetKind::Promised => format!("promised at {addr}"),
            TargetKind::Redis => format!("Redis + Lua at {addr}, appendfsync {}", args.redis_fsync),
        },
        args.set,
        args.connections,
        args.pipeline,
        args.batch,
        args.rate.map_or(String::new(), |r| format!(
            ", open loop at {r:.0} ops/s (sent in {} us ticks)",
            args.tick_us
        )),
        seconds,
        args.warmup
    );
    stats::print_table(&rows);
    if let Some(m) = &reroute_report {
        println!(
            "batch re-route halfway: {} open orders, {} moves planned, {} applied, {} skipped (stock moved), {} left out, gap {}, {} in {:.2} s",
            m.orders,
            m.moves,
            m.applied_moves,
            m.skipped,
            m.left_out,
            m.gap.map_or("-".into(), |g| format!("{:.3}%", g * 100.0)),
            if m.applied { "applied" } else { "not applied" },
            m.seconds
        );
    }
    // Latency against load.
    let mut steps = Vec::new();
    if !args.steps.is_empty() {
        let peak = rows.last().map_or(0.0, |r| r.per_second);
        println!(
            "\nlatency against offered load (peak {} ops/s, closed loop):",
            human_rate(peak)
        );
        println!(
            "{:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "load", "offered", "achieved", "p50", "p99", "p99.9", "max"
        );
        for pct in &args.steps {
            plan.rate = Some(peak * pct / 100.0);
            let bar = progress(&args, args.warmup + args.duration, &format!("{pct}% of peak"));
            let o = driver::run(&cat, &mix, &plan, nonce ^ (*pct as u64 + 1) << 32, None, |t| {
                bar.set_position(t.t.round() as u64);
                bar.set_message(format!(
                    "{} ops/s, p99 {}",
                    human_rate(t.per_second),
                    human_us(t.p99_us)
                ));
            })?;
            bar.finish_and_clear();
            let total = o.stats.total();
            let lat = |q| total.latency.value_at_quantile(q);
            let point = StepPoint {
                percent_of_peak: *pct,
                offered: peak * pct / 100.0,
                achieved: total.count() as f64 / args.duration,
                p50_us: lat(0.5),
                p99_us: lat(0.99),
                p999_us: lat(0.999),
                max_us: total.latency.max(),
            };
            println!(
                "{:>7}% {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
                pct,
                human_rate(point.offered),
                human_rate(point.achieved),
                human_us(point.p50_us),
                human_us(point.p99_us),
                human_us(point.p999_us),
                human_us(point.max_us)
            );
            steps.push(point);
            journal.merge(o.journal);
            broken.extend(o.broken);
        }
    }
    for b in &broken {
        eprintln!("promised-load: {b}");
    }
    let errors = outcome.stats.errors();
    if errors > 0 {
        for (k, s) in &outcome.stats.ops {
            if let Some(e) = &s.first_error {
                eprintln!("promised-load: {} errors: first: {e}", k.name());
            }
        }
    }
    // Reconcile.
    let verdict = if !args.verify {
        None
    } else if let Some(admin) = redis_admin.as_mut() {
        Some(verify::verify_redis(admin, &cat, &journal)?)
    } else {
        Some(runtime()?.block_on(async {
            let client = Client::connect(client_config(&args)).await?;
            verify::verify_promised(&client, &cat, &watched, &before, &journal).await
        })?)
    };
    if let Some(v) = &verdict {
        if v.ok() {
            println!(
                "verify: OK: {} positions and {} holds match the {} acknowledged holds and orders and {} feeds",
                v.positions_checked, v.holds_checked, v.acknowledged_holds, v.acknowledged_feeds
            );
        } else {
            println!("verify: FAILED: {} mismatches", v.mismatches.len() + v.more);
            for m in &v.mismatches {
                println!("  {m}");
            }
            if v.more > 0 {
                println!("  ... and {} more", v.more);
            }
        }
    }
    let results = Results {
        tool: "promised-load",
        version: env!("CARGO_PKG_VERSION"),
        target: args.target,
        scenario: args.scenario,
        set: &args.set,
        addr: &addr,
        connections: args.connections,
        pipeline: args.pipeline,
        batch: args.batch,
        rate: args.rate,
        tick_us: args.tick_us,
        warmup_s: args.warmup,
        duration_s: args.duration,
        redis_fsync: redis.then_some(args.redis_fsync.as_str()),
        ops: rows,
        timeline: outcome.timeline.clone(),
        steps: steps.clone(),
        reroute: reroute_report,
        verify: verdict.clone(),
        broken: broken.clone(),
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "promised-load {} on {} ({} connections x {} x {})",
            args.scenario.name(),
            match args.target {
                TargetKind::Promised => "promised".to_string(),
                TargetKind::Redis => format!("Redis + Lua (appendfsync {})", args.redis_fsync),
            },
            args.connections,
            args.pipeline,
            args.batch
        );
        plot::draw(
            path,
            &title,
            &outcome.stats,
            &outcome.timeline,
            &steps,
            args.font.as_deref(),
        )?;
    }
    drop(redis_server);
    Ok(broken.is_empty() && verdict.is_none_or(|v| v.ok()))
}
