//! The async Rust client against a real `promised serve`: every operation, batches, pipelining
//! over one connection, retries that reuse the request id across a server restart, hold expiry,
//! low-stock events, and TLS.

use std::time::Duration;

use promised_client::{
    AdjustReason, Answer, Binding, Client, ClientConfig, ClientError, ErrorCode, Hold, HoldChange, HoldLine,
    HoldOutcome, HoldState, LineQuantity, NodeSpec, Op, PromiseCart, RefusalReason, RequestId, Role,
    ServiceLevel, Shortfall, TlsConfig,
};

mod common;
use common::Server;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One DC and `skus` SKUs with `on_hand` units each.
async fn setup(client: &Client, skus: &[&str], on_hand: u32) {
    client.upsert_node(NodeSpec::new("DC-1")).await.unwrap();
    client.upsert_node(NodeSpec::new("DC-2")).await.unwrap();
    let counts: Vec<(&str, u32)> = skus.iter().map(|s| (*s, on_hand)).collect();
    for s in skus {
        client.upsert_sku(s, 0).await.unwrap();
    }
    assert!(!client.set_on_hand("DC-1", 1, &counts).await.unwrap());
}

/// Days since 1970-01-01, as the server counts them.
fn today() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (secs / 86_400) as u32
}

fn hold_at(sku: &str, quantity: u32) -> Hold {
    Hold::new(
        vec![HoldLine::at(sku, "DC-1", quantity)],
        Duration::from_secs(3600),
    )
}

fn granted(outcome: &HoldOutcome) -> &promised_client::HoldGranted {
    outcome
        .granted()
        .unwrap_or_else(|| panic!("refused: {outcome:?}"))
}

