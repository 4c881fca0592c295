//! Criterion benchmarks of the engine's hot paths on the `retail` data set (100k SKUs, 200 nodes,
//! ~3.9M positions), with every position restocked to 2^30 units so holds never run dry.
//!
//! `cargo bench -p promised-benches --bench ledger`
//!
//! Throughput is in engine operations (commands or queries): one "hold + commit" iteration is two
//! operations. Positions are picked two ways: `zipf`, as checkout traffic picks them (a SKU by
//! popularity, then one of its nodes), and `uniform` over all 3.9M positions, the cache-hostile
//! worst case. Multi-threaded benches split each batch across threads and time the whole batch;
//! clean-up (shipping allocations, forgetting finished records) runs outside the timed part.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use promised_benches::BenchWorld;
use promised_engine::dataset::DataSetSpec;
use promised_engine::{Command, HoldLineRequest, NodeChoice, NodeId, Quantity, RequestId, SkuId, Timestamp};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TTL_MS: u64 = 15 * 60_000;
const PICKS: usize = 1 << 16;

/// Request-id blocks, unique across threads and batches.
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);

fn id_block(n: u64) -> u128 {
    u128::from(NEXT_BLOCK.fetch_add(n, Ordering::Relaxed)) << 20
}

fn line(sku: SkuId, node: NodeId) -> HoldLineRequest {
    HoldLineRequest {
        sku,
        node: NodeChoice::Node(node),
        quantity: Quantity::new(1).expect("1 is valid"),
        need_day: None,
    }
}

/// What a benchmark does with a hold once granted.
#[derive(Clone, Copy)]
enum Then {
    Commit,
    Release,
}

/// Places hold `base` with `lines`, then commits or releases it with request id `base + 1`.
fn hold_then(world: &BenchWorld, at: Timestamp, base: u128, lines: Vec<HoldLineRequest>, then: Then) {
    let hold = RequestId(base);
    let command = Command::Hold {
        hold,
        lines,
        ttl_ms: TTL_MS,
        partial: false,
    };
    world.engine.apply(at, &command).expect("hold");
    let request = RequestId(base + 1);
    let second = match then {
        Then::Commit => Command::Commit { request, hold },
        Then::Release => Command::Release {
            request,
            hold,
            lines: vec![],
        },
    };
    world.engine.apply(at, &second).expect("commit or release");
}

/// A timed batch and the request-id bases it used.
struct Batch {
    elapsed: Duration,
    bases: Vec<u128>,
    per_thread: u64,
}

impl Batch {
    /// The hold ids the batch placed (one per iteration, at base + 8 i).
    fn hold_ids(&self) -> Vec<RequestId> {
        let n = self.per_thread;
        self.bases
            .iter()
            .flat_map(|&b| (0..n).map(move |i| RequestId(b + u128::from(i) * 8)))
            .collect()
    }
}

/// Runs `iters` iterations of `op` split over `threads` threads and times the whole batch. `op`
/// gets (pick index, request-id base unique to that iteration).
fn split<F>(iters: u64, threads: u64, op: F) -> Batch
where
    F: Fn(usize, u128) + Sync,
{
    let per_thread = iters.div_ceil(threads);
    let bases: Vec<u128> = (0..threads).map(|_| id_block(per_thread * 8 + 8)).collect();
    // Persistent threads (one pool per thread count), so every batch runs on warm threads with
    // warm allocator heaps, as a server's request threads would.
    let pool = pool(threads as usize);
    let start = Instant::now();
    pool.broadcast(|ctx| {
        let (t, base) = (ctx.index(), bases[ctx.index()]);
        for i in 0..per_thread {
            let pick = (i as usize + t * 20_011) % PICKS;
            op(pick, base + u128::from(i) * 8);
        }
    });
    Batch {
        elapsed: start.elapsed(),
        bases,
        per_thread,
    }
}

fn pool(threads: usize) -> &'static rayon::ThreadPool {
    static POOLS: std::sync::OnceLock<Vec<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        (1..=2)
            .map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .expect("thread pool")
            })
            .collect()
    });
    &pools[threads - 1]
}

