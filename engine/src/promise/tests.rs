//! Promises on small networks checked by hand, and a property test against brute force.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::command::{Command, Outcome};
use crate::ids::RequestId;
use crate::ledger::EngineConfig;
use crate::network::{DailyCapacity, NodeSpec, ZoneSpec};

/// 2026-11-23, a Monday.
const MONDAY: Day = Day(20_780);
const HOUR: u64 = 3_600_000;

fn at(day: Day, hour: u64) -> Timestamp {
    Timestamp(day.start().0 + hour * HOUR)
}

/// A network under construction: nodes near (0, 0), one destination zone 1 at (0, 0.5) (about
/// 56 km away: ground 1 day, default costs).
struct World {
    engine: Engine,
    now: Timestamp,
    next_request: u128,
}

impl World {
    fn new(now: Timestamp) -> Self {
        let engine = Engine::new(EngineConfig::default());
        engine
            .apply(
                now,
                &Command::UpsertZone(ZoneSpec {
                    zone: ZoneId(1),
                    lat: 0.0,
                    lon: 0.5,
                }),
            )
            .unwrap();
        Self {
            engine,
            now,
            next_request: 1,
        }
    }

    fn apply(&mut self, command: Command) -> Outcome {
        self.engine.apply(self.now, &command).unwrap()
    }

    fn request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn node(&mut self, spec: NodeSpec) -> NodeId {
        match self.apply(Command::UpsertNode(spec)) {
            Outcome::NodeUpserted(id) => id,
            other => panic!("{other:?}"),
        }
    }

    fn sku(&mut self, name: &str, required: Capabilities) -> SkuId {
        match self.apply(Command::UpsertSku {
            name: name.into(),
            required,
        }) {
            Outcome::SkuUpserted(id) => id,
            other => panic!("{other:?}"),
        }
    }

    fn stock(&mut self, sku: SkuId, node: NodeId, on_hand: u32) {
        let feed_seq = self.engine.feed_seq(node) + 1;
        let request = self.request();
        self.apply(Command::SetOnHand {
            request,
            node,
            feed_seq,
            counts: vec![(sku, on_hand)],
        });
    }

    fn inbound(&mut self, sku: SkuId, node: NodeId, quantity: u32, arrival: Day) {
        let request = self.request();
        self.apply(Command::AddInbound {
            request,
            sku,
            node,
            reference: format!("PO-{request:?}"),
            quantity: Quantity::new(i64::from(quantity)).unwrap(),
            arrival,
        });
    }

    fn lane(&mut self, node: NodeId, level: ServiceLevel, transit_days: u8, package: u32, unit: u32) {
        self.apply(Command::UpsertLane(Lane {
            node,
            zone: ZoneId(1),
            level,
            transit_days,
            cost_per_package_cents: package,
            cost_per_unit_cents: unit,
        }));
    }

    fn promise(
        &self,
        lines: &[(SkuId, u32)],
        levels: &[ServiceLevel],
        options: PromiseOptions,
    ) -> Vec<LevelPromise> {
        self.engine
            .promise(self.now, &request(lines, levels, options))
            .unwrap()
    }

    fn ground(&self, lines: &[(SkuId, u32)]) -> Plan {
        let mut p = self.promise(lines, &[ServiceLevel::Ground], PromiseOptions::default());
        p.remove(0).plan.expect("a plan")
    }
}

fn request(lines: &[(SkuId, u32)], levels: &[ServiceLevel], options: PromiseOptions) -> PromiseRequest {
    PromiseRequest {
        lines: lines
            .iter()
            .map(|&(sku, q)| CartLine {
                sku,
                quantity: Quantity::new(i64::from(q)).unwrap(),
            })
            .collect(),
        destination: Destination {
            zone: ZoneId(1),
            point: None,
        },
        levels: levels.to_vec(),
        options,
    }
}

fn dc(name: &str) -> NodeSpec {
    let mut n = NodeSpec::open(name);
    n.calendar.weekdays = 0b1_1111;
    n.cutoff_minute = 14 * 60;
    n
}

#[test]
fn before_and_after_the_cutoff() {
    let mut w = World::new(at(MONDAY, 9));
    let a = w.node(dc("A"));
    let s = w.sku("S", Capabilities::default());
    w.stock(s, a, 10);
    let plan = w.ground(&[(s, 2)]);
    assert_eq!((plan.delivery, plan.binding), (MONDAY.plus(1), Binding::Transit));
    assert_eq!(plan.packages[0].ship_day, MONDAY);
    // 55.6 km: ground 1 day; 450 + 13.9 cents a package (whole cents, rounded down), 20 a unit.
    assert_eq!(plan.cost_cents, 463 + 2 * 20);
    w.now = at(MONDAY, 15);
    let plan = w.ground(&[(s, 2)]);
    assert_eq!((plan.delivery, plan.binding), (MONDAY.plus(2), Binding::Cutoff));
}