#[test]
fn every_operation_through_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    runtime().block_on(async {
        let client = Client::connect(ClientConfig::new(&server.addr)).await.unwrap();
        let session = client.session().await.unwrap();
        assert_eq!(session.role, Role::Admin, "no tokens: admin on loopback");
        assert_eq!(session.version, 1);
        setup(&client, &["SKU-1"], 100).await;

        // Hold, repeat, look it up, commit, ship.
        let hold = hold_at("SKU-1", 3);
        let first = client.hold(hold.clone()).await.unwrap();
        let g = granted(&first);
        assert_eq!((g.hold, g.repeated, g.lines[0].granted), (hold.id, false, 3));
        let again = client.hold(hold.clone()).await.unwrap();
        assert!(granted(&again).repeated, "same id: the first answer again");
        assert_eq!(client.atp("SKU-1", "DC-1", None).await.unwrap(), 97);
        assert_eq!(client.network_atp("SKU-1", None).await.unwrap(), 97);
        let view = client.get_hold(hold.id).await.unwrap().expect("the hold");
        assert_eq!((view.state, view.lines[0].remaining), (HoldState::Held, 3));
        assert_eq!(client.get_hold(RequestId(42)).await.unwrap(), None);
        assert_eq!(
            client.commit(hold.id).await.unwrap(),
            HoldChange::Changed {
                state: HoldState::Committed,
                repeated: false
            }
        );
        let p = client.position("SKU-1", "DC-1").await.unwrap().expect("stocked");
        assert_eq!((p.on_hand, p.reserved, p.allocated), (100, 0, 3));
        let line = LineQuantity {
            sku: "SKU-1".into(),
            node: "DC-1".into(),
            quantity: 1,
        };
        client.ship(hold.id, vec![line]).await.unwrap();
        assert_eq!(
            client.cancel_allocation(hold.id).await.unwrap(),
            HoldChange::Changed {
                state: HoldState::Cancelled,
                repeated: false
            }
        );
        let p = client.position("SKU-1", "DC-1").await.unwrap().unwrap();
        assert_eq!((p.on_hand, p.allocated), (99, 0), "one shipped, two cancelled");

        // A partial release, then the rest.
        let h2 = hold_at("SKU-1", 5);
        granted(&client.hold(h2.clone()).await.unwrap());
        let two = LineQuantity {
            sku: "SKU-1".into(),
            node: "DC-1".into(),
            quantity: 2,
        };
        client.release(h2.id, vec![two]).await.unwrap();
        assert_eq!(client.atp("SKU-1", "DC-1", None).await.unwrap(), 96);
        client.release(h2.id, vec![]).await.unwrap();
        assert_eq!(client.atp("SKU-1", "DC-1", None).await.unwrap(), 99);

        // Feeds: adjust, safety stock, inbound add/receive/cancel, return; a stale feed.
        let request = RequestId::random;
        let (sku, node) = ("SKU-1".to_string(), "DC-1".to_string());
        for op in [
            Op::AdjustOnHand {
                request: request(),
                sku: sku.clone(),
                node: node.clone(),
                delta: -9,
                reason: AdjustReason::Damage,
            },
            Op::SetSafetyStock {
                request: request(),
                sku: sku.clone(),
                node: node.clone(),
                quantity: 10,
            },
            Op::AddInbound {
                request: request(),
                sku: sku.clone(),
                node: node.clone(),
                reference: "PO-1".into(),
                quantity: 50,
                arrival_day: today() + 10,
            },
            Op::AddInbound {
                request: request(),
                sku: sku.clone(),
                node: node.clone(),
                reference: "PO-2".into(),
                quantity: 7,
                arrival_day: today() + 10,
            },
            Op::ReceiveInbound {
                request: request(),
                sku: sku.clone(),
                node: node.clone(),
                reference: "PO-2".into(),
            },
            Op::CancelInbound {
                request: request(),
                sku: sku.clone(),
                node: node.clone(),
                reference: "PO-1".into(),
            },
            Op::Return {
                request: request(),
                sku: sku.clone(),
                node: node.clone(),
                quantity: 4,
            },
        ] {
            assert!(!client.feed(op).await.unwrap());
        }
        // 99 - 9 + 7 + 4 = 101 on hand, 10 safety stock.
        assert_eq!(client.atp("SKU-1", "DC-1", None).await.unwrap(), 91);
        let timeline = client.timeline("SKU-1", "DC-1").await.unwrap();
        assert_eq!(timeline.last().map(|p| p.1), Some(91), "{timeline:?}");
        let stale = client.set_on_hand("DC-1", 1, &[("SKU-1", 5)]).await;
        assert_eq!(stale.unwrap_err().code(), Some(ErrorCode::StaleFeedSequence));

        // Typed errors, a refusal, and a batch with mixed results.
        let unknown = client.atp("NOPE", "DC-1", None).await.unwrap_err();
        assert_eq!(unknown.code(), Some(ErrorCode::UnknownSku), "{unknown}");
        assert!(!unknown.is_retryable());
        assert!(unknown.to_string().contains("NOPE"), "{unknown}");
        match client.hold(hold_at("SKU-1", 1000)).await.unwrap() {
            HoldOutcome::Refused(lines) => {
                assert_eq!(
                    (lines[0].reason, lines[0].available),
                    (RefusalReason::InsufficientAtp, 91)
                );
            }
            other => panic!("{other:?}"),
        }
        let results = client
            .batch(&[
                Op::Atp {
                    sku: "SKU-1".into(),
                    node: "DC-1".into(),
                    day: None,
                },
                Op::Hold(hold_at("SKU-1", 1)),
                Op::Atp {
                    sku: "NOPE".into(),
                    node: "DC-1".into(),
                    day: None,
                },
                Op::Atp {
                    sku: "SKU-1".into(),
                    node: "DC-1".into(),
                    day: None,
                },
            ])
            .await
            .unwrap();
        assert_eq!(results[0], Ok(Answer::Atp(91)));
        assert!(matches!(results[1], Ok(Answer::Hold(HoldOutcome::Granted(_)))));
        assert_eq!(results[2].as_ref().unwrap_err().code, ErrorCode::UnknownSku);
        assert_eq!(results[3], Ok(Answer::Atp(90)), "in order, after the hold");

        // Admin.
        let (lsn, bytes) = client.take_snapshot().await.unwrap();
        assert!(lsn > 0 && bytes > 0);
        let (lsn2, digest) = client.state_digest().await.unwrap();
        assert_eq!(lsn2, lsn);
        assert_eq!(
            client.state_digest().await.unwrap().1,
            digest,
            "reads change nothing"
        );
    });
}

