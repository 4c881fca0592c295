//! Hand-checked scenarios through the public engine API: the ATP arithmetic end to end, holds and
//! their life cycle, idempotent retries, expiry, future-dated holds, node status and `Any` nodes.

use promised_engine::{
    Command, Day, Engine, EngineConfig, HoldLineRequest, HoldOutcome, HoldState, LineQuantity, NodeChoice,
    NodeId, NodeSpec, NodeStatus, Outcome, Quantity, RefusalReason, RequestId, SkuId, Timestamp,
};

const DAY_MS: u64 = 86_400_000;
const T0: Timestamp = Timestamp(20_780 * DAY_MS + 10 * 3_600_000);

struct World {
    engine: Engine,
    next: u128,
    now: Timestamp,
}

impl World {
    fn new(nodes: &[&str], skus: &[&str]) -> Self {
        let engine = Engine::new(EngineConfig {
            sku_shards: 4,
            request_shards: 4,
            ..EngineConfig::default()
        });
        for n in nodes {
            engine
                .apply(T0, &Command::UpsertNode(NodeSpec::open(*n)))
                .unwrap();
        }
        for s in skus {
            engine
                .apply(
                    T0,
                    &Command::UpsertSku {
                        name: s.to_string(),
                        required: Default::default(),
                    },
                )
                .unwrap();
        }
        Self {
            engine,
            next: 1000,
            now: T0,
        }
    }
    fn id(&mut self) -> RequestId {
        self.next += 1;
        RequestId(self.next)
    }
    fn sku(&self, name: &str) -> SkuId {
        self.engine.sku_id(name).unwrap()
    }
    fn node(&self, name: &str) -> NodeId {
        self.engine.node_id(name).unwrap()
    }
    fn apply(&mut self, c: Command) -> Outcome {
        let out = self.engine.apply(self.now, &c).unwrap();
        self.engine.check_invariants().unwrap();
        out
    }
    fn set(&mut self, sku: &str, node: &str, on_hand: u32) {
        let (sku, node) = (self.sku(sku), self.node(node));
        let seq = self.engine.feed_seq(node) + 1;
        let request = self.id();
        self.apply(Command::SetOnHand {
            request,
            node,
            feed_seq: seq,
            counts: vec![(sku, on_hand)],
        });
    }
    fn inbound(&mut self, sku: &str, node: &str, q: i64, day_offset: u32, reference: &str) {
        let (sku, node) = (self.sku(sku), self.node(node));
        let request = self.id();
        let arrival = self.now.day().plus(day_offset);
        self.apply(Command::AddInbound {
            request,
            sku,
            node,
            reference: reference.into(),
            quantity: Quantity::new(q).unwrap(),
            arrival,
        });
    }
    fn atp(&self, sku: &str, node: &str, day_offset: u32) -> i64 {
        let day = self.now.day().plus(day_offset);
        self.engine
            .atp(self.sku(sku), self.node(node), self.now, Some(day))
            .unwrap()
    }
    fn hold(&mut self, lines: &[(&str, Option<&str>, i64, u32)], partial: bool) -> (RequestId, HoldOutcome) {
        let id = self.id();
        let lines = lines
            .iter()
            .map(|&(s, n, q, need)| HoldLineRequest {
                sku: self.sku(s),
                node: n.map_or(NodeChoice::Any, |n| NodeChoice::Node(self.node(n))),
                quantity: Quantity::new(q).unwrap(),
                need_day: (need > 0).then(|| self.now.day().plus(need)),
            })
            .collect();
        let Outcome::Hold(out) = self.apply(Command::Hold {
            hold: id,
            lines,
            ttl_ms: 15 * 60_000,
            partial,
        }) else {
            panic!("hold answers Hold")
        };
        (id, out)
    }
}

/// The answer to a commit, release, cancel or ship that took effect (or was retried).
fn changed(hold: RequestId, state: HoldState, repeated: bool) -> Outcome {
    Outcome::HoldChanged {
        hold,
        state,
        repeated,
    }
}

