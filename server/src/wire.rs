//! The seam between the wire and the engine: a verified `wire::Request` becomes an engine
//! `Command` or a query, with string ids resolved to dense ids. Every way a request can be wrong
//! comes back as a typed error with a message, before anything is applied.

use promised_engine::command::{AdjustReason, Command, HoldLineRequest, LineQuantity, NodeChoice};
use promised_engine::ids::{Day, Quantity, RequestId, SkuId, ZoneId};
use promised_engine::network::{
    Calendar, Capabilities, DailyCapacity, Lane, Location, NodeKind, NodeSpec, NodeStatus, ServiceLevel,
    ZoneSpec,
};
use promised_engine::promise::{CartLine, Destination, ListingPair, PromiseOptions, PromiseRequest};
use promised_engine::reroute::{RerouteFilter, ReroutePolicy};
use promised_engine::{Engine, EngineError, NodeId};
use promised_schemas::wire;

/// A decoded operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    /// Changes state: goes through the durable engine.
    Command(Command),
    Query(Query),
    /// Subscriptions and admin operations: handled by the server itself.
    Control(wire::Operation),
    /// A promise, then the hold or route order of its plan (a write).
    PromiseAndAct(Box<PromiseAndAct>),
    /// A batch re-route: a dry run, or a plan applied as one command (admin).
    Reroute(Box<RerouteAsk>),
}

/// A decoded `Reroute`.
#[derive(Clone, Debug, PartialEq)]
pub struct RerouteAsk {
    pub filter: RerouteFilter,
    pub policy: ReroutePolicy,
    /// 0: the server's default.
    pub time_limit_ms: u32,
    pub moves_max: usize,
    /// Apply the plan under this request id; `None`: a dry run.
    pub apply: Option<RequestId>,
    /// Apply the moves that still fit instead of every move or none.
    pub partial: bool,
}

/// A decoded `PromiseAndHold` or `RouteOrder`.
#[derive(Clone, Debug, PartialEq)]
pub struct PromiseAndAct {
    pub request: PromiseRequest,
    /// The hold's or order's id.
    pub id: RequestId,
    pub act: Act,
}

/// What to do with a promised plan.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Act {
    Hold { ttl_ms: u64 },
    Route,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    Atp {
        sku: SkuId,
        node: NodeId,
        day: Option<Day>,
    },
    NetworkAtp {
        sku: SkuId,
        day: Option<Day>,
    },
    Timeline {
        sku: SkuId,
        node: NodeId,
    },
    Position {
        sku: SkuId,
        node: NodeId,
    },
    Hold(RequestId),
    /// Boxed: a promise request is much larger than the other queries.
    Promise(Box<PromiseRequest>),
    Listing {
        pairs: Vec<ListingPair>,
        level: ServiceLevel,
    },
}

/// A request the engine would never see: the code and message for the `Error` reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    pub code: wire::ErrorCode,
    pub message: String,
}

impl From<EngineError> for WireError {
    fn from(e: EngineError) -> Self {
        Self {
            code: wire::ErrorCode(e.code() as u16),
            message: e.to_string(),
        }
    }
}

fn malformed(message: impl Into<String>) -> WireError {
    WireError {
        code: wire::ErrorCode::MalformedMessage,
        message: message.into(),
    }
}

pub fn request_id(id: &wire::RequestId) -> RequestId {
    RequestId(u128::from(id.hi()) << 64 | u128::from(id.lo()))
}

fn quantity(q: u32) -> Result<Quantity, WireError> {
    Ok(Quantity::new(i64::from(q))?)
}

fn day(raw: u32) -> Option<Day> {
    (raw != 0).then_some(Day(raw))
}