#[test]
fn promises_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    runtime().block_on(async {
        let client = Client::connect(ClientConfig::new(&server.addr)).await.unwrap();
        // Two DCs working every day with no cut-off (minute 1440 never comes): near (0, 0) and
        // far (8, 0); zone 1's centre is (0, 0.5), 56 km from the near one.
        for (name, lat) in [("NEAR", 0.0), ("FAR", 8.0)] {
            let mut n = NodeSpec::new(name);
            (n.lat, n.weekdays, n.cutoff_minute) = (lat, 0b111_1111, 1440);
            client.upsert_node(n).await.unwrap();
        }
        client.upsert_sku("SKU-1", 0).await.unwrap();
        client.upsert_zone(1, 0.0, 0.5).await.unwrap();
        for node in ["NEAR", "FAR"] {
            client.set_on_hand(node, 1, &[("SKU-1", 10)]).await.unwrap();
        }
        let levels = client
            .promise(PromiseCart::new(&[("SKU-1", 2)], 1))
            .await
            .unwrap();
        assert_eq!(levels.len(), 3);
        let plan = |i: usize| {
            levels[i]
                .plan
                .clone()
                .unwrap_or_else(|| panic!("{:?}", levels[i]))
        };
        let (ground, next_day) = (plan(0), plan(2));
        assert_eq!(
            (levels[0].level, levels[2].level),
            (ServiceLevel::Ground, ServiceLevel::NextDay)
        );
        assert_eq!(ground.packages[0].node, "NEAR");
        assert_eq!(ground.delivery_day, today() + 1, "ships today, one day of ground");
        assert_eq!(ground.cost_cents, 463 + 2 * 20);
        assert!(next_day.cost_cents > ground.cost_cents);
        // An explicit lane makes the far DC the cheaper one at the same date.
        let lane = Op::UpsertLane {
            node: "FAR".into(),
            zone: 1,
            level: ServiceLevel::Ground,
            transit_days: 1,
            cost_per_package_cents: 100,
            cost_per_unit_cents: 1,
        };
        assert_eq!(client.call(&lane).await.unwrap(), Answer::Ack);
        let mut cart = PromiseCart::new(&[("SKU-1", 2)], 1);
        cart.levels = vec![ServiceLevel::Ground];
        let levels = client.promise(cart.clone()).await.unwrap();
        let ground = levels[0].plan.clone().unwrap();
        assert_eq!(
            (ground.packages[0].node.as_str(), ground.cost_cents),
            ("FAR", 102)
        );
        // More than anyone has: unserved, with the reason.
        cart.lines = vec![("SKU-1".into(), 11)];
        let levels = client.promise(cart.clone()).await.unwrap();
        assert_eq!(
            (levels[0].plan.as_ref(), &levels[0].unserved[..]),
            (None, &[(0, Shortfall::Stock)][..])
        );
        // Promise-and-hold: the plan is held at its node; a retry is the same hold.
        let mut one = PromiseCart::new(&[("SKU-1", 3)], 1);
        one.levels = vec![ServiceLevel::Ground];
        let id = RequestId::random();
        let (promise, held) = client
            .promise_and_hold(one.clone(), id, Duration::from_secs(600))
            .await
            .unwrap();
        assert_eq!(promise.unwrap().plan.unwrap().packages[0].node, "FAR");
        let g = match held {
            Some(HoldOutcome::Granted(g)) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (g.hold, g.lines[0].node.as_deref(), g.repeated),
            (id, Some("FAR"), false)
        );
        assert_eq!(client.atp("SKU-1", "FAR", None).await.unwrap(), 7);
        let (no_promise, again) = client
            .promise_and_hold(one.clone(), id, Duration::from_secs(600))
            .await
            .unwrap();
        assert!(matches!(again, Some(HoldOutcome::Granted(g)) if g.repeated));
        assert_eq!(no_promise, None, "a retry is the first hold's answer");
        assert_eq!(client.atp("SKU-1", "FAR", None).await.unwrap(), 7);
        assert_eq!(
            client.commit(id).await.unwrap(),
            HoldChange::Changed {
                state: HoldState::Committed,
                repeated: false
            }
        );
        // Nothing to hold when nothing can be promised.
        one.lines = vec![("SKU-1".into(), 500)];
        let (promise, held) = client
            .promise_and_hold(one.clone(), RequestId::random(), Duration::from_secs(600))
            .await
            .unwrap();
        assert_eq!((promise.unwrap().plan, held), (None, None));

        // Listing page: one unit of each SKU; an unknown SKU is an error for the page, a SKU
        // nobody stocks is `None`.
        client.upsert_sku("SKU-EMPTY", 0).await.unwrap();
        let listed = client
            .listing(&["SKU-1", "SKU-EMPTY"], 1, ServiceLevel::Ground)
            .await
            .unwrap();
        let first = listed[0].as_ref().expect("SKU-1 is deliverable");
        assert_eq!((first.delivery_day, first.node.as_str()), (today() + 1, "FAR"));
        assert_eq!(listed[1], None);
        let e = client
            .listing(&["NOPE"], 1, ServiceLevel::Ground)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownSku));
        let e = client
            .listing(&["SKU-1"], 1, ServiceLevel::Pickup)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidOption));

        // Bad input: an unknown zone, a pickup without a store.
        cart.zone = 77;
        cart.lines = vec![("SKU-1".into(), 1)];
        let e = client.promise(cart.clone()).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownZone), "{e}");
        cart.zone = 1;
        cart.levels = vec![ServiceLevel::Pickup];
        let e = client.promise(cart).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidOption), "{e}");
    });
}

