//! Candidate plans for each open order, priced by the promise cost model, and the resources they
//! draw on (stock per position, orders and units per node and ship day).
//!
//! An order's candidates: its current plan (if its nodes are still open), every single node that
//! can ship the whole order (on its first ship day, and the best few also a working day later,
//! which is how a plan routes around a full day), and split plans from a beam search over each
//! line's cheapest nodes, at most `max_packages` packages. At most [`CANDIDATES_MAX`] an order
//! (`STRANDED_CANDIDATES_MAX` for one whose plan no longer ships or that has none), cheapest
//! first. The bound the solver certifies is over these candidates.

use std::collections::HashMap;

use rayon::prelude::*;
use smallvec::SmallVec;

use super::{OpenOrder, ReroutePolicy};
use crate::capacity::{CapacityBook, ShipSlot};
use crate::hold::NO_NODE;
use crate::ids::{Day, NodeId, SkuId, Timestamp};
use crate::ledger::Engine;
use crate::network::{Network, NodeKind, NodeStatus};
use crate::promise::{self, NoCapacityUsed};

/// Candidates an order keeps at most (its current plan always among them).
pub const CANDIDATES_MAX: usize = 14;
/// Single-node plans that also get a candidate one ship day later.
const LATER_DAY_NODES: usize = 3;
/// Later working days each of them gets.
const LATER_DAYS: usize = 2;
/// For a stranded order (its plan no longer ships, or it has none): when the nodes near it
/// are full for days, a later day there is what serves it, so it gets more of them.
const STRANDED_LATER_DAY_NODES: usize = 4;
const STRANDED_LATER_DAYS: usize = 5;
const STRANDED_CANDIDATES_MAX: usize = 24;
/// Nodes per line the split search tries, and partial plans it keeps.
const SPLIT_NODES_PER_LINE: usize = 4;
const SPLIT_BEAM: usize = 8;

/// A resource a plan draws on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Stock(SkuId, NodeId),
    Orders(NodeId, Day),
    Units(NodeId, Day),
}

/// One candidate plan of an order.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanCandidate {
    /// Per line, in the order's line order.
    pub line_node: SmallVec<[NodeId; 4]>,
    pub packages: SmallVec<[ShipSlot; 2]>,
    pub cost: f64,
    pub delivery: Day,
    pub current: bool,
    /// The current plan of an order that can no longer ship it, priced at the policy's
    /// `unserved_cents`: kept (and reported left out) only when moving costs more than that.
    pub broken: bool,
}

/// A line's offer at one node: what shipping the line from there costs.
#[derive(Copy, Clone, Debug)]
struct LineOffer {
    node: NodeId,
    unit_cost: u64,
    package_cost: u64,
    transit: u32,
}

/// What candidate generation reads once for every order.
pub(crate) struct Context<'a> {
    pub engine: &'a Engine,
    pub network: &'a Network,
    pub now: Timestamp,
    pub policy: &'a ReroutePolicy,
}

