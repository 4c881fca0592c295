//! Node capacity used per ship day: the orders and units that routed orders (`RouteOrder`) have
//! committed a node to ship on a day. Promises read it (a node whose day is full ships the next
//! working day); cancelling a routed order gives its unshipped packages' share back.
//!
//! Only routed orders use capacity: a cart hold is a reservation of stock, not yet work for a
//! warehouse. Days before yesterday are forgotten at the first `tick` of a day (no order can
//! ship on them any more), so the book stays as small as the look-ahead horizon.

use std::collections::HashMap;

use crate::ids::{Day, NodeId, ZoneId};
use crate::network::ServiceLevel;
use crate::promise::CapacityUse;

/// Orders and units committed for one node and day.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Load {
    pub orders: u32,
    pub units: u32,
}

/// One package of a routed order: the node that ships it and its ship day.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShipSlot {
    pub node: NodeId,
    pub day: Day,
}

/// What a routed order keeps beside its lines: the capacity its packages took, and what it
/// promised (where it goes, by when) so that a re-route can price and date other plans for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Routed {
    /// One per shipping node.
    pub packages: Box<[ShipSlot]>,
    pub zone: ZoneId,
    /// The destination point's (lat, lon) bits, when one was given instead of the zone's centre.
    pub point_bits: Option<(u32, u32)>,
    /// The delivery day promised.
    pub promised: Day,
    /// The service level it was promised at.
    pub level: ServiceLevel,
}

impl Routed {
    pub fn point(&self) -> Option<(f32, f32)> {
        self.point_bits
            .map(|(a, b)| (f32::from_bits(a), f32::from_bits(b)))
    }
}

/// Capacity used, by node and day. Engine state: snapshots, the digest and the invariants see it.
#[derive(Clone, Debug, Default)]
pub struct CapacityBook {
    used: HashMap<(NodeId, Day), Load, ahash::RandomState>,
    /// Entries before this day are forgotten; giving back to one of them does nothing.
    floor: Day,
}

impl CapacityUse for CapacityBook {
    fn used(&self, node: NodeId, day: Day) -> (u32, u32) {
        self.used
            .get(&(node, day))
            .map_or((0, 0), |l| (l.orders, l.units))
    }
}

impl CapacityBook {
    pub(crate) fn from_parts(floor: Day, entries: Vec<((NodeId, Day), Load)>) -> Self {
        Self {
            used: entries.into_iter().collect(),
            floor,
        }
    }

    pub fn load(&self, node: NodeId, day: Day) -> Load {
        self.used.get(&(node, day)).copied().unwrap_or_default()
    }

    pub fn floor(&self) -> Day {
        self.floor
    }

    /// Every entry, sorted by node then day: the canonical order for snapshots and the digest.
    pub fn entries(&self) -> Vec<((NodeId, Day), Load)> {
        let mut all: Vec<_> = self.used.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable_by_key(|e| (e.0.0, e.0.1));
        all
    }

    /// Takes one order of `units` units on `slot`'s node and day. The caller checked the limits.
    pub(crate) fn take(&mut self, slot: ShipSlot, units: u32) {
        let load = self.used.entry((slot.node, slot.day)).or_default();
        load.orders += 1;
        load.units += units;
    }

    /// Gives back what `take` took; a forgotten day is left alone.
    pub(crate) fn give_back(&mut self, slot: ShipSlot, units: u32) {
        if slot.day < self.floor {
            return;
        }
        let key = (slot.node, slot.day);
        if let Some(load) = self.used.get_mut(&key) {
            load.orders = load.orders.saturating_sub(1);
            load.units = load.units.saturating_sub(units);
            if *load == Load::default() {
                self.used.remove(&key);
            }
        }
    }

    /// Forgets days before `floor` (once a day: later calls with the same floor do nothing).
    pub(crate) fn forget_before(&mut self, floor: Day) {
        if floor > self.floor {
            self.floor = floor;
            self.used.retain(|k, _| k.1 >= floor);
        }
    }
}