/// Turns one request into an engine operation, resolving ids against `engine`.
pub fn decode(engine: &Engine, request: &wire::Request<'_>) -> Result<Operation, WireError> {
    let sku = |name: &str| engine.sku_id(name).map_err(WireError::from);
    let node = |name: &str| engine.node_id(name).map_err(WireError::from);
    let lines = |v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<wire::LineQuantity<'_>>>>| {
        v.iter()
            .flatten()
            .map(|l| {
                Ok(LineQuantity {
                    sku: sku(l.sku())?,
                    node: node(l.node())?,
                    quantity: quantity(l.quantity())?,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()
    };
    use wire::Operation as Op;
    let op = request.op_type();
    let command = match op {
        Op::Hold => {
            let h = request.op_as_hold().ok_or_else(|| malformed("hold body"))?;
            let lines = h
                .lines()
                .iter()
                .map(|l| {
                    Ok(HoldLineRequest {
                        sku: sku(l.sku())?,
                        node: match l.node() {
                            None | Some("") => NodeChoice::Any,
                            Some(n) => NodeChoice::Node(node(n)?),
                        },
                        quantity: quantity(l.quantity())?,
                        need_day: day(l.need_day()),
                    })
                })
                .collect::<Result<Vec<_>, WireError>>()?;
            Command::Hold {
                hold: request_id(h.hold()),
                lines,
                ttl_ms: h.ttl_ms(),
                partial: h.partial(),
            }
        }
        Op::Commit => {
            let c = request.op_as_commit().ok_or_else(|| malformed("commit body"))?;
            Command::Commit {
                request: request_id(c.request()),
                hold: request_id(c.hold()),
            }
        }
        Op::Release => {
            let r = request.op_as_release().ok_or_else(|| malformed("release body"))?;
            Command::Release {
                request: request_id(r.request()),
                hold: request_id(r.hold()),
                lines: lines(r.lines())?,
            }
        }
        Op::CancelAllocation => {
            let c = request
                .op_as_cancel_allocation()
                .ok_or_else(|| malformed("cancel body"))?;
            Command::CancelAllocation {
                request: request_id(c.request()),
                hold: request_id(c.hold()),
            }
        }
        Op::Ship => {
            let s = request.op_as_ship().ok_or_else(|| malformed("ship body"))?;
            Command::Ship {
                request: request_id(s.request()),
                hold: request_id(s.hold()),
                lines: lines(s.lines())?,
            }
        }
        Op::SetOnHand => {
            let f = request
                .op_as_set_on_hand()
                .ok_or_else(|| malformed("set_on_hand body"))?;
            let counts = f
                .counts()
                .iter()
                .map(|c| Ok((sku(c.sku())?, c.on_hand())))
                .collect::<Result<Vec<_>, WireError>>()?;
            Command::SetOnHand {
                request: request_id(f.request()),
                node: node(f.node())?,
                feed_seq: f.feed_seq(),
                counts,
            }
        }
        Op::AdjustOnHand => {
            let a = request
                .op_as_adjust_on_hand()
                .ok_or_else(|| malformed("adjust body"))?;
            let reason = match a.reason() {
                wire::AdjustReason::CycleCount => AdjustReason::CycleCount,
                wire::AdjustReason::Damage => AdjustReason::Damage,
                wire::AdjustReason::Shrink => AdjustReason::Shrink,
                wire::AdjustReason::Found => AdjustReason::Found,
                wire::AdjustReason::Correction => AdjustReason::Correction,
                other => return Err(malformed(format!("unknown adjust reason {}", other.0))),
            };
            Command::AdjustOnHand {
                request: request_id(a.request()),
                sku: sku(a.sku())?,
                node: node(a.node())?,
                delta: a.delta(),
                reason,
            }
        }
        Op::SetSafetyStock => {
            let s = request
                .op_as_set_safety_stock()
                .ok_or_else(|| malformed("safety stock body"))?;
            Command::SetSafetyStock {
                request: request_id(s.request()),
                sku: sku(s.sku())?,
                node: node(s.node())?,
                quantity: s.quantity(),
            }
        }
        Op::AddInbound => {
            let a = request
                .op_as_add_inbound()
                .ok_or_else(|| malformed("inbound body"))?;
            Command::AddInbound {
                request: request_id(a.request()),
                sku: sku(a.sku())?,
                node: node(a.node())?,
                reference: a.reference().to_string(),
                quantity: quantity(a.quantity())?,
                arrival: Day(a.arrival_day()),
            }
        }
        Op::ReceiveInbound => {
            let r = request
                .op_as_receive_inbound()
                .ok_or_else(|| malformed("receive body"))?;
            Command::ReceiveInbound {
                request: request_id(r.request()),
                sku: sku(r.sku())?,
                node: node(r.node())?,
                reference: r.reference().to_string(),
            }
        }
        Op::CancelInbound => {
            let c = request
                .op_as_cancel_inbound()
                .ok_or_else(|| malformed("cancel inbound body"))?;
            Command::CancelInbound {
                request: request_id(c.request()),
                sku: sku(c.sku())?,
                node: node(c.node())?,
                reference: c.reference().to_string(),
            }
        }
        Op::Return => {
            let r = request.op_as_return().ok_or_else(|| malformed("return body"))?;
            Command::Return {
                request: request_id(r.request()),
                sku: sku(r.sku())?,
                node: node(r.node())?,
                quantity: quantity(r.quantity())?,
            }
        }
        Op::UpsertNode => {
            let n = request
                .op_as_upsert_node()
                .ok_or_else(|| malformed("node body"))?;
            Command::UpsertNode(node_spec(&n)?)
        }
        Op::UpsertSku => {
            let s = request.op_as_upsert_sku().ok_or_else(|| malformed("SKU body"))?;
            Command::UpsertSku {
                name: s.name().to_string(),
                required: Capabilities(s.required_capabilities()),
            }
        }
        Op::UpsertZone => {
            let z = request
                .op_as_upsert_zone()
                .ok_or_else(|| malformed("zone body"))?;
            Command::UpsertZone(ZoneSpec {
                zone: ZoneId(z.zone()),
                lat: z.lat(),
                lon: z.lon(),
            })
        }
        Op::UpsertLane => {
            let l = request
                .op_as_upsert_lane()
                .ok_or_else(|| malformed("lane body"))?;
            Command::UpsertLane(Lane {
                node: node(l.node())?,
                zone: ZoneId(l.zone()),
                level: service_level(l.level())?,
                transit_days: l.transit_days(),
                cost_per_package_cents: l.cost_per_package_cents(),
                cost_per_unit_cents: l.cost_per_unit_cents(),
            })
        }
        Op::Promise => {
            let p = request.op_as_promise().ok_or_else(|| malformed("promise body"))?;
            return Ok(Operation::Query(Query::Promise(Box::new(promise_request(
                engine, &p,
            )?))));
        }
        Op::ListingPromise => {
            let l = request
                .op_as_listing_promise()
                .ok_or_else(|| malformed("listing body"))?;
            let destination = Destination {
                zone: ZoneId(l.zone()),
                point: l.has_point().then_some((l.lat(), l.lon())),
            };
            let pairs = l
                .skus()
                .iter()
                .map(|name| {
                    Ok(ListingPair {
                        sku: sku(name)?,
                        destination,
                    })
                })
                .collect::<Result<Vec<_>, WireError>>()?;
            return Ok(Operation::Query(Query::Listing {
                pairs,
                level: service_level(l.level())?,
            }));
        }
        Op::PromiseAndHold => {
            let p = request
                .op_as_promise_and_hold()
                .ok_or_else(|| malformed("promise-and-hold body"))?;
            return Ok(Operation::PromiseAndAct(Box::new(PromiseAndAct {
                request: promise_request(engine, &p.promise())?,
                id: request_id(p.hold()),
                act: Act::Hold { ttl_ms: p.ttl_ms() },
            })));
        }
        Op::RouteOrder => {
            let r = request
                .op_as_route_order()
                .ok_or_else(|| malformed("route-order body"))?;
            return Ok(Operation::PromiseAndAct(Box::new(PromiseAndAct {
                request: promise_request(engine, &r.promise())?,
                id: request_id(r.order()),
                act: Act::Route,
            })));
        }
        Op::Reroute => {
            let r = request.op_as_reroute().ok_or_else(|| malformed("reroute body"))?;
            let invalid = |message: String| WireError {
                code: wire::ErrorCode::InvalidOption,
                message,
            };
            if r.has_ship_days() && r.first_ship_day() > r.last_ship_day() {
                return Err(invalid(format!(
                    "first_ship_day {} is after last_ship_day {}",
                    r.first_ship_day(),
                    r.last_ship_day()
                )));
            }
            let apply = match (r.apply(), r.request()) {
                (false, _) => None,
                (true, Some(id)) => Some(request_id(id)),
                (true, None) => return Err(invalid("an applied re-route needs a request id".into())),
            };
            return Ok(Operation::Reroute(Box::new(RerouteAsk {
                filter: RerouteFilter {
                    nodes: r.nodes().iter().flatten().map(node).collect::<Result<_, _>>()?,
                    skus: r.skus().iter().flatten().map(sku).collect::<Result<_, _>>()?,
                    ship_days: r
                        .has_ship_days()
                        .then(|| (Day(r.first_ship_day()), Day(r.last_ship_day()))),
                    orders: r
                        .orders()
                        .map(|v| v.iter().map(request_id).collect())
                        .unwrap_or_default(),
                },
                policy: ReroutePolicy {
                    package_cents: r.package_cents(),
                    late_day_cents: r.late_day_cents(),
                    move_cents: r.move_cents(),
                    unserved_cents: r.unserved_cents(),
                    max_packages: r.max_packages(),
                    ..ReroutePolicy::default()
                },
                time_limit_ms: r.time_limit_ms(),
                moves_max: r.moves_max() as usize,
                apply,
                partial: r.partial(),
            })));
        }
        Op::Atp => {
            let q = request.op_as_atp().ok_or_else(|| malformed("atp body"))?;
            return Ok(Operation::Query(Query::Atp {
                sku: sku(q.sku())?,
                node: node(q.node())?,
                day: day(q.day()),
            }));
        }
        Op::NetworkAtp => {
            let q = request
                .op_as_network_atp()
                .ok_or_else(|| malformed("network atp body"))?;
            return Ok(Operation::Query(Query::NetworkAtp {
                sku: sku(q.sku())?,
                day: day(q.day()),
            }));
        }
        Op::Timeline => {
            let q = request
                .op_as_timeline()
                .ok_or_else(|| malformed("timeline body"))?;
            return Ok(Operation::Query(Query::Timeline {
                sku: sku(q.sku())?,
                node: node(q.node())?,
            }));
        }
        Op::GetPosition => {
            let q = request
                .op_as_get_position()
                .ok_or_else(|| malformed("position body"))?;
            return Ok(Operation::Query(Query::Position {
                sku: sku(q.sku())?,
                node: node(q.node())?,
            }));
        }
        Op::GetHold => {
            let q = request
                .op_as_get_hold()
                .ok_or_else(|| malformed("get_hold body"))?;
            return Ok(Operation::Query(Query::Hold(request_id(q.hold()))));
        }
        Op::Subscribe | Op::Unsubscribe | Op::TakeSnapshot | Op::StateDigest | Op::Shutdown => {
            return Ok(Operation::Control(op));
        }
        other => {
            return Err(WireError {
                code: wire::ErrorCode::UnknownOperation,
                message: format!(
                    "unknown operation {} (this server speaks protocol version 1)",
                    other.0
                ),
            });
        }
    };
    Ok(Operation::Command(command))
}

/// A `Promise` table as an engine request, ids resolved.
fn promise_request(engine: &Engine, p: &wire::Promise<'_>) -> Result<PromiseRequest, WireError> {
    let lines = p
        .lines()
        .iter()
        .map(|l| {
            Ok(CartLine {
                sku: engine.sku_id(l.sku())?,
                quantity: quantity(l.quantity())?,
            })
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    let levels = p
        .levels()
        .iter()
        .map(service_level)
        .collect::<Result<Vec<_>, _>>()?;
    let kinds = p
        .kinds()
        .iter()
        .flatten()
        .map(node_kind)
        .collect::<Result<Vec<_>, _>>()?;
    let pickup_store = match p.pickup_store() {
        None | Some("") => None,
        Some(n) => Some(engine.node_id(n)?),
    };
    Ok(PromiseRequest {
        lines,
        destination: Destination {
            zone: ZoneId(p.zone()),
            point: p.has_point().then_some((p.lat(), p.lon())),
        },
        levels,
        options: PromiseOptions {
            max_packages: p.max_packages(),
            kinds,
            ship_from_store: p.ship_from_store(),
            pickup_store,
            allow_partial: p.allow_partial(),
        },
    })
}

fn node_kind(kind: wire::NodeKind) -> Result<NodeKind, WireError> {
    Ok(match kind {
        wire::NodeKind::Dc => NodeKind::Dc,
        wire::NodeKind::Store => NodeKind::Store,
        wire::NodeKind::ThirdParty => NodeKind::ThirdParty,
        wire::NodeKind::DropShip => NodeKind::DropShip,
        other => return Err(malformed(format!("unknown node kind {}", other.0))),
    })
}

fn service_level(level: wire::ServiceLevel) -> Result<ServiceLevel, WireError> {
    ServiceLevel::from_u8(level.0).ok_or_else(|| malformed(format!("unknown service level {}", level.0)))
}

fn node_spec(n: &wire::UpsertNode<'_>) -> Result<NodeSpec, WireError> {
    let kind = node_kind(n.kind())?;
    let status = match n.status() {
        wire::NodeStatus::Open => NodeStatus::Open,
        wire::NodeStatus::Paused => NodeStatus::Paused,
        wire::NodeStatus::Closed => NodeStatus::Closed,
        other => return Err(malformed(format!("unknown node status {}", other.0))),
    };
    if !(n.lat().is_finite() && n.lon().is_finite()) {
        return Err(malformed("node latitude and longitude must be finite numbers"));
    }
    Ok(NodeSpec {
        name: n.name().to_string(),
        kind,
        status,
        location: Location {
            lat: n.lat(),
            lon: n.lon(),
            zone: ZoneId(n.zone()),
        },
        capabilities: Capabilities(n.capabilities()),
        capacity: DailyCapacity {
            orders: n.capacity_orders(),
            units: n.capacity_units(),
        },
        processing_days: n.processing_days(),
        cutoff_minute: n.cutoff_minute(),
        utc_offset_minutes: n.utc_offset_minutes(),
        calendar: Calendar {
            weekdays: n.weekdays(),
            holidays: n.holidays().iter().flatten().map(Day).collect(),
        },
        cost_factor_milli: n.cost_factor_milli(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flatbuffers::FlatBufferBuilder;
    use promised_engine::{EngineConfig, HoldOutcome, Outcome, Timestamp};

    const NOW: Timestamp = Timestamp(20_780 * 86_400_000 + 9 * 3_600_000);

    /// An engine with node DC-1 and SKU-1 with `on_hand` units: the fixture of the seam's tests.
    pub(crate) fn engine_with(on_hand: u32) -> Engine {
        let e = Engine::new(EngineConfig::default());
        e.apply(NOW, &Command::UpsertNode(NodeSpec::open("DC-1")))
            .unwrap();
        e.apply(
            NOW,
            &Command::UpsertSku {
                name: "SKU-1".into(),
                required: Capabilities::default(),
            },
        )
        .unwrap();
        let (sku, node) = (e.sku_id("SKU-1").unwrap(), e.node_id("DC-1").unwrap());
        e.apply(
            NOW,
            &Command::SetOnHand {
                request: RequestId(1),
                node,
                feed_seq: 1,
                counts: vec![(sku, on_hand)],
            },
        )
        .unwrap();
        e
    }

    fn engine() -> Engine {
        engine_with(50)
    }

    /// Builds a request whose operation `build` makes, and decodes it back through a verified
    /// message, as the server will.
    fn round_trip(
        engine: &Engine,
        build: impl FnOnce(
            &mut FlatBufferBuilder<'static>,
        ) -> (
            wire::Operation,
            flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
        ),
    ) -> Result<Operation, WireError> {
        let mut b = FlatBufferBuilder::new();
        let (op_type, op) = build(&mut b);
        let request = wire::Request::create(
            &mut b,
            &wire::RequestArgs {
                op_type,
                op: Some(op),
            },
        );
        let msg = wire::Message::create(
            &mut b,
            &wire::MessageArgs {
                request_id: 9,
                body_type: wire::Body::Request,
                body: Some(request.as_union_value()),
            },
        );
        wire::finish_message_buffer(&mut b, msg);
        let bytes = b.finished_data().to_vec();
        let message = promised_schemas::frame::parse_message(&bytes).expect("valid");
        decode(engine, &message.body_as_request().expect("a request"))
    }

    fn hold(
        b: &mut FlatBufferBuilder<'static>,
        sku: &str,
        node: Option<&str>,
        q: u32,
    ) -> (
        wire::Operation,
        flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
    ) {
        let sku = b.create_string(sku);
        let node = node.map(|n| b.create_string(n));
        let line = wire::HoldLine::create(
            b,
            &wire::HoldLineArgs {
                sku: Some(sku),
                node,
                quantity: q,
                need_day: 0,
            },
        );
        let lines = b.create_vector(&[line]);
        let id = wire::RequestId::new(0, 77);
        let h = wire::Hold::create(
            b,
            &wire::HoldArgs {
                hold: Some(&id),
                lines: Some(lines),
                ttl_ms: 60_000,
                partial: false,
            },
        );
        (wire::Operation::Hold, h.as_union_value())
    }

    #[test]
    fn a_wire_hold_decodes_to_the_engine_command_and_applies() {
        let e = engine();
        let op = round_trip(&e, |b| hold(b, "SKU-1", Some("DC-1"), 10)).unwrap();
        let Operation::Command(cmd) = op else {
            panic!("a command")
        };
        let (sku, node) = (e.sku_id("SKU-1").unwrap(), e.node_id("DC-1").unwrap());
        assert_eq!(
            cmd,
            Command::Hold {
                hold: RequestId(77),
                lines: vec![HoldLineRequest {
                    sku,
                    node: NodeChoice::Node(node),
                    quantity: Quantity::new(10).unwrap(),
                    need_day: None,
                }],
                ttl_ms: 60_000,
                partial: false,
            }
        );
        assert!(matches!(
            e.apply(NOW, &cmd),
            Ok(Outcome::Hold(HoldOutcome::Granted { .. }))
        ));
        assert_eq!(e.atp(sku, node, NOW, None).unwrap(), 40);
        // No node: any node.
        let Operation::Command(Command::Hold { lines, .. }) =
            round_trip(&e, |b| hold(b, "SKU-1", None, 1)).unwrap()
        else {
            panic!("a hold")
        };
        assert_eq!(lines[0].node, NodeChoice::Any);
    }

    #[test]
    fn bad_requests_get_typed_errors() {
        let e = engine();
        let err = round_trip(&e, |b| hold(b, "NOPE", Some("DC-1"), 1)).unwrap_err();
        assert_eq!(err.code, wire::ErrorCode::UnknownSku);
        assert!(err.message.contains("NOPE"), "{}", err.message);
        let err = round_trip(&e, |b| hold(b, "SKU-1", Some("DC-9"), 1)).unwrap_err();
        assert_eq!(err.code, wire::ErrorCode::UnknownNode);
        let err = round_trip(&e, |b| hold(b, "SKU-1", Some("DC-1"), 0)).unwrap_err();
        assert_eq!(err.code, wire::ErrorCode::InvalidQuantity);
        let err = round_trip(&e, |b| {
            let id = wire::RequestId::new(0, 1);
            let (sku, node) = (b.create_string("SKU-1"), b.create_string("DC-1"));
            let r = wire::AdjustOnHand::create(
                b,
                &wire::AdjustOnHandArgs {
                    request: Some(&id),
                    sku: Some(sku),
                    node: Some(node),
                    delta: 1,
                    reason: wire::AdjustReason(99),
                },
            );
            (wire::Operation::AdjustOnHand, r.as_union_value())
        })
        .unwrap_err();
        assert_eq!(err.code, wire::ErrorCode::MalformedMessage);
    }

    #[test]
    fn queries_and_controls_decode() {
        let e = engine();
        let op = round_trip(&e, |b| {
            let (sku, node) = (b.create_string("SKU-1"), b.create_string("DC-1"));
            let q = wire::Atp::create(
                b,
                &wire::AtpArgs {
                    sku: Some(sku),
                    node: Some(node),
                    day: 0,
                },
            );
            (wire::Operation::Atp, q.as_union_value())
        })
        .unwrap();
        let Operation::Query(Query::Atp { sku, node, day }) = op else {
            panic!("an atp query")
        };
        assert_eq!(e.atp(sku, node, NOW, day).unwrap(), 50);
        let op = round_trip(&e, |b| {
            let s = wire::TakeSnapshot::create(b, &wire::TakeSnapshotArgs {});
            (wire::Operation::TakeSnapshot, s.as_union_value())
        })
        .unwrap();
        assert_eq!(op, Operation::Control(wire::Operation::TakeSnapshot));
    }
}