/// Ships every allocation in `holds`, then forgets finished records, so memory stays flat.
fn clean_up(world: &BenchWorld, holds: &[RequestId], now: &mut Timestamp) {
    let base = id_block(holds.len() as u64 + 1);
    for (i, &hold) in holds.iter().enumerate() {
        let request = RequestId(base + i as u128);
        let _ = world.engine.apply(
            *now,
            &Command::Ship {
                request,
                hold,
                lines: vec![],
            },
        );
    }
    *now = now.saturating_add_ms(world.engine.config().retention_ms + 1);
    world.engine.apply(*now, &Command::Tick).expect("tick");
}

/// 5-line carts of distinct SKUs drawn from `picks`.
fn carts(picks: &[(SkuId, NodeId)]) -> Vec<[(SkuId, NodeId); 5]> {
    let mut out = Vec::with_capacity(PICKS);
    let mut i = 0;
    while out.len() < PICKS {
        let mut cart: Vec<(SkuId, NodeId)> = Vec::with_capacity(5);
        while cart.len() < 5 {
            let p = picks[i % picks.len()];
            i += 1;
            if cart.iter().all(|c| c.0 != p.0) {
                cart.push(p);
            }
        }
        out.push([cart[0], cart[1], cart[2], cart[3], cart[4]]);
    }
    out
}

fn holds(c: &mut Criterion) {
    let world = BenchWorld::new(&DataSetSpec::retail());
    let zipf = world.zipf_positions(PICKS, 1);
    let uniform = world.uniform_positions(PICKS, 2);
    // The engine's own cost, without memory latency: 1,024 positions, cycled (all in cache).
    let cached: Vec<(SkuId, NodeId)> = (0..PICKS).map(|i| zipf[i % 1024]).collect();
    let hot: Vec<(SkuId, NodeId)> = (0..PICKS)
        .map(|i| {
            let sku = world.sku_ids[i % 10];
            *world.positions.iter().find(|p| p.0 == sku).expect("stocked")
        })
        .collect();
    let mut now = world.now;

    let mut g = c.benchmark_group("hold1_commit");
    g.throughput(Throughput::Elements(2));
    for (name, picks, threads) in [
        ("zipf_1_thread", &zipf, 1),
        ("zipf_2_threads", &zipf, 2),
        ("uniform_1_thread", &uniform, 1),
        ("cached_1k_positions_1_thread", &cached, 1),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let at = now;
                let batch = split(iters, threads, |pick, base| {
                    let (sku, node) = picks[pick];
                    hold_then(&world, at, base, vec![line(sku, node)], Then::Commit);
                });
                clean_up(&world, &batch.hold_ids(), &mut now);
                batch.elapsed
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("hold5_release");
    g.throughput(Throughput::Elements(2));
    let zipf_carts = carts(&zipf);
    for (name, threads) in [("zipf_1_thread", 1), ("zipf_2_threads", 2)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let at = now;
                let batch = split(iters, threads, |pick, base| {
                    let lines = zipf_carts[pick]
                        .iter()
                        .map(|&(sku, node)| line(sku, node))
                        .collect();
                    hold_then(&world, at, base, lines, Then::Release);
                });
                clean_up(&world, &[], &mut now);
                batch.elapsed
            });
        });
    }
    g.finish();

    // Contention: the same 1-line hold + release, 2 threads, spread out versus on 10 hot SKUs.
    let mut g = c.benchmark_group("hold1_release_2_threads");
    g.throughput(Throughput::Elements(2));
    for (name, picks) in [("uniform", &uniform), ("zipf", &zipf), ("10_hot_skus", &hot)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let at = now;
                let batch = split(iters, 2, |pick, base| {
                    let (sku, node) = picks[pick];
                    hold_then(&world, at, base, vec![line(sku, node)], Then::Release);
                });
                clean_up(&world, &[], &mut now);
                batch.elapsed
            });
        });
    }
    g.finish();
}

