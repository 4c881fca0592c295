//! Route orders: allocations that take node capacity, given back on cancel, read by promises.

use super::*;
use crate::capacity::{Load, ShipSlot};
use crate::command::{HoldLineRequest, HoldOutcome, LineQuantity, NodeChoice, RefusalReason};
use crate::error::ErrorCode;
use crate::hold::HoldState;

/// One DC with room for two orders (or 5 units) a day, and 20 units of one SKU.
fn two_a_day() -> (World, NodeId, SkuId) {
    let mut w = World::new(at(MONDAY, 9));
    let mut spec = dc("A");
    spec.capacity = DailyCapacity { orders: 2, units: 5 };
    let a = w.node(spec);
    let s = w.sku("S", Capabilities::default());
    w.stock(s, a, 20);
    (w, a, s)
}

fn ground(s: SkuId, q: u32) -> PromiseRequest {
    request(&[(s, q)], &[ServiceLevel::Ground], PromiseOptions::default())
}

/// Plans and applies a route order; returns its outcome.
fn route(w: &mut World, r: &PromiseRequest, order: u128) -> HoldOutcome {
    let plan = w.engine.plan_route(w.now, r, RequestId(order)).unwrap();
    match w.apply(plan.command.expect("a plan")) {
        Outcome::Route(o) => o,
        other => panic!("{other:?}"),
    }
}

fn ship_day_of(w: &World, r: &PromiseRequest) -> (Day, Binding) {
    let p = w.engine.promise(w.now, r).unwrap().remove(0).plan.unwrap();
    (p.packages[0].ship_day, p.binding)
}

#[test]
fn routed_orders_fill_a_day_and_cancelling_gives_it_back() {
    let (mut w, a, s) = two_a_day();
    assert!(matches!(
        route(&mut w, &ground(s, 2), 900),
        HoldOutcome::Granted { repeated: false, .. }
    ));
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load { orders: 1, units: 2 });
    // An allocation, not a hold: ATP down, nothing reserved, nothing to expire.
    let order = w.engine.hold(RequestId(900)).unwrap();
    assert_eq!(order.state, HoldState::Committed);
    assert_eq!(w.engine.atp(s, a, w.now, None).unwrap(), 18);
    // 2 of 5 units used: a 3-unit order still ships today, a 4-unit one tomorrow.
    assert_eq!(ship_day_of(&w, &ground(s, 3)), (MONDAY, Binding::Transit));
    assert_eq!(
        ship_day_of(&w, &ground(s, 4)),
        (MONDAY.plus(1), Binding::Capacity)
    );
    assert!(matches!(
        route(&mut w, &ground(s, 1), 901),
        HoldOutcome::Granted { .. }
    ));
    // Two orders: the day is full, whatever the units.
    assert_eq!(
        ship_day_of(&w, &ground(s, 1)),
        (MONDAY.plus(1), Binding::Capacity)
    );
    assert!(matches!(
        route(&mut w, &ground(s, 1), 902),
        HoldOutcome::Granted { .. }
    ));
    assert_eq!(
        w.engine.capacity_used(a, MONDAY.plus(1)),
        Load { orders: 1, units: 1 }
    );
    let order = w.engine.hold(RequestId(902)).unwrap();
    let routed = order.routed.as_deref().expect("a routed order");
    assert_eq!(
        &routed.packages[..],
        &[ShipSlot {
            node: a,
            day: MONDAY.plus(1)
        }][..]
    );
    // What it promised is kept for re-routing: the destination and Wednesday's delivery.
    assert_eq!(
        (routed.zone, routed.point(), routed.promised),
        (ZoneId(1), None, MONDAY.plus(2))
    );
    // The line needs its units on its ship day (a dated claim), like a promise-and-hold.
    assert_eq!(order.lines[0].need_day, MONDAY.plus(1));
    w.engine.check_invariants().unwrap();

    let cancel = w.request();
    w.apply(Command::CancelAllocation {
        request: cancel,
        hold: RequestId(900),
    });
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load { orders: 1, units: 1 });
    assert_eq!(ship_day_of(&w, &ground(s, 1)), (MONDAY, Binding::Transit));
    assert_eq!(w.engine.atp(s, a, w.now, None).unwrap(), 18);
    // A retry of the cancel gives nothing back twice.
    w.apply(Command::CancelAllocation {
        request: cancel,
        hold: RequestId(900),
    });
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load { orders: 1, units: 1 });
    w.engine.check_invariants().unwrap();
}

