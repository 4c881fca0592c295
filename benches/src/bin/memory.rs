//! Memory per stocked position, measured with a counting global allocator.
//!
//! `cargo run --release -p promised-benches --bin memory -- --set retail`
//!
//! It counts live heap bytes before the engine exists, generates and loads the data set, drops the
//! generator's own data, ticks past the retention window (so the load's request records are
//! forgotten: steady state), and reports engine bytes / stocked positions. Also prints how long
//! generation and loading took.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use mimalloc::MiMalloc;
use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_engine::{Command, Engine, EngineConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the real allocator.
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the real allocator.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let live = LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed)
            + new_size as isize
            - layout.size() as isize;
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the real allocator.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    let mut set = "retail".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--set" => set = args.next().expect("--set NAME"),
            other => {
                eprintln!("usage: memory [--set small|retail|peak] (got {other:?})");
                std::process::exit(2);
            }
        }
    }
    let spec = DataSetSpec::by_name(&set).unwrap_or_else(|| {
        eprintln!("unknown set {set:?}; choose one of {:?}", DataSetSpec::NAMES);
        std::process::exit(2)
    });
    promised_benches::tune_allocator();
    let before = LIVE.load(Ordering::Relaxed);
    let total = Instant::now();
    let t = Instant::now();
    let ds = DataSet::generate(&spec);
    let generate_s = t.elapsed().as_secs_f64();
    let dataset_bytes = LIVE.load(Ordering::Relaxed) - before;
    let engine_start = LIVE.load(Ordering::Relaxed);
    let engine = Engine::new(EngineConfig::default());
    let empty_engine_bytes = LIVE.load(Ordering::Relaxed) - engine_start;
    let now = spec.start_day.start();
    let t = Instant::now();
    let report = promised_benches::bulk_load(|| ds.load(&engine, now)).expect("load");
    let load_s = t.elapsed().as_secs_f64();
    let total_s = total.elapsed().as_secs_f64();
    let after_load = LIVE.load(Ordering::Relaxed) - dataset_bytes - before;
    drop(ds);
    let steady_now = now.saturating_add_ms(engine.config().retention_ms);
    engine.apply(steady_now, &Command::Tick).expect("tick");
    engine.shrink_to_fit();
    let steady = LIVE.load(Ordering::Relaxed) - before;
    let stats = engine.stats();
    println!(
        "set {set}: {} SKUs, {} nodes, {} stocked positions ({} with dated supply)",
        stats.skus, stats.nodes, stats.positions, stats.dated_positions
    );
    println!(
        "  generate {generate_s:.2} s, load {load_s:.2} s ({} commands), generate + load {total_s:.2} s",
        report.commands
    );
    println!(
        "  generator data {:.1} MiB; empty engine {:.1} MiB",
        mib(dataset_bytes),
        mib(empty_engine_bytes)
    );
    println!(
        "  engine after load (with the load's request records) {:.1} MiB = {:.1} bytes/position",
        mib(after_load),
        after_load as f64 / stats.positions as f64
    );
    println!(
        "  engine in steady state {:.1} MiB = {:.1} bytes/position",
        mib(steady),
        steady as f64 / stats.positions as f64
    );
    println!(
        "  peak live heap during the run {:.1} MiB",
        mib(PEAK.load(Ordering::Relaxed))
    );
}
