//! Listing-page promises: the earliest delivery day of one unit of each of many SKUs to a
//! destination (every product on a search page for the shopper's postcode), from live stock.
//!
//! Each pair is a one-line, one-unit promise, so the answer is the best single node; what a
//! request's pairs share (ship days per node, lanes per node and destination) is worked out once
//! per chunk of pairs, and chunks run in parallel (rayon).

use std::collections::HashMap;

use rayon::prelude::*;

use crate::atp;
use crate::error::EngineError;
use crate::ids::{Day, NodeId, Timestamp, ZoneId};
use crate::ledger::Engine;
use crate::limits::LISTING_PAIRS_MAX;
use crate::network::{Network, NodeStatus, ServiceLevel};

use super::{Binding, CapacityUse, Destination, ShipDay, ship_day};

/// One (SKU, destination) pair of a listing page.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ListingPair {
    pub sku: crate::ids::SkuId,
    pub destination: Destination,
}

/// The earliest delivery of one unit, and the node that makes it (the cheaper on a tie).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Earliest {
    pub delivery: Day,
    pub node: NodeId,
    pub binding: Binding,
}

/// Pairs per parallel chunk: enough to share the caches, small enough to spread over cores.
const CHUNK: usize = 128;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// A lane reduced to what a one-unit delivery needs: transit days, package + unit cost.
type LaneCost = Option<(u32, u64)>;

/// What a chunk of pairs works out once.
struct Caches {
    ship: Map<(NodeId, Day), Option<ShipDay>>,
    /// Keyed by node, zone and the destination point's bits.
    lanes: Map<(NodeId, ZoneId, u64), LaneCost>,
    /// The destination of the chunk's first pair (usually every pair's: one shopper's
    /// postcode), and per node its lane and its ship day for stock on hand, by node index: no
    /// hashing on the common path.
    dense_for: Option<(ZoneId, u64)>,
    dense: Vec<Option<(LaneCost, Option<ShipDay>)>>,
}

impl Caches {
    fn new() -> Self {
        let state = || ahash::RandomState::with_seeds(5, 6, 7, 8);
        Self {
            ship: HashMap::with_hasher(state()),
            lanes: HashMap::with_hasher(state()),
            dense_for: None,
            dense: Vec::new(),
        }
    }
}