#[test]
fn a_retry_answers_the_first_route_and_takes_nothing_twice() {
    let (mut w, a, s) = two_a_day();
    let first = route(&mut w, &ground(s, 2), 900);
    let again = route(&mut w, &ground(s, 2), 900);
    let (
        HoldOutcome::Granted { lines: l1, .. },
        HoldOutcome::Granted {
            lines: l2, repeated, ..
        },
    ) = (first, again)
    else {
        panic!("not granted")
    };
    assert!(repeated);
    assert_eq!(l1, l2);
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load { orders: 1, units: 2 });
    assert_eq!(w.engine.atp(s, a, w.now, None).unwrap(), 18);
    // A retry days later still gets the first answer (its ship day is past by then).
    w.now = at(MONDAY.plus(5), 9);
    assert!(matches!(
        route(&mut w, &ground(s, 2), 900),
        HoldOutcome::Granted { repeated: true, .. }
    ));
    // The id of a routed order is not a hold's, and the other way round.
    let e = w
        .engine
        .plan_hold(w.now, &ground(s, 1), RequestId(900), 60_000)
        .unwrap();
    let err = w.engine.apply(w.now, &e.command.unwrap()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RequestIdReused, "{err}");
    let h = w
        .engine
        .plan_hold(w.now, &ground(s, 1), RequestId(950), 60_000)
        .unwrap();
    w.apply(h.command.unwrap());
    let r = w.engine.plan_route(w.now, &ground(s, 1), RequestId(950)).unwrap();
    let err = w.engine.apply(w.now, &r.command.unwrap()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RequestIdReused, "{err}");
}

#[test]
fn a_stale_plan_is_refused_and_changes_nothing() {
    let (mut w, a, s) = two_a_day();
    // Capacity: two plans for today's last 5 units; the second finds the day full.
    let p1 = w.engine.plan_route(w.now, &ground(s, 3), RequestId(900)).unwrap();
    let p2 = w.engine.plan_route(w.now, &ground(s, 3), RequestId(901)).unwrap();
    assert!(matches!(
        w.apply(p1.command.unwrap()),
        Outcome::Route(HoldOutcome::Granted { .. })
    ));
    let before = w.engine.state_digest();
    let Outcome::Route(HoldOutcome::Refused { lines }) = w.apply(p2.command.unwrap()) else {
        panic!("granted past capacity")
    };
    assert_eq!(
        (lines[0].reason, lines[0].available),
        (RefusalReason::CapacityFull, 2)
    );
    assert_eq!(w.engine.state_digest(), before);
    assert!(w.engine.hold(RequestId(901)).is_none());
    // Re-promised, it ships tomorrow.
    assert!(matches!(
        route(&mut w, &ground(s, 3), 901),
        HoldOutcome::Granted { .. }
    ));
    assert_eq!(w.engine.capacity_used(a, MONDAY.plus(1)).units, 3);
    // Stock: the plan's units were sold meanwhile.
    let p3 = w.engine.plan_route(w.now, &ground(s, 1), RequestId(902)).unwrap();
    let adjust = w.request();
    w.apply(Command::AdjustOnHand {
        request: adjust,
        sku: s,
        node: a,
        delta: -14,
        reason: crate::command::AdjustReason::Damage,
    });
    let before = w.engine.state_digest();
    let Outcome::Route(HoldOutcome::Refused { lines }) = w.apply(p3.command.unwrap()) else {
        panic!("granted without stock")
    };
    assert_eq!(lines[0].reason, RefusalReason::InsufficientAtp);
    assert_eq!(w.engine.state_digest(), before);
}

#[test]
fn shipped_packages_keep_their_capacity() {
    let mut w = World::new(at(MONDAY, 9));
    let mut spec = dc("A");
    spec.capacity = DailyCapacity {
        orders: 10,
        units: 100,
    };
    let a = w.node(spec);
    let mut spec = dc("B");
    spec.capacity = DailyCapacity {
        orders: 10,
        units: 100,
    };
    let b = w.node(spec);
    let (x, y) = (
        w.sku("X", Capabilities::default()),
        w.sku("Y", Capabilities::default()),
    );
    w.stock(x, a, 5);
    w.stock(y, b, 5);
    let r = request(
        &[(x, 2), (y, 3)],
        &[ServiceLevel::Ground],
        PromiseOptions::default(),
    );
    assert!(matches!(route(&mut w, &r, 900), HoldOutcome::Granted { .. }));
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load { orders: 1, units: 2 });
    assert_eq!(w.engine.capacity_used(b, MONDAY), Load { orders: 1, units: 3 });
    // A's package leaves (one unit of two is enough to have used the day); then the rest is
    // cancelled: only B's capacity comes back.
    let ship = w.request();
    w.apply(Command::Ship {
        request: ship,
        hold: RequestId(900),
        lines: vec![LineQuantity {
            sku: x,
            node: a,
            quantity: Quantity::new(1).unwrap(),
        }],
    });
    let cancel = w.request();
    w.apply(Command::CancelAllocation {
        request: cancel,
        hold: RequestId(900),
    });
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load { orders: 1, units: 2 });
    assert_eq!(w.engine.capacity_used(b, MONDAY), Load::default());
    w.engine.check_invariants().unwrap();
}