#[test]
fn route_orders_over_the_wire_allocate_and_fill_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    runtime().block_on(async {
        let client = Client::connect(ClientConfig::new(&server.addr)).await.unwrap();
        // One DC working every day, no cut-off, room for one order a day.
        let mut n = NodeSpec::new("DC");
        (n.weekdays, n.cutoff_minute, n.capacity_orders) = (0b111_1111, 1440, 1);
        client.upsert_node(n).await.unwrap();
        client.upsert_sku("SKU-1", 0).await.unwrap();
        client.upsert_zone(1, 0.0, 0.5).await.unwrap();
        client.set_on_hand("DC", 1, &[("SKU-1", 10)]).await.unwrap();
        let mut cart = PromiseCart::new(&[("SKU-1", 2)], 1);
        cart.levels = vec![ServiceLevel::Ground];
        let first = RequestId::random();
        let (promise, routed) = client.route_order(cart.clone(), first).await.unwrap();
        let plan = promise.unwrap().plan.unwrap();
        assert_eq!(
            (plan.packages[0].ship_day, plan.delivery_day),
            (today(), today() + 1)
        );
        let g = match routed {
            Some(HoldOutcome::Granted(g)) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!((g.hold, g.lines[0].granted, g.repeated), (first, 2, false));
        // An allocation at once: no commit, ATP down.
        assert_eq!(client.atp("SKU-1", "DC", None).await.unwrap(), 8);
        let (no_promise, again) = client.route_order(cart.clone(), first).await.unwrap();
        assert!(matches!(again, Some(HoldOutcome::Granted(g)) if g.repeated));
        assert_eq!(no_promise, None, "a retry is the first order's answer");
        // Today's one order is taken: the next promise and order ship tomorrow.
        let levels = client.promise(cart.clone()).await.unwrap();
        let next = levels[0].plan.clone().unwrap();
        assert_eq!(
            (next.packages[0].ship_day, next.binding),
            (today() + 1, Binding::Capacity)
        );
        let second = RequestId::random();
        let (promise, _) = client.route_order(cart.clone(), second).await.unwrap();
        assert_eq!(promise.unwrap().plan.unwrap().packages[0].ship_day, today() + 1);
        // Cancelling the first order gives today back.
        assert_eq!(
            client.cancel_allocation(first).await.unwrap(),
            HoldChange::Changed {
                state: HoldState::Cancelled,
                repeated: false
            }
        );
        let levels = client.promise(cart.clone()).await.unwrap();
        assert_eq!(levels[0].plan.as_ref().unwrap().packages[0].ship_day, today());
        assert_eq!(client.atp("SKU-1", "DC", None).await.unwrap(), 8);
        // One plan: one level.
        let e = client
            .route_order(PromiseCart::new(&[("SKU-1", 1)], 1), RequestId::random())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidOption), "{e}");
    });
}

