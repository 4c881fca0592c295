//! The network problem form of `promised solve` (`docs/solve-format.md`): nodes, zones, lanes,
//! stock and orders as in the engine. Reading builds an in-memory engine from them (every value
//! checked by the same commands the server applies) and the orders to place; solving is the
//! re-route's ([`Engine::plan_orders`]): each order has no current plan, so every order served
//! is a move, and one left out costs the policy's `unserved_cents`.

use std::collections::HashMap;

use serde::Deserialize;
use smallvec::SmallVec;

use super::{NO_CURRENT_NODE, OpenOrder, ReroutePolicy, RerouteReport};
use crate::command::{Command, Outcome};
use crate::ids::{Day, NodeId, RequestId, SkuId, Timestamp, ZoneId};
use crate::ledger::{Engine, EngineConfig};
use crate::network::{
    Calendar, Capabilities, DailyCapacity, Lane, Location, NodeKind, NodeSpec, ServiceLevel, ZoneSpec,
};
use crate::optimise::explicit::{FormatError, bad, check_order_id};
use crate::promise::Destination;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// The time the plan is made for, ms since the Unix epoch.
    now_ms: u64,
    #[serde(default)]
    policy: Option<PolicyEntry>,
    #[serde(default)]
    zones: Vec<ZoneEntry>,
    nodes: Vec<NodeEntry>,
    #[serde(default)]
    lanes: Vec<LaneEntry>,
    stock: Vec<StockEntry>,
    orders: Vec<OrderEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyEntry {
    package_cents: Option<u64>,
    late_day_cents: Option<u64>,
    unserved_cents: Option<u64>,
    max_packages: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneEntry {
    id: u32,
    lat: f32,
    lon: f32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    id: String,
    #[serde(default = "dc")]
    kind: String,
    lat: f32,
    lon: f32,
    /// Orders and units it can ship a day (0: no limit).
    #[serde(default)]
    orders_per_day: u32,
    #[serde(default)]
    units_per_day: u32,
    #[serde(default)]
    processing_days: u8,
    /// Minutes after local midnight; orders at or after it ship the next working day.
    #[serde(default = "cutoff")]
    cutoff_minute: u16,
    #[serde(default)]
    utc_offset_minutes: i16,
    /// Bit i: weekday i (0 = Monday) is a working day.
    #[serde(default = "weekdays")]
    weekdays: u8,
    /// Days since the Unix epoch it does not work.
    #[serde(default)]
    holidays: Vec<u32>,
    #[serde(default = "thousand")]
    cost_factor_milli: u32,
}

fn dc() -> String {
    "dc".into()
}
fn cutoff() -> u16 {
    14 * 60
}
fn weekdays() -> u8 {
    0b1_1111
}
fn thousand() -> u32 {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LaneEntry {
    node: String,
    zone: u32,
    level: String,
    transit_days: u8,
    cost_per_package_cents: u32,
    cost_per_unit_cents: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockEntry {
    sku: String,
    node: String,
    on_hand: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderEntry {
    id: String,
    zone: u32,
    /// A destination point instead of the zone's centre.
    #[serde(default)]
    lat: Option<f32>,
    #[serde(default)]
    lon: Option<f32>,
    #[serde(default = "ground")]
    level: String,
    /// The delivery day promised (days since the Unix epoch): later plans pay per day late.
    #[serde(default)]
    promised_day: Option<u32>,
    lines: Vec<LineEntry>,
}

fn ground() -> String {
    "ground".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineEntry {
    sku: String,
    quantity: u32,
}

/// A network-form problem: the engine it describes, the orders to place, and the ids to write
/// the plan back in.
pub struct NetworkProblem {
    pub engine: Engine,
    pub now: Timestamp,
    pub policy: ReroutePolicy,
    pub orders: Vec<OpenOrder>,
    pub order_ids: Vec<String>,
}

/// Whether `text` is the network form (it has a `stock` field) rather than the explicit one.
pub fn is_network_form(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.get("stock").is_some())
}

/// Reads and checks a network-form problem.
pub fn parse(text: &str) -> Result<NetworkProblem, FormatError> {
    let file: File = serde_json::from_str(text)
        .map_err(|e| bad(format!("line {}, column {}", e.line(), e.column()), e.to_string()))?;
    let now = Timestamp(file.now_ms);
    let engine = Engine::new(EngineConfig::default());
    let apply = |at: &dyn Fn() -> String, command: Command| -> Result<Outcome, FormatError> {
        engine.apply(now, &command).map_err(|e| bad(at(), e.to_string()))
    };
    let level_of = |at: &dyn Fn() -> String, name: &str| {
        ServiceLevel::ALL
            .into_iter()
            .find(|l| l.name() == name && *l != ServiceLevel::Pickup)
            .ok_or_else(|| bad(at(), format!("level {name:?} (ground, two_day or next_day)")))
    };
    for (i, z) in file.zones.iter().enumerate() {
        apply(
            &|| format!("zones[{i}] (id {})", z.id),
            Command::UpsertZone(ZoneSpec {
                zone: ZoneId(z.id),
                lat: z.lat,
                lon: z.lon,
            }),
        )?;
    }
    let mut nodes: HashMap<&str, NodeId> = HashMap::with_capacity(file.nodes.len());
    for (i, n) in file.nodes.iter().enumerate() {
        let at = || format!("nodes[{i}] (id {:?})", n.id);
        if nodes.contains_key(n.id.as_str()) {
            return Err(bad(at(), "a node id given twice"));
        }
        let kind = NodeKind::ALL
            .into_iter()
            .find(|k| k.name() == n.kind)
            .ok_or_else(|| bad(at(), format!("kind {:?} (dc, store, 3pl or drop_ship)", n.kind)))?;
        let unlimited = |c: u32| if c == 0 { u32::MAX } else { c };
        let spec = NodeSpec {
            kind,
            location: Location {
                lat: n.lat,
                lon: n.lon,
                zone: ZoneId(0),
            },
            capabilities: Capabilities::default(),
            capacity: DailyCapacity {
                orders: unlimited(n.orders_per_day),
                units: unlimited(n.units_per_day),
            },
            processing_days: n.processing_days,
            cutoff_minute: n.cutoff_minute,
            utc_offset_minutes: n.utc_offset_minutes,
            calendar: Calendar {
                weekdays: n.weekdays,
                holidays: n.holidays.iter().map(|&d| Day(d)).collect(),
            },
            cost_factor_milli: n.cost_factor_milli,
            ..NodeSpec::open(n.id.clone())
        };
        match apply(&at, Command::UpsertNode(spec))? {
            Outcome::NodeUpserted(id) => nodes.insert(&n.id, id),
            other => unreachable!("an upserted node answers NodeUpserted, not {other:?}"),
        };
    }
    let node = |at: &dyn Fn() -> String, name: &str| {
        nodes
            .get(name)
            .copied()
            .ok_or_else(|| bad(at(), format!("unknown node {name:?}")))
    };
    for (i, l) in file.lanes.iter().enumerate() {
        let at = || format!("lanes[{i}]");
        let lane = Lane {
            node: node(&at, &l.node)?,
            zone: ZoneId(l.zone),
            level: level_of(&at, &l.level)?,
            transit_days: l.transit_days,
            cost_per_package_cents: l.cost_per_package_cents,
            cost_per_unit_cents: l.cost_per_unit_cents,
        };
        apply(&at, Command::UpsertLane(lane))?;
    }
    // SKUs as they first appear, in stock then in orders.
    let mut skus: HashMap<String, SkuId> = HashMap::new();
    let mut sku = |at: &dyn Fn() -> String, name: &str| -> Result<SkuId, FormatError> {
        if let Some(&id) = skus.get(name) {
            return Ok(id);
        }
        let command = Command::UpsertSku {
            name: name.into(),
            required: Capabilities::default(),
        };
        let id = match engine
            .apply(now, &command)
            .map_err(|e| bad(at(), e.to_string()))?
        {
            Outcome::SkuUpserted(id) => id,
            other => unreachable!("an upserted SKU answers SkuUpserted, not {other:?}"),
        };
        skus.insert(name.to_string(), id);
        Ok(id)
    };
    let mut counts: HashMap<NodeId, Vec<(SkuId, u32)>> = HashMap::new();
    let mut stocked: HashMap<(SkuId, NodeId), usize> = HashMap::new();
    for (i, s) in file.stock.iter().enumerate() {
        let at = || format!("stock[{i}] (SKU {:?} at {:?})", s.sku, s.node);
        let (k, n) = (sku(&at, &s.sku)?, node(&at, &s.node)?);
        if let Some(first) = stocked.insert((k, n), i) {
            return Err(bad(at(), format!("the position of stock[{first}] again")));
        }
        counts.entry(n).or_default().push((k, s.on_hand));
    }
    let mut by_node: Vec<(NodeId, Vec<(SkuId, u32)>)> = counts.into_iter().collect();
    by_node.sort_unstable_by_key(|e| e.0);
    for (n, counts) in by_node {
        for (c, chunk) in counts.chunks(crate::limits::FEED_LINES_MAX).enumerate() {
            let at = || format!("stock (node {})", n.raw());
            apply(
                &at,
                Command::SetOnHand {
                    request: RequestId(u128::from(n.raw()) << 32 | c as u128),
                    node: n,
                    feed_seq: c as u64 + 1,
                    counts: chunk.to_vec(),
                },
            )?;
        }
    }
    let mut orders = Vec::with_capacity(file.orders.len());
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(file.orders.len());
    for (j, o) in file.orders.iter().enumerate() {
        let at = || format!("orders[{j}] (id {:?})", o.id);
        check_order_id(&mut seen, &o.id, j, at)?;
        if o.lines.is_empty() {
            return Err(bad(at(), "no lines"));
        }
        let point = match (o.lat, o.lon) {
            (Some(lat), Some(lon)) => {
                crate::network::check_point(lat, lon).map_err(|e| bad(at(), e.to_string()))?;
                Some((lat, lon))
            }
            (None, None) => None,
            _ => return Err(bad(at(), "lat and lon go together")),
        };
        if point.is_none() && engine.network().zone(ZoneId(o.zone)).is_none() {
            return Err(bad(
                at(),
                format!("zone {} has no centre in `zones` and no point is given", o.zone),
            ));
        }
        let mut lines: SmallVec<[(SkuId, u32, NodeId); 4]> = SmallVec::new();
        for (k, l) in o.lines.iter().enumerate() {
            let at = || format!("orders[{j}].lines[{k}] (order {:?})", o.id);
            if l.quantity == 0 || l.quantity > crate::limits::QUANTITY_MAX {
                return Err(bad(
                    at(),
                    format!("quantity {} (1 to {})", l.quantity, crate::limits::QUANTITY_MAX),
                ));
            }
            let s = sku(&at, &l.sku)?;
            if lines.iter().any(|x| x.0 == s) {
                return Err(bad(at(), format!("SKU {:?} twice in one order", l.sku)));
            }
            lines.push((s, l.quantity, NO_CURRENT_NODE));
        }
        orders.push(OpenOrder {
            id: RequestId(j as u128),
            lines,
            packages: SmallVec::new(),
            destination: Destination {
                zone: ZoneId(o.zone),
                point,
            },
            level: level_of(&at, &o.level)?,
            promised: o.promised_day.map(Day),
        });
    }
    let defaults = ReroutePolicy::default();
    let p = file.policy.as_ref();
    let policy = ReroutePolicy {
        package_cents: p.and_then(|p| p.package_cents).unwrap_or(defaults.package_cents),
        late_day_cents: p
            .and_then(|p| p.late_day_cents)
            .unwrap_or(defaults.late_day_cents),
        unserved_cents: p
            .and_then(|p| p.unserved_cents)
            .unwrap_or(defaults.unserved_cents),
        max_packages: p.and_then(|p| p.max_packages).unwrap_or(defaults.max_packages),
        ..defaults
    };
    if policy.max_packages == 0 {
        return Err(bad("policy.max_packages", "at least 1"));
    }
    Ok(NetworkProblem {
        order_ids: file.orders.into_iter().map(|o| o.id).collect(),
        engine,
        now,
        policy,
        orders,
    })
}

/// The plan as JSON: per order served, each line's node and quantity and the packages' ship
/// days; the orders left out.
pub fn plan_json(p: &NetworkProblem, report: &RerouteReport) -> String {
    let name_of = |n: NodeId| {
        p.engine
            .network()
            .node(n)
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    let sku_of = |s: SkuId| p.engine.sku_name(s).map(|n| n.to_string()).unwrap_or_default();
    let assignments: Vec<serde_json::Value> = report
        .moves
        .iter()
        .map(|m| {
            let j = m.order.0 as usize;
            let order = &p.orders[j];
            serde_json::json!({
                "order": p.order_ids[j],
                "lines": order.lines.iter().zip(&m.line_nodes).map(|(l, &n)| serde_json::json!({
                    "sku": sku_of(l.0), "node": name_of(n), "quantity": l.1,
                })).collect::<Vec<_>>(),
                "packages": m.to.iter().map(|s| serde_json::json!({
                    "node": name_of(s.node), "ship_day": s.day.0,
                })).collect::<Vec<_>>(),
                "delivery_day": m.delivery.0,
                "cost": m.cost_after,
            })
        })
        .collect();
    let unassigned: Vec<&str> = report
        .left_out
        .iter()
        .map(|l| p.order_ids[l.order.0 as usize].as_str())
        .collect();
    serde_json::json!({ "assignments": assignments, "unassigned": unassigned }).to_string()
}
