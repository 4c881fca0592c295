//! Requests as plain Rust values, and their FlatBuffers encoding. Building the value first and
//! encoding it per attempt is what makes retries safe: the request id inside a write is chosen
//! once, so a retry is a repeat the server recognises, never a second hold.

use std::time::Duration;

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use promised_schemas::wire;

pub use wire::{AdjustReason, NodeKind, NodeStatus, ServiceLevel};

/// A 128-bit idempotency key. Writes carry one; a hold's is also its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u128);

impl RequestId {
    /// A fresh random id (collisions are as unlikely as for a random UUID).
    pub fn random() -> Self {
        Self(rand::random())
    }

    fn wire(self) -> wire::RequestId {
        wire::RequestId::new((self.0 >> 64) as u64, self.0 as u64)
    }

    pub(crate) fn from_wire(id: &wire::RequestId) -> Self {
        Self((u128::from(id.hi()) << 64) | u128::from(id.lo()))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One line of a hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldLine {
    pub sku: String,
    /// `None`: any open, capable node (the server picks the one with the most ATP).
    pub node: Option<String>,
    pub quantity: u32,
    /// The day the units are needed (days since 1970-01-01); `None`: today.
    pub need_day: Option<u32>,
}

impl HoldLine {
    pub fn at(sku: impl Into<String>, node: impl Into<String>, quantity: u32) -> Self {
        Self {
            sku: sku.into(),
            node: Some(node.into()),
            quantity,
            need_day: None,
        }
    }

    pub fn anywhere(sku: impl Into<String>, quantity: u32) -> Self {
        Self {
            sku: sku.into(),
            node: None,
            quantity,
            need_day: None,
        }
    }
}

/// A hold request: all lines or nothing, unless `partial`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Both the request id and the hold's id: keep it to commit or release.
    pub id: RequestId,
    pub lines: Vec<HoldLine>,
    pub ttl: Duration,
    pub partial: bool,
}

impl Hold {
    /// An all-or-nothing hold with a fresh id.
    pub fn new(lines: Vec<HoldLine>, ttl: Duration) -> Self {
        Self {
            id: RequestId::random(),
            lines,
            ttl,
            partial: false,
        }
    }
}

/// Units of one position (release, ship).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineQuantity {
    pub sku: String,
    pub node: String,
    pub quantity: u32,
}

/// A fulfillment node's settings (`UpsertNode`).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub kind: NodeKind,
    pub status: NodeStatus,
    pub lat: f32,
    pub lon: f32,
    pub zone: u32,
    pub capabilities: u32,
    pub capacity_orders: u32,
    pub capacity_units: u32,
    pub processing_days: u8,
    pub cutoff_minute: u16,
    pub utc_offset_minutes: i16,
    /// Bit i: weekday i (0 = Monday) is a working day.
    pub weekdays: u8,
    pub holidays: Vec<u32>,
    /// Cost multiplier in thousandths.
    pub cost_factor_milli: u32,
}

impl NodeSpec {
    /// An open DC working Monday to Friday, with no capabilities or capacity limits set.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: NodeKind::Dc,
            status: NodeStatus::Open,
            lat: 0.0,
            lon: 0.0,
            zone: 0,
            capabilities: 0,
            capacity_orders: 0,
            capacity_units: 0,
            processing_days: 0,
            cutoff_minute: 0,
            utc_offset_minutes: 0,
            weekdays: 0b1_1111,
            holidays: Vec::new(),
            cost_factor_milli: 1000,
        }
    }
}