#[test]
fn capacity_survives_a_snapshot_and_old_days_are_forgotten() {
    use crate::snapshot::{SnapshotFile, snapshot_name, write_snapshot};
    use crate::storage::{SimStorage, Storage};
    let (mut w, a, s) = two_a_day();
    route(&mut w, &ground(s, 2), 900);
    route(&mut w, &ground(s, 1), 901);
    route(&mut w, &ground(s, 1), 902);
    let storage = SimStorage::new();
    let info = write_snapshot(&w.engine, &storage).unwrap();
    let bytes = storage.read(&snapshot_name(info.lsn)).unwrap();
    let loaded = SnapshotFile::parse(&bytes).unwrap().load(None).unwrap();
    assert_eq!(loaded.state_digest(), w.engine.state_digest());
    assert_eq!(loaded.capacity_used(a, MONDAY), Load { orders: 2, units: 3 });
    assert_eq!(loaded.hold(RequestId(902)), w.engine.hold(RequestId(902)));
    loaded.check_invariants().unwrap();
    assert_eq!(
        ship_day_of(&w, &ground(s, 1)),
        (MONDAY.plus(1), Binding::Capacity)
    );
    // The digest sees capacity: the same orders on another day are another state.
    w.apply(Command::Tick);
    let ticked = w.engine.state_digest();
    // Wednesday's first tick forgets Monday (Tuesday stays: west of UTC it may still be today).
    w.now = at(MONDAY.plus(2), 0);
    w.apply(Command::Tick);
    assert_ne!(w.engine.state_digest(), ticked);
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load::default());
    assert_eq!(
        w.engine.capacity_used(a, MONDAY.plus(1)),
        Load { orders: 1, units: 1 }
    );
    w.engine.check_invariants().unwrap();
    // Cancelling an order of a forgotten day gives nothing back, and breaks nothing.
    let cancel = w.request();
    w.apply(Command::CancelAllocation {
        request: cancel,
        hold: RequestId(900),
    });
    assert_eq!(w.engine.capacity_used(a, MONDAY), Load::default());
    w.engine.check_invariants().unwrap();
}

#[test]
fn malformed_route_orders_are_typed_errors() {
    let (mut w, a, s) = two_a_day();
    let b = w.node(dc("B"));
    let line = |node| HoldLineRequest {
        sku: s,
        node,
        quantity: Quantity::new(1).unwrap(),
        need_day: None,
    };
    let slot = |node, day| ShipSlot { node, day };
    let before = w.engine.state_digest();
    let zone1 = Destination {
        zone: ZoneId(1),
        point: None,
    };
    for (lines, packages, code) in [
        (vec![], vec![slot(a, MONDAY)], ErrorCode::EmptyRequest),
        (vec![line(NodeChoice::Node(a))], vec![], ErrorCode::InvalidOption),
        (
            vec![line(NodeChoice::Any)],
            vec![slot(a, MONDAY)],
            ErrorCode::InvalidOption,
        ),
        (
            vec![line(NodeChoice::Node(a))],
            vec![slot(b, MONDAY)],
            ErrorCode::InvalidOption,
        ),
        (
            vec![line(NodeChoice::Node(a))],
            vec![slot(a, MONDAY), slot(a, MONDAY.plus(1))],
            ErrorCode::InvalidOption,
        ),
        (
            vec![line(NodeChoice::Node(a))],
            vec![slot(a, Day(MONDAY.0 - 2))],
            ErrorCode::InvalidOption,
        ),
        // Promised before it ships.
        (
            vec![line(NodeChoice::Node(a))],
            vec![slot(a, MONDAY.plus(4))],
            ErrorCode::InvalidOption,
        ),
        (
            vec![line(NodeChoice::Node(NodeId::from_raw(77)))],
            vec![slot(NodeId::from_raw(77), MONDAY)],
            ErrorCode::UnknownNode,
        ),
    ] {
        let e = w
            .engine
            .apply(
                w.now,
                &Command::RouteOrder {
                    order: RequestId(999),
                    lines,
                    packages,
                    destination: zone1,
                    promised: MONDAY.plus(3),
                    level: ServiceLevel::Ground,
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), code, "{e}");
    }
    assert_eq!(w.engine.state_digest(), before);
    // Nothing can be promised: no command to apply.
    let none = w
        .engine
        .plan_route(w.now, &ground(s, 500), RequestId(998))
        .unwrap();
    assert!(none.command.is_none());
}