#[test]
fn weekends_and_holidays_move_the_ship_day() {
    let friday = MONDAY.plus(4);
    let mut w = World::new(at(friday, 16));
    let mut spec = dc("A");
    spec.calendar.holidays.push(MONDAY.plus(7));
    let a = w.node(spec);
    let s = w.sku("S", Capabilities::default());
    w.stock(s, a, 10);
    // Friday after the cut-off; Saturday, Sunday off, Monday a holiday: ships Tuesday.
    let plan = w.ground(&[(s, 1)]);
    assert_eq!(plan.packages[0].ship_day, MONDAY.plus(8));
    assert_eq!((plan.delivery, plan.binding), (MONDAY.plus(9), Binding::Calendar));
}

#[test]
fn capacity_used_up_today_ships_tomorrow() {
    let mut w = World::new(at(MONDAY, 9));
    let mut spec = dc("A");
    spec.capacity = DailyCapacity {
        orders: 100,
        units: 1000,
    };
    let a = w.node(spec);
    let s = w.sku("S", Capabilities::default());
    w.stock(s, a, 10);
    struct Full(NodeId, Day);
    impl CapacityUse for Full {
        fn used(&self, node: NodeId, day: Day) -> (u32, u32) {
            if (node, day) == (self.0, self.1) {
                (100, 0)
            } else {
                (0, 0)
            }
        }
    }
    let r = request(&[(s, 1)], &[ServiceLevel::Ground], PromiseOptions::default());
    let p = w.engine.promise_with(w.now, &r, &Full(a, MONDAY)).unwrap();
    let plan = p[0].plan.as_ref().unwrap();
    assert_eq!(plan.packages[0].ship_day, MONDAY.plus(1));
    assert_eq!(plan.binding, Binding::Capacity);
}

#[test]
fn future_inbound_promises_later_and_counts_only_what_arrives() {
    let mut w = World::new(at(MONDAY, 9));
    let a = w.node(dc("A"));
    let s = w.sku("S", Capabilities::default());
    w.stock(s, a, 3);
    w.inbound(s, a, 20, MONDAY.plus(2));
    // 3 today; 23 from Wednesday.
    assert_eq!(w.ground(&[(s, 3)]).delivery, MONDAY.plus(1));
    let plan = w.ground(&[(s, 10)]);
    assert_eq!(plan.packages[0].ship_day, MONDAY.plus(2));
    assert_eq!((plan.delivery, plan.binding), (MONDAY.plus(3), Binding::Stock));
    let p = w.promise(&[(s, 24)], &[ServiceLevel::Ground], PromiseOptions::default());
    assert_eq!(
        (p[0].plan.as_ref(), &p[0].unserved[..]),
        (None, &[(0, Shortfall::Stock)][..])
    );
}

#[test]
fn capability_filter() {
    let mut w = World::new(at(MONDAY, 9));
    let plain = w.node(dc("PLAIN"));
    let mut hazmat = dc("HAZ");
    hazmat.capabilities = Capabilities::HAZMAT;
    hazmat.location.lat = 5.0; // farther, dearer: chosen only because it may ship the SKU
    let haz = w.node(hazmat);
    let s = w.sku("ACID", Capabilities::HAZMAT);
    w.stock(s, plain, 50);
    w.stock(s, haz, 50);
    let plan = w.ground(&[(s, 1)]);
    assert_eq!(plan.packages[0].node, haz);
    let t = w.sku("ONLY-PLAIN", Capabilities::HAZMAT);
    w.stock(t, plain, 50);
    let p = w.promise(&[(t, 1)], &[ServiceLevel::Ground], PromiseOptions::default());
    assert_eq!(p[0].unserved, vec![(0, Shortfall::Capability)]);
    // Stock at a node with no lane, a lane at a node with no stock: the lane is missing.
    let mut w = World::new(at(MONDAY, 9));
    w.apply(Command::UpsertZone(ZoneSpec {
        zone: ZoneId(1),
        lat: 0.0,
        lon: 0.5,
    }));
    let stocked = w.node(dc("STOCKED"));
    let laned = w.node(dc("LANED"));
    let s = w.sku("S", Capabilities::default());
    w.stock(s, stocked, 5);
    w.stock(s, laned, 0);
    w.lane(laned, ServiceLevel::Ground, 1, 100, 1);
    let mut r = request(&[(s, 1)], &[ServiceLevel::Ground], PromiseOptions::default());
    r.destination = Destination {
        zone: ZoneId(2),
        point: None,
    };
    w.apply(Command::UpsertLane(Lane {
        node: laned,
        zone: ZoneId(2),
        level: ServiceLevel::Ground,
        transit_days: 1,
        cost_per_package_cents: 100,
        cost_per_unit_cents: 1,
    }));
    let p = w.engine.promise(w.now, &r).unwrap();
    assert_eq!(p[0].unserved, vec![(0, Shortfall::Lane)]);
}

