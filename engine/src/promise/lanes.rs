//! Lanes: how long and how much from a node to a destination at a service level. An explicit lane
//! (`UpsertLane`) wins; otherwise the lane follows from the great-circle distance between the
//! node and the destination's point (the zone's centre, or the coordinates given):
//!
//! | level | transit days | cost per package |
//! |---|---|---|
//! | ground | 1 per 800 km, rounded down, plus 1 (1 to 6) | 450 cents + 0.25 cents per km |
//! | two-day | ground's, at most 2 | 1.8 x ground's |
//! | next-day | 1 | 3.5 x ground's |
//! | pickup | 0 (the named store only) | 0 |
//!
//! and 20 cents per unit for every shipping level. The node's cost factor multiplies both costs.
//! The generated data sets use exactly this table, so a set's promises need no lane commands.

use crate::ids::{NodeId, ZoneId};
use crate::network::{Lane, NodeSpec, ServiceLevel};

/// Cents per unit shipped on a default lane.
pub const DEFAULT_UNIT_CENTS: u32 = 20;

/// The levels a parcel can be shipped at (pickup is not shipping).
pub const SHIPPING: [ServiceLevel; 3] = [ServiceLevel::Ground, ServiceLevel::TwoDay, ServiceLevel::NextDay];

/// Great-circle distance in kilometres.
pub fn haversine_km(lat1: f32, lon1: f32, lat2: f32, lon2: f32) -> f64 {
    let (lat1, lon1, lat2, lon2) = (
        f64::from(lat1).to_radians(),
        f64::from(lon1).to_radians(),
        f64::from(lat2).to_radians(),
        f64::from(lon2).to_radians(),
    );
    let a =
        ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

/// The default lane from `node` (id `id`) to a point at `level`.
pub fn default_lane(
    id: NodeId,
    node: &NodeSpec,
    zone: ZoneId,
    lat: f32,
    lon: f32,
    level: ServiceLevel,
) -> Lane {
    let km = haversine_km(node.location.lat, node.location.lon, lat, lon);
    lane_at_distance(id, zone, km, level)
}

/// The default lane for a destination `km` away.
pub fn lane_at_distance(id: NodeId, zone: ZoneId, km: f64, level: ServiceLevel) -> Lane {
    let ground_days = (1.0 + km / 800.0).floor().clamp(1.0, 6.0) as u8;
    let ground_cents = 450.0 + km * 0.25;
    let (transit_days, factor, unit) = match level {
        ServiceLevel::Ground => (ground_days, 1.0, DEFAULT_UNIT_CENTS),
        ServiceLevel::TwoDay => (ground_days.min(2), 1.8, DEFAULT_UNIT_CENTS),
        ServiceLevel::NextDay => (1, 3.5, DEFAULT_UNIT_CENTS),
        ServiceLevel::Pickup => (0, 0.0, 0),
    };
    Lane {
        node: id,
        zone,
        level,
        transit_days,
        cost_per_package_cents: (ground_cents * factor) as u32,
        cost_per_unit_cents: unit,
    }
}