fn granted(out: &HoldOutcome) -> Vec<u32> {
    match out {
        HoldOutcome::Granted { lines, .. } => lines.iter().map(|l| l.granted).collect(),
        HoldOutcome::Refused { .. } => vec![],
    }
}

#[test]
fn worked_example_end_to_end() {
    let mut w = World::new(&["DC1"], &["A"]);
    w.set("A", "DC1", 50);
    w.inbound("A", "DC1", 25, 0, "PO-1");
    let (h, out) = w.hold(&[("A", Some("DC1"), 10, 0)], false);
    assert_eq!(granted(&out), vec![10]);
    let request = w.id();
    w.apply(Command::Commit { request, hold: h });
    assert_eq!(w.atp("A", "DC1", 0), 65);
    let p = w.engine.position(w.sku("A"), w.node("DC1")).unwrap().unwrap();
    assert_eq!((p.on_hand, p.reserved, p.allocated), (50, 0, 10));
}

#[test]
fn all_or_nothing_and_partial_holds() {
    let mut w = World::new(&["DC1", "DC2"], &["A", "B"]);
    w.set("A", "DC1", 5);
    w.set("B", "DC1", 2);
    let (_, out) = w.hold(&[("A", Some("DC1"), 3, 0), ("B", Some("DC1"), 3, 0)], false);
    let HoldOutcome::Refused { lines } = out else {
        panic!("must refuse")
    };
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0].line_idx, lines[0].available, lines[0].reason),
        (1, 2, RefusalReason::InsufficientAtp)
    );
    assert_eq!(w.atp("A", "DC1", 0), 5, "a refused hold takes nothing");
    let (_, out) = w.hold(&[("A", Some("DC1"), 3, 0), ("B", Some("DC1"), 3, 0)], true);
    assert_eq!(granted(&out), vec![3, 2]);
    assert_eq!((w.atp("A", "DC1", 0), w.atp("B", "DC1", 0)), (2, 0));
    // Not stocked at DC2 at all.
    let (_, out) = w.hold(&[("A", Some("DC2"), 1, 0)], false);
    let HoldOutcome::Refused { lines } = out else {
        panic!()
    };
    assert_eq!(lines[0].reason, RefusalReason::NotStocked);
}

#[test]
fn hold_life_cycle_and_idempotent_retries() {
    let mut w = World::new(&["DC1"], &["A"]);
    w.set("A", "DC1", 10);
    let (h, first) = w.hold(&[("A", Some("DC1"), 4, 0)], false);
    // Retrying the hold returns the first answer and takes nothing more.
    let lines = vec![HoldLineRequest {
        sku: w.sku("A"),
        node: NodeChoice::Node(w.node("DC1")),
        quantity: Quantity::new(4).unwrap(),
        need_day: None,
    }];
    let retry = w.apply(Command::Hold {
        hold: h,
        lines,
        ttl_ms: 60_000,
        partial: false,
    });
    let Outcome::Hold(HoldOutcome::Granted {
        repeated: true,
        lines: rl,
        ..
    }) = retry
    else {
        panic!("{retry:?}")
    };
    assert_eq!(
        rl,
        match first {
            HoldOutcome::Granted { lines, .. } => lines,
            _ => panic!(),
        }
    );
    assert_eq!(w.atp("A", "DC1", 0), 6);

    let (a, d) = (w.sku("A"), w.node("DC1"));
    let r1 = w.id();
    let partial = vec![LineQuantity {
        sku: a,
        node: d,
        quantity: Quantity::new(1).unwrap(),
    }];
    let out = w.apply(Command::Release {
        request: r1,
        hold: h,
        lines: partial.clone(),
    });
    assert_eq!(out, changed(h, HoldState::Held, false));
    // The same partial release again, same request id: nothing more is released.
    let out = w.apply(Command::Release {
        request: r1,
        hold: h,
        lines: partial,
    });
    assert_eq!(out, changed(h, HoldState::Held, true));
    assert_eq!(w.atp("A", "DC1", 0), 7);

    let c = w.id();
    assert_eq!(
        w.apply(Command::Commit { request: c, hold: h }),
        changed(h, HoldState::Committed, false)
    );
    assert_eq!(
        w.apply(Command::Commit { request: c, hold: h }),
        changed(h, HoldState::Committed, true)
    );
    let s = w.id();
    let ship_two = vec![LineQuantity {
        sku: a,
        node: d,
        quantity: Quantity::new(2).unwrap(),
    }];
    w.apply(Command::Ship {
        request: s,
        hold: h,
        lines: ship_two,
    });
    let p = w.engine.position(a, d).unwrap().unwrap();
    assert_eq!((p.on_hand, p.allocated), (8, 1));
    let x = w.id();
    let out = w.apply(Command::CancelAllocation { request: x, hold: h });
    assert_eq!(out, changed(h, HoldState::Cancelled, false));
    assert_eq!(w.atp("A", "DC1", 0), 8);
    // A retried commit still gets its first answer, even though the allocation is now cancelled.
    assert_eq!(
        w.apply(Command::Commit { request: c, hold: h }),
        changed(h, HoldState::Committed, true)
    );
}

