//! Deterministic synthetic data sets: `small`, `retail` (the demo default) and `peak`.
//!
//! Everything is drawn from a seeded PCG generator, and each SKU's positions from a generator
//! seeded by (seed, SKU index), so a data set is the same on every machine and can be generated in
//! parallel. The shapes follow what retailers see: a few DCs and many stores, SKU popularity and
//! stock skewed like Zipf's law, inbound lots on a few percent of positions, hazmat and embroidery
//! SKUs that only capable nodes stock, and holidays in node calendars.

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;

use crate::command::{Command, Outcome};
use crate::error::EngineError;
use crate::ids::{Day, NodeId, Quantity, RequestId, SkuId, Timestamp, ZoneId, days_from_civil};
use crate::ledger::Engine;
use crate::limits::FEED_LINES_MAX;
use crate::network::{
    Calendar, Capabilities, DailyCapacity, Lane, Location, NodeKind, NodeSpec, NodeStatus, ServiceLevel,
};
use crate::promise::lanes::{SHIPPING, default_lane};

/// The size and seed of a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSetSpec {
    pub name: &'static str,
    pub n_skus: u32,
    pub n_nodes: u32,
    pub n_zones: u32,
    /// Mean number of nodes stocking a SKU.
    pub nodes_per_sku: u32,
    pub seed: u64,
    /// The first day of the data set's clock: inbound lots arrive after it.
    pub start_day: Day,
}

/// SKUs loaded together (see `DataSet::load`): their positions (~2 MiB) fit in cache.
const LOAD_RANGE_SKUS: usize = 2_048;

/// 2026-11-23, a Monday shortly before the peak season: the default start of every data set.
pub const START_DAY_DEFAULT: Day = Day(20_780);
const _: () = assert!(START_DAY_DEFAULT.0 == 20_780);

impl DataSetSpec {
    pub const NAMES: [&'static str; 3] = ["small", "retail", "peak"];

    /// 1,000 SKUs x 20 nodes, ~10k positions: tests and examples.
    pub fn small() -> Self {
        Self::sized("small", 1_000, 20, 50, 10)
    }
    /// 100,000 SKUs x 200 nodes, ~4M positions: the demo and load tests.
    pub fn retail() -> Self {
        Self::sized("retail", 100_000, 200, 500, 40)
    }
    /// 1,000,000 SKUs x 1,000 nodes, ~40M positions: scale and memory benchmarks.
    pub fn peak() -> Self {
        Self::sized("peak", 1_000_000, 1_000, 1_000, 40)
    }

    fn sized(name: &'static str, n_skus: u32, n_nodes: u32, n_zones: u32, nodes_per_sku: u32) -> Self {
        Self {
            name,
            n_skus,
            n_nodes,
            n_zones,
            nodes_per_sku,
            seed: 42,
            start_day: START_DAY_DEFAULT,
        }
    }

    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "small" => Some(Self::small()),
            "retail" => Some(Self::retail()),
            "peak" => Some(Self::peak()),
            _ => None,
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A destination zone: a postcode group with a centroid.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Zone {
    pub id: ZoneId,
    pub lat: f32,
    pub lon: f32,
}

/// A SKU of the data set. Index = popularity rank (0 is the best seller).
#[derive(Clone, Debug, PartialEq)]
pub struct SkuRecord {
    pub name: String,
    pub required: Capabilities,
    /// Relative demand, proportional to 1 / (rank + 1) (Zipf, exponent 1).
    pub popularity: f64,
}

/// One generated position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenPosition {
    pub node: NodeId,
    pub on_hand: u32,
    pub safety_stock: u32,
    /// (reference, quantity, arrival)
    pub lots: Vec<(String, u32, Day)>,
}

/// A generated data set. Positions are not stored: `positions_of` regenerates them on demand.
#[derive(Clone, Debug)]
pub struct DataSet {
    pub spec: DataSetSpec,
    pub zones: Vec<Zone>,
    pub nodes: Vec<NodeSpec>,
    pub skus: Vec<SkuRecord>,
    pub lanes: Vec<Lane>,
}

/// What loading a data set did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub nodes: usize,
    pub skus: usize,
    pub positions: usize,
    pub lots: usize,
    pub safety_stocked: usize,
    pub commands: usize,
}