#[test]
fn one_package_against_a_cheaper_split() {
    let mut w = World::new(at(MONDAY, 9));
    let (both, left, right) = (w.node(dc("BOTH")), w.node(dc("LEFT")), w.node(dc("RIGHT")));
    let (x, y) = (
        w.sku("X", Capabilities::default()),
        w.sku("Y", Capabilities::default()),
    );
    for (node, sku) in [(both, x), (both, y), (left, x), (right, y)] {
        w.stock(sku, node, 100);
    }
    // BOTH: 500 a package, 100 a unit; LEFT and RIGHT: 300 a package, 10 a unit.
    w.lane(both, ServiceLevel::Ground, 1, 500, 100);
    w.lane(left, ServiceLevel::Ground, 1, 300, 10);
    w.lane(right, ServiceLevel::Ground, 1, 300, 10);
    // 1 unit each: one package 500 + 200 = 700 beats two 2 x 300 + 20 = 620? No: 620 is cheaper.
    let plan = w.ground(&[(x, 1), (y, 1)]);
    assert_eq!(plan.cost_cents, 620);
    assert_eq!(plan.packages.len(), 2);
    // With at most one package, BOTH it is.
    let one = PromiseOptions {
        max_packages: 1,
        ..PromiseOptions::default()
    };
    let p = w.promise(&[(x, 1), (y, 1)], &[ServiceLevel::Ground], one);
    let plan = p[0].plan.as_ref().unwrap();
    assert_eq!(
        (plan.cost_cents, plan.packages.len(), plan.packages[0].node),
        (700, 1, both)
    );
    // Cheaper units at BOTH: one package wins on its own.
    w.lane(both, ServiceLevel::Ground, 1, 500, 5);
    let plan = w.ground(&[(x, 1), (y, 1)]);
    assert_eq!((plan.cost_cents, plan.packages.len()), (510, 1));
    // An earlier date beats any price: make BOTH slow.
    w.lane(both, ServiceLevel::Ground, 3, 1, 1);
    let plan = w.ground(&[(x, 1), (y, 1)]);
    assert_eq!((plan.delivery, plan.packages.len()), (MONDAY.plus(1), 2));
}

#[test]
fn pickup_at_a_named_store() {
    let mut w = World::new(at(MONDAY, 9));
    let mut store = dc("STORE-7");
    store.kind = NodeKind::Store;
    store.capabilities = Capabilities::BOPIS;
    let st = w.node(store);
    let s = w.sku("S", Capabilities::default());
    w.stock(s, st, 5);
    let options = PromiseOptions {
        pickup_store: Some(st),
        ..PromiseOptions::default()
    };
    let p = w.promise(&[(s, 2)], &[ServiceLevel::Pickup, ServiceLevel::Ground], options);
    let pickup = p[0].plan.as_ref().unwrap();
    assert_eq!(
        (pickup.delivery, pickup.cost_cents, pickup.packages[0].node),
        (MONDAY, 0, st)
    );
    assert_eq!(
        p[1].plan.as_ref().unwrap().delivery,
        MONDAY.plus(1),
        "ship from the store"
    );
    // Ship-from-store off: the store cannot ship, but pickup there still works.
    let options = PromiseOptions {
        pickup_store: Some(st),
        ship_from_store: false,
        ..PromiseOptions::default()
    };
    let p = w.promise(&[(s, 2)], &[ServiceLevel::Pickup, ServiceLevel::Ground], options);
    assert!(p[0].plan.is_some());
    assert_eq!(p[1].unserved, vec![(0, Shortfall::Capability)]);
}

