//! Engine answers to wire replies: outcomes, query results and errors, with dense ids turned
//! back into the caller's string ids.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use promised_engine::capacity::ShipSlot;
use promised_engine::command::{HoldOutcome, LineRefusal, Outcome, RefusalReason};
use promised_engine::hold::HoldState;
use promised_engine::ids::{RequestId, Timestamp};
use promised_engine::reroute::{RerouteOutcome, RerouteReport};
use promised_engine::{Engine, NodeId, SkuId};
use promised_schemas::wire;

use crate::wire::{Query, WireError};

type Body = (wire::ReplyBody, WIPOffset<UnionWIPOffset>);

fn id(r: RequestId) -> wire::RequestId {
    wire::RequestId::new((r.0 >> 64) as u64, r.0 as u64)
}

pub(crate) fn sku_name<'a>(b: &mut FlatBufferBuilder<'a>, engine: &Engine, sku: SkuId) -> WIPOffset<&'a str> {
    let name = engine.sku_name(sku).map(|n| n.to_string()).unwrap_or_default();
    b.create_string(&name)
}

pub(crate) fn node_name<'a>(
    b: &mut FlatBufferBuilder<'a>,
    engine: &Engine,
    node: NodeId,
) -> WIPOffset<&'a str> {
    let network = engine.network();
    b.create_string(network.node(node).map_or("", |n| n.name.as_str()))
}

fn state(s: HoldState) -> wire::HoldState {
    wire::HoldState(s as u8)
}

fn reason(r: RefusalReason) -> wire::RefusalReason {
    wire::RefusalReason(r as u8)
}

/// An `Error` reply.
pub fn error<'a>(b: &mut FlatBufferBuilder<'a>, e: &WireError) -> WIPOffset<wire::Reply<'a>> {
    let message = b.create_string(&e.message);
    let err = wire::Error::create(
        b,
        &wire::ErrorArgs {
            code: e.code,
            message: Some(message),
        },
    );
    reply(b, (wire::ReplyBody::Error, err.as_union_value()))
}

fn reply<'a>(b: &mut FlatBufferBuilder<'a>, (result_type, result): Body) -> WIPOffset<wire::Reply<'a>> {
    wire::Reply::create(
        b,
        &wire::ReplyArgs {
            result_type,
            result: Some(result),
        },
    )
}

/// The reply to a command.
/// A hold's answer: granted (lines, expiry) or refused (reasons per line).
fn hold_outcome<'a>(b: &mut FlatBufferBuilder<'a>, engine: &Engine, h: &HoldOutcome) -> Body {
    match h {
        HoldOutcome::Granted {
            hold,
            expires_at,
            lines,
            repeated,
        } => {
            let lines: Vec<_> = lines
                .iter()
                .map(|l| {
                    let sku = sku_name(b, engine, l.sku);
                    let node = l.node.map(|n| node_name(b, engine, n));
                    wire::GrantedLine::create(
                        b,
                        &wire::GrantedLineArgs {
                            sku: Some(sku),
                            node,
                            requested: l.requested,
                            granted: l.granted,
                            need_day: l.need_day.0,
                        },
                    )
                })
                .collect();
            let lines = b.create_vector(&lines);
            let hold = id(*hold);
            let g = wire::HoldGranted::create(
                b,
                &wire::HoldGrantedArgs {
                    hold: Some(&hold),
                    expires_at_ms: expires_at.0,
                    lines: Some(lines),
                    repeated: *repeated,
                },
            );
            (wire::ReplyBody::HoldGranted, g.as_union_value())
        }
        HoldOutcome::Refused { lines } => {
            let r = hold_refused(b, engine, lines);
            (wire::ReplyBody::HoldRefused, r.as_union_value())
        }
    }
}

fn hold_refused<'a>(
    b: &mut FlatBufferBuilder<'a>,
    engine: &Engine,
    lines: &[LineRefusal],
) -> WIPOffset<wire::HoldRefused<'a>> {
    let lines: Vec<_> = lines
        .iter()
        .map(|l| {
            let sku = sku_name(b, engine, l.sku);
            let node = l.node.map(|n| node_name(b, engine, n));
            wire::LineRefusal::create(
                b,
                &wire::LineRefusalArgs {
                    line: l.line_idx,
                    sku: Some(sku),
                    node,
                    requested: l.requested,
                    available: l.available,
                    reason: reason(l.reason),
                },
            )
        })
        .collect();
    let lines = b.create_vector(&lines);
    wire::HoldRefused::create(b, &wire::HoldRefusedArgs { lines: Some(lines) })
}

