//! The fulfillment network: nodes and their attributes, and SKU capability requirements.
//!
//! The network changes rarely (an admin upserts a node) and is read on every hold, so it is an
//! immutable `Arc<Network>`, replaced whole on change. Each SKU shard keeps its own copy of the
//! `Arc`, swapped while every shard lock is held, so a hold reads node status under the locks it
//! already owns: no extra atomic on the hot path, and a status change is ordered exactly between
//! the holds before and after it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::ids::{NodeId, ZoneId};

/// What a node is. Routing rules prefer or avoid kinds (issue "Delivery promises").
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeKind {
    Dc = 0,
    Store = 1,
    ThirdParty = 2,
    DropShip = 3,
}

impl NodeKind {
    pub const ALL: [NodeKind; 4] = [Self::Dc, Self::Store, Self::ThirdParty, Self::DropShip];
    pub fn name(self) -> &'static str {
        match self {
            Self::Dc => "dc",
            Self::Store => "store",
            Self::ThirdParty => "3pl",
            Self::DropShip => "drop_ship",
        }
    }
}

/// Whether a node takes new holds. Paused and closed nodes keep their stock and allocations (they
/// are still counted and can still ship), but grant nothing new and leave network ATP.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeStatus {
    Open = 0,
    Paused = 1,
    Closed = 2,
}

impl NodeStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Paused => "paused",
            Self::Closed => "closed",
        }
    }
}

/// A set of node capabilities (or SKU requirements), one bit each.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u32);

impl Capabilities {
    pub const GIFT_WRAP: Self = Self(1 << 0);
    pub const HAZMAT: Self = Self(1 << 1);
    pub const BOPIS: Self = Self(1 << 2);
    pub const EMBROIDERY: Self = Self(1 << 3);
    pub const NAMES: [(&'static str, Capabilities); 4] = [
        ("gift_wrap", Self::GIFT_WRAP),
        ("hazmat", Self::HAZMAT),
        ("bopis", Self::BOPIS),
        ("embroidery", Self::EMBROIDERY),
    ];

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    pub const fn contains(self, required: Self) -> bool {
        self.0 & required.0 == required.0
    }
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, c)| self.contains(*c))
            .map(|(n, _)| *n)
            .collect()
    }
}

/// Where a node is: coordinates for distance-based defaults and the zone it sits in.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Location {
    pub lat: f32,
    pub lon: f32,
    pub zone: ZoneId,
}

/// When a node works: a weekday mask (bit 0 = Monday) and holidays (days it does not ship).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Calendar {
    pub weekdays: u8,
    pub holidays: Vec<crate::ids::Day>,
}

impl Default for Calendar {
    fn default() -> Self {
        Self {
            weekdays: 0b0111_1111,
            holidays: Vec::new(),
        }
    }
}

/// Daily throughput a node can ship.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DailyCapacity {
    pub orders: u32,
    pub units: u32,
}

/// Everything known about one node. Upserted whole.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub kind: NodeKind,
    pub status: NodeStatus,
    pub location: Location,
    pub capabilities: Capabilities,
    pub capacity: DailyCapacity,
    /// Days between the order and the day it can leave (0 = same day before cut-off).
    pub processing_days: u8,
    /// Minutes after local midnight after which an order counts as the next day's.
    pub cutoff_minute: u16,
    /// The node's offset from UTC, in minutes.
    pub utc_offset_minutes: i16,
    pub calendar: Calendar,
    /// Multiplier on lane costs, in thousandths (1000 = neutral).
    pub cost_factor_milli: u32,
}

impl NodeSpec {
    /// An open DC with neutral attributes: handy for tests and small examples.
    pub fn open(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: NodeKind::Dc,
            status: NodeStatus::Open,
            location: Location::default(),
            capabilities: Capabilities::default(),
            capacity: DailyCapacity {
                orders: u32::MAX,
                units: u32::MAX,
            },
            processing_days: 0,
            cutoff_minute: 14 * 60,
            utc_offset_minutes: 0,
            calendar: Calendar::default(),
            cost_factor_milli: 1000,
        }
    }
}

/// The immutable network value: node specs indexed by `NodeId`, the name index, destination
/// zones with their centre point, and the lanes given explicitly (others default by distance,
/// see `promise::lanes`).
#[derive(Debug, Default)]
pub struct Network {
    nodes: Vec<NodeSpec>,
    by_name: HashMap<String, NodeId>,
    zones: HashMap<ZoneId, ZoneSpec, ahash::RandomState>,
    lanes: HashMap<(NodeId, ZoneId, ServiceLevel), Lane, ahash::RandomState>,
    /// Great-circle km from every node to each zone's centre, worked out on a zone's first
    /// promise. A network value never changes, so neither do they: no locks, no invalidation.
    zone_km: OnceLock<ZoneDistances>,
}

/// Per zone, km from each node (by id) to its centre, filled on first use.
type ZoneDistances = HashMap<ZoneId, OnceLock<Box<[f64]>>, ahash::RandomState>;

/// What a node's settings must satisfy for promises to make sense of them.
pub fn check_node(spec: &NodeSpec) -> Result<(), crate::error::EngineError> {
    let invalid = |what: String| Err(crate::error::EngineError::InvalidOption { what });
    check_point(spec.location.lat, spec.location.lon)?;
    if spec.cutoff_minute > 24 * 60 {
        return invalid(format!(
            "node {}: cut-off minute {} is past midnight (0..=1440; 1440: no cut-off)",
            spec.name, spec.cutoff_minute
        ));
    }
    if spec.utc_offset_minutes.unsigned_abs() > 14 * 60 {
        return invalid(format!(
            "node {}: UTC offset {} minutes is outside -840..=840",
            spec.name, spec.utc_offset_minutes
        ));
    }
    if spec.calendar.weekdays > 0b111_1111 {
        return invalid(format!(
            "node {}: weekday mask {:#b} has bits past Sunday",
            spec.name, spec.calendar.weekdays
        ));
    }
    Ok(())
}