/// A batch re-route of open allocations (admin role): which orders (every non-empty filter
/// must match), the cost model's penalties, and whether to apply the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Reroute {
    /// Orders with a package at one of these nodes.
    pub nodes: Vec<String>,
    /// Orders with a line of one of these SKUs.
    pub skus: Vec<String>,
    /// Orders with a package shipping on these days (since the Unix epoch), inclusive.
    pub ship_days: Option<(u32, u32)>,
    /// Only these orders.
    pub orders: Vec<RequestId>,
    pub package_cents: u64,
    pub late_day_cents: u64,
    pub move_cents: u64,
    pub unserved_cents: u64,
    pub max_packages: u8,
    /// `None`: the server's default (30 s).
    pub time_limit: Option<Duration>,
    /// Moves listed in the answer at most.
    pub moves_max: u32,
    /// Apply the plan under this id (retried safely); `None`: a dry run.
    pub apply: Option<RequestId>,
    /// Apply the moves that still fit, skipping the rest, instead of every move or none.
    pub partial: bool,
}

impl Reroute {
    /// A dry run of every open order at `nodes`, with the default penalties.
    pub fn at_nodes(nodes: &[&str]) -> Self {
        Self {
            nodes: nodes.iter().map(|n| (*n).to_string()).collect(),
            skus: Vec::new(),
            ship_days: None,
            orders: Vec::new(),
            package_cents: 300,
            late_day_cents: 500,
            move_cents: 100,
            unserved_cents: 50_000,
            max_packages: 3,
            time_limit: None,
            moves_max: 1_000,
            apply: None,
            partial: false,
        }
    }
}

/// A cart to promise: where it goes, the levels asked, and the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct PromiseCart {
    /// (SKU, quantity)
    pub lines: Vec<(String, u32)>,
    pub zone: u32,
    /// A destination point instead of the zone's centre.
    pub point: Option<(f32, f32)>,
    pub levels: Vec<ServiceLevel>,
    pub max_packages: u8,
    /// Node kinds that may ship; empty: all.
    pub kinds: Vec<NodeKind>,
    pub ship_from_store: bool,
    pub pickup_store: Option<String>,
    pub allow_partial: bool,
}

impl PromiseCart {
    /// Ground, two-day and next-day, at most 3 packages, from any node.
    pub fn new(lines: &[(&str, u32)], zone: u32) -> Self {
        Self {
            lines: lines.iter().map(|(s, q)| ((*s).to_string(), *q)).collect(),
            zone,
            point: None,
            levels: vec![ServiceLevel::Ground, ServiceLevel::TwoDay, ServiceLevel::NextDay],
            max_packages: 3,
            kinds: Vec::new(),
            ship_from_store: true,
            pickup_store: None,
            allow_partial: false,
        }
    }
}