impl DataSet {
    pub fn generate(spec: &DataSetSpec) -> Self {
        let mut rng = Pcg64Mcg::seed_from_u64(spec.seed);
        let zones: Vec<Zone> = (0..spec.n_zones)
            .map(|i| Zone {
                id: ZoneId(i),
                lat: rng.random_range(25.0..49.0),
                lon: rng.random_range(-124.0..-67.0),
            })
            .collect();
        let holidays = holidays_around(spec.start_day);
        let nodes: Vec<NodeSpec> = (0..spec.n_nodes)
            .map(|i| gen_node(&mut rng, spec, i, &zones, &holidays))
            .collect();
        let skus: Vec<SkuRecord> = (0..spec.n_skus)
            .map(|i| {
                let roll: f64 = rng.random();
                let required = if roll < 0.02 {
                    Capabilities::HAZMAT
                } else if roll < 0.03 {
                    Capabilities::EMBROIDERY
                } else {
                    Capabilities::default()
                };
                SkuRecord {
                    name: format!("SKU-{i:07}"),
                    required,
                    popularity: 1.0 / f64::from(i + 1),
                }
            })
            .collect();
        let lanes = gen_lanes(&nodes, &zones);
        Self {
            spec: spec.clone(),
            zones,
            nodes,
            skus,
            lanes,
        }
    }

