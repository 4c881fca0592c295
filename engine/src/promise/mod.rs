//! Delivery promises: "when can this cart arrive, and from where?" For each service level asked,
//! the earliest delivery date of the whole cart, the plan that achieves it at the least cost
//! (which node ships which line, in how many packages), its cost, and what decided the date.
//!
//! - [`lanes`]: transit days and costs, explicit or by distance.
//! - `ship`: a node's next ship day (cut-off in its time zone, calendar, processing days, the
//!   day its stock is there, capacity left).
//! - `search`: the exact plan (branch and bound; `search.rs` explains it).
//!
//! A promise reads the ledger and changes nothing. Stock counts as the position's ATP with
//! look-ahead: a line can be promised from supply still arriving, on the day it is promisable.
//! Lines are shipped whole from one node each (a line is not split across nodes).

mod hold;
pub mod lanes;
mod listing;
mod search;
mod ship;

use crate::atp;
use crate::error::EngineError;
use crate::ids::{Day, NodeId, Quantity, SkuId, Timestamp, ZoneId};
use crate::ledger::Engine;
use crate::limits::PROMISE_LINES_MAX;
use crate::network::{Capabilities, Lane, Network, NodeKind, NodeStatus, ServiceLevel};

pub use hold::HoldPlan;
pub use listing::{Earliest, ListingPair};
pub use ship::{Binding, CapacityUse, NoCapacityUsed, ShipDay, is_working, ship_day, weekday};

/// One line of a cart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CartLine {
    pub sku: SkuId,
    pub quantity: Quantity,
}

/// Where the cart goes: a zone (for explicit lanes), and the point distances are measured to
/// (`None`: the zone's centre).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Destination {
    pub zone: ZoneId,
    pub point: Option<(f32, f32)>,
}

/// Rules for a promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromiseOptions {
    /// At most this many packages (distinct shipping nodes), at least 1.
    pub max_packages: u8,
    /// The node kinds that may ship (empty: all).
    pub kinds: Vec<NodeKind>,
    /// Stores may ship parcels.
    pub ship_from_store: bool,
    /// Collection at this store (BOPIS): the `Pickup` level, from this node only.
    pub pickup_store: Option<NodeId>,
    /// Promise the lines that can be served and report the others, instead of nothing. When
    /// they cannot all fit in `max_packages`, the lines a greedy cover's packages reach (most
    /// lines per package first; not proven the largest set) are promised, the rest reported as
    /// `Packages`.
    pub allow_partial: bool,
}

impl Default for PromiseOptions {
    fn default() -> Self {
        Self {
            max_packages: 3,
            kinds: Vec::new(),
            ship_from_store: true,
            pickup_store: None,
            allow_partial: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PromiseRequest {
    pub lines: Vec<CartLine>,
    pub destination: Destination,
    pub levels: Vec<ServiceLevel>,
    pub options: PromiseOptions,
}

/// One package of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub node: NodeId,
    /// Indexes into the request's lines; each ships whole from this node.
    pub lines: Vec<usize>,
    pub ship_day: Day,
    pub delivery: Day,
    pub cost_cents: u64,
    pub binding: Binding,
}

/// The earliest plan for one level, and its cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub delivery: Day,
    pub cost_cents: u64,
    pub packages: Vec<Package>,
    /// What decided the delivery date (the latest package's reason).
    pub binding: Binding,
    /// False when the search hit its work limit (a cart built to defeat it): the best plan it
    /// found, feasible but not proven the earliest and cheapest.
    pub exact: bool,
}

/// Why a line cannot be promised at a level.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Shortfall {
    /// No eligible node has (or will have, within the look-ahead) the units.
    Stock = 0,
    /// No node that stocks it has the capabilities it needs (or is allowed by the options).
    Capability = 1,
    /// No node that has it has a lane to the destination at this level.
    Lane = 2,
    /// No node that has it can ship it within the look-ahead (calendar, capacity).
    Capacity = 3,
    /// Every line can be served, but not together within the package limit.
    Packages = 4,
    /// The search hit its branch budget before it found any plan: one may exist (a cart of
    /// many lines, each with many candidate nodes). Not a certain shortfall; fewer lines per
    /// request, or `allow_partial`, get an answer.
    Search = 5,
}