#[test]
fn expiry_by_tick_and_on_late_commit() {
    let mut w = World::new(&["DC1"], &["A"]);
    w.set("A", "DC1", 10);
    let (h1, _) = w.hold(&[("A", Some("DC1"), 3, 0)], false);
    let (h2, _) = w.hold(&[("A", Some("DC1"), 4, 0)], false);
    assert_eq!(w.atp("A", "DC1", 0), 3);
    w.now = T0.saturating_add_ms(15 * 60_000 - 1);
    assert_eq!(
        w.apply(Command::Tick),
        Outcome::Ticked {
            expired: 0,
            forgotten: 0
        }
    );
    w.now = T0.saturating_add_ms(15 * 60_000);
    // A commit at or after expiry is refused and frees the stock, even before any tick.
    let c = w.id();
    let out = w.apply(Command::Commit { request: c, hold: h1 });
    assert_eq!(
        out,
        Outcome::HoldRefused {
            hold: h1,
            reason: RefusalReason::HoldExpired,
            repeated: false
        }
    );
    assert_eq!(w.atp("A", "DC1", 0), 6);
    assert_eq!(
        w.apply(Command::Tick),
        Outcome::Ticked {
            expired: 1,
            forgotten: 0
        }
    );
    assert_eq!(w.atp("A", "DC1", 0), 10);
    assert_eq!(w.engine.hold(h2).unwrap().state, HoldState::Expired);
    // A day later the finished records are forgotten.
    w.now = w.now.saturating_add_ms(DAY_MS);
    let out = w.apply(Command::Tick);
    assert!(
        matches!(out, Outcome::Ticked { forgotten, .. } if forgotten >= 2),
        "{out:?}"
    );
    assert!(w.engine.hold(h1).is_none());
}