#[test]
fn many_requests_pipelined_on_one_connection_and_batches_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--max-batch-ops", "100", "--max-in-flight", "64"]);
    runtime().block_on(async {
        let client = Client::connect(ClientConfig::new(&server.addr).pool_size(1))
            .await
            .unwrap();
        let session = client.session().await.unwrap();
        assert_eq!((session.max_batch_ops, session.max_in_flight), (100, 64));
        let skus: Vec<String> = (0..50).map(|i| format!("SKU-{i}")).collect();
        let names: Vec<&str> = skus.iter().map(String::as_str).collect();
        setup(&client, &names, 1000).await;
        // 2,000 holds at once on one connection: more than its 64 in flight, so the client
        // queues instead of drawing `Busy`; each SKU ends 40 lower.
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                let client = client.clone();
                let sku = skus[i % 50].clone();
                tokio::spawn(async move { client.hold(hold_at(&sku, 1)).await })
            })
            .collect();
        for t in tasks {
            granted(&t.await.unwrap().unwrap());
        }
        // 250 positions in one call: three frames under the 100-operation limit.
        let positions: Vec<(&str, &str)> = (0..250).map(|i| (names[i % 50], "DC-1")).collect();
        let atps = client.atp_many(&positions, None).await.unwrap();
        assert_eq!(atps.len(), 250);
        assert!(atps.iter().all(|a| *a == Ok(960)), "{atps:?}");
    });
}

#[test]
fn a_retried_write_survives_a_restart_and_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(dir.path());
    let addr = first.addr.clone();
    let rt = runtime();
    let client = rt.block_on(async {
        let client = Client::connect(ClientConfig::new(&addr).pool_size(1).retries(3))
            .await
            .unwrap();
        setup(&client, &["SKU-1"], 10).await;
        client
    });
    let hold = hold_at("SKU-1", 4);
    rt.block_on(async {
        granted(&client.hold(hold.clone()).await.unwrap());
    });
    assert!(first.stop().success());
    // The pooled connection is dead; the next call finds out, reconnects and retries with the
    // same hold id once the server is back: the hold is not placed twice.
    let second = Server::start_at(dir.path(), &addr, &[]);
    rt.block_on(async {
        let again = client.hold(hold.clone()).await.unwrap();
        assert!(granted(&again).repeated, "a retry, recognised after the restart");
        assert_eq!(client.atp("SKU-1", "DC-1", None).await.unwrap(), 6);
    });
    drop(second);
    // Nothing listens now: a retry-safe call gives up after its retries with a connection
    // error, and a non-retryable error is returned at once.
    rt.block_on(async {
        let e = client.atp("SKU-1", "DC-1", None).await.unwrap_err();
        assert!(matches!(e, ClientError::Connection { .. }), "{e}");
        assert!(e.is_retryable());
    });
}

#[test]
fn expired_holds_give_their_stock_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--expiry-tick-ms", "20"]);
    runtime().block_on(async {
        let client = Client::connect(ClientConfig::new(&server.addr)).await.unwrap();
        setup(&client, &["SKU-1"], 10).await;
        let mut hold = hold_at("SKU-1", 7);
        hold.ttl = Duration::from_millis(100);
        granted(&client.hold(hold.clone()).await.unwrap());
        assert_eq!(client.atp("SKU-1", "DC-1", None).await.unwrap(), 3);
        let mut state = HoldState::Held;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            state = client.get_hold(hold.id).await.unwrap().unwrap().state;
            if state != HoldState::Held {
                break;
            }
        }
        assert_eq!(state, HoldState::Expired);
        assert_eq!(client.atp("SKU-1", "DC-1", None).await.unwrap(), 10);
        assert!(matches!(
            client.commit(hold.id).await.unwrap(),
            HoldChange::Refused {
                reason: RefusalReason::HoldExpired,
                ..
            }
        ));
    });
}