impl Shortfall {
    /// Every reason, in value order (`ALL[r as usize] == r`).
    pub const ALL: [Shortfall; 6] = [
        Self::Stock,
        Self::Capability,
        Self::Lane,
        Self::Capacity,
        Self::Packages,
        Self::Search,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Stock => "stock",
            Self::Capability => "capability",
            Self::Lane => "lane",
            Self::Capacity => "capacity",
            Self::Packages => "packages",
            Self::Search => "search",
        }
    }
}

/// The answer for one service level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelPromise {
    pub level: ServiceLevel,
    /// `None` when nothing can be promised (see `unserved`).
    pub plan: Option<Plan>,
    /// Lines left out, and why.
    pub unserved: Vec<(usize, Shortfall)>,
}

/// One stocking node of a line, worked out once for every level: whether it may ship the SKU
/// (open, capable), the first day it has the units, and the day it could ship them alone.
struct Offer {
    node: NodeId,
    capable: bool,
    ready: Option<Day>,
    solo: Option<ShipDay>,
}

/// A line's offers, read under one shard lock.
struct Supply {
    offers: Vec<Offer>,
}

impl Engine {
    /// Promises `request` at time `now`, one answer per service level asked, in order, against
    /// the node capacity routed orders have used. Reads only.
    pub fn promise(
        &self,
        now: Timestamp,
        request: &PromiseRequest,
    ) -> Result<Vec<LevelPromise>, EngineError> {
        // One read of the book for the whole promise: route orders wait at most for it.
        let capacity = self.capacity.read();
        self.promise_with(now, request, &*capacity)
    }

    /// [`Engine::promise`] with the capacity already used per node and day.
    pub fn promise_with(
        &self,
        now: Timestamp,
        request: &PromiseRequest,
        capacity: &dyn CapacityUse,
    ) -> Result<Vec<LevelPromise>, EngineError> {
        self.promise_within(now, request, capacity, search::SEARCH_BUDGET)
    }

    /// [`Engine::promise_with`], each level's search cut after `budget` branches.
    fn promise_within(
        &self,
        now: Timestamp,
        request: &PromiseRequest,
        capacity: &dyn CapacityUse,
        budget: u32,
    ) -> Result<Vec<LevelPromise>, EngineError> {
        let network = self.network.load_full();
        let point = validate(&network, request)?;
        SHIP_MEMO.with_borrow_mut(|memo| {
            memo.begin();
            let ship = |node: NodeId, ready: Day, units: u32| {
                ship_day(node, network.node(node)?, now, ready, units, capacity)
            };
            let supplies: Vec<Supply> = request
                .lines
                .iter()
                .map(|l| self.supply(&network, l, now, &mut |n, r, u| memo.get(n, r, u, &ship)))
                .collect::<Result<_, _>>()?;
            let mut distances = Distances::to(&network, &request.destination);
            let ask = Ask {
                network: &network,
                request,
                point,
                supplies: &supplies,
                now,
                capacity,
                budget,
            };
            Ok(request
                .levels
                .iter()
                .map(|&level| promise_level(&ask, level, &mut distances, memo))
                .collect())
        })
    }

    /// The capabilities a node needs to ship `sku`.
    pub fn sku_required(&self, sku: SkuId) -> Result<Capabilities, EngineError> {
        let shard = self.shards[self.map.shard_of(sku)].read();
        shard
            .skus
            .get(self.map.slot_of(sku))
            .map(|e| e.required)
            .ok_or(EngineError::UnknownSkuId(sku))
    }

    fn supply(
        &self,
        network: &Network,
        line: &CartLine,
        now: Timestamp,
        ship: &mut dyn FnMut(NodeId, Day, u32) -> Option<ShipDay>,
    ) -> Result<Supply, EngineError> {
        let today = now.day();
        let units = line.quantity.get();
        let shard = self.shards[self.map.shard_of(line.sku)].read();
        let entry = shard
            .skus
            .get(self.map.slot_of(line.sku))
            .ok_or(EngineError::UnknownSkuId(line.sku))?;
        let offers = entry
            .nodes
            .iter()
            .zip(&entry.positions)
            .map(|(&node, p)| {
                let spec = network.node(node);
                let capable = spec.is_some_and(|n| n.capabilities.contains(entry.required));
                let ready = match shard.dated_of(p) {
                    // Most positions have no dated supply: ATP is the same every day.
                    None => (p.base() >= i64::from(units)).then_some(today),
                    // ATP only rises with the day: the first point with enough units.
                    Some(dated) => atp::timeline(p.base(), Some(dated), today)
                        .iter()
                        .find(|t| t.atp >= i64::from(units))
                        .map(|t| t.day),
                };
                let solo = match (spec, ready) {
                    (Some(_), Some(ready)) if capable => ship(node, ready, units),
                    _ => None,
                };
                Offer {
                    node,
                    capable,
                    ready,
                    solo,
                }
            })
            .collect();
        Ok(Supply { offers })
    }
}