#[test]
fn bad_requests_are_typed_errors() {
    let mut w = World::new(at(MONDAY, 9));
    let a = w.node(dc("A"));
    let s = w.sku("S", Capabilities::default());
    let ground = [ServiceLevel::Ground];
    let code = |r: PromiseRequest| w.engine.promise(w.now, &r).unwrap_err().code();
    use crate::error::ErrorCode as C;
    assert_eq!(
        code(request(&[], &ground, PromiseOptions::default())),
        C::EmptyRequest
    );
    let eleven: Vec<_> = (0..11).map(|_| (s, 1)).collect();
    assert_eq!(
        code(request(&eleven, &ground, PromiseOptions::default())),
        C::TooManyLines
    );
    assert_eq!(
        code(request(&[(s, 1), (s, 2)], &ground, PromiseOptions::default())),
        C::DuplicateLine
    );
    assert_eq!(
        code(request(
            &[(SkuId::from_raw(99), 1)],
            &ground,
            PromiseOptions::default()
        )),
        C::UnknownSku
    );
    let mut far = request(&[(s, 1)], &ground, PromiseOptions::default());
    far.destination.zone = ZoneId(42);
    assert_eq!(code(far), C::UnknownZone);
    assert_eq!(
        code(request(&[(s, 1)], &[], PromiseOptions::default())),
        C::InvalidOption
    );
    let none = PromiseOptions {
        max_packages: 0,
        ..PromiseOptions::default()
    };
    assert_eq!(code(request(&[(s, 1)], &ground, none)), C::InvalidOption);
    assert_eq!(
        code(request(
            &[(s, 1)],
            &[ServiceLevel::Pickup],
            PromiseOptions::default()
        )),
        C::InvalidOption
    );
    let not_a_store = PromiseOptions {
        pickup_store: Some(a),
        ..PromiseOptions::default()
    };
    assert_eq!(
        code(request(&[(s, 1)], &[ServiceLevel::Pickup], not_a_store)),
        C::InvalidOption
    );
    let missing = PromiseOptions {
        pickup_store: Some(NodeId::from_raw(77)),
        ..PromiseOptions::default()
    };
    assert_eq!(
        code(request(&[(s, 1)], &[ServiceLevel::Pickup], missing)),
        C::UnknownNode
    );
    let mut closed = dc("CLOSED-STORE");
    closed.kind = NodeKind::Store;
    closed.capabilities = Capabilities::BOPIS;
    closed.status = NodeStatus::Closed;
    let c = w.node(closed);
    let closed = PromiseOptions {
        pickup_store: Some(c),
        ..PromiseOptions::default()
    };
    let e = w
        .engine
        .promise(w.now, &request(&[(s, 1)], &[ServiceLevel::Pickup], closed))
        .unwrap_err();
    assert!(e.to_string().contains("closed"), "{e}");
    // Node settings a promise could not make sense of are refused when the node is upserted.
    for bad in [
        NodeSpec {
            cutoff_minute: 1441,
            ..dc("LATE")
        },
        NodeSpec {
            utc_offset_minutes: 15 * 60,
            ..dc("FAR-EAST")
        },
    ] {
        let e = w.engine.apply(w.now, &Command::UpsertNode(bad)).unwrap_err();
        assert_eq!(e.code(), C::InvalidOption, "{e}");
    }
}

#[test]
fn promise_and_hold_holds_the_plan_and_fails_cleanly_when_stock_moved() {
    use crate::command::{HoldOutcome, RefusalReason};
    let mut w = World::new(at(MONDAY, 9));
    let near = w.node(dc("NEAR"));
    let mut far = dc("FAR");
    far.location.lat = 9.0;
    let far = w.node(far);
    let x = w.sku("X", Capabilities::default());
    w.stock(x, near, 5);
    w.stock(x, far, 50);
    let ground = |q| request(&[(x, q)], &[ServiceLevel::Ground], PromiseOptions::default());
    let plan = w
        .engine
        .plan_hold(w.now, &ground(3), RequestId(900), 60_000)
        .unwrap();
    assert_eq!(
        plan.promise.as_ref().unwrap().plan.as_ref().unwrap().packages[0].node,
        near
    );
    let held = w.apply(plan.command.unwrap());
    let Outcome::Hold(HoldOutcome::Granted {
        lines,
        repeated: false,
        ..
    }) = held
    else {
        panic!("{held:?}")
    };
    assert_eq!((lines[0].node, lines[0].granted), (Some(near), 3));
    assert_eq!(w.engine.atp(x, near, w.now, None).unwrap(), 2);
    // A retry answers the first hold, even though the plan would now be another.
    let again = w
        .engine
        .plan_hold(w.now, &ground(3), RequestId(900), 60_000)
        .unwrap();
    let repeat = w.apply(again.command.unwrap());
    assert!(
        matches!(repeat, Outcome::Hold(HoldOutcome::Granted { repeated: true, .. })),
        "{repeat:?}"
    );
    assert_eq!(w.engine.atp(x, near, w.now, None).unwrap(), 2);
    // Stock moves between the promise and the hold: refused, nothing changed.
    let plan = w
        .engine
        .plan_hold(w.now, &ground(2), RequestId(901), 60_000)
        .unwrap();
    let adjust = w.request();
    w.apply(Command::AdjustOnHand {
        request: adjust,
        sku: x,
        node: near,
        delta: -1,
        reason: crate::command::AdjustReason::Damage,
    });
    let refused = w.apply(plan.command.unwrap());
    let Outcome::Hold(HoldOutcome::Refused { lines }) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(
        (lines[0].reason, lines[0].available),
        (RefusalReason::InsufficientAtp, 1)
    );
    assert_eq!(w.engine.atp(x, near, w.now, None).unwrap(), 1);
    assert!(w.engine.hold(RequestId(901)).is_none());
    // Stock still arriving: the hold claims the day it ships, not today's stock.
    let y = w.sku("Y", Capabilities::default());
    w.stock(y, near, 0);
    w.inbound(y, near, 10, MONDAY.plus(2));
    let r = request(&[(y, 4)], &[ServiceLevel::Ground], PromiseOptions::default());
    let plan = w.engine.plan_hold(w.now, &r, RequestId(902), 60_000).unwrap();
    assert_eq!(plan.promise.unwrap().plan.unwrap().binding, Binding::Stock);
    assert!(matches!(
        w.apply(plan.command.unwrap()),
        Outcome::Hold(HoldOutcome::Granted { .. })
    ));
    assert_eq!(w.engine.atp(y, near, w.now, Some(MONDAY.plus(2))).unwrap(), 6);
    // One level only.
    let two = request(
        &[(x, 1)],
        &[ServiceLevel::Ground, ServiceLevel::NextDay],
        PromiseOptions::default(),
    );
    let e = w
        .engine
        .plan_hold(w.now, &two, RequestId(903), 60_000)
        .unwrap_err();
    assert_eq!(e.code(), crate::error::ErrorCode::InvalidOption);
}