#[test]
fn low_stock_events_reach_subscribers_once_per_fall() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &["--token", "read:reader-token", "--token", "write:writer-token"],
    );
    runtime().block_on(async {
        let writer = Client::connect(ClientConfig::new(&server.addr).token("writer-token"))
            .await
            .unwrap();
        setup(&writer, &["SKU-1", "SKU-2"], 20).await;
        let reader = Client::connect(ClientConfig::new(&server.addr).token("reader-token"))
            .await
            .unwrap();
        let e = reader
            .subscribe(&["NOPE"], &[], 5)
            .await
            .err()
            .expect("unknown SKU");
        assert_eq!(e.code(), Some(ErrorCode::UnknownSku));
        // A read token may subscribe.
        let mut events = reader.subscribe(&["SKU-1"], &["DC-1"], 5).await.unwrap();

        granted(&writer.hold(hold_at("SKU-1", 10)).await.unwrap()); // 10 left: quiet
        granted(&writer.hold(hold_at("SKU-2", 18)).await.unwrap()); // not watched
        let low = hold_at("SKU-1", 6);
        granted(&writer.hold(low.clone()).await.unwrap()); // 4 left: low
        granted(&writer.hold(hold_at("SKU-1", 1)).await.unwrap()); // 3 left: already low
        writer.release(low.id, vec![]).await.unwrap(); // 9: re-armed
        let counts = [("SKU-1", 12), ("SKU-2", 20)];
        writer.set_on_hand("DC-1", 2, &counts).await.unwrap(); // 1 left: low again

        async fn next(events: &mut promised_client::Subscription) -> promised_client::LowStock {
            tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("an event in time")
                .expect("the subscription is open")
        }
        let e1 = next(&mut events).await;
        assert_eq!(
            (e1.sku.as_str(), e1.node.as_str(), e1.atp, e1.threshold),
            ("SKU-1", "DC-1", 4, 5)
        );
        let e2 = next(&mut events).await;
        assert_eq!(
            e2.atp, 1,
            "the second fall, after the release re-armed it: {e2:?}"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), events.next())
                .await
                .is_err(),
            "nothing else: one event per fall"
        );
        assert_eq!(events.dropped(), 0);

        // After Unsubscribe nothing more comes, however low the stock goes.
        events.unsubscribe(Duration::from_secs(5)).await.unwrap();
        let counts = [("SKU-1", 30), ("SKU-2", 20)];
        writer.set_on_hand("DC-1", 3, &counts).await.unwrap(); // 19: re-armed, if still watched
        granted(&writer.hold(hold_at("SKU-1", 18)).await.unwrap()); // 1: would be an event
        assert!(
            tokio::time::timeout(Duration::from_millis(300), events.next())
                .await
                .is_err(),
            "no event after Unsubscribe"
        );

        // A connection that goes away while subscribed is closed on the server too (its event
        // task must not keep it open).
        let gauge = || {
            let (_, metrics) = server.http_get("/metrics");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("promised_connections "))
                .and_then(|v| v.parse::<i64>().ok())
                .expect("a connections gauge")
        };
        let before = gauge();
        let live = reader.subscribe(&["SKU-1"], &[], 5).await.unwrap();
        assert_eq!(gauge(), before + 1);
        drop(live);
        drop(events);
        let mut now = gauge();
        for _ in 0..100 {
            if now == before - 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            now = gauge();
        }
        assert_eq!(now, before - 1, "both subscribed connections closed");
    });
}

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost, as PEM.
fn certificates(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca.pem(), cert_path, key_path)
}

#[test]
fn tls_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    runtime().block_on(async {
        let tls = TlsConfig::new(ca.as_bytes(), "localhost").unwrap();
        let client = Client::connect(ClientConfig::new(&server.addr).tls(tls))
            .await
            .unwrap();
        setup(&client, &["SKU-1"], 10).await;
        granted(&client.hold(hold_at("SKU-1", 2)).await.unwrap());
        assert_eq!(client.atp("SKU-1", "DC-1", None).await.unwrap(), 8);

        // Plain TCP gets no protocol out of a TLS port.
        let plain = Client::connect(ClientConfig::new(&server.addr)).await.err();
        assert!(matches!(plain, Some(ClientError::Connection { .. })), "{plain:?}");
        // A client that trusts another CA refuses the server.
        let other = tempfile::tempdir().unwrap();
        let (other_ca, _, _) = certificates(other.path());
        let wrong = TlsConfig::new(other_ca.as_bytes(), "localhost").unwrap();
        let e = Client::connect(ClientConfig::new(&server.addr).tls(wrong))
            .await
            .err()
            .expect("an untrusted certificate");
        assert!(e.to_string().contains("TLS"), "{e}");
        // The wrong name: the certificate names localhost and 127.0.0.1 only.
        let misnamed = TlsConfig::new(ca.as_bytes(), "promised.example").unwrap();
        assert!(
            Client::connect(ClientConfig::new(&server.addr).tls(misnamed))
                .await
                .is_err()
        );
    });
    // A server given a key without a certificate refuses to start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .args(["--tls-key", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS needs both"));
}

#[test]
fn a_listener_that_never_answers_the_handshake_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    runtime().block_on(async {
        let mut config = ClientConfig::new(&addr);
        config.connect_timeout = Duration::from_millis(200);
        let e = Client::connect(config).await.err().expect("no handshake");
        assert!(e.to_string().contains("no handshake within"), "{e}");
    });
    drop(listener);
}