fn ship_slots<'a>(
    b: &mut FlatBufferBuilder<'a>,
    engine: &Engine,
    slots: &[ShipSlot],
) -> WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<wire::ShipSlotValue<'a>>>> {
    let slots: Vec<_> = slots
        .iter()
        .map(|s| {
            let node = node_name(b, engine, s.node);
            wire::ShipSlotValue::create(
                b,
                &wire::ShipSlotValueArgs {
                    node: Some(node),
                    day: s.day.0,
                },
            )
        })
        .collect();
    b.create_vector(&slots)
}

/// A re-route's plan (its first `moves_max` moves) and, when it was applied, what came of it.
pub fn reroute<'a>(
    b: &mut FlatBufferBuilder<'a>,
    engine: &Engine,
    report: &RerouteReport,
    moves_max: usize,
    applied: Option<&RerouteOutcome>,
) -> WIPOffset<wire::Reply<'a>> {
    let moves: Vec<_> = report
        .moves
        .iter()
        .take(moves_max)
        .map(|m| {
            let from = ship_slots(b, engine, &m.from);
            let to = ship_slots(b, engine, &m.to);
            let nodes: Vec<_> = m.line_nodes.iter().map(|&n| node_name(b, engine, n)).collect();
            let line_nodes = b.create_vector(&nodes);
            let order = id(m.order);
            wire::RerouteMoveValue::create(
                b,
                &wire::RerouteMoveValueArgs {
                    order: Some(&order),
                    from: Some(from),
                    to: Some(to),
                    line_nodes: Some(line_nodes),
                    has_cost_before: m.cost_before.is_some(),
                    cost_before_cents: m.cost_before.unwrap_or(0.0),
                    cost_after_cents: m.cost_after,
                    delivery_day: m.delivery.0,
                    promised_day: m.promised.map_or(0, |d| d.0),
                },
            )
        })
        .collect();
    let moves = b.create_vector(&moves);
    let left_out: Vec<wire::RequestId> = report.left_out.iter().map(|l| id(l.order)).collect();
    let left_out = b.create_vector(&left_out);
    let (applied_ok, repeated, refused_order, refused) = match applied {
        Some(RerouteOutcome::Applied { repeated, .. }) => (true, *repeated, None, None),
        Some(RerouteOutcome::Refused { order, lines }) => (
            false,
            false,
            Some(id(*order)),
            Some(hold_refused(b, engine, lines)),
        ),
        None => (false, false, None, None),
    };
    let (moved, skipped) = match applied {
        Some(RerouteOutcome::Applied { moved, skipped, .. }) => {
            let skipped: Vec<wire::RequestId> = skipped.iter().map(|o| id(*o)).collect();
            (u64::from(*moved), Some(b.create_vector(&skipped)))
        }
        _ => (0, None),
    };
    let v = wire::RerouteValue::create(
        b,
        &wire::RerouteValueArgs {
            orders: report.orders as u64,
            candidates: report.candidates as u64,
            moves_total: report.moves.len() as u64,
            moves: Some(moves),
            left_out: Some(left_out),
            broken_before: report.broken_before as u64,
            cost_before_cents: report.cost_before,
            cost_after_cents: report.cost_after,
            penalties_cents: report.penalties,
            lower_bound_cents: report.lower_bound,
            has_gap: report.gap.is_some(),
            gap: report.gap.unwrap_or(0.0),
            iterations: report.iterations,
            stopped: report.stopped,
            over: report.check.over as u64,
            applied: applied_ok,
            repeated,
            refused_order: refused_order.as_ref(),
            refused,
            moved,
            skipped,
        },
    );
    reply(b, (wire::ReplyBody::RerouteValue, v.as_union_value()))
}