/// Latitude in [-90, 90] and longitude in [-180, 180], finite.
pub fn check_point(lat: f32, lon: f32) -> Result<(), crate::error::EngineError> {
    if lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0 {
        Ok(())
    } else {
        Err(crate::error::EngineError::InvalidOption {
            what: format!("({lat}, {lon}) is not a point: latitude -90..90, longitude -180..180"),
        })
    }
}

/// A destination zone (a postcode group) and the point distance defaults are measured to.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ZoneSpec {
    pub zone: ZoneId,
    pub lat: f32,
    pub lon: f32,
}

impl Network {
    pub fn node(&self, id: NodeId) -> Option<&NodeSpec> {
        self.nodes.get(id.index())
    }
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &NodeSpec)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId::from_raw(i as u32), n))
    }
    pub fn is_open(&self, id: NodeId) -> bool {
        self.node(id).is_some_and(|n| n.status == NodeStatus::Open)
    }

    pub fn zone(&self, zone: ZoneId) -> Option<&ZoneSpec> {
        self.zones.get(&zone)
    }
    pub fn zones(&self) -> impl Iterator<Item = &ZoneSpec> {
        self.zones.values()
    }
    /// The lane given for this node, zone and service level, if one was.
    pub fn lane(&self, node: NodeId, zone: ZoneId, level: ServiceLevel) -> Option<&Lane> {
        if self.lanes.is_empty() {
            return None;
        }
        self.lanes.get(&(node, zone, level))
    }

    /// Great-circle km from each node (indexed by id) to `zone`'s centre; `None` for a zone
    /// without a centre.
    pub fn zone_distances(&self, zone: ZoneId) -> Option<&[f64]> {
        let cells = self
            .zone_km
            .get_or_init(|| self.zones.keys().map(|&z| (z, OnceLock::new())).collect());
        let (cell, centre) = (cells.get(&zone)?, self.zones.get(&zone)?);
        Some(cell.get_or_init(|| {
            self.nodes
                .iter()
                .map(|n| {
                    crate::promise::lanes::haversine_km(
                        n.location.lat,
                        n.location.lon,
                        centre.lat,
                        centre.lon,
                    )
                })
                .collect()
        }))
    }
    pub fn lanes(&self) -> impl Iterator<Item = &Lane> {
        self.lanes.values()
    }

    /// A new network with `zone` inserted or replaced.
    pub(crate) fn with_zone(&self, zone: ZoneSpec) -> Arc<Network> {
        let mut next = self.clone_parts();
        next.zones.insert(zone.zone, zone);
        Arc::new(next)
    }

    /// A new network with `lane` inserted or replaced.
    pub(crate) fn with_lane(&self, lane: Lane) -> Arc<Network> {
        let mut next = self.clone_parts();
        next.lanes.insert((lane.node, lane.zone, lane.level), lane);
        Arc::new(next)
    }

    fn clone_parts(&self) -> Network {
        Network {
            nodes: self.nodes.clone(),
            by_name: self.by_name.clone(),
            zones: self.zones.clone(),
            lanes: self.lanes.clone(),
            zone_km: OnceLock::new(),
        }
    }

    /// The same network with these zones and lanes (a snapshot's).
    pub(crate) fn with_routing(mut self, zones: Vec<ZoneSpec>, lanes: Vec<Lane>) -> Network {
        self.zones = zones.into_iter().map(|z| (z.zone, z)).collect();
        self.lanes = lanes
            .into_iter()
            .map(|l| ((l.node, l.zone, l.level), l))
            .collect();
        self.zone_km = OnceLock::new();
        self
    }

    /// A network of these nodes, ids in order; `None` if two share a name.
    pub(crate) fn from_nodes(nodes: Vec<NodeSpec>) -> Option<Network> {
        let mut by_name = HashMap::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            if by_name
                .insert(n.name.clone(), NodeId::from_raw(i as u32))
                .is_some()
            {
                return None;
            }
        }
        Some(Network {
            nodes,
            by_name,
            ..Network::default()
        })
    }

    /// A new network with `spec` inserted or replaced; returns it with the node's id.
    pub(crate) fn with_node(&self, spec: NodeSpec) -> (Arc<Network>, NodeId) {
        let mut next = self.clone_parts();
        let (nodes, by_name) = (&mut next.nodes, &mut next.by_name);
        let id = match by_name.get(&spec.name) {
            Some(&id) => {
                nodes[id.index()] = spec;
                id
            }
            None => {
                let id = NodeId::from_raw(nodes.len() as u32);
                by_name.insert(spec.name.clone(), id);
                nodes.push(spec);
                id
            }
        };
        (Arc::new(next), id)
    }
}

/// How fast a parcel travels; `Pickup` is collection at a store (BOPIS): no transit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ServiceLevel {
    Ground = 0,
    TwoDay = 1,
    NextDay = 2,
    Pickup = 3,
}

impl ServiceLevel {
    pub const ALL: [ServiceLevel; 4] = [Self::Ground, Self::TwoDay, Self::NextDay, Self::Pickup];
    pub fn name(self) -> &'static str {
        match self {
            Self::Ground => "ground",
            Self::TwoDay => "two_day",
            Self::NextDay => "next_day",
            Self::Pickup => "pickup",
        }
    }
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }
}

/// Node x destination zone x service level -> transit days and cost.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lane {
    pub node: NodeId,
    pub zone: ZoneId,
    pub level: ServiceLevel,
    pub transit_days: u8,
    pub cost_per_package_cents: u32,
    pub cost_per_unit_cents: u32,
}