fn queries(c: &mut Criterion) {
    let world = BenchWorld::new(&DataSetSpec::retail());
    // One SKU stocked at every one of the 200 nodes, for "network ATP over 200 nodes".
    let wide = {
        let e = &world.engine;
        let name = "WIDE-SKU".to_string();
        let out = e
            .apply(
                world.now,
                &Command::UpsertSku {
                    name,
                    required: Default::default(),
                },
            )
            .expect("upsert");
        let promised_engine::Outcome::SkuUpserted(sku) = out else {
            unreachable!("upsert answers SkuUpserted")
        };
        for n in 0..world.dataset.nodes.len() {
            let node = NodeId::from_raw(n as u32);
            let request = RequestId(id_block(1));
            let feed_seq = e.feed_seq(node) + 1;
            e.apply(
                world.now,
                &Command::SetOnHand {
                    request,
                    node,
                    feed_seq,
                    counts: vec![(sku, 100)],
                },
            )
            .expect("feed");
        }
        sku
    };
    let zipf = world.zipf_positions(PICKS, 3);
    let uniform = world.uniform_positions(PICKS, 4);
    let dated: Vec<(SkuId, NodeId)> = (0..PICKS)
        .map(|i| world.dated_positions[(i * 7919) % world.dated_positions.len()])
        .collect();
    let now = world.now;
    let engine = &world.engine;

    let mut g = c.benchmark_group("query");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % PICKS;
        i
    };
    g.bench_function("atp_one_position_zipf", |b| {
        b.iter(|| {
            let (sku, node) = zipf[next()];
            engine.atp(sku, node, now, None).expect("atp")
        })
    });
    // Batches of 256 single-position queries through `atp_many`, as a batched ATP request is
    // answered: per query.
    let batched = |picks: &[(SkuId, NodeId)], iters: u64| {
        let batches = iters.div_ceil(256);
        let start = std::time::Instant::now();
        for k in 0..batches {
            let at = (k as usize * 256) % (PICKS - 256);
            std::hint::black_box(engine.atp_many(&picks[at..at + 256], now, None));
        }
        start.elapsed().mul_f64(iters as f64 / (batches * 256) as f64)
    };
    g.bench_function("atp_many_zipf_256", |b| {
        b.iter_custom(|iters| batched(&zipf, iters))
    });
    g.bench_function("atp_many_uniform_256", |b| {
        b.iter_custom(|iters| batched(&uniform, iters))
    });
    g.bench_function("atp_one_position_cached_1k", |b| {
        b.iter(|| {
            let (sku, node) = zipf[next() % 1024];
            engine.atp(sku, node, now, None).expect("atp")
        })
    });
    g.bench_function("atp_one_position_uniform", |b| {
        b.iter(|| {
            let (sku, node) = uniform[next()];
            engine.atp(sku, node, now, None).expect("atp")
        })
    });
    g.bench_function("atp_one_position_with_inbound_lots", |b| {
        b.iter(|| {
            let (sku, node) = dated[next()];
            engine.atp(sku, node, now, None).expect("atp")
        })
    });
    g.bench_function("network_atp_zipf_sku", |b| {
        b.iter(|| {
            engine
                .network_atp(zipf[next()].0, now, None)
                .expect("network atp")
        })
    });
    g.bench_function("network_atp_sku_at_200_nodes", |b| {
        b.iter(|| engine.network_atp(wide, now, None).expect("network atp"))
    });
    g.bench_function("timeline_with_inbound_lots", |b| {
        b.iter(|| {
            let (sku, node) = dated[next()];
            engine.timeline(sku, node, now).expect("timeline")
        })
    });
    g.bench_function("atp_one_position_zipf_2_threads", |b| {
        b.iter_custom(|iters| {
            split(iters, 2, |pick, _| {
                let (sku, node) = zipf[pick];
                std::hint::black_box(engine.atp(sku, node, now, None).expect("atp"));
            })
            .elapsed
        })
    });
    g.bench_function("network_atp_zipf_sku_2_threads", |b| {
        b.iter_custom(|iters| {
            split(iters, 2, |pick, _| {
                std::hint::black_box(engine.network_atp(zipf[pick].0, now, None).expect("network atp"));
            })
            .elapsed
        })
    });
    g.bench_function("timeline_with_inbound_lots_2_threads", |b| {
        b.iter_custom(|iters| {
            split(iters, 2, |pick, _| {
                let (sku, node) = dated[pick];
                std::hint::black_box(engine.timeline(sku, node, now).expect("timeline"));
            })
            .elapsed
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = holds, queries
}
criterion_main!(benches);