impl Context<'_> {
    fn eligible(&self, node: NodeId) -> bool {
        let Some(n) = self.network.node(node) else {
            return false;
        };
        let p = self.policy;
        n.status == NodeStatus::Open
            && (p.kinds.is_empty() || p.kinds.contains(&n.kind))
            && (p.ship_from_store || n.kind != NodeKind::Store)
    }

    /// Every eligible, capable node that stocks the line's SKU, with its price to `order`.
    fn offers(
        &self,
        order: &OpenOrder,
        sku: SkuId,
        units: u32,
        distances: &mut promise::Distances<'_>,
    ) -> Vec<LineOffer> {
        let e = self.engine;
        let shard = e.shards[e.map.shard_of(sku)].read();
        let Some(entry) = shard.skus.get(e.map.slot_of(sku)) else {
            return Vec::new();
        };
        let point = order
            .destination
            .point
            .or_else(|| self.network.zone(order.destination.zone).map(|z| (z.lat, z.lon)));
        let mut out = Vec::new();
        for &node in &entry.nodes {
            if !self.eligible(node) {
                continue;
            }
            let spec = self.network.node(node).expect("eligible nodes exist");
            if !spec.capabilities.contains(entry.required) {
                continue;
            }
            let Some(lane) = promise::lane(
                self.network,
                node,
                &order.destination,
                point,
                order.level,
                distances,
            ) else {
                continue;
            };
            let factor = spec.cost_factor_milli;
            out.push(LineOffer {
                node,
                unit_cost: promise::scaled(lane.cost_per_unit_cents, factor) * u64::from(units),
                package_cost: promise::scaled(lane.cost_per_package_cents, factor),
                transit: u32::from(lane.transit_days),
            });
        }
        out
    }

    /// The first day `node` ships `units` units from stock on hand today, or the working day
    /// after `after` when given.
    fn ship(&self, node: NodeId, units: u32, after: Option<Day>) -> Option<Day> {
        let spec = self.network.node(node)?;
        let ready = after.map_or(self.now.day(), |d| d.plus(1));
        promise::ship_day(node, spec, self.now, ready, units, &NoCapacityUsed).map(|s| s.day)
    }

    /// Prices a plan (line -> node) shipping on the nodes' first days (or `days`, per package).
    fn price(
        &self,
        order: &OpenOrder,
        line_node: &[NodeId],
        offers: &[Vec<LineOffer>],
        days: Option<&[ShipSlot]>,
    ) -> Option<PlanCandidate> {
        let mut packages: SmallVec<[ShipSlot; 2]> = SmallVec::new();
        let mut cost = 0u64;
        let mut delivery = Day(0);
        let mut nodes: SmallVec<[NodeId; 4]> = line_node.into();
        nodes.sort_unstable();
        nodes.dedup();
        for &node in &nodes {
            let (mut units, mut transit, mut package_cost) = (0u32, 0, 0);
            for (i, _) in line_node.iter().enumerate().filter(|(_, n)| **n == node) {
                let offer = offers[i].iter().find(|o| o.node == node)?;
                units = units.saturating_add(order.lines[i].1);
                cost += offer.unit_cost;
                (transit, package_cost) = (offer.transit, offer.package_cost);
            }
            cost += package_cost;
            let day = match days {
                Some(slots) => slots.iter().find(|s| s.node == node)?.day,
                None => self.ship(node, units, None)?,
            };
            packages.push(ShipSlot { node, day });
            delivery = delivery.max(day.plus(transit));
        }
        let p = self.policy;
        let extra_packages = packages.len().saturating_sub(1) as u64;
        let late = order.promised.map_or(0, |d| delivery.0.saturating_sub(d.0));
        let current = order.lines.iter().zip(line_node).all(|(l, n)| l.2 == *n)
            && order.packages.len() == packages.len()
            && packages.iter().all(|s| order.packages.contains(s));
        let total = cost
            + p.package_cents * extra_packages
            + p.late_day_cents * u64::from(late)
            + if current || order.packages.is_empty() {
                0
            } else {
                p.move_cents
            };
        Some(PlanCandidate {
            line_node: line_node.into(),
            packages,
            cost: total as f64,
            delivery,
            current,
            broken: false,
        })
    }

    /// The candidates of one order, cheapest first (its current plan kept whatever its cost).
    pub fn candidates(
        &self,
        order: &OpenOrder,
        distances: &mut promise::Distances<'_>,
    ) -> Vec<PlanCandidate> {
        let offers: Vec<Vec<LineOffer>> = order
            .lines
            .iter()
            .map(|l| self.offers(order, l.0, l.1, distances))
            .collect();
        let mut out: Vec<PlanCandidate> = Vec::new();
        // The current plan, on its own days, if its nodes still ship.
        if !order.packages.is_empty() && order.lines.iter().all(|l| l.2 != NO_NODE) {
            let nodes: SmallVec<[NodeId; 4]> = order.lines.iter().map(|l| l.2).collect();
            match self.price(order, &nodes, &offers, Some(&order.packages)) {
                Some(c) => out.push(c),
                // It no longer ships (a closed node, a lost lane), but until it moves it keeps
                // what it holds: a candidate at a price no real plan reaches.
                None => {
                    let mut packages = order.packages.clone();
                    packages.sort_unstable_by_key(|p| p.node);
                    out.push(PlanCandidate {
                        line_node: nodes,
                        packages,
                        cost: self.policy.unserved_cents as f64,
                        delivery: Day(0),
                        current: true,
                        broken: true,
                    });
                }
            }
        }
        // An order not placed yet may stay unplaced, at the penalty (so the problem always has
        // an answer, and the bound a meaning).
        if order.packages.is_empty() {
            out.push(PlanCandidate {
                line_node: order.lines.iter().map(|_| NO_NODE).collect(),
                packages: SmallVec::new(),
                cost: self.policy.unserved_cents as f64,
                delivery: Day(0),
                current: true,
                broken: true,
            });
        }
        // Single nodes: those that offer every line.
        let mut singles: Vec<PlanCandidate> = offers[0]
            .iter()
            .filter(|o| offers[1..].iter().all(|l| l.iter().any(|x| x.node == o.node)))
            .filter_map(|o| {
                let nodes: SmallVec<[NodeId; 4]> = order.lines.iter().map(|_| o.node).collect();
                self.price(order, &nodes, &offers, None)
            })
            .collect();
        singles.sort_by(|a, b| {
            a.cost
                .total_cmp(&b.cost)
                .then(a.packages[0].node.cmp(&b.packages[0].node))
        });
        let stranded = out.first().is_none_or(|c| c.broken);
        let (later_nodes, later_days, most) = if stranded {
            (
                STRANDED_LATER_DAY_NODES,
                STRANDED_LATER_DAYS,
                STRANDED_CANDIDATES_MAX,
            )
        } else {
            (LATER_DAY_NODES, LATER_DAYS, CANDIDATES_MAX)
        };
        singles.truncate(most);
        // The best nodes also a working day and two later: how a plan routes around full days.
        let mut later: Vec<PlanCandidate> = Vec::new();
        let units = order.lines.iter().fold(0u32, |a, l| a.saturating_add(l.1));
        for c in singles.iter().take(later_nodes) {
            let mut prev = c.packages.clone();
            for _ in 0..later_days {
                let Some(day) = self.ship(prev[0].node, units, Some(prev[0].day)) else {
                    break;
                };
                prev[0].day = day;
                let Some(p) = self.price(order, &c.line_node, &offers, Some(&prev)) else {
                    break;
                };
                later.push(p);
            }
        }
        out.extend(singles);
        out.extend(later);
        // Splits: a beam over lines, each line at one of its cheapest nodes.
        let max_packages = usize::from(self.policy.max_packages.max(1)).max(order.packages.len());
        if order.lines.len() > 1 && max_packages > 1 {
            out.extend(self.splits(order, &offers, max_packages));
        }
        out.sort_by(|a, b| {
            b.current
                .cmp(&a.current)
                .then(a.cost.total_cmp(&b.cost))
                .then_with(|| a.line_node.cmp(&b.line_node))
                .then_with(|| {
                    a.packages
                        .iter()
                        .map(|p| p.day)
                        .cmp(b.packages.iter().map(|p| p.day))
                })
        });
        out.dedup_by(|a, b| a.line_node == b.line_node && a.packages == b.packages);
        out.truncate(most);
        out
    }

    fn splits(
        &self,
        order: &OpenOrder,
        offers: &[Vec<LineOffer>],
        max_packages: usize,
    ) -> Vec<PlanCandidate> {
        let mut ranked: Vec<Vec<LineOffer>> = offers.to_vec();
        for r in &mut ranked {
            r.sort_by_key(|o| (o.unit_cost + o.package_cost, o.node));
            r.truncate(SPLIT_NODES_PER_LINE);
        }
        // Partial plans: (estimated cost, packages so far, each line's node so far).
        let mut beam: Vec<(u64, usize, SmallVec<[NodeId; 4]>)> = vec![(0, 0, SmallVec::new())];
        for line in &ranked {
            let mut next = Vec::with_capacity(beam.len() * line.len());
            for (est, packages, nodes) in &beam {
                for o in line {
                    let new_node = !nodes.contains(&o.node);
                    if new_node && *packages >= max_packages {
                        continue;
                    }
                    let add = match (new_node, *packages) {
                        (false, _) => 0,
                        (true, 0) => o.package_cost,
                        (true, _) => o.package_cost + self.policy.package_cents,
                    };
                    let mut n = nodes.clone();
                    n.push(o.node);
                    next.push((est + o.unit_cost + add, packages + usize::from(new_node), n));
                }
            }
            next.sort();
            next.dedup();
            next.truncate(SPLIT_BEAM);
            beam = next;
        }
        beam.iter()
            .filter(|(_, packages, _)| *packages > 1)
            .filter_map(|(_, _, nodes)| self.price(order, nodes, offers, None))
            .collect()
    }
}

