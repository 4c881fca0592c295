//! Batch re-routing of routed orders: dry runs, atomic applies, refusals that change nothing.

use super::*;
use crate::capacity::{Load, ShipSlot};
use crate::network::NodeStatus;
use crate::reroute::{LeftOutReason, RerouteFilter, RerouteOutcome, ReroutePolicy, solver::Effort};

fn ground(s: SkuId, q: u32) -> PromiseRequest {
    request(&[(s, q)], &[ServiceLevel::Ground], PromiseOptions::default())
}

fn route(w: &mut World, r: &PromiseRequest, order: u128) {
    let plan = w.engine.plan_route(w.now, r, RequestId(order)).unwrap();
    match w.apply(plan.command.expect("a plan")) {
        Outcome::Route(crate::command::HoldOutcome::Granted { .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// A cheap DC `A` and a dearer one `B` (explicit lanes), 10 units of `S` at each.
fn two_dcs() -> (World, NodeId, NodeId, SkuId) {
    let mut w = World::new(at(MONDAY, 9));
    let a = w.node(dc("A"));
    let b = w.node(dc("B"));
    let s = w.sku("S", Capabilities::default());
    w.stock(s, a, 10);
    w.stock(s, b, 10);
    w.lane(a, ServiceLevel::Ground, 1, 400, 10);
    w.lane(b, ServiceLevel::Ground, 2, 600, 10);
    (w, a, b, s)
}

fn close(w: &mut World, name: &str) {
    let mut spec = dc(name);
    spec.status = NodeStatus::Closed;
    w.apply(Command::UpsertNode(spec));
}

fn plan(w: &World, filter: &RerouteFilter) -> crate::reroute::RerouteReport {
    w.engine
        .plan_reroute(
            w.now,
            filter,
            &ReroutePolicy::default(),
            &Effort::default(),
            &|| false,
        )
        .unwrap()
}

#[test]
fn a_closed_dc_moves_its_orders_and_the_apply_is_all_at_once() {
    let (mut w, a, b, s) = two_dcs();
    for order in 0..3 {
        route(&mut w, &ground(s, 2), 100 + order);
    }
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load { orders: 3, units: 6 });
    close(&mut w, "A");
    let filter = RerouteFilter {
        nodes: vec![a],
        ..Default::default()
    };
    let report = plan(&w, &filter);
    assert_eq!(report.orders, 3);
    assert_eq!(report.broken_before, 3);
    assert_eq!(report.moves.len(), 3);
    assert!(report.left_out.is_empty());
    assert_eq!(report.check.over, 0);
    // B is the only plan: proven optimal. Two days from B instead of one from A: a day late.
    let each = (600 + 2 * 10 + 500 + 100) as f64;
    assert_eq!(report.cost_after, 3.0 * each);
    assert!(report.lower_bound <= report.cost_after + 1e-6);
    assert_eq!(report.gap, Some(0.0));
    for m in &report.moves {
        assert_eq!(m.to, vec![ShipSlot { node: b, day: MONDAY }]);
        assert_eq!(m.delivery, MONDAY.plus(2));
        assert_eq!(m.promised, Some(MONDAY.plus(1)));
    }
    // A dry run changed nothing.
    let before = w.engine.state_digest();
    let _ = plan(&w, &filter);
    assert_eq!(w.engine.state_digest(), before);

    let command = report.command(RequestId(7_000), false).unwrap();
    assert_eq!(
        w.apply(command.clone()),
        Outcome::Reroute(RerouteOutcome::Applied {
            moved: 3,
            repeated: false,
            skipped: vec![]
        })
    );
    w.engine.check_invariants().unwrap();
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load::default());
    assert_eq!(w.engine.capacity_used(b, MONDAY), Load { orders: 3, units: 6 });
    assert_eq!(w.engine.atp(s, b, w.now, None).unwrap(), 4);
    let order = w.engine.hold(RequestId(100)).unwrap();
    assert!(order.lines.iter().all(|l| l.node == b && l.remaining == 2));
    // A retry answers the first answer and changes nothing.
    let after = w.engine.state_digest();
    assert_eq!(
        w.apply(command),
        Outcome::Reroute(RerouteOutcome::Applied {
            moved: 3,
            repeated: true,
            skipped: vec![]
        })
    );
    assert_eq!(w.engine.state_digest(), after);
    // Nothing is left at A to move; cancelling a moved order gives back B's capacity.
    assert_eq!(plan(&w, &filter).orders, 0);
    w.apply(Command::CancelAllocation {
        request: RequestId(7_001),
        hold: RequestId(100),
    });
    assert_eq!(w.engine.capacity_used(b, MONDAY), Load { orders: 2, units: 4 });
    assert_eq!(w.engine.atp(s, b, w.now, None).unwrap(), 6);
}

/// `orders` two-unit orders routed to the cheap DC `A`, then `A` closed: the world and the plan
/// that moves them all to `B`.
fn routed_then_closed(orders: u128) -> (World, NodeId, SkuId, crate::reroute::RerouteReport) {
    let (mut w, a, b, s) = two_dcs();
    for order in 0..orders {
        route(&mut w, &ground(s, 2), 100 + order);
    }
    close(&mut w, "A");
    let report = plan(
        &w,
        &RerouteFilter {
            nodes: vec![a],
            ..Default::default()
        },
    );
    (w, b, s, report)
}

#[test]
fn an_apply_that_no_longer_fits_changes_nothing() {
    let (mut w, b, s, report) = routed_then_closed(3);
    // B's stock was counted down since the dry run: the third order no longer fits.
    w.stock(s, b, 5);
    let before = w.engine.state_digest();
    match w.apply(report.command(RequestId(7_000), false).unwrap()) {
        Outcome::Reroute(RerouteOutcome::Refused { order, lines }) => {
            assert_eq!(order, RequestId(102));
            assert_eq!(lines[0].reason, crate::command::RefusalReason::InsufficientAtp);
            assert_eq!(lines[0].available, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.engine.state_digest(), before);
    w.engine.check_invariants().unwrap();
}

#[test]
fn a_partial_apply_moves_what_still_fits_and_skips_the_rest() {
    let (mut w, b, s, report) = routed_then_closed(4);
    let a = w.engine.node_id("A").unwrap();
    assert_eq!(report.moves.len(), 4);
    // Since the plan: B counted down to 5 (room for two orders) and one order was cancelled.
    w.stock(s, b, 5);
    w.apply(Command::CancelAllocation {
        request: RequestId(7_001),
        hold: RequestId(101),
    });
    let command = report.command(RequestId(7_000), true).unwrap();
    let Outcome::Reroute(RerouteOutcome::Applied {
        moved,
        repeated: false,
        skipped,
    }) = w.apply(command.clone())
    else {
        panic!("a partial apply applies")
    };
    assert_eq!(moved, 2);
    assert_eq!(skipped.len(), 2);
    assert!(skipped.contains(&RequestId(101)), "{skipped:?}");
    w.engine.check_invariants().unwrap();
    // Two orders moved to B, one stays at A with its allocation, the cancelled one is gone.
    let at = |order| w.engine.hold(RequestId(order)).unwrap().lines[0].node;
    let moved_to_b = [100, 102, 103].iter().filter(|&&o| at(o) == b).count();
    assert_eq!(moved_to_b, 2);
    assert_eq!(w.engine.capacity_used(b, MONDAY), Load { orders: 2, units: 4 });
    assert_eq!(w.engine.atp(s, b, w.now, None).unwrap(), 1);
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load { orders: 1, units: 2 });
    // The same command replays to the same state (the log's promise).
    let digest = w.engine.state_digest();
    let mut again = routed_then_closed(4).0;
    again.stock(s, b, 5);
    again.apply(Command::CancelAllocation {
        request: RequestId(7_001),
        hold: RequestId(101),
    });
    again.apply(command);
    assert_eq!(again.engine.state_digest(), digest);
}

#[test]
fn orders_with_no_plan_keep_their_allocation_and_are_reported() {
    let (mut w, a, b, s) = two_dcs();
    route(&mut w, &ground(s, 8), 100);
    route(&mut w, &ground(s, 2), 101);
    close(&mut w, "A");
    // B has 10: both fit. With 9 only the 8-unit order or the 2-unit one fits.
    w.stock(s, b, 9);
    let report = plan(
        &w,
        &RerouteFilter {
            nodes: vec![a],
            ..Default::default()
        },
    );
    assert_eq!(report.moves.len(), 1);
    assert_eq!(report.left_out.len(), 1);
    assert_eq!(report.left_out[0].reason, LeftOutReason::NoRoom);
    assert!(!report.left_out[0].current_ships);
    // The order left out costs its penalty; the bound is the linear relaxation's (the 2-unit
    // order served, 7/8 of the 8-unit one: 1,230 + 7/8 x 1,230 + 1/8 x 50,000 cents), below
    // the best whole plan (one served, one left: 1,230 + 50,000), so the gap is honest.
    let policy = ReroutePolicy::default();
    assert_eq!(report.penalties, policy.unserved_cents as f64);
    let each = (600 + 10 * 2 + 500 + 100) as f64;
    let served = report.moves[0].cost_after;
    assert!(served == each || served == (600 + 10 * 8 + 500 + 100) as f64);
    let objective = report.cost_after + report.penalties;
    assert!(report.lower_bound <= objective + 1e-6);
    let gap = report.gap.expect("every order has a candidate");
    assert!(
        gap > 0.5,
        "a whole order's penalty separates the plan from the relaxation: {gap}"
    );
}

#[test]
fn a_full_day_spills_to_the_next_day_when_that_is_cheapest() {
    let (mut w, _a, b, s) = two_dcs();
    // A takes one order a day.
    let mut spec = dc("A");
    spec.capacity = DailyCapacity { orders: 1, units: 0 };
    w.apply(Command::UpsertNode(spec));
    let a = w.engine.node_id("A").unwrap();
    // Routed before the limit existed? No: route to B by closing A first, then reopen A.
    close(&mut w, "A");
    route(&mut w, &ground(s, 1), 100);
    route(&mut w, &ground(s, 1), 101);
    let mut spec = dc("A");
    spec.capacity = DailyCapacity { orders: 1, units: 0 };
    w.apply(Command::UpsertNode(spec));
    // Both sit at B (2 days, promised MONDAY + 2). A ships one today (1 day) and one tomorrow
    // (2 days, on time): both cheaper than B.
    let report = plan(
        &w,
        &RerouteFilter {
            nodes: vec![b],
            ..Default::default()
        },
    );
    assert_eq!(report.moves.len(), 2);
    let mut days: Vec<Day> = report.moves.iter().map(|m| m.to[0].day).collect();
    days.sort();
    assert_eq!(days, vec![MONDAY, MONDAY.plus(1)]);
    assert!(report.moves.iter().all(|m| m.to[0].node == a));
    assert_eq!(report.check.over, 0);
    w.apply(report.command(RequestId(9_000), false).unwrap());
    w.engine.check_invariants().unwrap();
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load { orders: 1, units: 1 });
    assert_eq!(
        w.engine.capacity_used(a, MONDAY.plus(1)),
        Load { orders: 1, units: 1 }
    );
}

#[test]
fn bad_reroutes_are_typed_errors() {
    let (mut w, a, _b, s) = two_dcs();
    route(&mut w, &ground(s, 2), 100);
    let before = w.engine.state_digest();
    let e = |f: RerouteFilter| {
        w.engine
            .plan_reroute(w.now, &f, &ReroutePolicy::default(), &Effort::default(), &|| {
                false
            })
            .unwrap_err()
            .code()
    };
    use crate::error::ErrorCode;
    assert_eq!(
        e(RerouteFilter {
            nodes: vec![NodeId::from_raw(99)],
            ..Default::default()
        }),
        ErrorCode::UnknownNode
    );
    assert_eq!(
        e(RerouteFilter {
            orders: vec![RequestId(5)],
            ..Default::default()
        }),
        ErrorCode::UnknownHold
    );
    let moves = |order, line_nodes: Vec<NodeId>, packages: Vec<ShipSlot>| Command::Reroute {
        request: RequestId(8_000),
        moves: vec![crate::reroute::RerouteMove {
            order: RequestId(order),
            line_nodes,
            packages,
        }],
        partial: false,
    };
    let slot = ShipSlot { node: a, day: MONDAY };
    for (command, code) in [
        (
            Command::Reroute {
                request: RequestId(8_000),
                moves: vec![],
                partial: false,
            },
            ErrorCode::EmptyRequest,
        ),
        (moves(5, vec![a], vec![slot]), ErrorCode::UnknownHold),
        (moves(100, vec![a, a], vec![slot]), ErrorCode::InvalidOption),
        (moves(100, vec![a], vec![]), ErrorCode::InvalidOption),
        (
            moves(
                100,
                vec![a],
                vec![ShipSlot {
                    node: a,
                    day: MONDAY.plus(800),
                }],
            ),
            ErrorCode::InvalidOption,
        ),
    ] {
        let err = w.engine.apply(w.now, &command).unwrap_err();
        assert_eq!(err.code(), code, "{err}");
    }
    assert_eq!(w.engine.state_digest(), before);
}

/// The same plan, bound and moves on one thread or two.
#[test]
fn the_same_report_on_any_number_of_threads() {
    let (mut w, a, _b, s) = two_dcs();
    let c = w.node(dc("C"));
    w.stock(s, c, 6);
    w.lane(c, ServiceLevel::Ground, 1, 450, 12);
    let t = w.sku("T", Capabilities::default());
    for n in [a, c] {
        w.stock(t, n, 8);
    }
    for order in 0..8 {
        let lines: &[(SkuId, u32)] = if order % 2 == 0 {
            &[(s, 1)]
        } else {
            &[(s, 1), (t, 2)]
        };
        let r = request(lines, &[ServiceLevel::Ground], PromiseOptions::default());
        route(&mut w, &r, 100 + order);
    }
    close(&mut w, "A");
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| plan(&w, &RerouteFilter::default()))
    };
    let one = run(1);
    assert!(!one.moves.is_empty());
    assert_eq!(one, run(2));
}