pub fn outcome<'a>(
    b: &mut FlatBufferBuilder<'a>,
    engine: &Engine,
    outcome: &Outcome,
) -> WIPOffset<wire::Reply<'a>> {
    let body: Body = match outcome {
        Outcome::Hold(h) | Outcome::Route(h) => hold_outcome(b, engine, h),
        Outcome::HoldChanged {
            hold,
            state: s,
            repeated,
        } => {
            let hold = id(*hold);
            let c = wire::HoldChanged::create(
                b,
                &wire::HoldChangedArgs {
                    hold: Some(&hold),
                    state: state(*s),
                    repeated: *repeated,
                },
            );
            (wire::ReplyBody::HoldChanged, c.as_union_value())
        }
        Outcome::HoldRefused {
            hold,
            reason: r,
            repeated,
        } => {
            let hold = id(*hold);
            let c = wire::HoldChangeRefused::create(
                b,
                &wire::HoldChangeRefusedArgs {
                    hold: Some(&hold),
                    reason: reason(*r),
                    repeated: *repeated,
                },
            );
            (wire::ReplyBody::HoldChangeRefused, c.as_union_value())
        }
        Outcome::Fed { repeated } => {
            let f = wire::Fed::create(b, &wire::FedArgs { repeated: *repeated });
            (wire::ReplyBody::Fed, f.as_union_value())
        }
        Outcome::NodeUpserted(n) => {
            let node = node_name(b, engine, *n);
            let u = wire::NodeUpserted::create(b, &wire::NodeUpsertedArgs { node: Some(node) });
            (wire::ReplyBody::NodeUpserted, u.as_union_value())
        }
        Outcome::SkuUpserted(s) => {
            let sku = sku_name(b, engine, *s);
            let u = wire::SkuUpserted::create(b, &wire::SkuUpsertedArgs { sku: Some(sku) });
            (wire::ReplyBody::SkuUpserted, u.as_union_value())
        }
        // Ticks come from the server itself; zones and lanes answer an Ack; re-routes are answered
        // by `reroute` (with their plan), never through here.
        Outcome::Ticked { .. } | Outcome::ZoneUpserted(_) | Outcome::LaneUpserted | Outcome::Reroute(_) => {
            let a = wire::Ack::create(b, &wire::AckArgs {});
            (wire::ReplyBody::Ack, a.as_union_value())
        }
    };
    reply(b, body)
}

/// One level's answer to a promise.
fn level_promise<'a>(
    b: &mut FlatBufferBuilder<'a>,
    engine: &Engine,
    lp: &promised_engine::promise::LevelPromise,
) -> WIPOffset<wire::LevelPromise<'a>> {
    let packages: Vec<_> = lp
        .plan
        .iter()
        .flat_map(|p| &p.packages)
        .map(|pkg| {
            let node = node_name(b, engine, pkg.node);
            let idx: Vec<u16> = pkg.lines.iter().map(|&i| i as u16).collect();
            let lines = b.create_vector(&idx);
            wire::PackageValue::create(
                b,
                &wire::PackageValueArgs {
                    node: Some(node),
                    lines: Some(lines),
                    ship_day: pkg.ship_day.0,
                    delivery_day: pkg.delivery.0,
                    cost_cents: pkg.cost_cents,
                    binding: wire::Binding(pkg.binding as u8),
                },
            )
        })
        .collect();
    let packages = b.create_vector(&packages);
    let unserved: Vec<_> = lp
        .unserved
        .iter()
        .map(|&(line, why)| {
            wire::UnservedLine::create(
                b,
                &wire::UnservedLineArgs {
                    line: line as u16,
                    reason: wire::Shortfall(why as u8),
                },
            )
        })
        .collect();
    let unserved = b.create_vector(&unserved);
    let plan = lp.plan.as_ref();
    wire::LevelPromise::create(
        b,
        &wire::LevelPromiseArgs {
            level: wire::ServiceLevel(lp.level as u8),
            planned: plan.is_some(),
            delivery_day: plan.map_or(0, |p| p.delivery.0),
            cost_cents: plan.map_or(0, |p| p.cost_cents),
            binding: wire::Binding(plan.map_or(0, |p| p.binding as u8)),
            packages: Some(packages),
            unserved: Some(unserved),
            exact: plan.is_none_or(|p| p.exact),
        },
    )
}

/// The answer to a promise-and-hold: the level's promise and, when there was a plan to hold,
/// the hold's answer (granted or refused).
pub fn promise_held<'a>(
    b: &mut FlatBufferBuilder<'a>,
    engine: &Engine,
    promise: Option<&promised_engine::promise::LevelPromise>,
    held: Option<&HoldOutcome>,
) -> WIPOffset<wire::Reply<'a>> {
    let lp = promise.map(|p| level_promise(b, engine, p));
    let (mut granted, mut refused) = (None, None);
    if let Some(h) = held {
        let (kind, offset) = hold_outcome(b, engine, h);
        if kind == wire::ReplyBody::HoldGranted {
            granted = Some(WIPOffset::new(offset.value()));
        } else {
            refused = Some(WIPOffset::new(offset.value()));
        }
    }
    let v = wire::PromiseHeld::create(
        b,
        &wire::PromiseHeldArgs {
            promise: lp,
            granted,
            refused,
        },
    );
    reply(b, (wire::ReplyBody::PromiseHeld, v.as_union_value()))
}