/// Every operation of the protocol, as a value.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Hold(Hold),
    Commit {
        request: RequestId,
        hold: RequestId,
    },
    /// Empty `lines`: the whole hold.
    Release {
        request: RequestId,
        hold: RequestId,
        lines: Vec<LineQuantity>,
    },
    CancelAllocation {
        request: RequestId,
        hold: RequestId,
    },
    /// Empty `lines`: every remaining unit.
    Ship {
        request: RequestId,
        hold: RequestId,
        lines: Vec<LineQuantity>,
    },
    SetOnHand {
        request: RequestId,
        node: String,
        feed_seq: u64,
        counts: Vec<(String, u32)>,
    },
    AdjustOnHand {
        request: RequestId,
        sku: String,
        node: String,
        delta: i64,
        reason: AdjustReason,
    },
    SetSafetyStock {
        request: RequestId,
        sku: String,
        node: String,
        quantity: u32,
    },
    AddInbound {
        request: RequestId,
        sku: String,
        node: String,
        reference: String,
        quantity: u32,
        arrival_day: u32,
    },
    ReceiveInbound {
        request: RequestId,
        sku: String,
        node: String,
        reference: String,
    },
    CancelInbound {
        request: RequestId,
        sku: String,
        node: String,
        reference: String,
    },
    Return {
        request: RequestId,
        sku: String,
        node: String,
        quantity: u32,
    },
    UpsertNode(NodeSpec),
    UpsertSku {
        name: String,
        required_capabilities: u32,
    },
    /// `day`: `None` for today.
    Atp {
        sku: String,
        node: String,
        day: Option<u32>,
    },
    NetworkAtp {
        sku: String,
        day: Option<u32>,
    },
    Timeline {
        sku: String,
        node: String,
    },
    GetPosition {
        sku: String,
        node: String,
    },
    GetHold {
        hold: RequestId,
    },
    /// Empty `skus` or `nodes`: all.
    Subscribe {
        skus: Vec<String>,
        nodes: Vec<String>,
        threshold: i64,
    },
    Unsubscribe,
    TakeSnapshot,
    StateDigest,
    Shutdown,
    UpsertZone {
        zone: u32,
        lat: f32,
        lon: f32,
    },
    UpsertLane {
        node: String,
        zone: u32,
        level: ServiceLevel,
        transit_days: u8,
        cost_per_package_cents: u32,
        cost_per_unit_cents: u32,
    },
    Promise(PromiseCart),
    /// The earliest delivery of one unit of each SKU to a zone (or a point) at one level.
    ListingPromise {
        skus: Vec<String>,
        zone: u32,
        point: Option<(f32, f32)>,
        level: ServiceLevel,
    },
    /// Promise one level and hold its plan under `hold` (also the hold's id).
    PromiseAndHold {
        cart: PromiseCart,
        hold: RequestId,
        ttl: Duration,
    },
    /// Promise one level and route its plan under `order` (also the allocation's id): every
    /// line allocated at its node, each package's node capacity taken on its ship day.
    RouteOrder {
        cart: PromiseCart,
        order: RequestId,
    },
    Reroute(Reroute),
}

impl Op {
    /// Whether sending this operation twice is the same as sending it once: reads, upserts (a
    /// value, not a change) and every write that carries a request id. Subscriptions belong to
    /// a connection, and an admin action is never repeated behind the caller's back.
    pub fn is_retry_safe(&self) -> bool {
        !matches!(
            self,
            Self::Subscribe { .. } | Self::Unsubscribe | Self::TakeSnapshot | Self::Shutdown
        )
    }

