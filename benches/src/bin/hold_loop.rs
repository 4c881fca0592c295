//! A plain loop of 1-line hold + commit on the `retail` set, for profilers (`perf record -D`).
//!
//! Rounds of `N` pairs are timed; between rounds (untimed) the allocations are shipped and the
//! finished records forgotten, so the process reaches a steady state instead of growing.
//!
//! `cargo run --release -p promised-benches --bin hold_loop -- [N] [ROUNDS]`; `PICKS_MASK=15` cycles
//! over 16 positions only, to separate the request table's cost from the ledger's.

use std::time::Instant;

use promised_benches::BenchWorld;
use promised_engine::dataset::DataSetSpec;
use promised_engine::{Command, HoldLineRequest, NodeChoice, Quantity, RequestId};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(200_000, |a| a.parse().expect("N is a number"));
    let rounds: u64 = args.next().map_or(20, |a| a.parse().expect("ROUNDS is a number"));
    let t = Instant::now();
    let world = BenchWorld::new(&DataSetSpec::retail());
    let picks = world.zipf_positions(1 << 16, 1);
    let mask: usize = std::env::var("PICKS_MASK").map_or(0xFFFF, |v| v.parse().expect("mask"));
    eprintln!("set-up {:.2?}; {rounds} rounds of {n} hold + commit", t.elapsed());
    let mut now = world.now;
    let mut next = 1u128 << 100;
    let mut per_pair_ns = Vec::new();
    for _ in 0..rounds {
        let first = next;
        let t = Instant::now();
        for i in 0..n {
            let (sku, node) = picks[(i as usize) & mask];
            let hold = RequestId(next);
            next += 2;
            let line = HoldLineRequest {
                sku,
                node: NodeChoice::Node(node),
                quantity: Quantity::new(1).unwrap(),
                need_day: None,
            };
            let cmd = Command::Hold {
                hold,
                lines: vec![line],
                ttl_ms: 900_000,
                partial: false,
            };
            world.engine.apply(now, &cmd).expect("hold");
            let commit = Command::Commit {
                request: RequestId(hold.0 + 1),
                hold,
            };
            world.engine.apply(now, &commit).expect("commit");
        }
        per_pair_ns.push(t.elapsed().as_secs_f64() * 1e9 / n as f64);
        let mut id = first;
        while id < next {
            let ship = Command::Ship {
                request: RequestId(id + (1 << 99)),
                hold: RequestId(id),
                lines: vec![],
            };
            world.engine.apply(now, &ship).expect("ship");
            id += 2;
        }
        now = now.saturating_add_ms(world.engine.config().retention_ms + 1);
        world.engine.apply(now, &Command::Tick).expect("tick");
    }
    per_pair_ns.sort_by(f64::total_cmp);
    let median = per_pair_ns[per_pair_ns.len() / 2];
    println!(
        "hold + commit, median of {rounds} rounds: {median:.0} ns per pair = {:.2} M ops/s (min {:.0}, max {:.0} ns)",
        2e3 / median,
        per_pair_ns[0],
        per_pair_ns[per_pair_ns.len() - 1]
    );
}