#[test]
fn future_hold_on_inbound_supply() {
    let mut w = World::new(&["DC1"], &["A"]);
    w.set("A", "DC1", 5);
    w.inbound("A", "DC1", 10, 5, "PO-9");
    assert_eq!((w.atp("A", "DC1", 0), w.atp("A", "DC1", 5)), (5, 15));
    // 12 units: refused for today, granted for day 5 against the lot.
    let (_, out) = w.hold(&[("A", Some("DC1"), 12, 0)], false);
    assert!(matches!(out, HoldOutcome::Refused { .. }));
    let (h, out) = w.hold(&[("A", Some("DC1"), 12, 5)], false);
    assert_eq!(granted(&out), vec![12]);
    // Today's stock is now partly spoken for: only 3 can be promised today, and nothing more later.
    assert_eq!(
        (w.atp("A", "DC1", 0), w.atp("A", "DC1", 5), w.atp("A", "DC1", 30)),
        (3, 3, 3)
    );
    let tl = w.engine.timeline(w.sku("A"), w.node("DC1"), w.now).unwrap();
    assert_eq!(tl.iter().map(|p| p.atp).collect::<Vec<_>>(), vec![3, 3]);
    // Cancelling the lot leaves the future claim short: ATP goes negative from day 5 on.
    let request = w.id();
    let (a, d) = (w.sku("A"), w.node("DC1"));
    w.apply(Command::CancelInbound {
        request,
        sku: a,
        node: d,
        reference: "PO-9".into(),
    });
    assert_eq!(w.atp("A", "DC1", 5), -7);
    let r = w.id();
    w.apply(Command::Release {
        request: r,
        hold: h,
        lines: vec![],
    });
    assert_eq!(w.atp("A", "DC1", 5), 5);
    assert_eq!(w.engine.position(a, d).unwrap().unwrap().future_claims, vec![]);
}

#[test]
fn receive_moves_lot_to_on_hand() {
    let mut w = World::new(&["DC1"], &["A"]);
    w.set("A", "DC1", 1);
    w.inbound("A", "DC1", 9, 3, "ASN-1");
    let (a, d) = (w.sku("A"), w.node("DC1"));
    let request = w.id();
    w.apply(Command::ReceiveInbound {
        request,
        sku: a,
        node: d,
        reference: "ASN-1".into(),
    });
    let p = w.engine.position(a, d).unwrap().unwrap();
    assert_eq!((p.on_hand, p.lots.len()), (10, 0));
    assert_eq!(w.atp("A", "DC1", 0), 10);
}

#[test]
fn safety_stock_and_node_status() {
    let mut w = World::new(&["DC1", "ST1"], &["A"]);
    w.set("A", "DC1", 10);
    w.set("A", "ST1", 4);
    let (a, d) = (w.sku("A"), w.node("DC1"));
    let request = w.id();
    w.apply(Command::SetSafetyStock {
        request,
        sku: a,
        node: d,
        quantity: 3,
    });
    assert_eq!(w.engine.network_atp(a, w.now, None).unwrap(), 11);
    let mut spec = NodeSpec::open("ST1");
    spec.status = NodeStatus::Closed;
    w.apply(Command::UpsertNode(spec));
    assert_eq!(w.engine.network_atp(a, w.now, None).unwrap(), 7);
    let (_, out) = w.hold(&[("A", Some("ST1"), 1, 0)], false);
    let HoldOutcome::Refused { lines } = out else {
        panic!()
    };
    assert_eq!(lines[0].reason, RefusalReason::NodeNotOpen);
    // `Any` picks the open node with the most ATP.
    let (_, out) = w.hold(&[("A", None, 7, 0)], false);
    let HoldOutcome::Granted { lines, .. } = out else {
        panic!()
    };
    assert_eq!(lines[0].node, Some(d));
}

#[test]
fn stale_and_repeated_feeds() {
    let mut w = World::new(&["DC1"], &["A"]);
    let (a, d) = (w.sku("A"), w.node("DC1"));
    let r = w.id();
    let feed = Command::SetOnHand {
        request: r,
        node: d,
        feed_seq: 5,
        counts: vec![(a, 7)],
    };
    assert_eq!(w.apply(feed.clone()), Outcome::Fed { repeated: false });
    assert_eq!(w.apply(feed), Outcome::Fed { repeated: true });
    let r2 = w.id();
    let stale = Command::SetOnHand {
        request: r2,
        node: d,
        feed_seq: 5,
        counts: vec![(a, 1)],
    };
    let err = w.engine.apply(w.now, &stale).unwrap_err();
    assert_eq!(err.code(), promised_engine::ErrorCode::StaleFeedSequence);
    assert_eq!(w.atp("A", "DC1", 0), 7);
    assert_eq!(w.engine.feed_seq(d), 5);
}

