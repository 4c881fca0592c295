//! What the harness may ask for: the SKUs, nodes and stocked positions of the demo data set the
//! server was started with (`promised serve --demo SET` and `--set SET` generate the same set).
//! Checkout traffic uses the most popular SKUs; inventory feeds use a disjoint tail of SKUs, so
//! a run's expected ledger stays exact when both run at once.

use std::collections::HashMap;

use promised_engine::NodeStatus;
use promised_engine::dataset::{DataSet, DataSetSpec, PopularitySampler};
use rand::Rng;

/// A position the harness can hold at: (SKU index, node index) and its stock at generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub sku: u32,
    pub node: u32,
}

pub struct Catalog {
    pub set: String,
    pub skus: Vec<String>,
    pub nodes: Vec<String>,
    node_index: HashMap<String, u32>,
    sku_index: HashMap<String, u32>,
    /// Per checkout SKU: open nodes stocking it and their promisable units at generation.
    pub stocked: Vec<Vec<(u32, u32)>>,
    /// Every position of the checkout SKUs, whatever its stock or node (promises may plan
    /// inbound supply, and a verifier must watch all of them).
    pub checkout_positions: Vec<Pos>,
    /// Per node: the feed SKUs it stocks.
    pub feed_skus: Vec<Vec<u32>>,
    pub zones: u32,
    popularity: PopularitySampler,
}

/// SKUs (by popularity rank) that checkout traffic draws from, at most.
pub const CHECKOUT_SKUS_MAX: u32 = 20_000;
/// The flash sale's hot SKUs: the best sellers.
pub const HOT_SKUS: u32 = 10;

impl Catalog {
    /// The data set named `set`, limited to `skus` checkout SKUs (default: 80% of a small set's
    /// SKUs, at most [`CHECKOUT_SKUS_MAX`]) and as many feed SKUs after them (at most a quarter).
    pub fn generate(set: &str, skus: Option<u32>) -> anyhow::Result<Self> {
        let spec = DataSetSpec::by_name(set)
            .ok_or_else(|| anyhow::anyhow!("--set {set:?}: expected small, retail or peak"))?;
        let ds = DataSet::generate(&spec);
        let n = ds.skus.len() as u32;
        let checkout = skus
            .unwrap_or((n * 4 / 5).min(CHECKOUT_SKUS_MAX))
            .clamp(HOT_SKUS, n);
        let feed_end = (checkout + (checkout / 4).max(1)).min(n);
        let mut stocked = Vec::with_capacity(checkout as usize);
        let mut checkout_positions = Vec::new();
        let mut feed_skus = vec![Vec::new(); ds.nodes.len()];
        for sku in 0..feed_end {
            let mut here = Vec::new();
            for p in ds.positions_of(sku) {
                if sku < checkout {
                    checkout_positions.push(Pos {
                        sku,
                        node: p.node.index() as u32,
                    });
                }
                if ds.nodes[p.node.index()].status != NodeStatus::Open {
                    continue;
                }
                if sku < checkout {
                    let units = p.on_hand.saturating_sub(p.safety_stock);
                    if units > 0 {
                        here.push((p.node.index() as u32, units));
                    }
                } else {
                    feed_skus[p.node.index()].push(sku);
                }
            }
            if sku < checkout {
                stocked.push(here);
            }
        }
        let skus: Vec<String> = ds.skus[..feed_end as usize]
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let nodes: Vec<String> = ds.nodes.iter().map(|n| n.name.clone()).collect();
        Ok(Self {
            set: set.to_string(),
            node_index: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect(),
            sku_index: skus
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as u32))
                .collect(),
            skus,
            nodes,
            stocked,
            checkout_positions,
            feed_skus,
            zones: ds.zones.len() as u32,
            popularity: PopularitySampler::new(checkout, 1.0),
        })
    }

    pub fn checkout_skus(&self) -> u32 {
        self.stocked.len() as u32
    }

    pub fn node_index(&self, name: &str) -> Option<u32> {
        self.node_index.get(name).copied()
    }

    pub fn sku_index(&self, name: &str) -> Option<u32> {
        self.sku_index.get(name).copied()
    }

    /// A checkout SKU by popularity (Zipf, exponent 1) that is stocked somewhere.
    pub fn popular_sku(&self, rng: &mut impl Rng) -> u32 {
        loop {
            let s = self.popularity.sample(rng);
            if !self.stocked[s as usize].is_empty() {
                return s;
            }
        }
    }

    /// A checkout SKU, every one as likely, that is stocked somewhere.
    pub fn uniform_sku(&self, rng: &mut impl Rng) -> u32 {
        loop {
            let s = rng.random_range(0..self.checkout_skus());
            if !self.stocked[s as usize].is_empty() {
                return s;
            }
        }
    }

    /// One of the flash sale's hot SKUs.
    pub fn hot_sku(&self, rng: &mut impl Rng) -> u32 {
        loop {
            let s = rng.random_range(0..HOT_SKUS);
            if !self.stocked[s as usize].is_empty() {
                return s;
            }
        }
    }

    /// A node stocking `sku`, every one as likely.
    pub fn stocked_node(&self, sku: u32, rng: &mut impl Rng) -> u32 {
        let at = &self.stocked[sku as usize];
        at[rng.random_range(0..at.len())].0
    }

    /// The positions feeds can touch.
    pub fn feed_positions(&self) -> impl Iterator<Item = Pos> + '_ {
        self.feed_skus
            .iter()
            .enumerate()
            .flat_map(|(n, skus)| skus.iter().map(move |&sku| Pos { sku, node: n as u32 }))
    }

    /// Promisable units at generation (what a Redis target is seeded with).
    pub fn seeded_units(&self) -> impl Iterator<Item = (Pos, u32)> + '_ {
        self.stocked.iter().enumerate().flat_map(|(s, at)| {
            at.iter()
                .map(move |&(node, units)| (Pos { sku: s as u32, node }, units))
        })
    }
}