    /// The operation's name in the schema.
    pub fn name(&self) -> &'static str {
        self.kind().variant_name().unwrap_or("?")
    }

    fn kind(&self) -> wire::Operation {
        use wire::Operation as O;
        match self {
            Self::Hold(_) => O::Hold,
            Self::Commit { .. } => O::Commit,
            Self::Release { .. } => O::Release,
            Self::CancelAllocation { .. } => O::CancelAllocation,
            Self::Ship { .. } => O::Ship,
            Self::SetOnHand { .. } => O::SetOnHand,
            Self::AdjustOnHand { .. } => O::AdjustOnHand,
            Self::SetSafetyStock { .. } => O::SetSafetyStock,
            Self::AddInbound { .. } => O::AddInbound,
            Self::ReceiveInbound { .. } => O::ReceiveInbound,
            Self::CancelInbound { .. } => O::CancelInbound,
            Self::Return { .. } => O::Return,
            Self::UpsertNode(_) => O::UpsertNode,
            Self::UpsertSku { .. } => O::UpsertSku,
            Self::Atp { .. } => O::Atp,
            Self::NetworkAtp { .. } => O::NetworkAtp,
            Self::Timeline { .. } => O::Timeline,
            Self::GetPosition { .. } => O::GetPosition,
            Self::GetHold { .. } => O::GetHold,
            Self::Subscribe { .. } => O::Subscribe,
            Self::Unsubscribe => O::Unsubscribe,
            Self::TakeSnapshot => O::TakeSnapshot,
            Self::StateDigest => O::StateDigest,
            Self::Shutdown => O::Shutdown,
            Self::UpsertZone { .. } => O::UpsertZone,
            Self::UpsertLane { .. } => O::UpsertLane,
            Self::Promise(_) => O::Promise,
            Self::PromiseAndHold { .. } => O::PromiseAndHold,
            Self::RouteOrder { .. } => O::RouteOrder,
            Self::Reroute(_) => O::Reroute,
            Self::ListingPromise { .. } => O::ListingPromise,
        }
    }

    /// Encodes the operation as a `Request` table.
    pub fn encode<'a>(&self, b: &mut FlatBufferBuilder<'a>) -> WIPOffset<wire::Request<'a>> {
        let op = self.encode_op(b);
        wire::Request::create(
            b,
            &wire::RequestArgs {
                op_type: self.kind(),
                op: Some(op),
            },
        )
    }

    fn encode_op(&self, b: &mut FlatBufferBuilder<'_>) -> WIPOffset<UnionWIPOffset> {
        match self {
            Self::Hold(h) => {
                let lines: Vec<_> = h
                    .lines
                    .iter()
                    .map(|l| {
                        let sku = b.create_string(&l.sku);
                        let node = l.node.as_deref().map(|n| b.create_string(n));
                        wire::HoldLine::create(
                            b,
                            &wire::HoldLineArgs {
                                sku: Some(sku),
                                node,
                                quantity: l.quantity,
                                need_day: l.need_day.unwrap_or(0),
                            },
                        )
                    })
                    .collect();
                let lines = b.create_vector(&lines);
                let id = h.id.wire();
                let ttl_ms = u64::try_from(h.ttl.as_millis()).unwrap_or(u64::MAX);
                wire::Hold::create(
                    b,
                    &wire::HoldArgs {
                        hold: Some(&id),
                        lines: Some(lines),
                        ttl_ms,
                        partial: h.partial,
                    },
                )
                .as_union_value()
            }
            Self::Commit { request, hold } => {
                let (r, h) = (request.wire(), hold.wire());
                wire::Commit::create(
                    b,
                    &wire::CommitArgs {
                        request: Some(&r),
                        hold: Some(&h),
                    },
                )
                .as_union_value()
            }
            Self::Release { request, hold, lines } => {
                let lines = line_quantities(b, lines);
                let (r, h) = (request.wire(), hold.wire());
                wire::Release::create(
                    b,
                    &wire::ReleaseArgs {
                        request: Some(&r),
                        hold: Some(&h),
                        lines,
                    },
                )
                .as_union_value()
            }
            Self::CancelAllocation { request, hold } => {
                let (r, h) = (request.wire(), hold.wire());
                wire::CancelAllocation::create(
                    b,
                    &wire::CancelAllocationArgs {
                        request: Some(&r),
                        hold: Some(&h),
                    },
                )
                .as_union_value()
            }
            Self::Ship { request, hold, lines } => {
                let lines = line_quantities(b, lines);
                let (r, h) = (request.wire(), hold.wire());
                wire::Ship::create(
                    b,
                    &wire::ShipArgs {
                        request: Some(&r),
                        hold: Some(&h),
                        lines,
                    },
                )
                .as_union_value()
            }
            Self::SetOnHand {
                request,
                node,
                feed_seq,
                counts,
            } => {
                let counts: Vec<_> = counts
                    .iter()
                    .map(|(sku, on_hand)| {
                        let sku = b.create_string(sku);
                        wire::SkuCount::create(
                            b,
                            &wire::SkuCountArgs {
                                sku: Some(sku),
                                on_hand: *on_hand,
                            },
                        )
                    })
                    .collect();
                let counts = b.create_vector(&counts);
                let node = b.create_string(node);
                let r = request.wire();
                wire::SetOnHand::create(
                    b,
                    &wire::SetOnHandArgs {
                        request: Some(&r),
                        node: Some(node),
                        feed_seq: *feed_seq,
                        counts: Some(counts),
                    },
                )
                .as_union_value()
            }
            Self::AdjustOnHand {
                request,
                sku,
                node,
                delta,
                reason,
            } => {
                let (sku, node) = (b.create_string(sku), b.create_string(node));
                let r = request.wire();
                wire::AdjustOnHand::create(
                    b,
                    &wire::AdjustOnHandArgs {
                        request: Some(&r),
                        sku: Some(sku),
                        node: Some(node),
                        delta: *delta,
                        reason: *reason,
                    },
                )
                .as_union_value()
            }
            Self::SetSafetyStock {
                request,
                sku,
                node,
                quantity,
            } => {
                let (sku, node) = (b.create_string(sku), b.create_string(node));
                let r = request.wire();
                wire::SetSafetyStock::create(
                    b,
                    &wire::SetSafetyStockArgs {
                        request: Some(&r),
                        sku: Some(sku),
                        node: Some(node),
                        quantity: *quantity,
                    },
                )
                .as_union_value()
            }
            Self::AddInbound {
                request,
                sku,
                node,
                reference,
                quantity,
                arrival_day,
            } => {
                let (sku, node) = (b.create_string(sku), b.create_string(node));
                let reference = b.create_string(reference);
                let r = request.wire();
                wire::AddInbound::create(
                    b,
                    &wire::AddInboundArgs {
                        request: Some(&r),
                        sku: Some(sku),
                        node: Some(node),
                        reference: Some(reference),
                        quantity: *quantity,
                        arrival_day: *arrival_day,
                    },
                )
                .as_union_value()
            }
            Self::ReceiveInbound {
                request,
                sku,
                node,
                reference,
            } => {
                let (sku, node) = (b.create_string(sku), b.create_string(node));
                let reference = b.create_string(reference);
                let r = request.wire();
                wire::ReceiveInbound::create(
                    b,
                    &wire::ReceiveInboundArgs {
                        request: Some(&r),
                        sku: Some(sku),
                        node: Some(node),
                        reference: Some(reference),
                    },
                )
                .as_union_value()
            }
            Self::CancelInbound {
                request,
                sku,
                node,
                reference,
            } => {
                let (sku, node) = (b.create_string(sku), b.create_string(node));
                let reference = b.create_string(reference);
                let r = request.wire();
                wire::CancelInbound::create(
                    b,
                    &wire::CancelInboundArgs {
                        request: Some(&r),
                        sku: Some(sku),
                        node: Some(node),
                        reference: Some(reference),
                    },
                )
                .as_union_value()
            }
            Self::Return {
                request,
                sku,
                node,
                quantity,
            } => {
                let (sku, node) = (b.create_string(sku), b.create_string(node));
                let r = request.wire();
                wire::Return::create(
                    b,
                    &wire::ReturnArgs {
                        request: Some(&r),
                        sku: Some(sku),
                        node: Some(node),
                        quantity: *quantity,
                    },
                )
                .as_union_value()
            }
            Self::UpsertNode(n) => {
                let name = b.create_string(&n.name);
                let holidays = b.create_vector(&n.holidays);
                wire::UpsertNode::create(
                    b,
                    &wire::UpsertNodeArgs {
                        name: Some(name),
                        kind: n.kind,
                        status: n.status,
                        lat: n.lat,
                        lon: n.lon,
                        zone: n.zone,
                        capabilities: n.capabilities,
                        capacity_orders: n.capacity_orders,
                        capacity_units: n.capacity_units,
                        processing_days: n.processing_days,
                        cutoff_minute: n.cutoff_minute,
                        utc_offset_minutes: n.utc_offset_minutes,
                        weekdays: n.weekdays,
                        holidays: Some(holidays),
                        cost_factor_milli: n.cost_factor_milli,
                    },
                )
                .as_union_value()
            }
            Self::UpsertSku {
                name,
                required_capabilities,
            } => {
                let name = b.create_string(name);
                wire::UpsertSku::create(
                    b,
                    &wire::UpsertSkuArgs {
                        name: Some(name),
                        required_capabilities: *required_capabilities,
                    },
                )
                .as_union_value()
            }
            Self::Atp { sku, node, day } => {
                let (sku, node) = (b.create_string(sku), b.create_string(node));
                wire::Atp::create(
                    b,
                    &wire::AtpArgs {
                        sku: Some(sku),
                        node: Some(node),
                        day: day.unwrap_or(0),
                    },
                )
                .as_union_value()
            }
            Self::NetworkAtp { sku, day } => {
                let sku = b.create_string(sku);
                wire::NetworkAtp::create(
                    b,
                    &wire::NetworkAtpArgs {
                        sku: Some(sku),
                        day: day.unwrap_or(0),
                    },
                )
                .as_union_value()
            }
            Self::Timeline { sku, node } => {
                let (sku, node) = (b.create_string(sku), b.create_string(node));
                wire::Timeline::create(
                    b,
                    &wire::TimelineArgs {
                        sku: Some(sku),
                        node: Some(node),
                    },
                )
                .as_union_value()
            }
            Self::GetPosition { sku, node } => {
                let (sku, node) = (b.create_string(sku), b.create_string(node));
                wire::GetPosition::create(
                    b,
                    &wire::GetPositionArgs {
                        sku: Some(sku),
                        node: Some(node),
                    },
                )
                .as_union_value()
            }
            Self::GetHold { hold } => {
                let h = hold.wire();
                wire::GetHold::create(b, &wire::GetHoldArgs { hold: Some(&h) }).as_union_value()
            }
            Self::Subscribe {
                skus,
                nodes,
                threshold,
            } => {
                let skus: Vec<_> = skus.iter().map(|s| b.create_string(s)).collect();
                let skus = b.create_vector(&skus);
                let nodes: Vec<_> = nodes.iter().map(|s| b.create_string(s)).collect();
                let nodes = b.create_vector(&nodes);
                wire::Subscribe::create(
                    b,
                    &wire::SubscribeArgs {
                        skus: Some(skus),
                        nodes: Some(nodes),
                        threshold: *threshold,
                    },
                )
                .as_union_value()
            }
            Self::Unsubscribe => wire::Unsubscribe::create(b, &wire::UnsubscribeArgs {}).as_union_value(),
            Self::TakeSnapshot => wire::TakeSnapshot::create(b, &wire::TakeSnapshotArgs {}).as_union_value(),
            Self::StateDigest => wire::StateDigest::create(b, &wire::StateDigestArgs {}).as_union_value(),
            Self::Shutdown => wire::Shutdown::create(b, &wire::ShutdownArgs {}).as_union_value(),
            Self::UpsertZone { zone, lat, lon } => wire::UpsertZone::create(
                b,
                &wire::UpsertZoneArgs {
                    zone: *zone,
                    lat: *lat,
                    lon: *lon,
                },
            )
            .as_union_value(),
            Self::UpsertLane {
                node,
                zone,
                level,
                transit_days,
                cost_per_package_cents,
                cost_per_unit_cents,
            } => {
                let node = b.create_string(node);
                wire::UpsertLane::create(
                    b,
                    &wire::UpsertLaneArgs {
                        node: Some(node),
                        zone: *zone,
                        level: *level,
                        transit_days: *transit_days,
                        cost_per_package_cents: *cost_per_package_cents,
                        cost_per_unit_cents: *cost_per_unit_cents,
                    },
                )
                .as_union_value()
            }
            Self::Promise(cart) => promise_table(b, cart).as_union_value(),
            Self::ListingPromise {
                skus,
                zone,
                point,
                level,
            } => {
                let skus: Vec<_> = skus.iter().map(|s| b.create_string(s)).collect();
                let skus = b.create_vector(&skus);
                let (lat, lon) = point.unwrap_or((0.0, 0.0));
                wire::ListingPromise::create(
                    b,
                    &wire::ListingPromiseArgs {
                        skus: Some(skus),
                        zone: *zone,
                        has_point: point.is_some(),
                        lat,
                        lon,
                        level: *level,
                    },
                )
                .as_union_value()
            }
            Self::PromiseAndHold { cart, hold, ttl } => {
                let promise = promise_table(b, cart);
                let id = hold.wire();
                wire::PromiseAndHold::create(
                    b,
                    &wire::PromiseAndHoldArgs {
                        promise: Some(promise),
                        hold: Some(&id),
                        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                    },
                )
                .as_union_value()
            }
            Self::Reroute(r) => {
                let nodes: Vec<_> = r.nodes.iter().map(|n| b.create_string(n)).collect();
                let nodes = b.create_vector(&nodes);
                let skus: Vec<_> = r.skus.iter().map(|s| b.create_string(s)).collect();
                let skus = b.create_vector(&skus);
                let orders: Vec<wire::RequestId> = r.orders.iter().map(|o| o.wire()).collect();
                let orders = b.create_vector(&orders);
                let request = r.apply.map(RequestId::wire);
                let (first, last) = r.ship_days.unwrap_or((0, 0));
                wire::Reroute::create(
                    b,
                    &wire::RerouteArgs {
                        nodes: Some(nodes),
                        skus: Some(skus),
                        has_ship_days: r.ship_days.is_some(),
                        first_ship_day: first,
                        last_ship_day: last,
                        orders: Some(orders),
                        package_cents: r.package_cents,
                        late_day_cents: r.late_day_cents,
                        move_cents: r.move_cents,
                        unserved_cents: r.unserved_cents,
                        max_packages: r.max_packages,
                        time_limit_ms: r
                            .time_limit
                            .map_or(0, |t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX).max(1)),
                        moves_max: r.moves_max,
                        apply: r.apply.is_some(),
                        request: request.as_ref(),
                        partial: r.partial,
                    },
                )
                .as_union_value()
            }
            Self::RouteOrder { cart, order } => {
                let promise = promise_table(b, cart);
                let id = order.wire();
                wire::RouteOrder::create(
                    b,
                    &wire::RouteOrderArgs {
                        promise: Some(promise),
                        order: Some(&id),
                    },
                )
                .as_union_value()
            }
        }
    }
}