/// What the selected orders give back when they move: stock per position and capacity per node
/// and day, counted into the resources' capacities.
#[derive(Default)]
pub(crate) struct Freed {
    pub stock: HashMap<(SkuId, NodeId), u64, ahash::RandomState>,
    pub orders: HashMap<(NodeId, Day), u64, ahash::RandomState>,
    pub units: HashMap<(NodeId, Day), u64, ahash::RandomState>,
}

impl Freed {
    pub fn of(orders: &[OpenOrder]) -> Self {
        let mut f = Freed::default();
        for o in orders {
            for l in &o.lines {
                if l.2 != NO_NODE {
                    *f.stock.entry((l.0, l.2)).or_default() += u64::from(l.1);
                }
            }
            for p in &o.packages {
                let units: u64 = o
                    .lines
                    .iter()
                    .filter(|l| l.2 == p.node)
                    .map(|l| u64::from(l.1))
                    .sum();
                *f.orders.entry((p.node, p.day)).or_default() += 1;
                *f.units.entry((p.node, p.day)).or_default() += units;
            }
        }
        f
    }
}

/// The capacity of a resource now, counting what the selected orders give back; `None` for an
/// unlimited one (a node with no daily limit).
pub(crate) fn capacity_of(
    engine: &Engine,
    network: &Network,
    book: &CapacityBook,
    freed: &Freed,
    today: Day,
    r: Resource,
) -> Option<u64> {
    let limit = |c: u32| (c != 0).then_some(u64::from(c));
    match r {
        Resource::Stock(sku, node) => {
            let shard = engine.shards[engine.map.shard_of(sku)].read();
            let slot = engine.map.slot_of(sku);
            let atp = shard
                .position(slot, node)
                .map_or(0, |p| shard.atp(p, today, today));
            Some(atp.max(0) as u64 + freed.stock.get(&(sku, node)).copied().unwrap_or(0))
        }
        Resource::Orders(node, day) => {
            let max = limit(network.node(node)?.capacity.orders)?;
            let used = u64::from(book.load(node, day).orders);
            let back = freed.orders.get(&(node, day)).copied().unwrap_or(0);
            Some(max.saturating_sub(used.saturating_sub(back)))
        }
        Resource::Units(node, day) => {
            let max = limit(network.node(node)?.capacity.units)?;
            let used = u64::from(book.load(node, day).units);
            let back = freed.units.get(&(node, day)).copied().unwrap_or(0);
            Some(max.saturating_sub(used.saturating_sub(back)))
        }
    }
}