#[test]
fn zones_and_lanes_survive_a_snapshot() {
    use crate::snapshot::{SnapshotFile, snapshot_name, write_snapshot};
    use crate::storage::{SimStorage, Storage};
    let mut w = World::new(at(MONDAY, 9));
    let a = w.node(dc("A"));
    let s = w.sku("S", Capabilities::default());
    w.stock(s, a, 10);
    w.lane(a, ServiceLevel::NextDay, 1, 999, 7);
    w.apply(Command::UpsertZone(ZoneSpec {
        zone: ZoneId(9),
        lat: 40.0,
        lon: -3.5,
    }));
    let storage = SimStorage::new();
    let info = write_snapshot(&w.engine, &storage).unwrap();
    let bytes = storage.read(&snapshot_name(info.lsn)).unwrap();
    let loaded = SnapshotFile::parse(&bytes).unwrap().load(None).unwrap();
    assert_eq!(loaded.state_digest(), w.engine.state_digest());
    let network = loaded.network();
    assert_eq!(
        network
            .lane(a, ZoneId(1), ServiceLevel::NextDay)
            .map(|l| l.cost_per_package_cents),
        Some(999)
    );
    assert_eq!(
        network.zone(ZoneId(9)).map(|z| (z.lat, z.lon)),
        Some((40.0, -3.5))
    );
    let r = request(
        &[(s, 1)],
        &[ServiceLevel::Ground, ServiceLevel::NextDay],
        PromiseOptions::default(),
    );
    assert_eq!(
        loaded.promise(w.now, &r).unwrap(),
        w.engine.promise(w.now, &r).unwrap()
    );
    // The digest sees lanes: another price is another state.
    w.lane(a, ServiceLevel::NextDay, 1, 998, 7);
    assert_ne!(loaded.state_digest(), w.engine.state_digest());
}

// ---- brute force ---------------------------------------------------------------------------

/// A small random network: nodes with random calendars, cut-offs, capacities and capabilities;
/// SKUs with stock and inbound lots; explicit lanes for some nodes; and a cart.
#[derive(Clone, Debug)]
struct Case {
    nodes: Vec<(u8, u16, u8, u32, bool, f32, u32)>, // weekdays, cutoff, processing, unit capacity, hazmat, lat, order capacity
    skus: Vec<bool>,                                // requires hazmat
    stock: Vec<(usize, usize, u32, u32, u8)>,       // sku, node, on hand, inbound, arrives in days
    lanes: Vec<(usize, u8, u8, u32, u32)>,          // node, level, transit, package, unit
    /// Per SKU: in the cart with this quantity, or not.
    cart: Vec<Option<u32>>,
    hour: u64,
    max_packages: u8,
    /// Orders routed before the cart (SKU, quantity): they use stock and node capacity.
    routed: Vec<(usize, u32)>,
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..=5, 2usize..=4).prop_flat_map(|(n_nodes, n_skus)| {
        (
            proptest::collection::vec(
                (
                    prop_oneof![Just(0b1_1111u8), Just(0b111_1111), Just(0b1_0101)],
                    prop_oneof![Just(10 * 60u16), Just(14 * 60), Just(23 * 60)],
                    0u8..=2,
                    prop_oneof![Just(0u32), Just(3), Just(10)],
                    proptest::bool::weighted(0.2),
                    -3.0f32..3.0,
                    prop_oneof![Just(0u32), Just(1), Just(2)],
                ),
                n_nodes,
            ),
            proptest::collection::vec(proptest::bool::weighted(0.2), n_skus),
            proptest::collection::vec(
                (0..n_skus, 0..n_nodes, 0u32..6, 0u32..8, 1u8..6),
                n_nodes * n_skus,
            ),
            proptest::collection::vec((0..n_nodes, 0u8..3, 0u8..4, 0u32..900, 0u32..60), 0..5),
            proptest::collection::vec(proptest::option::weighted(0.8, 1u32..4), n_skus),
            0u64..24,
            1u8..=3,
            proptest::collection::vec((0..n_skus, 1u32..3), 0..4),
        )
            .prop_map(
                |(nodes, skus, stock, lanes, cart, hour, max_packages, routed)| Case {
                    nodes,
                    skus,
                    stock,
                    lanes,
                    cart,
                    hour,
                    max_packages,
                    routed,
                },
            )
    })
}