/// Great-circle distances from nodes to the destination: the zone's shared table when the
/// destination is the zone's centre, else worked out once per request and node.
#[derive(Default)]
pub(crate) struct Distances<'a> {
    zone: Option<&'a [f64]>,
    point: std::collections::HashMap<NodeId, f64, ahash::RandomState>,
}

impl<'a> Distances<'a> {
    pub(crate) fn to(network: &'a Network, dest: &Destination) -> Self {
        Self {
            zone: dest
                .point
                .is_none()
                .then(|| network.zone_distances(dest.zone))
                .flatten(),
            point: Default::default(),
        }
    }
}

/// Checks the request; returns the destination point, if there is one.
fn validate(network: &Network, request: &PromiseRequest) -> Result<Option<(f32, f32)>, EngineError> {
    if request.lines.is_empty() {
        return Err(EngineError::EmptyRequest);
    }
    if request.lines.len() > PROMISE_LINES_MAX {
        return Err(EngineError::TooManyLines {
            n_lines: request.lines.len(),
            max: PROMISE_LINES_MAX,
        });
    }
    // At most ten lines: comparing pairs beats hashing.
    for (i, l) in request.lines.iter().enumerate() {
        if request.lines[..i].iter().any(|o| o.sku == l.sku) {
            return Err(EngineError::DuplicateLine {
                line_idx: i,
                sku: l.sku,
                node: None,
            });
        }
    }
    let invalid = |what: &str| Err(EngineError::InvalidOption { what: what.into() });
    if request.levels.is_empty() {
        return invalid("no service level asked");
    }
    if (1..request.levels.len()).any(|i| request.levels[..i].contains(&request.levels[i])) {
        return invalid("a service level is asked twice");
    }
    let o = &request.options;
    if o.max_packages == 0 {
        return invalid("max_packages must be at least 1");
    }
    let pickup = request.levels.contains(&ServiceLevel::Pickup);
    match o.pickup_store {
        None if pickup => return invalid("the pickup level needs a pickup store"),
        None => {}
        Some(_) if !pickup => return invalid("a pickup store is given but the pickup level is not asked"),
        Some(store) => {
            let node = network.node(store).ok_or(EngineError::UnknownNodeId(store))?;
            if node.kind != NodeKind::Store || !node.capabilities.contains(Capabilities::BOPIS) {
                return invalid(&format!(
                    "{} is not a store that offers pickup (BOPIS)",
                    node.name
                ));
            }
            if node.status != NodeStatus::Open {
                return invalid(&format!("pickup store {} is {}", node.name, node.status.name()));
            }
            if !o.kinds.is_empty() && !o.kinds.contains(&NodeKind::Store) {
                return invalid("a pickup store is given but stores are not an allowed node kind");
            }
        }
    }
    let point = match request.destination.point {
        Some((lat, lon)) => {
            crate::network::check_point(lat, lon)?;
            Some((lat, lon))
        }
        None => network.zone(request.destination.zone).map(|z| (z.lat, z.lon)),
    };
    let ships = request.levels.iter().any(|&l| l != ServiceLevel::Pickup);
    if ships && point.is_none() && !network.lanes().any(|l| l.zone == request.destination.zone) {
        return Err(EngineError::UnknownZone(request.destination.zone));
    }
    Ok(point)
}