/// The resources a candidate uses, with amounts.
pub(crate) fn uses_of(order: &OpenOrder, c: &PlanCandidate) -> SmallVec<[(Resource, u32); 8]> {
    let mut out: SmallVec<[(Resource, u32); 8]> = SmallVec::new();
    for (l, &node) in order.lines.iter().zip(&c.line_node) {
        if node != NO_NODE {
            // Each resource once (two lines of one SKU at one node add up): the solver checks
            // room one use at a time.
            let r = Resource::Stock(l.0, node);
            match out.iter_mut().find(|u| u.0 == r) {
                Some(u) => u.1 = u.1.saturating_add(l.1),
                None => out.push((r, l.1)),
            }
        }
    }
    for p in &c.packages {
        let units = order
            .lines
            .iter()
            .zip(&c.line_node)
            .filter(|(_, n)| **n == p.node)
            .fold(0u32, |a, (l, _)| a.saturating_add(l.1));
        out.push((Resource::Orders(p.node, p.day), 1));
        out.push((Resource::Units(p.node, p.day), units));
    }
    out
}

/// Every order's candidates, worked out in parallel (each order alone, so the result does not
/// depend on the thread count).
pub(crate) fn all_candidates(ctx: &Context<'_>, orders: &[OpenOrder]) -> Vec<Vec<PlanCandidate>> {
    orders
        .par_iter()
        .with_min_len(64)
        .map(|o| {
            let mut distances = promise::Distances::to(ctx.network, &o.destination);
            ctx.candidates(o, &mut distances)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use smallvec::smallvec;

    use super::*;
    use crate::ids::{RequestId, ZoneId};
    use crate::network::ServiceLevel;
    use crate::promise::Destination;

    /// Two lines of one SKU shipped from one node draw on its position once, for both.
    #[test]
    fn a_candidate_uses_each_resource_once() {
        let (sku, node, day) = (SkuId::from_raw(3), NodeId::from_raw(1), Day(10));
        let order = OpenOrder {
            id: RequestId(1),
            lines: smallvec![(sku, 2, NO_NODE), (sku, 5, NO_NODE)],
            packages: SmallVec::new(),
            destination: Destination {
                zone: ZoneId(0),
                point: None,
            },
            level: ServiceLevel::Ground,
            promised: None,
        };
        let plan = PlanCandidate {
            line_node: smallvec![node, node],
            packages: smallvec![ShipSlot { node, day }],
            cost: 1.0,
            delivery: Day(12),
            current: false,
            broken: false,
        };
        assert_eq!(
            uses_of(&order, &plan).as_slice(),
            &[
                (Resource::Stock(sku, node), 7),
                (Resource::Orders(node, day), 1),
                (Resource::Units(node, day), 7)
            ]
        );
    }
}
