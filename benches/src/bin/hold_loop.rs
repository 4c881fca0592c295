//! A plain loop of 1-line hold + commit on the `retail` set, for profilers (`perf record -D`) and
//! for thread scaling without criterion's batching.
//!
//! Rounds of `N` pairs are timed; between rounds (untimed) the allocations are shipped and the
//! finished records forgotten, so the process reaches a steady state instead of growing. Worker
//! threads live for the whole run and meet at a barrier around each round.
//!
//! `cargo run --release -p promised-benches --bin hold_loop -- [N] [ROUNDS] [THREADS]`;
//! `PICKS_MASK=15` cycles over 16 positions only, to separate the request table's cost from the
//! ledger's; `PROMISED_SET=small` picks another data set (for valgrind).

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use promised_benches::BenchWorld;
use promised_engine::dataset::DataSetSpec;
use promised_engine::{Command, HoldLineRequest, NodeChoice, Quantity, RequestId, Timestamp};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(200_000, |a| a.parse().expect("N is a number"));
    let rounds: u64 = args.next().map_or(20, |a| a.parse().expect("ROUNDS is a number"));
    let threads: u64 = args.next().map_or(1, |a| a.parse().expect("THREADS is a number"));
    let mask: usize =
        std::env::var("PICKS_MASK").map_or(0xFFFF, |v| v.parse().expect("PICKS_MASK is a number"));
    let t = Instant::now();
    let set = std::env::var("PROMISED_SET").unwrap_or_else(|_| "retail".into());
    let world = BenchWorld::new(&DataSetSpec::by_name(&set).expect("PROMISED_SET: small, retail or peak"));
    let picks = world.zipf_positions(1 << 16, 1);
    eprintln!(
        "set-up {:.2?}; {rounds} rounds of {n} hold + commit on {threads} threads",
        t.elapsed()
    );
    let now_ms = AtomicU64::new(world.now.0);
    let barrier = Barrier::new(threads as usize + 1);
    let per_thread = n / threads;
    let mut per_pair_ns = Vec::new();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (world, picks, barrier, now_ms) = (&world, &picks, &barrier, &now_ms);
            s.spawn(move || {
                for round in 0..rounds {
                    barrier.wait();
                    let now = Timestamp(now_ms.load(Ordering::Acquire));
                    for i in 0..per_thread {
                        let (sku, node) = picks[((i + t * 7_919) as usize) & mask];
                        let hold = hold_id(t, round, i);
                        let line = HoldLineRequest {
                            sku,
                            node: NodeChoice::Node(node),
                            quantity: Quantity::new(1).expect("valid"),
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
                    barrier.wait();
                }
            });
        }
        for round in 0..rounds {
            barrier.wait();
            let t = Instant::now();
            barrier.wait();
            per_pair_ns.push(t.elapsed().as_secs_f64() * 1e9 / (per_thread * threads) as f64);
            let now = Timestamp(now_ms.load(Ordering::Acquire));
            for t in 0..threads {
                for i in 0..per_thread {
                    let hold = hold_id(t, round, i);
                    let ship = Command::Ship {
                        request: RequestId(hold.0 + 2),
                        hold,
                        lines: vec![],
                    };
                    world.engine.apply(now, &ship).expect("ship");
                }
            }
            let later = now.saturating_add_ms(world.engine.config().retention_ms + 1);
            world.engine.apply(later, &Command::Tick).expect("tick");
            now_ms.store(later.0, Ordering::Release);
        }
    });
    per_pair_ns.sort_by(f64::total_cmp);
    let median = per_pair_ns[per_pair_ns.len() / 2];
    println!(
        "hold + commit on {threads} threads, median of {rounds} rounds: {median:.0} ns per pair = {:.2} M ops/s \
         (min {:.0}, max {:.0} ns)",
        2e3 / median,
        per_pair_ns[0],
        per_pair_ns[per_pair_ns.len() - 1]
    );
}

/// Request ids that look like random UUIDs (as clients send them), 4 per hold: thread, round
/// and iteration are mixed into the high 64 bits; the low bits number the hold's requests.
fn hold_id(thread: u64, round: u64, i: u64) -> RequestId {
    let x = (thread << 56) ^ (round << 36) ^ i;
    let mixed = x
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    RequestId((u128::from(mixed) << 64) | (u128::from(x) << 2))
}