/// The lane from `node` to the destination at `level`, if there is one.
pub(crate) fn lane(
    network: &Network,
    node: NodeId,
    dest: &Destination,
    point: Option<(f32, f32)>,
    level: ServiceLevel,
    distances: &mut Distances<'_>,
) -> Option<Lane> {
    if let Some(l) = network.lane(node, dest.zone, level) {
        return Some(*l);
    }
    let spec = network.node(node)?;
    if level == ServiceLevel::Pickup {
        return Some(lanes::lane_at_distance(node, dest.zone, 0.0, level));
    }
    let (lat, lon) = point?;
    let km = match distances.zone {
        Some(table) => table[node.index()],
        None => *distances
            .point
            .entry(node)
            .or_insert_with(|| lanes::haversine_km(spec.location.lat, spec.location.lon, lat, lon)),
    };
    Some(lanes::lane_at_distance(node, dest.zone, km, level))
}

pub(crate) fn scaled(cents: u32, factor_milli: u32) -> u64 {
    u64::from(cents) * u64::from(factor_milli) / 1000
}

/// What every level of one promise shares.
struct Ask<'a> {
    network: &'a Network,
    request: &'a PromiseRequest,
    point: Option<(f32, f32)>,
    supplies: &'a [Supply],
    now: Timestamp,
    capacity: &'a dyn CapacityUse,
    /// Branches each level's search may visit.
    budget: u32,
}

thread_local! {
    static SHIP_MEMO: std::cell::RefCell<search::ShipMemo> = std::cell::RefCell::new(search::ShipMemo::new());
}

fn promise_level(
    ask: &Ask<'_>,
    level: ServiceLevel,
    distances: &mut Distances<'_>,
    memo: &mut search::ShipMemo,
) -> LevelPromise {
    let Ask {
        network,
        request,
        point,
        supplies,
        now,
        capacity,
        budget,
    } = *ask;
    let o = &request.options;
    let ship = |node: NodeId, ready: Day, units: u32| {
        ship_day(node, network.node(node)?, now, ready, units, capacity)
    };
    let eligible = |node: NodeId| -> bool {
        let Some(n) = network.node(node) else {
            return false;
        };
        if n.status != NodeStatus::Open {
            return false;
        }
        if level == ServiceLevel::Pickup {
            return Some(node) == o.pickup_store;
        }
        (o.kinds.is_empty() || o.kinds.contains(&n.kind)) && (o.ship_from_store || n.kind != NodeKind::Store)
    };
    let mut choices: Vec<search::LineChoices> = Vec::with_capacity(request.lines.len());
    let mut served = Vec::with_capacity(request.lines.len());
    let mut unserved = Vec::new();
    for (i, (line, supply)) in request.lines.iter().zip(supplies).enumerate() {
        let units = line.quantity.get();
        // Why a line fails is judged over all its nodes: a node with stock but no lane and
        // another with a lane but no stock make a `Lane` shortfall, not a `Stock` one.
        let (mut capable, mut stocked, mut stocked_with_lane) = (false, false, false);
        let mut candidates = Vec::new();
        for offer in &supply.offers {
            if !offer.capable || !eligible(offer.node) {
                continue;
            }
            capable = true;
            stocked |= offer.ready.is_some();
            let Some(lane) = lane(network, offer.node, &request.destination, point, level, distances) else {
                continue;
            };
            let Some(ready) = offer.ready else { continue };
            stocked_with_lane = true;
            let Some(solo) = offer.solo else { continue };
            let factor = network.node(offer.node).map_or(1000, |n| n.cost_factor_milli);
            let transit = u32::from(lane.transit_days);
            candidates.push(search::Candidate {
                node: offer.node,
                ready,
                unit_cost: scaled(lane.cost_per_unit_cents, factor) * u64::from(units),
                package_cost: scaled(lane.cost_per_package_cents, factor),
                transit,
                solo: solo.day.0 + transit,
            });
        }
        if candidates.is_empty() {
            let why = if supply.offers.is_empty() {
                // No node has ever stocked it.
                Shortfall::Stock
            } else if !capable {
                Shortfall::Capability
            } else if !stocked {
                Shortfall::Stock
            } else if !stocked_with_lane {
                Shortfall::Lane
            } else {
                Shortfall::Capacity
            };
            unserved.push((i, why));
            continue;
        }
        // Earliest alone first, then cheapest: good plans come first and cut the rest.
        candidates.sort_unstable_by_key(|c| (c.solo, c.unit_cost + c.package_cost, c.node));
        choices.push(search::LineChoices { units, candidates });
        served.push(i);
    }
    if !unserved.is_empty() && !o.allow_partial {
        return LevelPromise {
            level,
            plan: None,
            unserved,
        };
    }
    let uses = search::drop_dominated(&mut choices);
    let limit = usize::from(o.max_packages);
    // Every line ships alone, but not together: the package limit, or (with packages enough
    // for a line each) the capacity of the nodes they would share. A search that gave up
    // proved nothing: say so rather than claim either.
    let outcome = |choices: &[search::LineChoices], uses: &[u8], memo: &mut search::ShipMemo| {
        let certain = if limit < choices.len() {
            Shortfall::Packages
        } else {
            Shortfall::Capacity
        };
        match search::search_outcome(choices, uses, limit, &ship, memo, budget) {
            search::Searched::Found(best) => (Some(best), certain),
            search::Searched::NoPlan => (None, certain),
            search::Searched::GaveUp => (None, Shortfall::Search),
        }
    };
    let (mut best, mut why) = outcome(&choices, &uses, memo);
    if best.is_none() && o.allow_partial && choices.len() > 1 {
        // Promise the lines the greedy cover's packages reach; report the others.
        let reached = search::greedy_cover(&choices, limit);
        if reached.iter().any(Option::is_some) && reached.iter().any(Option::is_none) {
            let keep = |i: &usize| reached[*i].is_some();
            let left: Vec<usize> = (0..choices.len()).filter(|i| !keep(i)).collect();
            unserved.extend(left.iter().map(|&i| (served[i], why)));
            served = (0..served.len()).filter(keep).map(|i| served[i]).collect();
            choices = (0..choices.len())
                .filter(keep)
                .map(|i| choices[i].clone())
                .collect();
            let uses = search::drop_dominated(&mut choices);
            (best, why) = outcome(&choices, &uses, memo);
            unserved.sort_unstable_by_key(|u| u.0);
        }
    }
    let Some(best) = best else {
        unserved.extend(served.iter().map(|&i| (i, why)));
        unserved.sort_unstable_by_key(|u| u.0);
        return LevelPromise {
            level,
            plan: None,
            unserved,
        };
    };
    LevelPromise {
        level,
        plan: Some(plan_of(network, &choices, &served, &best, &ship)),
        unserved,
    }
}