/// A promise's answer, one `LevelPromise` per level asked.
fn promise_value<'a>(
    b: &mut FlatBufferBuilder<'a>,
    engine: &Engine,
    levels: &[promised_engine::promise::LevelPromise],
) -> Body {
    let levels: Vec<_> = levels.iter().map(|lp| level_promise(b, engine, lp)).collect();
    let levels = b.create_vector(&levels);
    let v = wire::PromiseValue::create(b, &wire::PromiseValueArgs { levels: Some(levels) });
    (wire::ReplyBody::PromiseValue, v.as_union_value())
}

/// The reply to a query, answered at `now`.
pub fn query<'a>(
    b: &mut FlatBufferBuilder<'a>,
    engine: &Engine,
    q: &Query,
    now: Timestamp,
) -> WIPOffset<wire::Reply<'a>> {
    let result = match q {
        Query::Atp { sku, node, day } => engine.atp(*sku, *node, now, *day).map(|atp| {
            let v = wire::AtpValue::create(b, &wire::AtpValueArgs { atp });
            (wire::ReplyBody::AtpValue, v.as_union_value())
        }),
        Query::NetworkAtp { sku, day } => engine.network_atp(*sku, now, *day).map(|atp| {
            let v = wire::AtpValue::create(b, &wire::AtpValueArgs { atp });
            (wire::ReplyBody::AtpValue, v.as_union_value())
        }),
        Query::Timeline { sku, node } => engine.timeline(*sku, *node, now).map(|points| {
            let points: Vec<_> = points
                .iter()
                .map(|p| {
                    wire::TimelinePoint::create(
                        b,
                        &wire::TimelinePointArgs {
                            day: p.day.0,
                            atp: p.atp,
                        },
                    )
                })
                .collect();
            let points = b.create_vector(&points);
            let v = wire::TimelineValue::create(b, &wire::TimelineValueArgs { points: Some(points) });
            (wire::ReplyBody::TimelineValue, v.as_union_value())
        }),
        Query::Position { sku, node } => engine.position(*sku, *node).map(|p| {
            let p = p.unwrap_or(promised_engine::PositionView {
                on_hand: 0,
                safety_stock: 0,
                reserved: 0,
                allocated: 0,
                lots: Vec::new(),
                future_claims: Vec::new(),
            });
            let lots: Vec<_> = p
                .lots
                .iter()
                .map(|l| {
                    let reference = b.create_string(&l.reference);
                    wire::InboundLot::create(
                        b,
                        &wire::InboundLotArgs {
                            reference: Some(reference),
                            quantity: l.quantity,
                            arrival_day: l.arrival.0,
                        },
                    )
                })
                .collect();
            let lots = b.create_vector(&lots);
            let claims: Vec<_> = p
                .future_claims
                .iter()
                .map(|&(day, quantity)| {
                    wire::FutureClaim::create(b, &wire::FutureClaimArgs { day: day.0, quantity })
                })
                .collect();
            let claims = b.create_vector(&claims);
            let v = wire::PositionValue::create(
                b,
                &wire::PositionValueArgs {
                    on_hand: p.on_hand,
                    safety_stock: p.safety_stock,
                    reserved: p.reserved,
                    allocated: p.allocated,
                    lots: Some(lots),
                    future_claims: Some(claims),
                },
            );
            (wire::ReplyBody::PositionValue, v.as_union_value())
        }),
        Query::Listing { pairs, level } => engine.earliest_deliveries(now, pairs, *level).map(|found| {
            let deliveries: Vec<_> = found
                .iter()
                .map(|e| {
                    let node = e.map(|e| node_name(b, engine, e.node));
                    wire::ListingDelivery::create(
                        b,
                        &wire::ListingDeliveryArgs {
                            found: e.is_some(),
                            delivery_day: e.map_or(0, |e| e.delivery.0),
                            node,
                            binding: wire::Binding(e.map_or(0, |e| e.binding as u8)),
                        },
                    )
                })
                .collect();
            let deliveries = b.create_vector(&deliveries);
            let v = wire::ListingValue::create(
                b,
                &wire::ListingValueArgs {
                    deliveries: Some(deliveries),
                },
            );
            (wire::ReplyBody::ListingValue, v.as_union_value())
        }),
        Query::Promise(request) => engine
            .promise(now, request)
            .map(|levels| promise_value(b, engine, &levels)),
        Query::Hold(hold_id) => Ok(match engine.hold(*hold_id) {
            None => {
                let n = wire::NotFound::create(b, &wire::NotFoundArgs {});
                (wire::ReplyBody::NotFound, n.as_union_value())
            }
            Some(h) => {
                let lines: Vec<_> = h
                    .lines
                    .iter()
                    .map(|l| {
                        let sku = sku_name(b, engine, l.sku);
                        let node = node_name(b, engine, l.node);
                        wire::HoldLineValue::create(
                            b,
                            &wire::HoldLineValueArgs {
                                sku: Some(sku),
                                node: Some(node),
                                need_day: l.need_day.0,
                                requested: l.requested,
                                granted: l.granted,
                                remaining: l.remaining,
                            },
                        )
                    })
                    .collect();
                let lines = b.create_vector(&lines);
                let hold = id(h.id);
                let v = wire::HoldValue::create(
                    b,
                    &wire::HoldValueArgs {
                        hold: Some(&hold),
                        state: state(h.state),
                        placed_at_ms: h.placed_at.0,
                        expires_at_ms: h.expires_at.0,
                        partial: h.partial,
                        lines: Some(lines),
                    },
                );
                (wire::ReplyBody::HoldValue, v.as_union_value())
            }
        }),
    };
    match result {
        Ok(body) => reply(b, body),
        Err(e) => error(b, &e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promised_engine::Quantity;
    use promised_engine::command::{Command, HoldLineRequest, NodeChoice};

    const NOW: Timestamp = Timestamp(20_780 * 86_400_000 + 9 * 3_600_000);

    /// Finishes `reply` inside a message and reads it back through the verifier.
    fn read<'a>(
        b: &'a mut FlatBufferBuilder<'static>,
        reply: WIPOffset<wire::Reply<'static>>,
    ) -> wire::Reply<'a> {
        let msg = wire::Message::create(
            b,
            &wire::MessageArgs {
                request_id: 1,
                body_type: wire::Body::Reply,
                body: Some(reply.as_union_value()),
            },
        );
        wire::finish_message_buffer(b, msg);
        promised_schemas::frame::parse_message(b.finished_data())
            .expect("a valid message")
            .body_as_reply()
            .expect("a reply")
    }

    #[test]
    fn outcomes_and_queries_come_back_with_string_ids() {
        let e = crate::wire::tests::engine_with(5);
        let (sku, node) = (e.sku_id("SKU-1").unwrap(), e.node_id("DC-1").unwrap());
        let hold = |q: u32| Command::Hold {
            hold: RequestId(100 + u128::from(q)),
            lines: vec![HoldLineRequest {
                sku,
                node: NodeChoice::Node(node),
                quantity: Quantity::new(i64::from(q)).unwrap(),
                need_day: None,
            }],
            ttl_ms: 60_000,
            partial: false,
        };

        let granted = e.apply(NOW, &hold(3)).unwrap();
        let mut b = FlatBufferBuilder::new();
        let r = outcome(&mut b, &e, &granted);
        let g = read(&mut b, r).result_as_hold_granted().expect("granted");
        let id = g.hold().expect("the hold id");
        assert_eq!((id.hi(), id.lo()), (0, 103));
        let line = g.lines().unwrap().get(0);
        assert_eq!(
            (line.sku(), line.node(), line.granted()),
            (Some("SKU-1"), Some("DC-1"), 3)
        );

        let refused = e.apply(NOW, &hold(4)).unwrap();
        let mut b = FlatBufferBuilder::new();
        let r = outcome(&mut b, &e, &refused);
        let line = read(&mut b, r)
            .result_as_hold_refused()
            .expect("refused")
            .lines()
            .unwrap()
            .get(0);
        assert_eq!(
            (line.available(), line.reason()),
            (2, wire::RefusalReason::InsufficientAtp)
        );

        let mut b = FlatBufferBuilder::new();
        let r = query(&mut b, &e, &Query::Atp { sku, node, day: None }, NOW);
        assert_eq!(read(&mut b, r).result_as_atp_value().expect("atp").atp(), 2);

        let mut b = FlatBufferBuilder::new();
        let r = query(&mut b, &e, &Query::Hold(RequestId(103)), NOW);
        let h = read(&mut b, r).result_as_hold_value().expect("a hold");
        assert_eq!(h.state(), wire::HoldState::Held);
        let mut b = FlatBufferBuilder::new();
        let r = query(&mut b, &e, &Query::Hold(RequestId(999)), NOW);
        assert!(read(&mut b, r).result_as_not_found().is_some());

        let mut b = FlatBufferBuilder::new();
        let r = query(
            &mut b,
            &e,
            &Query::Atp {
                sku: SkuId::from_raw(77),
                node,
                day: None,
            },
            NOW,
        );
        let err = read(&mut b, r).result_as_error().expect("an error");
        assert_eq!(err.code(), wire::ErrorCode::UnknownSku);
    }
}