fn promise_table<'a>(b: &mut FlatBufferBuilder<'a>, cart: &PromiseCart) -> WIPOffset<wire::Promise<'a>> {
    let lines: Vec<_> = cart
        .lines
        .iter()
        .map(|(sku, quantity)| {
            let sku = b.create_string(sku);
            wire::CartLine::create(
                b,
                &wire::CartLineArgs {
                    sku: Some(sku),
                    quantity: *quantity,
                },
            )
        })
        .collect();
    let lines = b.create_vector(&lines);
    let levels = b.create_vector(&cart.levels);
    let kinds = b.create_vector(&cart.kinds);
    let pickup_store = cart.pickup_store.as_deref().map(|s| b.create_string(s));
    let (lat, lon) = cart.point.unwrap_or((0.0, 0.0));
    wire::Promise::create(
        b,
        &wire::PromiseArgs {
            lines: Some(lines),
            zone: cart.zone,
            has_point: cart.point.is_some(),
            lat,
            lon,
            levels: Some(levels),
            max_packages: cart.max_packages,
            kinds: Some(kinds),
            ship_from_store: cart.ship_from_store,
            pickup_store,
            allow_partial: cart.allow_partial,
        },
    )
}

fn line_quantities<'a>(
    b: &mut FlatBufferBuilder<'a>,
    lines: &[LineQuantity],
) -> Option<WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<wire::LineQuantity<'a>>>>> {
    let lines: Vec<_> = lines
        .iter()
        .map(|l| {
            let (sku, node) = (b.create_string(&l.sku), b.create_string(&l.node));
            wire::LineQuantity::create(
                b,
                &wire::LineQuantityArgs {
                    sku: Some(sku),
                    node: Some(node),
                    quantity: l.quantity,
                },
            )
        })
        .collect();
    Some(b.create_vector(&lines))
}
