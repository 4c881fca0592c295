//! Replies as plain Rust values, decoded once on the connection's reader so that callers own
//! what they get and never touch FlatBuffers.

use promised_schemas::wire;

pub use wire::{Binding, HoldState, RefusalReason, ServiceLevel, Shortfall};

use crate::error::ServerError;
use crate::ops::RequestId;

/// One granted line of a hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantedLine {
    pub sku: String,
    /// `None` for an any-node line of a partial hold that got nothing.
    pub node: Option<String>,
    pub requested: u32,
    pub granted: u32,
    pub need_day: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldGranted {
    pub hold: RequestId,
    pub expires_at_ms: u64,
    pub lines: Vec<GrantedLine>,
    /// This answers a retry of a hold already placed.
    pub repeated: bool,
}

/// Why a line could not be held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRefusal {
    /// The line's index in the request.
    pub line: u16,
    pub sku: String,
    pub node: Option<String>,
    pub requested: u32,
    /// What was promisable on the day asked.
    pub available: i64,
    pub reason: RefusalReason,
}

/// The answer to a hold: granted, or refused with nothing held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    Granted(HoldGranted),
    Refused(Vec<LineRefusal>),
}

impl HoldOutcome {
    pub fn granted(&self) -> Option<&HoldGranted> {
        match self {
            Self::Granted(g) => Some(g),
            Self::Refused(_) => None,
        }
    }
}

/// The answer to a commit, release, cancel or ship.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldChange {
    /// It took effect; `state` is the hold's state after it.
    Changed { state: HoldState, repeated: bool },
    /// Refused for a business reason (the hold expired first).
    Refused { reason: RefusalReason, repeated: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundLot {
    pub reference: String,
    pub quantity: u32,
    pub arrival_day: u32,
}

/// One position's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub on_hand: u32,
    pub safety_stock: u32,
    pub reserved: u32,
    pub allocated: u32,
    pub lots: Vec<InboundLot>,
    /// (day, quantity) held against future supply.
    pub future_claims: Vec<(u32, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldLineView {
    pub sku: String,
    pub node: Option<String>,
    pub need_day: u32,
    pub requested: u32,
    pub granted: u32,
    pub remaining: u32,
}

/// A hold as the server remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldView {
    pub hold: RequestId,
    pub state: HoldState,
    pub placed_at_ms: u64,
    pub expires_at_ms: u64,
    pub partial: bool,
    pub lines: Vec<HoldLineView>,
}

/// A server-pushed low-stock event: a watched position's ATP fell to the threshold or below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowStock {
    pub sku: String,
    pub node: String,
    pub atp: i64,
    pub threshold: i64,
    pub at_ms: u64,
}

/// One package of a promised plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromisedPackage {
    pub node: String,
    /// Indexes of the cart's lines it ships.
    pub lines: Vec<u16>,
    pub ship_day: u32,
    pub delivery_day: u32,
    pub cost_cents: u64,
    pub binding: Binding,
}

/// The plan for one level: the cart's delivery day (days since 1970-01-01), its cost, and what
/// decided the date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromisedPlan {
    pub delivery_day: u32,
    pub cost_cents: u64,
    pub binding: Binding,
    pub packages: Vec<PromisedPackage>,
    /// False when the server's search hit its work limit: feasible, not proven best.
    pub exact: bool,
}

/// The answer for one level asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelAnswer {
    pub level: ServiceLevel,
    /// `None`: nothing can be promised at this level.
    pub plan: Option<PromisedPlan>,
    /// Lines left out, and why.
    pub unserved: Vec<(u16, Shortfall)>,
}

/// One SKU of a listing page: the earliest delivery day and the node that makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedDelivery {
    pub delivery_day: u32,
    pub node: String,
    pub binding: Binding,
}

