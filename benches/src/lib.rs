//! Shared set-up for the criterion benches and measurement binaries of promised.
//!
//! `BenchWorld` loads a data set into an engine through ordinary commands and then raises every
//! position's on-hand count so that long benchmark runs never run out of stock (a refused hold is
//! cheaper than a granted one, and would flatter the numbers).

use promised_engine::dataset::{DataSet, DataSetSpec, GenPosition, PopularitySampler};
use promised_engine::network::ServiceLevel;
use promised_engine::promise::{CartLine, Destination, PromiseOptions, PromiseRequest};
use promised_engine::{Command, Engine, EngineConfig, NodeId, Quantity, RequestId, SkuId, Timestamp, ZoneId};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

pub use promised::alloc::{bulk_load, tune_allocator};

pub mod gap;
pub mod instance_file;
pub mod wire_client;

/// For the re-route binaries: the engine's phase logs on stderr (`RUST_LOG`, by default
/// `promised::reroute=info`) and rayon's pool sized to `threads` when given.
pub fn reroute_setup(threads: Option<usize>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("promised::reroute=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    Ok(())
}

/// On-hand count given to every position: large enough for billions of 1-unit holds.
pub const BENCH_ON_HAND: u32 = 1 << 30;

/// `n` of `positions` (sorted by SKU id, SKU ids dense from 0) picked as checkout traffic picks
/// them: a SKU by popularity (Zipf, exponent 1), then one of its positions uniformly.
pub fn zipf_positions(
    positions: &[(SkuId, NodeId)],
    n_skus: usize,
    n: usize,
    seed: u64,
) -> Vec<(SkuId, NodeId)> {
    let mut first = vec![usize::MAX; n_skus];
    let mut count = vec![0usize; n_skus];
    for (i, (sku, _)) in positions.iter().enumerate() {
        if first[sku.index()] == usize::MAX {
            first[sku.index()] = i;
        }
        count[sku.index()] += 1;
    }
    let popularity = PopularitySampler::new(n_skus as u32, 1.0);
    let mut rng = BenchWorld::rng(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let s = popularity.sample(&mut rng) as usize;
        if count[s] > 0 {
            out.push(positions[first[s] + rng.random_range(0..count[s])]);
        }
    }
    out
}

/// Calls `visit(sku, position, node_is_open)` for every stocked position of `dataset`, in SKU
/// order, with the SKU ids it got when loaded into `engine`.
fn for_each_position(engine: &Engine, dataset: &DataSet, mut visit: impl FnMut(SkuId, &GenPosition, bool)) {
    let network = engine.network();
    for (i, sku) in dataset.skus.iter().enumerate() {
        let id = engine.sku_id(&sku.name).expect("loaded");
        for p in dataset.positions_of(i as u32) {
            visit(id, &p, network.is_open(p.node));
        }
    }
}

/// Every stocked position of `dataset` at an open node, in SKU order, as loaded into `engine`.
pub fn open_positions(engine: &Engine, dataset: &DataSet) -> Vec<(SkuId, NodeId)> {
    let mut out = Vec::new();
    for_each_position(engine, dataset, |sku, p, open| {
        if open {
            out.push((sku, p.node));
        }
    });
    out
}

/// (SKU, node) pairs.
pub type Positions = Vec<(SkuId, NodeId)>;

/// Raises every stocked position of `dataset` to `BENCH_ON_HAND` with ordinary feed commands, and
/// returns the positions at open nodes and those of them with inbound lots.
pub fn restock(engine: &Engine, dataset: &DataSet, now: Timestamp) -> (Positions, Positions) {
    let mut positions = Vec::new();
    let mut dated_positions = Vec::new();
    let mut by_node: Vec<Vec<(SkuId, u32)>> = vec![Vec::new(); dataset.nodes.len()];
    for_each_position(engine, dataset, |sku, p, open| {
        by_node[p.node.index()].push((sku, BENCH_ON_HAND));
        if open {
            positions.push((sku, p.node));
            if !p.lots.is_empty() {
                dated_positions.push((sku, p.node));
            }
        }
    });
    let mut request = 0xBE4C_u128 << 100;
    for (n, counts) in by_node.iter().enumerate() {
        let node = NodeId::from_raw(n as u32);
        for chunk in counts.chunks(promised_engine::limits::FEED_LINES_MAX) {
            request += 1;
            let feed_seq = engine.feed_seq(node) + 1;
            let command = Command::SetOnHand {
                request: RequestId(request),
                node,
                feed_seq,
                counts: chunk.to_vec(),
            };
            engine.apply(now, &command).expect("feed applies");
        }
    }
    (positions, dated_positions)
}

pub struct BenchWorld {
    pub engine: Engine,
    pub dataset: DataSet,
    pub sku_ids: Vec<SkuId>,
    /// Every stocked (SKU, node) pair at an open node, in SKU order.
    pub positions: Vec<(SkuId, NodeId)>,
    /// Positions that have inbound lots.
    pub dated_positions: Vec<(SkuId, NodeId)>,
    pub now: Timestamp,
}

impl BenchWorld {
    pub fn new(spec: &DataSetSpec) -> Self {
        tune_allocator();
        let dataset = DataSet::generate(spec);
        let engine = Engine::new(EngineConfig::default());
        let now = spec.start_day.start().saturating_add_ms(9 * 3_600_000);
        bulk_load(|| dataset.load(&engine, now)).expect("data set loads");
        let sku_ids: Vec<SkuId> = dataset
            .skus
            .iter()
            .map(|s| engine.sku_id(&s.name).expect("loaded"))
            .collect();
        let (positions, dated_positions) = restock(&engine, &dataset, now);
        // Forget the set-up's request records so they do not weigh on the measurements.
        let now = now.saturating_add_ms(engine.config().retention_ms);
        engine.apply(now, &Command::Tick).expect("tick");
        // Forgetting leaves the request tables at their peak capacity (766k load records): give
        // that memory back, or every later lookup walks a mostly empty 150 MB table.
        engine.shrink_to_fit();
        Self {
            engine,
            dataset,
            sku_ids,
            positions,
            dated_positions,
            now,
        }
    }

    /// A popularity sampler over this world's SKUs (Zipf, exponent 1).
    pub fn popularity(&self) -> PopularitySampler {
        PopularitySampler::new(self.sku_ids.len() as u32, 1.0)
    }

    /// `n` positions picked as checkout traffic picks them: a SKU by popularity (Zipf, exponent
    /// 1), then one of its open stocked nodes uniformly.
    pub fn zipf_positions(&self, n: usize, seed: u64) -> Vec<(SkuId, NodeId)> {
        zipf_positions(&self.positions, self.sku_ids.len(), n, seed)
    }

    /// `n` positions picked uniformly among all stocked positions at open nodes.
    pub fn uniform_positions(&self, n: usize, seed: u64) -> Vec<(SkuId, NodeId)> {
        let mut rng = Self::rng(seed);
        (0..n)
            .map(|_| self.positions[rng.random_range(0..self.positions.len())])
            .collect()
    }

    /// A cart of `size` distinct SKUs drawn by popularity, each of a quantity in `quantity`, to
    /// a random zone, asking `levels`.
    pub fn cart(
        &self,
        rng: &mut Pcg64Mcg,
        popularity: &PopularitySampler,
        size: usize,
        quantity: std::ops::RangeInclusive<i64>,
        levels: &[ServiceLevel],
    ) -> PromiseRequest {
        let mut skus = Vec::with_capacity(size);
        while skus.len() < size {
            let s = self.sku_ids[popularity.sample(rng) as usize];
            if !skus.contains(&s) {
                skus.push(s);
            }
        }
        PromiseRequest {
            lines: skus
                .into_iter()
                .map(|sku| CartLine {
                    sku,
                    quantity: Quantity::new(rng.random_range(quantity.clone())).expect("in range"),
                })
                .collect(),
            destination: Destination {
                zone: ZoneId(rng.random_range(0..self.dataset.zones.len() as u32)),
                point: None,
            },
            levels: levels.to_vec(),
            options: PromiseOptions::default(),
        }
    }

    pub fn rng(seed: u64) -> Pcg64Mcg {
        Pcg64Mcg::seed_from_u64(seed)
    }
}