#[test]
fn day_is_utc() {
    assert_eq!(T0.day(), Day(20_780));
    assert_eq!(Day(20_780).to_string(), "2026-11-23");
}

/// Regression: a commit could overflow `allocated` (u32) after `reserved` was already lowered,
/// leaving the ledger inconsistent and the next hold granted against stock that was not there.
#[test]
fn holds_that_would_overflow_the_counters_are_refused() {
    let mut w = World::new(&["DC1"], &["A"]);
    let (a, d) = (w.sku("A"), w.node("DC1"));
    w.set("A", "DC1", 1 << 31);
    let request = w.id();
    w.apply(Command::AdjustOnHand {
        request,
        sku: a,
        node: d,
        delta: (1 << 31) - 1,
        reason: promised_engine::AdjustReason::Found,
    });
    w.inbound("A", "DC1", 1 << 31, 0, "PO-BIG");
    let (h1, out) = w.hold(&[("A", Some("DC1"), 1 << 31, 0)], false);
    assert_eq!(granted(&out), vec![1 << 31]);
    let c = w.id();
    w.apply(Command::Commit { request: c, hold: h1 });
    let (h2, out) = w.hold(&[("A", Some("DC1"), (1 << 31) - 1, 0)], false);
    assert_eq!(granted(&out), vec![(1 << 31) - 1]);
    let before = w.engine.state_digest();
    // reserved + allocated would pass u32::MAX: a typed error, and nothing changes.
    let id = w.id();
    let line = HoldLineRequest {
        sku: a,
        node: NodeChoice::Node(d),
        quantity: Quantity::new(2).unwrap(),
        need_day: None,
    };
    let err = w
        .engine
        .apply(
            w.now,
            &Command::Hold {
                hold: id,
                lines: vec![line],
                ttl_ms: 60_000,
                partial: false,
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), promised_engine::ErrorCode::QuantityOverflow);
    assert_eq!(w.engine.state_digest(), before);
    let c2 = w.id();
    w.apply(Command::Commit {
        request: c2,
        hold: h2,
    });
    let p = w.engine.position(a, d).unwrap().unwrap();
    assert_eq!((p.reserved, p.allocated), (0, u32::MAX));
}

/// Regression: a commit after expiry answered an error once a tick had run, and a refusal before.
#[test]
fn late_commit_is_refused_the_same_way_before_and_after_tick() {
    let mut w = World::new(&["DC1"], &["A"]);
    w.set("A", "DC1", 10);
    let (h, _) = w.hold(&[("A", Some("DC1"), 3, 0)], false);
    w.now = T0.saturating_add_ms(15 * 60_000);
    assert_eq!(
        w.apply(Command::Tick),
        Outcome::Ticked {
            expired: 1,
            forgotten: 0
        }
    );
    let c = w.id();
    let out = w.apply(Command::Commit { request: c, hold: h });
    assert_eq!(
        out,
        Outcome::HoldRefused {
            hold: h,
            reason: RefusalReason::HoldExpired,
            repeated: false
        }
    );
    // A partial release of the expired cart is a no-op too.
    let (a, d) = (w.sku("A"), w.node("DC1"));
    let r = w.id();
    let lines = vec![LineQuantity {
        sku: a,
        node: d,
        quantity: Quantity::new(1).unwrap(),
    }];
    let out = w.apply(Command::Release {
        request: r,
        hold: h,
        lines,
    });
    assert_eq!(out, changed(h, HoldState::Expired, false));
    assert_eq!(w.atp("A", "DC1", 0), 10);
}