fn build(case: &Case) -> (World, Vec<NodeId>, Vec<SkuId>) {
    let mut w = World::new(at(MONDAY.plus(2), case.hour));
    let nodes: Vec<NodeId> = case
        .nodes
        .iter()
        .enumerate()
        .map(
            |(i, &(weekdays, cutoff, processing, units, hazmat, lat, orders))| {
                let mut spec = dc(&format!("N{i}"));
                spec.calendar.weekdays = weekdays;
                spec.cutoff_minute = cutoff;
                spec.processing_days = processing;
                spec.capacity = DailyCapacity { orders, units };
                spec.capabilities = if hazmat {
                    Capabilities::HAZMAT
                } else {
                    Capabilities::default()
                };
                spec.location.lat = lat;
                spec.cost_factor_milli = 800 + 100 * i as u32;
                w.node(spec)
            },
        )
        .collect();
    let skus: Vec<SkuId> = case
        .skus
        .iter()
        .enumerate()
        .map(|(i, &hazmat)| {
            let required = if hazmat {
                Capabilities::HAZMAT
            } else {
                Capabilities::default()
            };
            w.sku(&format!("S{i}"), required)
        })
        .collect();
    let mut stocked = HashMap::new();
    for &(s, n, on_hand, inbound, days) in &case.stock {
        if stocked.insert((s, n), ()).is_none() {
            w.stock(skus[s], nodes[n], on_hand);
            if inbound > 0 {
                let arrival = w.now.day().plus(u32::from(days));
                w.inbound(skus[s], nodes[n], inbound, arrival);
            }
        }
    }
    for &(n, level, transit, package, unit) in &case.lanes {
        w.lane(
            nodes[n],
            lanes::SHIPPING[usize::from(level)],
            transit,
            package,
            unit,
        );
    }
    for (i, &(s, q)) in case.routed.iter().enumerate() {
        let r = request(
            &[(skus[s], q)],
            &[ServiceLevel::Ground],
            PromiseOptions::default(),
        );
        let plan = w
            .engine
            .plan_route(w.now, &r, RequestId(7_000 + i as u128))
            .unwrap();
        if let Some(command) = plan.command {
            assert!(matches!(
                w.apply(command),
                Outcome::Route(crate::command::HoldOutcome::Granted { .. })
            ));
        }
    }
    (w, nodes, skus)
}