/// Every successful reply body.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Hold(HoldOutcome),
    HoldChange(HoldChange),
    Fed {
        repeated: bool,
    },
    NodeUpserted(String),
    SkuUpserted(String),
    Atp(i64),
    /// (day, cumulative ATP).
    Timeline(Vec<(u32, i64)>),
    Position(Position),
    HoldView(HoldView),
    NotFound,
    Subscribed,
    SnapshotTaken {
        lsn: u64,
        bytes: u64,
    },
    Digest {
        lsn: u64,
        digest: u128,
    },
    Ack,
    Promise(Vec<LevelAnswer>),
    /// One entry per SKU of a listing promise; `None`: not deliverable.
    Listing(Vec<Option<ListedDelivery>>),
    /// A promise-and-hold: the level's promise (`None` on a retry: the first hold's answer
    /// stands) and the hold's answer (`None`: nothing to hold).
    /// Boxed: a plan is much larger than the other answers.
    Reroute(Box<RerouteAnswer>),
    PromiseHeld {
        promise: Option<LevelAnswer>,
        held: Option<HoldOutcome>,
    },
}

fn string(s: Option<&str>) -> String {
    s.unwrap_or_default().to_string()
}

fn optional(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

fn id(r: Option<&wire::RequestId>) -> RequestId {
    r.map_or(RequestId(0), RequestId::from_wire)
}

/// One order's move in a re-route plan.
#[derive(Clone, Debug, PartialEq)]
pub struct RerouteMove {
    pub order: RequestId,
    /// (node, ship day) per package, before and after.
    pub from: Vec<(String, u32)>,
    pub to: Vec<(String, u32)>,
    /// The new node of each line, in the order's line order.
    pub line_nodes: Vec<String>,
    pub cost_before_cents: Option<f64>,
    pub cost_after_cents: f64,
    pub delivery_day: u32,
    pub promised_day: u32,
}

/// A re-route's plan, its certificate and, when applied, what came of it.
#[derive(Clone, Debug, PartialEq)]
pub struct RerouteAnswer {
    pub orders: u64,
    pub candidates: u64,
    pub moves_total: u64,
    /// The first `moves_max` moves.
    pub moves: Vec<RerouteMove>,
    pub left_out: Vec<RequestId>,
    pub broken_before: u64,
    pub cost_before_cents: f64,
    pub cost_after_cents: f64,
    pub penalties_cents: f64,
    pub lower_bound_cents: f64,
    pub gap: Option<f64>,
    pub iterations: u32,
    pub stopped: bool,
    pub over: u64,
    pub applied: bool,
    pub repeated: bool,
    /// An apply refused because stock or capacity moved since the plan: the first order that no
    /// longer fits and its lines.
    pub refused: Option<(RequestId, Vec<LineRefusal>)>,
    /// With `applied`: the orders moved, and those a partial apply skipped.
    pub moved: u64,
    pub skipped: Vec<RequestId>,
}

fn slots(
    v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<wire::ShipSlotValue<'_>>>>,
) -> Vec<(String, u32)> {
    v.iter().flatten().map(|s| (string(s.node()), s.day())).collect()
}

/// A reply's body, or the server's error.
pub(crate) fn decode(reply: &wire::Reply<'_>) -> Result<Answer, ServerError> {
    use wire::ReplyBody as B;
    let unknown = || ServerError {
        code: wire::ErrorCode::Internal,
        message: format!(
            "reply body {:?} is unknown to this client: upgrade it",
            reply.result_type()
        ),
    };
    Ok(match reply.result_type() {
        B::Error => {
            let e = reply.result_as_error().ok_or_else(unknown)?;
            return Err(ServerError {
                code: e.code(),
                message: string(e.message()),
            });
        }
        B::HoldGranted => Answer::Hold(hold_granted(&reply.result_as_hold_granted().ok_or_else(unknown)?)),
        B::HoldRefused => Answer::Hold(hold_refused(&reply.result_as_hold_refused().ok_or_else(unknown)?)),
        B::HoldChanged => {
            let c = reply.result_as_hold_changed().ok_or_else(unknown)?;
            Answer::HoldChange(HoldChange::Changed {
                state: c.state(),
                repeated: c.repeated(),
            })
        }
        B::HoldChangeRefused => {
            let c = reply.result_as_hold_change_refused().ok_or_else(unknown)?;
            Answer::HoldChange(HoldChange::Refused {
                reason: c.reason(),
                repeated: c.repeated(),
            })
        }
        B::Fed => Answer::Fed {
            repeated: reply.result_as_fed().ok_or_else(unknown)?.repeated(),
        },
        B::NodeUpserted => Answer::NodeUpserted(string(
            reply.result_as_node_upserted().ok_or_else(unknown)?.node(),
        )),
        B::SkuUpserted => {
            Answer::SkuUpserted(string(reply.result_as_sku_upserted().ok_or_else(unknown)?.sku()))
        }
        B::AtpValue => Answer::Atp(reply.result_as_atp_value().ok_or_else(unknown)?.atp()),
        B::TimelineValue => {
            let t = reply.result_as_timeline_value().ok_or_else(unknown)?;
            Answer::Timeline(t.points().iter().flatten().map(|p| (p.day(), p.atp())).collect())
        }
        B::PositionValue => {
            let p = reply.result_as_position_value().ok_or_else(unknown)?;
            Answer::Position(Position {
                on_hand: p.on_hand(),
                safety_stock: p.safety_stock(),
                reserved: p.reserved(),
                allocated: p.allocated(),
                lots: p
                    .lots()
                    .iter()
                    .flatten()
                    .map(|l| InboundLot {
                        reference: string(l.reference()),
                        quantity: l.quantity(),
                        arrival_day: l.arrival_day(),
                    })
                    .collect(),
                future_claims: p
                    .future_claims()
                    .iter()
                    .flatten()
                    .map(|c| (c.day(), c.quantity()))
                    .collect(),
            })
        }
        B::HoldValue => {
            let h = reply.result_as_hold_value().ok_or_else(unknown)?;
            Answer::HoldView(HoldView {
                hold: id(h.hold()),
                state: h.state(),
                placed_at_ms: h.placed_at_ms(),
                expires_at_ms: h.expires_at_ms(),
                partial: h.partial(),
                lines: h
                    .lines()
                    .iter()
                    .flatten()
                    .map(|l| HoldLineView {
                        sku: string(l.sku()),
                        node: optional(l.node()),
                        need_day: l.need_day(),
                        requested: l.requested(),
                        granted: l.granted(),
                        remaining: l.remaining(),
                    })
                    .collect(),
            })
        }
        B::NotFound => Answer::NotFound,
        B::Subscribed => Answer::Subscribed,
        B::SnapshotTaken => {
            let s = reply.result_as_snapshot_taken().ok_or_else(unknown)?;
            Answer::SnapshotTaken {
                lsn: s.lsn(),
                bytes: s.bytes(),
            }
        }
        B::Digest => {
            let d = reply.result_as_digest().ok_or_else(unknown)?;
            Answer::Digest {
                lsn: d.lsn(),
                digest: (u128::from(d.hi()) << 64) | u128::from(d.lo()),
            }
        }
        B::Ack => Answer::Ack,
        B::PromiseHeld => {
            let p = reply.result_as_promise_held().ok_or_else(unknown)?;
            let promise = p.promise().map(|l| level_answer(&l));
            let held = match (p.granted(), p.refused()) {
                (Some(g), _) => Some(hold_granted(&g)),
                (None, Some(r)) => Some(hold_refused(&r)),
                (None, None) => None,
            };
            Answer::PromiseHeld { promise, held }
        }
        B::RerouteValue => {
            let r = reply.result_as_reroute_value().ok_or_else(unknown)?;
            Answer::Reroute(Box::new(RerouteAnswer {
                orders: r.orders(),
                candidates: r.candidates(),
                moves_total: r.moves_total(),
                moves: r
                    .moves()
                    .iter()
                    .flatten()
                    .map(|m| RerouteMove {
                        order: id(m.order()),
                        from: slots(m.from()),
                        to: slots(m.to()),
                        line_nodes: m.line_nodes().iter().flatten().map(str::to_string).collect(),
                        cost_before_cents: m.has_cost_before().then(|| m.cost_before_cents()),
                        cost_after_cents: m.cost_after_cents(),
                        delivery_day: m.delivery_day(),
                        promised_day: m.promised_day(),
                    })
                    .collect(),
                left_out: r.left_out().iter().flatten().map(RequestId::from_wire).collect(),
                broken_before: r.broken_before(),
                cost_before_cents: r.cost_before_cents(),
                cost_after_cents: r.cost_after_cents(),
                penalties_cents: r.penalties_cents(),
                lower_bound_cents: r.lower_bound_cents(),
                gap: r.has_gap().then(|| r.gap()),
                iterations: r.iterations(),
                stopped: r.stopped(),
                over: r.over(),
                applied: r.applied(),
                repeated: r.repeated(),
                refused: r.refused_order().map(|o| {
                    let lines = match r.refused().map(|x| hold_refused(&x)) {
                        Some(HoldOutcome::Refused(lines)) => lines,
                        _ => Vec::new(),
                    };
                    (RequestId::from_wire(o), lines)
                }),
                moved: r.moved(),
                skipped: r.skipped().iter().flatten().map(RequestId::from_wire).collect(),
            }))
        }
        B::ListingValue => {
            let l = reply.result_as_listing_value().ok_or_else(unknown)?;
            Answer::Listing(
                l.deliveries()
                    .iter()
                    .flatten()
                    .map(|d| {
                        d.found().then(|| ListedDelivery {
                            delivery_day: d.delivery_day(),
                            node: string(d.node()),
                            binding: d.binding(),
                        })
                    })
                    .collect(),
            )
        }
        B::PromiseValue => {
            let p = reply.result_as_promise_value().ok_or_else(unknown)?;
            Answer::Promise(p.levels().iter().flatten().map(|l| level_answer(&l)).collect())
        }
        _ => return Err(unknown()),
    })
}

fn level_answer(l: &wire::LevelPromise<'_>) -> LevelAnswer {
    LevelAnswer {
        level: l.level(),
        plan: l.planned().then(|| PromisedPlan {
            delivery_day: l.delivery_day(),
            cost_cents: l.cost_cents(),
            binding: l.binding(),
            exact: l.exact(),
            packages: l
                .packages()
                .iter()
                .flatten()
                .map(|pkg| PromisedPackage {
                    node: string(pkg.node()),
                    lines: pkg.lines().iter().flatten().collect(),
                    ship_day: pkg.ship_day(),
                    delivery_day: pkg.delivery_day(),
                    cost_cents: pkg.cost_cents(),
                    binding: pkg.binding(),
                })
                .collect(),
        }),
        unserved: l
            .unserved()
            .iter()
            .flatten()
            .map(|u| (u.line(), u.reason()))
            .collect(),
    }
}

fn hold_granted(g: &wire::HoldGranted<'_>) -> HoldOutcome {
    let lines = g
        .lines()
        .iter()
        .flatten()
        .map(|l| GrantedLine {
            sku: string(l.sku()),
            node: optional(l.node()),
            requested: l.requested(),
            granted: l.granted(),
            need_day: l.need_day(),
        })
        .collect();
    HoldOutcome::Granted(HoldGranted {
        hold: id(g.hold()),
        expires_at_ms: g.expires_at_ms(),
        lines,
        repeated: g.repeated(),
    })
}

fn hold_refused(r: &wire::HoldRefused<'_>) -> HoldOutcome {
    let lines = r
        .lines()
        .iter()
        .flatten()
        .map(|l| LineRefusal {
            line: l.line(),
            sku: string(l.sku()),
            node: optional(l.node()),
            requested: l.requested(),
            available: l.available(),
            reason: l.reason(),
        })
        .collect();
    HoldOutcome::Refused(lines)
}

/// A low-stock event from an `EventMessage`, if it is one this client knows.
pub(crate) fn decode_event(event: &wire::EventMessage<'_>) -> Option<LowStock> {
    let e = event.event_as_low_stock()?;
    Some(LowStock {
        sku: string(e.sku()),
        node: string(e.node()),
        atp: e.atp(),
        threshold: e.threshold(),
        at_ms: e.at_ms(),
    })
}