/// A batch re-route over the wire: a write token may not; an admin's dry run changes nothing;
/// the apply moves every order off the closed DC at once.
#[test]
fn a_reroute_moves_orders_off_a_closed_dc() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &["--token", "admin:admin-token", "--token", "write:writer-token"],
    );
    runtime().block_on(async {
        let admin = Client::connect(ClientConfig::new(&server.addr).token("admin-token"))
            .await
            .unwrap();
        let writer = Client::connect(ClientConfig::new(&server.addr).token("writer-token"))
            .await
            .unwrap();
        // Two DCs working every day with no cut-off; DC-A a little nearer the zone.
        for (name, lon) in [("DC-A", 0.2), ("DC-B", 0.0)] {
            let mut n = NodeSpec::new(name);
            (n.weekdays, n.cutoff_minute, n.lon) = (0b111_1111, 1440, lon);
            admin.upsert_node(n).await.unwrap();
        }
        admin.upsert_sku("SKU-1", 0).await.unwrap();
        admin.upsert_zone(1, 0.0, 0.5).await.unwrap();
        admin.set_on_hand("DC-A", 1, &[("SKU-1", 10)]).await.unwrap();
        admin.set_on_hand("DC-B", 1, &[("SKU-1", 10)]).await.unwrap();
        let mut cart = PromiseCart::new(&[("SKU-1", 2)], 1);
        cart.levels = vec![ServiceLevel::Ground];
        let orders = [RequestId::random(), RequestId::random()];
        for order in orders {
            let (_, routed) = writer.route_order(cart.clone(), order).await.unwrap();
            assert!(matches!(routed, Some(HoldOutcome::Granted(_))));
        }
        assert_eq!(admin.atp("SKU-1", "DC-A", None).await.unwrap(), 6);
        let mut closed = NodeSpec::new("DC-A");
        (closed.weekdays, closed.cutoff_minute, closed.lon) = (0b111_1111, 1440, 0.2);
        closed.status = promised_client::NodeStatus::Closed;
        admin.upsert_node(closed).await.unwrap();

        let ask = promised_client::Reroute::at_nodes(&["DC-A"]);
        let e = writer.reroute(ask.clone()).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::PermissionDenied), "{e}");
        let dry = admin.reroute(ask.clone()).await.unwrap();
        assert_eq!((dry.orders, dry.moves_total, dry.broken_before), (2, 2, 2));
        assert!(!dry.applied && dry.left_out.is_empty() && dry.over == 0);
        assert!(dry.lower_bound_cents <= dry.cost_after_cents + 1e-6);
        assert!(
            dry.moves
                .iter()
                .all(|m| m.to[0].0 == "DC-B" && m.line_nodes == ["DC-B"])
        );
        assert_eq!(
            admin.atp("SKU-1", "DC-B", None).await.unwrap(),
            10,
            "a dry run changes nothing"
        );

        let id = RequestId::random();
        // A partial apply (the moves that still fit): here all of them.
        let applied = admin
            .reroute(promised_client::Reroute {
                apply: Some(id),
                partial: true,
                ..ask.clone()
            })
            .await
            .unwrap();
        assert!(applied.applied && !applied.repeated && applied.refused.is_none());
        assert_eq!((applied.moved, applied.skipped.len()), (2, 0));
        assert_eq!(admin.atp("SKU-1", "DC-B", None).await.unwrap(), 6);
        assert_eq!(admin.atp("SKU-1", "DC-A", None).await.unwrap(), 10);
        let view = admin.get_hold(orders[0]).await.unwrap().unwrap();
        assert_eq!(view.lines[0].node.as_deref(), Some("DC-B"));
        // Asked again, the orders are where the plan wants them: nothing to move, nothing logged.
        let again = admin
            .reroute(promised_client::Reroute {
                apply: Some(id),
                orders: orders.to_vec(),
                nodes: Vec::new(),
                ..ask.clone()
            })
            .await
            .unwrap();
        assert_eq!((again.orders, again.moves_total, again.applied), (2, 0, true));
        assert_eq!(admin.reroute(ask).await.unwrap().orders, 0);
        assert_eq!(admin.atp("SKU-1", "DC-B", None).await.unwrap(), 6);
    });
}