/// The best (delivery, cost) over every assignment of lines to nodes, computed from the
/// engine's public queries and the ship-day rules, not from the search's candidates.
fn brute_force(
    w: &World,
    nodes: &[NodeId],
    lines: &[(SkuId, u32)],
    level: ServiceLevel,
    max_packages: usize,
) -> Option<(u32, u64)> {
    let network = w.engine.network();
    let today = w.now.day();
    let capacity = w.engine.capacity.read();
    // For each (line, node): the first day with the units promisable, or None.
    let ready = |sku: SkuId, node: NodeId, q: u32| -> Option<Day> {
        let spec = network.node(node)?;
        let required = w.engine.sku_required(sku).ok()?;
        if spec.status != NodeStatus::Open || !spec.capabilities.contains(required) {
            return None;
        }
        (0..40)
            .map(|d| today.plus(d))
            .find(|&d| w.engine.atp(sku, node, w.now, Some(d)).unwrap() >= i64::from(q))
    };
    let ready: Vec<Vec<Option<Day>>> = lines
        .iter()
        .map(|&(sku, q)| nodes.iter().map(|&n| ready(sku, n, q)).collect())
        .collect();
    let dest = Destination {
        zone: ZoneId(1),
        point: None,
    };
    let point = network.zone(ZoneId(1)).map(|z| (z.lat, z.lon));
    let mut best: Option<(u32, u64)> = None;
    let n = nodes.len();
    for code in 0..n.pow(lines.len() as u32) {
        let choice: Vec<usize> = (0..lines.len()).map(|i| code / n.pow(i as u32) % n).collect();
        let mut used: Vec<usize> = choice.clone();
        used.sort_unstable();
        used.dedup();
        if used.len() > max_packages {
            continue;
        }
        let mut key = Some((0u32, 0u64));
        for &u in &used {
            let node = nodes[u];
            let members: Vec<usize> = (0..lines.len()).filter(|&i| choice[i] == u).collect();
            let days: Option<Vec<Day>> = members.iter().map(|&i| ready[i][u]).collect();
            let units: u32 = members.iter().map(|&i| lines[i].1).sum();
            let spec = network.node(node).unwrap();
            let shipped = days.and_then(|d| {
                let r = d.into_iter().max().unwrap();
                ship_day(node, spec, w.now, r, units, &*capacity)
            });
            let l = lane(&network, node, &dest, point, level, &mut Distances::default());
            match (shipped, l, key.as_mut()) {
                (Some(s), Some(l), Some(k)) => {
                    k.0 = k.0.max(s.day.0 + u32::from(l.transit_days));
                    k.1 += scaled(l.cost_per_package_cents, spec.cost_factor_milli)
                        + scaled(l.cost_per_unit_cents, spec.cost_factor_milli) * u64::from(units);
                }
                _ => key = None,
            }
        }
        if let Some(k) = key
            && best.is_none_or(|b| k < b)
        {
            best = Some(k);
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Every plan is feasible (stock on its ship day, capabilities, the package limit), and
    /// trying every assignment finds neither an earlier date nor, at that date, a lower cost.
    #[test]
    fn no_plan_is_beaten_by_brute_force(case in case()) {
        let (w, nodes, skus) = build(&case);
        let mut lines: Vec<(SkuId, u32)> =
            case.cart.iter().zip(&skus).filter_map(|(q, &s)| q.map(|q| (s, q))).collect();
        if lines.is_empty() {
            lines.push((skus[0], 1));
        }
        let options = PromiseOptions { max_packages: case.max_packages, ..PromiseOptions::default() };
        let levels = lanes::SHIPPING;
        let answers = w.promise(&lines, &levels, options.clone());
        for (answer, level) in answers.iter().zip(levels) {
            let expected = brute_force(&w, &nodes, &lines, level, usize::from(case.max_packages));
            let got = answer.plan.as_ref().map(|p| (p.delivery.0, p.cost_cents));
            prop_assert_eq!(got, expected, "level {:?}: {:?}", level, answer);
            // A listing promise of each SKU is the one-unit, one-line promise's date.
            let pairs: Vec<ListingPair> = lines
                .iter()
                .map(|&(sku, _)| ListingPair { sku, destination: Destination { zone: ZoneId(1), point: None } })
                .collect();
            let listed = w.engine.earliest_deliveries(w.now, &pairs, level).unwrap();
            // The same destination given as a point (the zone's centre) in a mixed chunk: the
            // cached and uncached paths agree.
            let mixed: Vec<ListingPair> = pairs
                .iter()
                .flat_map(|p| {
                    let at_point = Destination { zone: ZoneId(1), point: Some((0.0, 0.5)) };
                    [*p, ListingPair { destination: at_point, ..*p }]
                })
                .collect();
            let twice = w.engine.earliest_deliveries(w.now, &mixed, level).unwrap();
            for (i, got) in listed.iter().enumerate() {
                prop_assert_eq!(twice[2 * i].map(|e| e.delivery), got.map(|e| e.delivery));
                prop_assert_eq!(twice[2 * i + 1].map(|e| e.delivery), got.map(|e| e.delivery));
            }
            for (pair, got) in pairs.iter().zip(listed) {
                let one = w.promise(&[(pair.sku, 1)], &[level], PromiseOptions::default());
                prop_assert_eq!(got.map(|e| e.delivery), one[0].plan.as_ref().map(|p| p.delivery));
            }
            if let Some(plan) = &answer.plan {
                prop_assert!(plan.packages.len() <= usize::from(case.max_packages));
                let mut covered: Vec<usize> = plan.packages.iter().flat_map(|p| p.lines.clone()).collect();
                covered.sort_unstable();
                prop_assert_eq!(covered, (0..lines.len()).collect::<Vec<_>>());
                for p in &plan.packages {
                    let spec = w.engine.network().node(p.node).cloned().unwrap();
                    prop_assert!(is_working(&spec.calendar, p.ship_day));
                    let units: u32 = p.lines.iter().map(|&i| lines[i].1).sum();
                    prop_assert!(spec.capacity.units == 0 || units <= spec.capacity.units);
                    for &i in &p.lines {
                        let (sku, q) = lines[i];
                        prop_assert!(spec.capabilities.contains(w.engine.sku_required(sku).unwrap()));
                        prop_assert!(w.engine.atp(sku, p.node, w.now, Some(p.ship_day)).unwrap() >= i64::from(q));
                    }
                }
            }
        }
        // The engine's own checks agree the plan is feasible: routing it succeeds.
        let r = request(&lines, &[levels[0]], options);
        let plan = w.engine.plan_route(w.now, &r, RequestId(9_999)).unwrap();
        if let Some(command) = plan.command {
            let routed = w.engine.apply(w.now, &command).unwrap();
            prop_assert!(matches!(routed, Outcome::Route(crate::command::HoldOutcome::Granted { .. })), "{:?}", routed);
            w.engine.check_invariants().map_err(TestCaseError::fail)?;
        }
    }
}

mod reroute;
mod route;

#[test]
fn allow_partial_promises_what_can_be_served_and_reports_the_rest() {
    let mut w = World::new(at(MONDAY, 9));
    let nodes: Vec<NodeId> = ["A", "B", "C"].iter().map(|n| w.node(dc(n))).collect();
    let skus: Vec<SkuId> = ["X", "Y", "Z"]
        .iter()
        .map(|s| w.sku(s, Capabilities::default()))
        .collect();
    // Each SKU at its own node; a fourth SKU nowhere.
    for (&s, &n) in skus.iter().zip(&nodes) {
        w.stock(s, n, 5);
    }
    let nowhere = w.sku("NOWHERE", Capabilities::default());
    let lines = [(skus[0], 1), (skus[1], 1), (skus[2], 1), (nowhere, 1)];
    let two = |allow_partial| PromiseOptions {
        max_packages: 2,
        allow_partial,
        ..PromiseOptions::default()
    };
    // All or nothing: nothing, with each line's reason.
    let p = w.promise(&lines, &[ServiceLevel::Ground], two(false)).remove(0);
    assert_eq!(p.plan, None);
    assert_eq!(p.unserved, vec![(3, Shortfall::Stock)]);
    // Partial: two packages reach two of the three stocked lines; the third is reported as a
    // package-limit shortfall and the missing SKU as stock.
    let p = w.promise(&lines, &[ServiceLevel::Ground], two(true)).remove(0);
    let plan = p.plan.expect("a partial plan");
    let mut planned: Vec<usize> = plan.packages.iter().flat_map(|p| p.lines.clone()).collect();
    planned.sort_unstable();
    assert_eq!(planned.len(), 2);
    let mut reasons = p.unserved.clone();
    reasons.sort_unstable_by_key(|u| u.0);
    assert_eq!(reasons.len(), 2);
    assert!(reasons.contains(&(3, Shortfall::Stock)));
    assert!(
        reasons
            .iter()
            .any(|&(i, why)| i < 3 && why == Shortfall::Packages && !planned.contains(&i))
    );
    // Three packages allowed: every stocked line.
    let three = PromiseOptions {
        max_packages: 3,
        allow_partial: true,
        ..PromiseOptions::default()
    };
    let p = w.promise(&lines, &[ServiceLevel::Ground], three).remove(0);
    assert_eq!(p.plan.expect("a plan").packages.len(), 3);
    assert_eq!(p.unserved, vec![(3, Shortfall::Stock)]);
}

#[test]
fn a_search_that_runs_out_of_budget_says_so_instead_of_a_certain_shortfall() {
    let mut w = World::new(at(MONDAY, 9));
    let (a, b) = (w.node(dc("A")), w.node(dc("B")));
    let (x, y) = (
        w.sku("X", Capabilities::default()),
        w.sku("Y", Capabilities::default()),
    );
    w.stock(x, a, 5);
    w.stock(y, b, 5);
    // One package, and no node has both lines: no plan exists, but only a finished search
    // knows that.
    let one = |allow_partial| PromiseOptions {
        max_packages: 1,
        allow_partial,
        ..PromiseOptions::default()
    };
    let within = |options, budget| {
        let capacity = w.engine.capacity.read();
        let req = request(&[(x, 1), (y, 1)], &[ServiceLevel::Ground], options);
        w.engine
            .promise_within(w.now, &req, &*capacity, budget)
            .unwrap()
            .remove(0)
    };
    let finished = within(one(false), search::SEARCH_BUDGET);
    assert_eq!(finished.plan, None);
    assert_eq!(
        finished.unserved,
        vec![(0, Shortfall::Packages), (1, Shortfall::Packages)]
    );
    assert_eq!(
        finished,
        w.promise(&[(x, 1), (y, 1)], &[ServiceLevel::Ground], one(false))
            .remove(0)
    );
    let cut = within(one(false), 1);
    assert_eq!(cut.plan, None);
    assert_eq!(cut.unserved, vec![(0, Shortfall::Search), (1, Shortfall::Search)]);
    // Partial: the greedy package's line is promised, the other reported as unsearched.
    let partial = within(one(true), 1);
    let plan = partial.plan.expect("the line the greedy package reaches");
    assert_eq!(plan.packages.len(), 1);
    let kept = plan.packages[0].lines[0];
    assert_eq!(partial.unserved, vec![(1 - kept, Shortfall::Search)]);
    assert_eq!(Shortfall::Search.name(), "search");
}