/// Turns the search's choice into packages.
fn plan_of(
    network: &Network,
    choices: &[search::LineChoices],
    served: &[usize],
    best: &search::Solution,
    ship: &search::ShipFn<'_>,
) -> Plan {
    let mut packages: Vec<Package> = Vec::new();
    let mut parts: Vec<(NodeId, Day, u32, u64, u32, u64)> = Vec::new();
    for ((line, &c), &idx) in choices.iter().zip(&best.choice).zip(served) {
        let cand = &line.candidates[c];
        match parts.iter().position(|p| p.0 == cand.node) {
            Some(p) => {
                let part = &mut parts[p];
                part.1 = part.1.max(cand.ready);
                part.2 = part.2.saturating_add(line.units);
                part.5 += cand.unit_cost;
                packages[p].lines.push(idx);
            }
            None => {
                parts.push((
                    cand.node,
                    cand.ready,
                    line.units,
                    cand.package_cost,
                    cand.transit,
                    cand.unit_cost,
                ));
                packages.push(Package {
                    node: cand.node,
                    lines: vec![idx],
                    ship_day: Day(0),
                    delivery: Day(0),
                    cost_cents: 0,
                    binding: Binding::Transit,
                });
            }
        }
    }
    for (pkg, (node, ready, units, package_cost, transit, unit_cost)) in packages.iter_mut().zip(parts) {
        let s = ship(node, ready, units).expect("the search checked that every package ships");
        pkg.ship_day = s.day;
        pkg.delivery = s.day.plus(transit);
        pkg.cost_cents = package_cost + unit_cost;
        pkg.binding = s.binding;
        debug_assert!(network.node(node).is_some());
    }
    let last = packages
        .iter()
        .max_by_key(|p| (p.delivery, p.binding as u8))
        .expect("a plan has a package");
    Plan {
        delivery: last.delivery,
        cost_cents: best.key.1,
        binding: last.binding,
        packages,
        exact: best.exact,
    }
}

#[cfg(test)]
mod tests;