/// Regression: once an operation's request id was reused as a hold id, a retry of the operation
/// answered `RequestIdReused` instead of its first answer.
#[test]
fn operation_retry_is_recognised_on_its_hold_first() {
    let mut w = World::new(&["DC1"], &["A"]);
    w.set("A", "DC1", 10);
    let (h, _) = w.hold(&[("A", Some("DC1"), 3, 0)], false);
    let c = w.id();
    w.apply(Command::Commit { request: c, hold: h });
    let (a, d) = (w.sku("A"), w.node("DC1"));
    let line = HoldLineRequest {
        sku: a,
        node: NodeChoice::Node(d),
        quantity: Quantity::new(1).unwrap(),
        need_day: None,
    };
    w.apply(Command::Hold {
        hold: c,
        lines: vec![line],
        ttl_ms: 60_000,
        partial: false,
    });
    assert_eq!(
        w.apply(Command::Commit { request: c, hold: h }),
        changed(h, HoldState::Committed, true)
    );
}

#[test]
fn operations_per_hold_are_bounded() {
    let mut w = World::new(&["DC1"], &["A"]);
    let limit = promised_engine::limits::OPS_PER_HOLD_MAX;
    w.set("A", "DC1", 10_000);
    let (h, _) = w.hold(&[("A", Some("DC1"), 5_000, 0)], false);
    let (a, d) = (w.sku("A"), w.node("DC1"));
    let one = vec![LineQuantity {
        sku: a,
        node: d,
        quantity: Quantity::new(1).unwrap(),
    }];
    for _ in 0..limit {
        let r = w.id();
        w.engine
            .apply(
                w.now,
                &Command::Release {
                    request: r,
                    hold: h,
                    lines: one.clone(),
                },
            )
            .unwrap();
    }
    let r = w.id();
    let err = w
        .engine
        .apply(
            w.now,
            &Command::Release {
                request: r,
                hold: h,
                lines: one,
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), promised_engine::ErrorCode::TooManyOperations);
    assert_eq!(w.atp("A", "DC1", 0), 10_000 - 5_000 + limit as i64);
    w.engine.check_invariants().unwrap();
}

#[test]
fn network_atp_counts_only_nodes_that_can_ship_the_sku() {
    let mut w = World::new(&["DC1", "HZ1"], &[]);
    w.apply(Command::UpsertSku {
        name: "ACID".into(),
        required: promised_engine::Capabilities::HAZMAT,
    });
    let mut spec = NodeSpec::open("HZ1");
    spec.capabilities = promised_engine::Capabilities::HAZMAT;
    w.apply(Command::UpsertNode(spec));
    w.set("ACID", "DC1", 5);
    w.set("ACID", "HZ1", 7);
    let acid = w.sku("ACID");
    assert_eq!(w.engine.network_atp(acid, w.now, None).unwrap(), 7);
}

#[test]
fn tick_compacts_the_expiry_queue() {
    let mut w = World::new(&["DC1"], &["A"]);
    w.set("A", "DC1", 100_000);
    let (a, d) = (w.sku("A"), w.node("DC1"));
    for _ in 0..2_000 {
        // Long-lived holds: their expiry entries are not due when the tick below runs.
        let h = w.id();
        let line = HoldLineRequest {
            sku: a,
            node: NodeChoice::Node(d),
            quantity: Quantity::new(1).unwrap(),
            need_day: None,
        };
        let ttl_ms = 30 * DAY_MS;
        w.engine
            .apply(
                w.now,
                &Command::Hold {
                    hold: h,
                    lines: vec![line],
                    ttl_ms,
                    partial: false,
                },
            )
            .unwrap();
        let c = w.id();
        w.engine
            .apply(w.now, &Command::Commit { request: c, hold: h })
            .unwrap();
        let s = w.id();
        w.engine
            .apply(
                w.now,
                &Command::Ship {
                    request: s,
                    hold: h,
                    lines: vec![],
                },
            )
            .unwrap();
    }
    assert!(w.engine.stats().expiry_entries >= 2_000);
    // A day later every shipped hold is forgotten, and their stale expiry entries (due in 29
    // days) are dropped rather than kept until then.
    w.now = w.now.saturating_add_ms(DAY_MS + 1);
    w.apply(Command::Tick);
    assert!(
        w.engine.stats().expiry_entries <= 64 * 4,
        "{:?}",
        w.engine.stats()
    );
}