    /// The positions of SKU `sku_idx`, sorted by node: a pure function of (seed, index).
    pub fn positions_of(&self, sku_idx: u32) -> Vec<GenPosition> {
        let spec = &self.spec;
        let mut rng =
            Pcg64Mcg::seed_from_u64(spec.seed ^ (u64::from(sku_idx) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let sku = &self.skus[sku_idx as usize];
        let capable: Vec<u32> = if sku.required == Capabilities::default() {
            Vec::new()
        } else {
            (0..spec.n_nodes)
                .filter(|&n| self.nodes[n as usize].capabilities.contains(sku.required))
                .collect()
        };
        let pool = if capable.is_empty() && sku.required == Capabilities::default() {
            spec.n_nodes as usize
        } else {
            capable.len()
        };
        if pool == 0 {
            return Vec::new();
        }
        let mean = spec.nodes_per_sku.min(spec.n_nodes);
        let k = rng
            .random_range(mean.div_ceil(2)..=mean + mean / 2)
            .clamp(1, pool as u32) as usize;
        let mut chosen: Vec<u32> = sample(&mut rng, pool, k)
            .into_iter()
            .map(|i| if capable.is_empty() { i as u32 } else { capable[i] })
            .collect();
        chosen.sort_unstable();
        // Stock follows popularity: the top 1% of SKUs carry hundreds of units per node.
        let top = (f64::from(spec.n_skus) / 100.0).max(1.0);
        let weight = top / (f64::from(sku_idx) + top);
        chosen
            .into_iter()
            .map(|n| {
                let out_of_stock = rng.random_bool(0.05);
                let on_hand = if out_of_stock {
                    0
                } else {
                    (rng.random_range(0.2..1.8) * (4.0 + 400.0 * weight)).round() as u32
                };
                let safety_stock = if rng.random_bool(0.2) { on_hand / 10 } else { 0 };
                let n_lots = if rng.random_bool(0.03) {
                    rng.random_range(1..=2)
                } else {
                    0
                };
                let lots = (0..n_lots)
                    .map(|j| {
                        let q = rng.random_range(10..=500);
                        let arrival = spec.start_day.plus(rng.random_range(1..=30));
                        (format!("PO-{sku_idx}-{n}-{j}"), q, arrival)
                    })
                    .collect();
                GenPosition {
                    node: NodeId::from_raw(n),
                    on_hand,
                    safety_stock,
                    lots,
                }
            })
            .collect()
    }

    /// Loads the data set into an empty engine through ordinary commands (node and SKU upserts,
    /// one absolute feed per node in chunks, safety stock, inbound lots), all at time `now`.
    /// Request ids are derived from the seed; a later `tick` past the retention window forgets
    /// them.
    pub fn load(&self, engine: &Engine, now: Timestamp) -> Result<LoadReport, EngineError> {
        let mut report = LoadReport::default();
        let mut next_request = (u128::from(self.spec.seed) << 64) | (0xDA7A_u128 << 48);
        let mut request = || {
            next_request += 1;
            RequestId(next_request)
        };
        let apply = |command: Command, report: &mut LoadReport| -> Result<Outcome, EngineError> {
            report.commands += 1;
            engine.apply(now, &command)
        };
        for node in &self.nodes {
            apply(Command::UpsertNode(node.clone()), &mut report)?;
            report.nodes += 1;
        }
        // Zone centres: promises use the default (distance) lanes, which are the set's lanes.
        for zone in &self.zones {
            let spec = crate::network::ZoneSpec {
                zone: zone.id,
                lat: zone.lat,
                lon: zone.lon,
            };
            apply(Command::UpsertZone(spec), &mut report)?;
        }
        let mut sku_ids = Vec::with_capacity(self.skus.len());
        for sku in &self.skus {
            let outcome = apply(
                Command::UpsertSku {
                    name: sku.name.clone(),
                    required: sku.required,
                },
                &mut report,
            )?;
            let Outcome::SkuUpserted(id) = outcome else {
                unreachable!("upsert_sku answers SkuUpserted")
            };
            sku_ids.push(id);
            report.skus += 1;
        }
        // Feed a range of SKUs at a time, every node's counts for that range: the positions of
        // 2,048 SKUs stay in cache while all nodes' feeds land on them, where node-by-node feeds of
        // the whole catalogue would miss the cache on every line (peak load: 46 s -> see README).
        let mut feed_seq = vec![0u64; self.nodes.len()];
        let mut by_node: Vec<Vec<(SkuId, u32)>> = vec![Vec::new(); self.nodes.len()];
        for range_start in (0..self.spec.n_skus).step_by(LOAD_RANGE_SKUS) {
            let range = range_start..(range_start + LOAD_RANGE_SKUS as u32).min(self.spec.n_skus);
            let per_sku: Vec<Vec<GenPosition>> = range
                .clone()
                .into_par_iter()
                .map(|i| self.positions_of(i))
                .collect();
            for (i, positions) in range.clone().zip(&per_sku) {
                for p in positions {
                    by_node[p.node.index()].push((sku_ids[i as usize], p.on_hand));
                }
            }
            for (n, counts) in by_node.iter_mut().enumerate() {
                for chunk in counts.chunks(FEED_LINES_MAX) {
                    feed_seq[n] += 1;
                    apply(
                        Command::SetOnHand {
                            request: request(),
                            node: NodeId::from_raw(n as u32),
                            feed_seq: feed_seq[n],
                            counts: chunk.to_vec(),
                        },
                        &mut report,
                    )?;
                    report.positions += chunk.len();
                }
                counts.clear();
            }
            for (i, positions) in range.zip(&per_sku) {
                let sku = sku_ids[i as usize];
                for p in positions {
                    if p.safety_stock > 0 {
                        apply(
                            Command::SetSafetyStock {
                                request: request(),
                                sku,
                                node: p.node,
                                quantity: p.safety_stock,
                            },
                            &mut report,
                        )?;
                        report.safety_stocked += 1;
                    }
                    for (reference, quantity, arrival) in &p.lots {
                        apply(
                            Command::AddInbound {
                                request: request(),
                                sku,
                                node: p.node,
                                reference: reference.clone(),
                                quantity: Quantity::new(i64::from(*quantity))?,
                                arrival: *arrival,
                            },
                            &mut report,
                        )?;
                        report.lots += 1;
                    }
                }
            }
        }
        engine.shrink_to_fit();
        Ok(report)
    }

    /// The lane of (node, zone, level), if the data set has one.
    pub fn lane(&self, node: NodeId, zone: ZoneId, level: ServiceLevel) -> Option<&Lane> {
        let per_node = self.zones.len() * SHIPPING.len();
        let i = node.index() * per_node + zone.0 as usize * SHIPPING.len() + level as usize;
        self.lanes
            .get(i)
            .filter(|l| l.node == node && l.zone == zone && l.level == level)
    }
}

/// Samples SKU indexes by popularity (Zipf, exponent `s`), for load generators and benches.
pub struct PopularitySampler {
    zipf: rand_distr::Zipf<f64>,
}

impl PopularitySampler {
    pub fn new(n_skus: u32, exponent: f64) -> Self {
        Self {
            zipf: rand_distr::Zipf::new(f64::from(n_skus.max(1)), exponent).expect("valid Zipf parameters"),
        }
    }
    pub fn sample(&self, rng: &mut impl Rng) -> u32 {
        use rand_distr::Distribution;
        self.zipf.sample(rng) as u32 - 1
    }
}

fn gen_node(rng: &mut Pcg64Mcg, spec: &DataSetSpec, i: u32, zones: &[Zone], holidays: &[Day]) -> NodeSpec {
    let n = spec.n_nodes;
    let n_dc = (n / 20).max(1);
    let n_3pl = n / 10;
    let n_ds = n / 20;
    let kind = if i < n_dc {
        NodeKind::Dc
    } else if i < n_dc + n_3pl {
        NodeKind::ThirdParty
    } else if i < n_dc + n_3pl + n_ds {
        NodeKind::DropShip
    } else {
        NodeKind::Store
    };
    let zone = zones[rng.random_range(0..zones.len())];
    let lat = zone.lat + rng.random_range(-0.3..0.3);
    let lon = zone.lon + rng.random_range(-0.3..0.3);
    let mut caps = Capabilities::default();
    let mut add = |rng: &mut Pcg64Mcg, p: f64, c: Capabilities| {
        if rng.random_bool(p) {
            caps = caps.union(c);
        }
    };
    let (orders, processing_days, cutoff_hour, weekdays, cost): (u32, u8, u16, u8, u32) = match kind {
        NodeKind::Dc => {
            add(rng, 0.7, Capabilities::GIFT_WRAP);
            add(rng, 0.5, Capabilities::HAZMAT);
            add(rng, 0.1, Capabilities::EMBROIDERY);
            (
                rng.random_range(20_000..=100_000),
                rng.random_range(0..=1),
                rng.random_range(14..=20),
                0x7F,
                1000,
            )
        }
        NodeKind::Store => {
            add(rng, 1.0, Capabilities::BOPIS);
            add(rng, 0.3, Capabilities::GIFT_WRAP);
            (
                rng.random_range(50..=500),
                0,
                rng.random_range(12..=17),
                0x7F,
                1300,
            )
        }
        NodeKind::ThirdParty => {
            add(rng, 0.3, Capabilities::HAZMAT);
            add(rng, 0.2, Capabilities::EMBROIDERY);
            (
                rng.random_range(5_000..=20_000),
                1,
                rng.random_range(12..=18),
                0x3F,
                1100,
            )
        }
        NodeKind::DropShip => (
            rng.random_range(100..=2_000),
            rng.random_range(1..=3),
            12,
            0x1F,
            1400,
        ),
    };
    let prefix = match kind {
        NodeKind::Dc => "DC",
        NodeKind::Store => "ST",
        NodeKind::ThirdParty => "3P",
        NodeKind::DropShip => "DS",
    };
    // One store in a hundred is closed (remodel, storm): real networks always have a few.
    let status = if kind == NodeKind::Store && rng.random_bool(0.01) {
        NodeStatus::Closed
    } else {
        NodeStatus::Open
    };
    NodeSpec {
        name: format!("{prefix}-{i:04}"),
        kind,
        status,
        location: Location {
            lat,
            lon,
            zone: zone.id,
        },
        capabilities: caps,
        capacity: DailyCapacity {
            orders,
            units: orders.saturating_mul(3),
        },
        processing_days,
        cutoff_minute: cutoff_hour * 60,
        utc_offset_minutes: ((lon / 15.0).round() as i16) * 60,
        calendar: Calendar {
            weekdays,
            holidays: holidays.to_vec(),
        },
        cost_factor_milli: cost + rng.random_range(0..=200),
    }
}

/// Thanksgiving, Christmas and New Year's Day in the years around `start`.
fn holidays_around(start: Day) -> Vec<Day> {
    let (year, _, _) = crate::ids::civil_from_days(i64::from(start.0));
    let mut days = Vec::new();
    for y in year..=year + 1 {
        let nov1 = days_from_civil(y, 11, 1);
        // 1970-01-01 was a Thursday: weekday index with Monday = 0 is (days + 3) mod 7.
        let nov1_weekday = (nov1 + 3).rem_euclid(7);
        let first_thursday = nov1 + (3 - nov1_weekday).rem_euclid(7);
        days.push(first_thursday + 21);
        days.push(days_from_civil(y, 12, 25));
        days.push(days_from_civil(y + 1, 1, 1));
    }
    days.into_iter().map(|d| Day(d as u32)).collect()
}

/// Lanes from every node to every zone at every shipping level: the default lanes
/// (`promise::lanes`), listed for reference and for tools; the engine derives them itself.
fn gen_lanes(nodes: &[NodeSpec], zones: &[Zone]) -> Vec<Lane> {
    let mut lanes = Vec::with_capacity(nodes.len() * zones.len() * SHIPPING.len());
    for (n, node) in nodes.iter().enumerate() {
        for zone in zones {
            for level in SHIPPING {
                let id = NodeId::from_raw(n as u32);
                lanes.push(default_lane(id, node, zone.id, zone.lat, zone.lon, level));
            }
        }
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::EngineConfig;

    #[test]
    fn generation_is_deterministic() {
        let a = DataSet::generate(&DataSetSpec::small());
        let b = DataSet::generate(&DataSetSpec::small());
        assert_eq!(a.nodes, b.nodes);
        assert_eq!(a.skus, b.skus);
        assert_eq!(a.lanes, b.lanes);
        for i in [0, 1, 500, 999] {
            assert_eq!(a.positions_of(i), b.positions_of(i));
        }
        let c = DataSet::generate(&DataSetSpec::small().with_seed(7));
        assert_ne!(a.nodes, c.nodes);
    }

    #[test]
    fn small_set_has_the_documented_shape() {
        let ds = DataSet::generate(&DataSetSpec::small());
        assert_eq!(ds.nodes.len(), 20);
        assert_eq!(ds.skus.len(), 1_000);
        assert_eq!(ds.lanes.len(), 20 * 50 * 3);
        let positions: usize = (0..1_000).map(|i| ds.positions_of(i).len()).sum();
        assert!((8_000..=12_000).contains(&positions), "{positions} positions");
        // Popular SKUs carry more stock than the long tail.
        let stock = |i: u32| {
            ds.positions_of(i)
                .iter()
                .map(|p| u64::from(p.on_hand))
                .sum::<u64>()
        };
        let head: u64 = (0..10).map(stock).sum();
        let tail: u64 = (990..1_000).map(stock).sum();
        assert!(head > 5 * tail, "head {head} tail {tail}");
        // Hazmat SKUs are stocked only where hazmat can ship.
        for (i, sku) in ds.skus.iter().enumerate() {
            for p in ds.positions_of(i as u32) {
                assert!(ds.nodes[p.node.index()].capabilities.contains(sku.required));
            }
        }
        let lane = ds
            .lane(NodeId::from_raw(3), ZoneId(7), ServiceLevel::TwoDay)
            .unwrap();
        assert!(lane.transit_days <= 2);
    }

    #[test]
    fn load_reconciles_with_generation() {
        let ds = DataSet::generate(&DataSetSpec::small());
        let engine = Engine::new(EngineConfig::default());
        let now = ds.spec.start_day.start();
        let report = ds.load(&engine, now).unwrap();
        assert_eq!(report.skus, 1_000);
        assert_eq!(engine.stats().positions, report.positions);
        engine.check_invariants().unwrap();
        for i in [0u32, 17, 999] {
            let sku = engine.sku_id(&ds.skus[i as usize].name).unwrap();
            for p in ds.positions_of(i) {
                let got = engine.position(sku, p.node).unwrap().unwrap();
                assert_eq!(got.on_hand, p.on_hand);
                assert_eq!(got.safety_stock, p.safety_stock);
                assert_eq!(got.lots.len(), p.lots.len());
                let arriving: u32 = p.lots.iter().map(|l| l.1).sum();
                let final_atp = engine.atp(sku, p.node, now, Some(now.day().plus(60))).unwrap();
                assert_eq!(
                    final_atp,
                    i64::from(p.on_hand) - i64::from(p.safety_stock) + i64::from(arriving)
                );
            }
        }
        // Loading twice from scratch gives the same state.
        let again = Engine::new(EngineConfig::default());
        ds.load(&again, now).unwrap();
        assert_eq!(engine.state_digest(), again.state_digest());
    }

    #[test]
    fn thanksgiving_2026_is_november_26() {
        let h = holidays_around(START_DAY_DEFAULT);
        assert_eq!(h[0], Day(days_from_civil(2026, 11, 26) as u32));
        assert_eq!(h[1].to_string(), "2026-12-25");
    }
}