impl Engine {
    /// The earliest delivery at `level` of one unit of each pair's SKU to its destination, in
    /// order; `None` where no node can deliver it. At most `LISTING_PAIRS_MAX` pairs. Reads only.
    pub fn earliest_deliveries(
        &self,
        now: Timestamp,
        pairs: &[ListingPair],
        level: ServiceLevel,
    ) -> Result<Vec<Option<Earliest>>, EngineError> {
        if pairs.is_empty() {
            return Err(EngineError::EmptyRequest);
        }
        if pairs.len() > LISTING_PAIRS_MAX {
            return Err(EngineError::TooManyLines {
                n_lines: pairs.len(),
                max: LISTING_PAIRS_MAX,
            });
        }
        if level == ServiceLevel::Pickup {
            return Err(EngineError::InvalidOption {
                what: "a listing promise ships: pickup needs a named store (use a promise)".into(),
            });
        }
        let network = self.network.load_full();
        let points: Vec<Option<(f32, f32)>> = pairs
            .iter()
            .map(|p| destination_point(&network, &p.destination))
            .collect::<Result<_, _>>()?;
        let chunks: Vec<Result<Vec<Option<Earliest>>, EngineError>> = pairs
            .par_chunks(CHUNK)
            .zip(points.par_chunks(CHUNK))
            .map(|(pairs, points)| {
                let mut caches = Caches::new();
                // Per chunk, on the thread that runs it: the chunk does not fork again, so no
                // thread ever waits for a second read of the book while holding one.
                let capacity = self.capacity.read();
                let mut ask =
                    |pair, point| self.earliest(&network, now, pair, point, level, &*capacity, &mut caches);
                pairs
                    .iter()
                    .zip(points)
                    .map(|(pair, &point)| ask(pair, point))
                    .collect()
            })
            .collect();
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in chunks {
            out.extend(chunk?);
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn earliest(
        &self,
        network: &Network,
        now: Timestamp,
        pair: &ListingPair,
        point: Option<(f32, f32)>,
        level: ServiceLevel,
        capacity: &dyn CapacityUse,
        caches: &mut Caches,
    ) -> Result<Option<Earliest>, EngineError> {
        let today = now.day();
        let shard = self.shards[self.map.shard_of(pair.sku)].read();
        let entry = shard
            .skus
            .get(self.map.slot_of(pair.sku))
            .ok_or(EngineError::UnknownSkuId(pair.sku))?;
        let dest = &pair.destination;
        let point_bits = point.map_or(u64::MAX, |(a, b)| {
            u64::from(a.to_bits()) << 32 | u64::from(b.to_bits())
        });
        if caches.dense_for.is_none() {
            caches.dense_for = Some((dest.zone, point_bits));
            caches.dense = vec![None; network.n_nodes()];
        }
        let dense = caches.dense_for == Some((dest.zone, point_bits));
        let mut best: Option<(u32, u64, Earliest)> = None;
        for (&node, p) in entry.nodes.iter().zip(&entry.positions) {
            let Some(spec) = network.node(node) else { continue };
            if spec.status != NodeStatus::Open || !spec.capabilities.contains(entry.required) {
                continue;
            }
            let ready = match shard.dated_of(p) {
                None => (p.base() >= 1).then_some(today),
                Some(dated) => atp::timeline(p.base(), Some(dated), today)
                    .iter()
                    .find(|t| t.atp >= 1)
                    .map(|t| t.day),
            };
            let Some(ready) = ready else { continue };
            let lane_of = || {
                let lane = super::lane(
                    network,
                    node,
                    dest,
                    point,
                    level,
                    &mut super::Distances::to(network, dest),
                )?;
                let cost = super::scaled(lane.cost_per_package_cents, spec.cost_factor_milli)
                    + super::scaled(lane.cost_per_unit_cents, spec.cost_factor_milli);
                Some((u32::from(lane.transit_days), cost))
            };
            let ship_of = |ready| ship_day(node, spec, now, ready, 1, capacity);
            let (lane, ship) = if dense && ready == today {
                *caches.dense[node.index()].get_or_insert_with(|| (lane_of(), ship_of(today)))
            } else {
                let lane = *caches
                    .lanes
                    .entry((node, dest.zone, point_bits))
                    .or_insert_with(lane_of);
                let ship = *caches.ship.entry((node, ready)).or_insert_with(|| ship_of(ready));
                (lane, ship)
            };
            let (Some((transit, cost)), Some(ship)) = (lane, ship) else {
                continue;
            };
            let delivery = ship.day.0 + transit;
            let key = (delivery, cost);
            if best.as_ref().is_none_or(|b| key < (b.0, b.1)) {
                let e = Earliest {
                    delivery: Day(delivery),
                    node,
                    binding: ship.binding,
                };
                best = Some((delivery, cost, e));
            }
        }
        Ok(best.map(|b| b.2))
    }
}

/// The point distances are measured to, or an error if the destination has none and no lane.
fn destination_point(network: &Network, dest: &Destination) -> Result<Option<(f32, f32)>, EngineError> {
    match dest.point {
        Some((lat, lon)) => {
            crate::network::check_point(lat, lon)?;
            Ok(Some((lat, lon)))
        }
        None => match network.zone(dest.zone) {
            Some(z) => Ok(Some((z.lat, z.lon))),
            None if network.lanes().any(|l| l.zone == dest.zone) => Ok(None),
            None => Err(EngineError::UnknownZone(dest.zone)),
        },
    }
}