#[test]
fn a_partial_apply_skips_moves_whose_ship_days_have_passed() {
    let (mut w, b, _s, report) = routed_then_closed(4);
    let a = w.engine.node_id("A").unwrap();
    let Command::Reroute {
        request, mut moves, ..
    } = report.command(RequestId(7_000), true).unwrap()
    else {
        panic!("a re-route command")
    };
    // Planned on Monday, applied on Wednesday: two moves were re-planned for Wednesday, two
    // still ship on Monday, a day before yesterday.
    w.now = at(MONDAY.plus(2), 9);
    w.apply(Command::Tick);
    let wednesday = MONDAY.plus(2);
    for m in &mut moves[..2] {
        m.packages[0].day = wednesday;
    }
    let (fresh, stale): (Vec<RequestId>, Vec<RequestId>) = (
        moves[..2].iter().map(|m| m.order).collect(),
        moves[2..].iter().map(|m| m.order).collect(),
    );
    // All or nothing: refused whole, nothing changed.
    let before = w.engine.state_digest();
    let whole = Command::Reroute {
        request: RequestId(7_001),
        moves: moves.clone(),
        partial: false,
    };
    assert!(matches!(
        w.engine.apply(w.now, &whole),
        Err(EngineError::InvalidOption { .. })
    ));
    assert_eq!(w.engine.state_digest(), before);
    // A stale move is still checked whole: an order twice, or more line nodes than the log
    // takes, refuses the command and changes nothing.
    let mut twice = moves.clone();
    twice.push(moves[3].clone());
    let mut long = moves.clone();
    long[3].line_nodes = vec![a; crate::limits::HOLD_LINES_MAX + 1];
    for bad in [twice, long] {
        let refused = w.engine.apply(
            w.now,
            &Command::Reroute {
                request: RequestId(7_003),
                moves: bad,
                partial: true,
            },
        );
        assert!(
            matches!(
                refused,
                Err(EngineError::InvalidOption { .. } | EngineError::CapacityExceeded { .. })
            ),
            "{refused:?}"
        );
        assert_eq!(w.engine.state_digest(), before);
    }
    // Partial: the fresh moves apply, the stale ones are skipped.
    let Outcome::Reroute(RerouteOutcome::Applied {
        moved,
        repeated: false,
        mut skipped,
    }) = w.apply(Command::Reroute {
        request,
        moves: moves.clone(),
        partial: true,
    })
    else {
        panic!("a partial apply applies")
    };
    assert_eq!(moved, 2);
    skipped.sort_unstable();
    assert_eq!(skipped, stale);
    for order in &fresh {
        let hold = w.engine.hold(*order).unwrap();
        assert_eq!(hold.lines[0].node, b);
    }
    for order in &stale {
        assert_eq!(w.engine.hold(*order).unwrap().lines[0].node, a);
    }
    assert_eq!(w.engine.capacity_used(b, wednesday), Load { orders: 2, units: 4 });
    w.engine.check_invariants().unwrap();
    // Applied with Tuesday's clock after Wednesday's tick: Monday is yesterday, but the
    // capacity book has forgotten it (its floor is Tuesday). Nothing moves, and the answer says
    // which were skipped.
    let before = w.engine.state_digest();
    let late = Command::Reroute {
        request: RequestId(7_002),
        moves: moves[2..].to_vec(),
        partial: true,
    };
    let Ok(Outcome::Reroute(RerouteOutcome::Applied { moved, skipped, .. })) =
        w.engine.apply(at(MONDAY.plus(1), 9), &late)
    else {
        panic!("a partial apply applies")
    };
    assert_eq!((moved, skipped.len()), (0, 2));
    for order in &stale {
        assert_eq!(w.engine.hold(*order).unwrap().lines[0].node, a);
    }
    assert_ne!(w.engine.state_digest(), before, "the request id is remembered");
}
