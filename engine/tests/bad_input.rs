//! Bad input gets a typed error and changes nothing (DESIGN.md, rule 5).
//!
//! On a populated engine (stock, inbound lots, a held hold, committed allocations, a released
//! hold, remembered feeds), random sequences of bad commands are applied; each must fail with the
//! expected `ErrorCode`, leave `state_digest()` exactly as it was, and keep `check_invariants`
//! happy. Quantities are checked by their constructor, so `Quantity::new` is tested on its own.
//! A second property checks that retries and no-op requests change nothing either.

mod common;

use promised_engine::network::Capabilities;
use promised_engine::{
    AdjustReason, Command, Day, Engine, EngineConfig, ErrorCode, HoldLineRequest, HoldOutcome, HoldState,
    LineQuantity, NodeChoice, NodeId, NodeSpec, NodeStatus, Outcome, Quantity, RequestId, SkuId, StateDigest,
    Timestamp,
};
use proptest::prelude::*;

use common::{DAY_MS, T0, inbound_lot_command, q};

const Q_MAX: u32 = 1 << 31;
const TTL_MAX_MS: u64 = 30 * DAY_MS;

/// The populated engine and the names of what is in it.
struct Fixture {
    engine: Engine,
    today: Day,
    n_skus: u32,
    n_nodes: u32,
    /// SKUs: `a` and `b` stocked at both DCs, `c` at dc1 with 64 lots, `big` near `u32::MAX`.
    a: SkuId,
    b: SkuId,
    c: SkuId,
    big: SkuId,
    /// Nodes: dc1 (hazmat), dc2, st3 (paused, never stocked).
    dc1: NodeId,
    dc2: NodeId,
    st3: NodeId,
    /// A hold still held (expires a day after T0): A@dc1 3 today, B@dc2 2 for today + 2.
    held: RequestId,
    /// Committed: A@dc1 4, C@dc1 2; committed by request `commit_op`.
    committed: RequestId,
    commit_op: RequestId,
    /// Committed B@dc2 2, after which dc2's count of B went down to 1: shipping it all must fail.
    short: RequestId,
    /// Released by request `release_op`.
    released: RequestId,
    release_op: RequestId,
    /// Remembered feed requests: an absolute count and an inbound lot.
    set_feed: RequestId,
    lot_feed: RequestId,
    /// dc1's last feed sequence number.
    dc1_seq: u64,
    /// Every successful setup command, for the retry property.
    setup: Vec<Command>,
}

fn id(n: u128) -> RequestId {
    RequestId(0xBAD0_0000_0000_0000 + n)
}

fn fixture() -> Fixture {
    let engine = Engine::new(EngineConfig {
        sku_shards: 4,
        request_shards: 4,
        ..EngineConfig::default()
    });
    let mut setup = Vec::new();
    let mut apply = |c: Command| -> Outcome {
        let out = engine
            .apply(T0, &c)
            .unwrap_or_else(|e| panic!("setup command {c:?} failed: {e}"));
        setup.push(c);
        out
    };
    let mut hazmat_dc = NodeSpec::open("DC1");
    hazmat_dc.capabilities = Capabilities::HAZMAT;
    let mut store = NodeSpec::open("ST3");
    store.status = NodeStatus::Paused;
    for spec in [hazmat_dc, NodeSpec::open("DC2"), store] {
        apply(Command::UpsertNode(spec));
    }
    for name in ["A", "B", "C", "BIG"] {
        apply(Command::UpsertSku {
            name: name.into(),
            required: Capabilities::default(),
        });
    }
    let sku = |n: &str| engine.sku_id(n).unwrap();
    let node = |n: &str| engine.node_id(n).unwrap();
    let (a, b, c, big) = (sku("A"), sku("B"), sku("C"), sku("BIG"));
    let (dc1, dc2, st3) = (node("DC1"), node("DC2"), node("ST3"));
    let today = T0.day();
    let mut next = 0u128;
    let mut fresh = || {
        next += 1;
        id(next)
    };
    let set_feed = fresh();
    apply(Command::SetOnHand {
        request: set_feed,
        node: dc1,
        feed_seq: 5,
        counts: vec![(a, 20), (b, 10), (c, 5), (big, Q_MAX)],
    });
    apply(Command::Return {
        request: fresh(),
        sku: big,
        node: dc1,
        quantity: q(Q_MAX - 10),
    });
    apply(Command::SetOnHand {
        request: fresh(),
        node: dc2,
        feed_seq: 3,
        counts: vec![(a, 8), (b, 4)],
    });
    let lot_feed = fresh();
    apply(Command::AddInbound {
        request: lot_feed,
        sku: a,
        node: dc1,
        reference: "PO-1".into(),
        quantity: q(10),
        arrival: today.plus(3),
    });
    apply(Command::AddInbound {
        request: fresh(),
        sku: b,
        node: dc2,
        reference: "PO-2".into(),
        quantity: q(5),
        arrival: today.plus(1),
    });
    for i in 0..64 {
        apply(Command::AddInbound {
            request: fresh(),
            sku: c,
            node: dc1,
            reference: format!("L{i}"),
            quantity: q(1),
            arrival: today.plus(1 + i % 20),
        });
    }
    apply(Command::SetSafetyStock {
        request: fresh(),
        sku: a,
        node: dc2,
        quantity: 1,
    });
    apply(Command::AdjustOnHand {
        request: fresh(),
        sku: b,
        node: dc1,
        delta: -1,
        reason: AdjustReason::Damage,
    });
    let line = |sku: SkuId, node: NodeId, n: u32, need_day: Option<Day>| HoldLineRequest {
        sku,
        node: NodeChoice::Node(node),
        quantity: q(n),
        need_day,
    };
    let mut hold = |lines: Vec<HoldLineRequest>| -> RequestId {
        let hold = fresh();
        let out = apply(Command::Hold {
            hold,
            lines,
            ttl_ms: DAY_MS,
            partial: false,
        });
        assert!(
            matches!(out, Outcome::Hold(HoldOutcome::Granted { .. })),
            "{out:?}"
        );
        hold
    };
    let held = hold(vec![line(a, dc1, 3, None), line(b, dc2, 2, Some(today.plus(2)))]);
    let committed = hold(vec![line(a, dc1, 4, None), line(c, dc1, 2, None)]);
    let short = hold(vec![line(b, dc2, 2, None)]);
    let released = hold(vec![line(b, dc1, 1, None)]);
    let commit_op = fresh();
    apply(Command::Commit {
        request: commit_op,
        hold: committed,
    });
    apply(Command::Commit {
        request: fresh(),
        hold: short,
    });
    let release_op = fresh();
    apply(Command::Release {
        request: release_op,
        hold: released,
        lines: vec![],
    });
    apply(Command::SetOnHand {
        request: fresh(),
        node: dc2,
        feed_seq: 4,
        counts: vec![(b, 1)],
    });
    engine.check_invariants().unwrap();
    assert_eq!(engine.hold(held).unwrap().state, HoldState::Held);
    assert_eq!(engine.hold(committed).unwrap().state, HoldState::Committed);
    assert_eq!(engine.hold(released).unwrap().state, HoldState::Released);
    Fixture {
        n_skus: engine.n_skus() as u32,
        n_nodes: engine.network().n_nodes() as u32,
        engine,
        today,
        a,
        b,
        c,
        big,
        dc1,
        dc2,
        st3,
        held,
        committed,
        commit_op,
        short,
        released,
        release_op,
        set_feed,
        lot_feed,
        dc1_seq: 5,
        setup,
    }
}

/// One bad command, described by its defect and the random numbers that shape it.
#[derive(Clone, Debug)]
enum Bad {
    HoldUnknownSku { extra: u32, huge: bool, at: usize },
    HoldUnknownNode { extra: u32, at: usize },
    HoldEmpty,
    HoldTooManyLines { n: usize },
    HoldDuplicateLine { any: bool, at: usize },
    HoldBadTtl { ttl: u64 },
    HoldBadDate { beyond: u32 },
    HoldIdOfFeed,
    ReleaseMoreThanHeld { by: u32 },
    ReleaseNotInHold { n: u32 },
    ShipMoreThanAllocated { by: u32 },
    ShipMoreThanOnHand,
    ChangeUnknownHold { which: u8, n: u128 },
    WrongState { which: u8 },
    ChangeDuplicateLines { release: bool },
    ChangeTooManyLines { n: usize },
    ChangeIdReused { which: u8 },
    FeedIdReused { which: u8 },
    StaleFeed { seq: u64 },
    SetOnHandEmpty,
    SetOnHandDuplicate { n: u32 },
    SetOnHandTooBig { n: u32 },
    SetOnHandTooMany { extra: usize },
    FeedUnknownSku { which: u8, extra: u32 },
    FeedUnknownNode { which: u8, extra: u32 },
    AdjustBadDelta { delta: i64 },
    AdjustNegative { by: u32 },
    AdjustOverflow { by: u32 },
    ReturnOverflow { n: u32 },
    SafetyTooBig { n: u32 },
    LotDuplicate,
    LotBadName { which: u8 },
    LotBadDate { beyond: u32 },
    LotTooMany,
    LotUnknown { receive: bool, which: u8 },
    UpsertBadName { node: bool, which: u8 },
}

/// A number in `lo..=hi`, half the time within 3 of `lo` (where an off-by-one would show).
fn near(lo: u32, hi: u32) -> impl Strategy<Value = u32> {
    prop_oneof![lo..=lo + 3, lo..=hi]
}

fn bad_s() -> impl Strategy<Value = Bad> {
    prop_oneof![
        (0..1000u32, any::<bool>(), 0..3usize).prop_map(|(extra, huge, at)| Bad::HoldUnknownSku {
            extra,
            huge,
            at
        }),
        (0..1000u32, 0..3usize).prop_map(|(extra, at)| Bad::HoldUnknownNode { extra, at }),
        Just(Bad::HoldEmpty),
        (1001..1100usize).prop_map(|n| Bad::HoldTooManyLines { n }),
        (any::<bool>(), 0..3usize).prop_map(|(any, at)| Bad::HoldDuplicateLine { any, at }),
        prop_oneof![Just(0u64), (TTL_MAX_MS + 1)..=u64::MAX].prop_map(|ttl| Bad::HoldBadTtl { ttl }),
        (0..100_000u32).prop_map(|beyond| Bad::HoldBadDate { beyond }),
        Just(Bad::HoldIdOfFeed),
        near(1, Q_MAX - 3).prop_map(|by| Bad::ReleaseMoreThanHeld { by }),
        near(1, Q_MAX).prop_map(|n| Bad::ReleaseNotInHold { n }),
        near(1, Q_MAX - 4).prop_map(|by| Bad::ShipMoreThanAllocated { by }),
        Just(Bad::ShipMoreThanOnHand),
        (0..4u8, any::<u128>()).prop_map(|(which, n)| Bad::ChangeUnknownHold { which, n }),
        (0..7u8).prop_map(|which| Bad::WrongState { which }),
        any::<bool>().prop_map(|release| Bad::ChangeDuplicateLines { release }),
        (1001..1100usize).prop_map(|n| Bad::ChangeTooManyLines { n }),
        (0..5u8).prop_map(|which| Bad::ChangeIdReused { which }),
        (0..4u8).prop_map(|which| Bad::FeedIdReused { which }),
        (0..=5u64).prop_map(|seq| Bad::StaleFeed { seq }),
        Just(Bad::SetOnHandEmpty),
        (0..=Q_MAX).prop_map(|n| Bad::SetOnHandDuplicate { n }),
        (Q_MAX + 1..=u32::MAX).prop_map(|n| Bad::SetOnHandTooBig { n }),
        (1..100usize).prop_map(|extra| Bad::SetOnHandTooMany { extra }),
        (0..6u8, 0..1000u32).prop_map(|(which, extra)| Bad::FeedUnknownSku { which, extra }),
        (0..7u8, 0..1000u32).prop_map(|(which, extra)| Bad::FeedUnknownNode { which, extra }),
        prop_oneof![Just(0i64), (i64::from(Q_MAX) + 1).., ..-i64::from(Q_MAX)]
            .prop_map(|delta| Bad::AdjustBadDelta { delta }),
        near(1, Q_MAX - 20).prop_map(|by| Bad::AdjustNegative { by }),
        near(10, Q_MAX).prop_map(|by| Bad::AdjustOverflow { by }),
        near(10, Q_MAX).prop_map(|n| Bad::ReturnOverflow { n }),
        (Q_MAX + 1..=u32::MAX).prop_map(|n| Bad::SafetyTooBig { n }),
        Just(Bad::LotDuplicate),
        (0..5u8).prop_map(|which| Bad::LotBadName { which }),
        (0..100_000u32).prop_map(|beyond| Bad::LotBadDate { beyond }),
        Just(Bad::LotTooMany),
        (any::<bool>(), 0..3u8).prop_map(|(receive, which)| Bad::LotUnknown { receive, which }),
        (any::<bool>(), 0..5u8).prop_map(|(node, which)| Bad::UpsertBadName { node, which }),
    ]
}

fn bad_name(which: u8) -> String {
    match which % 5 {
        0 => String::new(),
        1 => "has space".into(),
        2 => "x".repeat(65),
        3 => "caf\u{e9}".into(),
        _ => "tab\there".into(),
    }
}

impl Fixture {
    fn line(&self, sku: SkuId, node: NodeChoice, n: u32) -> HoldLineRequest {
        HoldLineRequest {
            sku,
            node,
            quantity: q(n),
            need_day: None,
        }
    }

    /// Two valid lines of distinct positions with `bad` inserted at `at`.
    fn hold_with(&self, bad: HoldLineRequest, at: usize) -> Vec<HoldLineRequest> {
        let mut lines = vec![
            self.line(self.a, NodeChoice::Node(self.dc2), 1),
            self.line(self.b, NodeChoice::Any, 1),
        ];
        lines.insert(at.min(lines.len()), bad);
        lines
    }

    /// A command with exactly one defect, and the error it must get.
    fn build(&self, bad: &Bad, fresh: RequestId) -> (Command, ErrorCode) {
        use ErrorCode as E;
        let hold = |lines: Vec<HoldLineRequest>, ttl_ms: u64| Command::Hold {
            hold: fresh,
            lines,
            ttl_ms,
            partial: false,
        };
        let lq = |sku: SkuId, node: NodeId, n: u32| LineQuantity {
            sku,
            node,
            quantity: q(n),
        };
        match *bad {
            Bad::HoldUnknownSku { extra, huge, at } => {
                let sku = SkuId::from_raw(if huge {
                    u32::MAX - extra
                } else {
                    self.n_skus + extra
                });
                let lines = self.hold_with(self.line(sku, NodeChoice::Node(self.dc1), 1), at);
                (hold(lines, 60_000), E::UnknownSku)
            }
            Bad::HoldUnknownNode { extra, at } => {
                let node = NodeId::from_raw(self.n_nodes + extra);
                let lines = self.hold_with(self.line(self.c, NodeChoice::Node(node), 1), at);
                (hold(lines, 60_000), E::UnknownNode)
            }
            Bad::HoldEmpty => (hold(vec![], 60_000), E::EmptyRequest),
            Bad::HoldTooManyLines { n } => {
                let lines = (0..n)
                    .map(|i| self.line(SkuId::from_raw(i as u32), NodeChoice::Node(self.dc1), 1))
                    .collect();
                (hold(lines, 60_000), E::TooManyLines)
            }
            Bad::HoldDuplicateLine { any, at } => {
                let node = if any {
                    NodeChoice::Any
                } else {
                    NodeChoice::Node(self.dc2)
                };
                let lines = self.hold_with(self.line(self.a, node, 1), at);
                (hold(lines, 60_000), E::DuplicateLine)
            }
            Bad::HoldBadTtl { ttl } => (
                hold(self.hold_with(self.line(self.c, NodeChoice::Any, 1), 0), ttl),
                E::InvalidTtl,
            ),
            Bad::HoldBadDate { beyond } => {
                let mut line = self.line(self.c, NodeChoice::Node(self.dc1), 1);
                line.need_day = Some(self.today.plus(731 + beyond));
                (hold(self.hold_with(line, 1), 60_000), E::InvalidDate)
            }
            Bad::HoldIdOfFeed => (
                Command::Hold {
                    hold: self.lot_feed,
                    lines: vec![self.line(self.a, NodeChoice::Node(self.dc1), 1)],
                    ttl_ms: 60_000,
                    partial: false,
                },
                E::RequestIdReused,
            ),
            Bad::ReleaseMoreThanHeld { by } => (
                Command::Release {
                    request: fresh,
                    hold: self.held,
                    lines: vec![lq(self.b, self.dc2, 1), lq(self.a, self.dc1, 3 + by)],
                },
                E::ExceedsHeld,
            ),
            Bad::ReleaseNotInHold { n } => (
                Command::Release {
                    request: fresh,
                    hold: self.held,
                    lines: vec![lq(self.a, self.dc2, n)],
                },
                E::ExceedsHeld,
            ),
            Bad::ShipMoreThanAllocated { by } => (
                Command::Ship {
                    request: fresh,
                    hold: self.committed,
                    lines: vec![lq(self.a, self.dc1, 4 + by)],
                },
                E::ExceedsAllocated,
            ),
            Bad::ShipMoreThanOnHand => (
                Command::Ship {
                    request: fresh,
                    hold: self.short,
                    lines: vec![],
                },
                E::NegativeOnHand,
            ),
            Bad::ChangeUnknownHold { which, n } => {
                // Ids in the fixture's range are known; this one is not.
                let hold = RequestId(n | (1 << 127));
                let cmd = match which {
                    0 => Command::Commit { request: fresh, hold },
                    1 => Command::Release {
                        request: fresh,
                        hold,
                        lines: vec![],
                    },
                    2 => Command::CancelAllocation { request: fresh, hold },
                    _ => Command::Ship {
                        request: fresh,
                        hold,
                        lines: vec![],
                    },
                };
                (cmd, E::UnknownHold)
            }
            Bad::WrongState { which } => {
                let cmd = match which {
                    0 => Command::Commit {
                        request: fresh,
                        hold: self.committed,
                    },
                    1 => Command::CancelAllocation {
                        request: fresh,
                        hold: self.held,
                    },
                    2 => Command::Ship {
                        request: fresh,
                        hold: self.held,
                        lines: vec![],
                    },
                    3 => Command::Commit {
                        request: fresh,
                        hold: self.released,
                    },
                    4 => Command::Release {
                        request: fresh,
                        hold: self.committed,
                        lines: vec![],
                    },
                    // A partial release of a committed order: cancel or ship it instead.
                    5 => Command::Release {
                        request: fresh,
                        hold: self.committed,
                        lines: vec![lq(self.a, self.dc1, 1)],
                    },
                    _ => Command::Ship {
                        request: fresh,
                        hold: self.released,
                        lines: vec![],
                    },
                };
                (cmd, E::WrongHoldState)
            }
            Bad::ChangeDuplicateLines { release } => {
                let lines = vec![
                    lq(self.a, self.dc1, 1),
                    lq(self.b, self.dc2, 1),
                    lq(self.a, self.dc1, 1),
                ];
                let cmd = if release {
                    Command::Release {
                        request: fresh,
                        hold: self.held,
                        lines,
                    }
                } else {
                    Command::Ship {
                        request: fresh,
                        hold: self.committed,
                        lines,
                    }
                };
                (cmd, E::DuplicateLine)
            }
            Bad::ChangeTooManyLines { n } => {
                let lines = (0..n)
                    .map(|i| lq(SkuId::from_raw(i as u32), self.dc1, 1))
                    .collect();
                (
                    Command::Release {
                        request: fresh,
                        hold: self.held,
                        lines,
                    },
                    E::TooManyLines,
                )
            }
            Bad::ChangeIdReused { which } => {
                let cmd = match which {
                    // The hold's own id as the request id.
                    0 => Command::Commit {
                        request: self.held,
                        hold: self.held,
                    },
                    // A remembered feed's request id.
                    1 => Command::Commit {
                        request: self.set_feed,
                        hold: self.held,
                    },
                    // Another hold's id.
                    2 => Command::Release {
                        request: self.committed,
                        hold: self.held,
                        lines: vec![],
                    },
                    // The id that committed this allocation, now for a ship.
                    3 => Command::Ship {
                        request: self.commit_op,
                        hold: self.committed,
                        lines: vec![],
                    },
                    // The id that released this hold, now for a commit.
                    _ => Command::Commit {
                        request: self.release_op,
                        hold: self.released,
                    },
                };
                (cmd, E::RequestIdReused)
            }
            Bad::FeedIdReused { which } => {
                let cmd = match which {
                    // An absolute count's id for a safety stock.
                    0 => Command::SetSafetyStock {
                        request: self.set_feed,
                        sku: self.a,
                        node: self.dc1,
                        quantity: 1,
                    },
                    // An inbound lot's id for a return.
                    1 => Command::Return {
                        request: self.lot_feed,
                        sku: self.a,
                        node: self.dc1,
                        quantity: q(1),
                    },
                    // A hold's id for a feed.
                    2 => Command::AdjustOnHand {
                        request: self.held,
                        sku: self.a,
                        node: self.dc1,
                        delta: 1,
                        reason: AdjustReason::Found,
                    },
                    _ => Command::SetOnHand {
                        request: self.released,
                        node: self.dc1,
                        feed_seq: self.dc1_seq + 1,
                        counts: vec![(self.a, 1)],
                    },
                };
                (cmd, E::RequestIdReused)
            }
            Bad::StaleFeed { seq } => (
                Command::SetOnHand {
                    request: fresh,
                    node: self.dc1,
                    feed_seq: seq.min(self.dc1_seq),
                    counts: vec![(self.a, 1)],
                },
                E::StaleFeedSequence,
            ),
            Bad::SetOnHandEmpty => (
                Command::SetOnHand {
                    request: fresh,
                    node: self.dc1,
                    feed_seq: self.dc1_seq + 1,
                    counts: vec![],
                },
                E::EmptyRequest,
            ),
            Bad::SetOnHandDuplicate { n } => (
                Command::SetOnHand {
                    request: fresh,
                    node: self.dc2,
                    feed_seq: 100,
                    counts: vec![(self.a, 1), (self.b, 2), (self.a, n)],
                },
                E::DuplicateLine,
            ),
            Bad::SetOnHandTooBig { n } => (
                Command::SetOnHand {
                    request: fresh,
                    node: self.dc2,
                    feed_seq: 100,
                    counts: vec![(self.a, 1), (self.b, n)],
                },
                E::InvalidQuantity,
            ),
            Bad::SetOnHandTooMany { extra } => (
                Command::SetOnHand {
                    request: fresh,
                    node: self.dc2,
                    feed_seq: 100,
                    counts: (0..10_000 + extra as u32)
                        .map(|i| (SkuId::from_raw(i), 1))
                        .collect(),
                },
                E::TooManyLines,
            ),
            Bad::FeedUnknownSku { which, extra } => {
                let sku = SkuId::from_raw(self.n_skus + extra);
                (self.feed(which, fresh, sku, self.dc1), E::UnknownSku)
            }
            Bad::FeedUnknownNode { which, extra } => {
                let node = NodeId::from_raw(self.n_nodes + extra);
                (self.feed(which, fresh, self.a, node), E::UnknownNode)
            }
            Bad::AdjustBadDelta { delta } => (
                Command::AdjustOnHand {
                    request: fresh,
                    sku: self.a,
                    node: self.dc1,
                    delta,
                    reason: AdjustReason::Correction,
                },
                E::InvalidQuantity,
            ),
            Bad::AdjustNegative { by } => (
                Command::AdjustOnHand {
                    request: fresh,
                    sku: self.a,
                    node: self.dc1,
                    delta: -(20 + i64::from(by)),
                    reason: AdjustReason::Shrink,
                },
                E::NegativeOnHand,
            ),
            Bad::AdjustOverflow { by } => (
                Command::AdjustOnHand {
                    request: fresh,
                    sku: self.big,
                    node: self.dc1,
                    delta: i64::from(by),
                    reason: AdjustReason::Found,
                },
                E::QuantityOverflow,
            ),
            Bad::ReturnOverflow { n } => (
                Command::Return {
                    request: fresh,
                    sku: self.big,
                    node: self.dc1,
                    quantity: q(n),
                },
                E::QuantityOverflow,
            ),
            Bad::SafetyTooBig { n } => (
                Command::SetSafetyStock {
                    request: fresh,
                    sku: self.a,
                    node: self.dc1,
                    quantity: n,
                },
                E::InvalidQuantity,
            ),
            Bad::LotDuplicate => (
                Command::AddInbound {
                    request: fresh,
                    sku: self.a,
                    node: self.dc1,
                    reference: "PO-1".into(),
                    quantity: q(3),
                    arrival: self.today.plus(9),
                },
                E::DuplicateLot,
            ),
            Bad::LotBadName { which } => (
                Command::AddInbound {
                    request: fresh,
                    sku: self.a,
                    node: self.dc1,
                    reference: bad_name(which),
                    quantity: q(3),
                    arrival: self.today.plus(9),
                },
                E::InvalidName,
            ),
            Bad::LotBadDate { beyond } => (
                Command::AddInbound {
                    request: fresh,
                    sku: self.a,
                    node: self.dc1,
                    reference: "PO-LATE".into(),
                    quantity: q(3),
                    arrival: self.today.plus(731 + beyond),
                },
                E::InvalidDate,
            ),
            Bad::LotTooMany => (
                Command::AddInbound {
                    request: fresh,
                    sku: self.c,
                    node: self.dc1,
                    reference: "L64".into(),
                    quantity: q(1),
                    arrival: self.today.plus(2),
                },
                E::TooManyLots,
            ),
            Bad::LotUnknown { receive, which } => {
                // A reference that exists nowhere, one that exists at another node, or on
                // another SKU.
                let (sku, node, reference) = match which {
                    0 => (self.a, self.dc1, "PO-404"),
                    1 => (self.a, self.dc2, "PO-1"),
                    _ => (self.b, self.dc1, "PO-1"),
                };
                let cmd = inbound_lot_command(receive, fresh, sku, node, reference.to_string());
                (cmd, E::UnknownLot)
            }
            Bad::UpsertBadName { node, which } => {
                let name = bad_name(which);
                let cmd = if node {
                    Command::UpsertNode(NodeSpec::open(name))
                } else {
                    Command::UpsertSku {
                        name,
                        required: Capabilities::default(),
                    }
                };
                (cmd, E::InvalidName)
            }
        }
    }

    /// A well-formed feed command of kind `which` on `sku` at `node`.
    fn feed(&self, which: u8, request: RequestId, sku: SkuId, node: NodeId) -> Command {
        match which {
            0 => Command::SetOnHand {
                request,
                node,
                feed_seq: 1000,
                counts: vec![(sku, 7)],
            },
            1 => Command::AdjustOnHand {
                request,
                sku,
                node,
                delta: 2,
                reason: AdjustReason::CycleCount,
            },
            2 => Command::SetSafetyStock {
                request,
                sku,
                node,
                quantity: 2,
            },
            3 => Command::AddInbound {
                request,
                sku,
                node,
                reference: "PO-NEW".into(),
                quantity: q(2),
                arrival: self.today.plus(4),
            },
            4 => Command::Return {
                request,
                sku,
                node,
                quantity: q(2),
            },
            5 => Command::ReceiveInbound {
                request,
                sku,
                node,
                reference: "PO-1".into(),
            },
            _ => Command::CancelInbound {
                request,
                sku,
                node,
                reference: "PO-1".into(),
            },
        }
    }
}

/// Applies `cmd` and checks that it failed with `want` and left everything as it was.
fn expect_rejected(f: &Fixture, now: Timestamp, cmd: &Command, want: ErrorCode, before: StateDigest) {
    let seq = f.engine.next_seq();
    match f.engine.apply(now, cmd) {
        Err(e) => {
            assert_eq!(
                e.code(),
                want,
                "{cmd:?} failed with {e} ({:?}), expected {want:?}",
                e.code()
            );
            assert!(!e.to_string().is_empty());
        }
        Ok(out) => panic!("{cmd:?} was accepted ({out:?}); expected {want:?}"),
    }
    assert_eq!(f.engine.state_digest(), before, "{cmd:?} changed the state");
    assert_eq!(f.engine.next_seq(), seq, "{cmd:?} was sequenced");
    f.engine.check_invariants().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every bad command fails with its typed error and changes nothing, however many are sent.
    #[test]
    fn bad_commands_change_nothing(
        bads in prop::collection::vec(bad_s(), 1..8),
        // Up to an hour after T0: the held hold (one day) stays unexpired.
        dts in prop::collection::vec(0..3_600_000u64 / 8, 8),
    ) {
        let f = fixture();
        let before = f.engine.state_digest();
        let mut now = T0;
        for (i, bad) in bads.iter().enumerate() {
            now = Timestamp(now.0 + dts[i]);
            let (cmd, want) = f.build(bad, id(1_000_000 + i as u128));
            expect_rejected(&f, now, &cmd, want, before);
        }
        // The fixture's holds are untouched.
        prop_assert_eq!(f.engine.hold(f.held).unwrap().state, HoldState::Held);
        prop_assert_eq!(f.engine.hold(f.committed).unwrap().state, HoldState::Committed);
    }

    /// Quantities are checked by their constructor: 1 ..= 2^31 only.
    #[test]
    fn quantity_constructor(v in prop_oneof![
        i64::MIN..=0,
        1..=i64::from(Q_MAX),
        i64::from(Q_MAX) + 1..=i64::MAX,
        Just(0i64),
        Just(1i64),
        Just(i64::from(Q_MAX)),
        Just(i64::from(Q_MAX) + 1),
    ]) {
        match Quantity::new(v) {
            Ok(qty) => {
                prop_assert!((1..=i64::from(Q_MAX)).contains(&v), "{} accepted", v);
                prop_assert_eq!(i64::from(qty.get()), v);
            }
            Err(e) => {
                prop_assert!(!(1..=i64::from(Q_MAX)).contains(&v), "{} refused", v);
                prop_assert_eq!(e.code(), ErrorCode::InvalidQuantity);
            }
        }
    }

    /// Retrying any earlier request returns its first answer and changes nothing; so does a
    /// release of a hold that is already released.
    #[test]
    fn retries_change_nothing(picks in prop::collection::vec(any::<usize>(), 1..10), dt in 0..3_600_000u64) {
        let f = fixture();
        let before = f.engine.state_digest();
        let now = Timestamp(T0.0 + dt);
        for pick in picks {
            let cmd = &f.setup[pick % f.setup.len()];
            let seq = f.engine.next_seq();
            let out = f.engine.apply(now, cmd);
            match (cmd, &out) {
                (Command::UpsertNode(_), Ok(Outcome::NodeUpserted(_)))
                | (Command::UpsertSku { .. }, Ok(Outcome::SkuUpserted(_))) => {
                    // Upserts are not idempotent requests; re-applying one rewrites the same
                    // value, but it is a new command in the log.
                    prop_assert_eq!(f.engine.next_seq(), seq + 1);
                }
                (_, Ok(Outcome::Fed { repeated: true }))
                | (_, Ok(Outcome::Hold(HoldOutcome::Granted { repeated: true, .. })))
                | (_, Ok(Outcome::HoldChanged { repeated: true, .. })) => {
                    prop_assert_eq!(f.engine.next_seq(), seq, "a retry was sequenced");
                }
                _ => prop_assert!(false, "retry of {:?} answered {:?}", cmd, out),
            }
            prop_assert_eq!(f.engine.state_digest(), before, "retry of {:?} changed the state", cmd);
        }
        let again = f.engine.apply(now, &Command::Release { request: id(999_999), hold: f.released, lines: vec![] });
        prop_assert_eq!(
            again,
            Ok(Outcome::HoldChanged { hold: f.released, state: HoldState::Released, repeated: false })
        );
        prop_assert_eq!(f.engine.state_digest(), before);
        f.engine.check_invariants().map_err(TestCaseError::fail)?;
    }
}

/// The fixture itself is what the properties assume (so that a passing run means something).
#[test]
fn fixture_is_as_described() {
    let f = fixture();
    let p = f.engine.position(f.a, f.dc1).unwrap().unwrap();
    assert_eq!((p.on_hand, p.reserved, p.allocated), (20, 3, 4));
    let p = f.engine.position(f.b, f.dc2).unwrap().unwrap();
    assert_eq!((p.on_hand, p.reserved, p.allocated, p.safety_stock), (1, 2, 2, 0));
    assert_eq!(p.future_claims, vec![(f.today.plus(2), 2)]);
    assert_eq!(f.engine.position(f.c, f.dc1).unwrap().unwrap().lots.len(), 64);
    assert_eq!(
        f.engine.position(f.big, f.dc1).unwrap().unwrap().on_hand,
        u32::MAX - 9
    );
    assert_eq!(f.engine.position(f.a, f.st3).unwrap(), None);
    assert_eq!(f.engine.feed_seq(f.dc1), f.dc1_seq);
    // Each bad command, built once, is really rejected (not just by luck of the draw).
    let before = f.engine.state_digest();
    let samples = [
        Bad::HoldUnknownSku {
            extra: 0,
            huge: false,
            at: 0,
        },
        Bad::HoldUnknownSku {
            extra: 0,
            huge: true,
            at: 2,
        },
        Bad::HoldUnknownNode { extra: 0, at: 1 },
        Bad::HoldEmpty,
        Bad::HoldTooManyLines { n: 1001 },
        Bad::HoldDuplicateLine { any: false, at: 2 },
        Bad::HoldDuplicateLine { any: true, at: 0 },
        Bad::HoldBadTtl { ttl: 0 },
        Bad::HoldBadTtl { ttl: TTL_MAX_MS + 1 },
        Bad::HoldBadDate { beyond: 0 },
        Bad::HoldIdOfFeed,
        Bad::ReleaseMoreThanHeld { by: 1 },
        Bad::ReleaseNotInHold { n: 1 },
        Bad::ShipMoreThanAllocated { by: 1 },
        Bad::ShipMoreThanOnHand,
        Bad::StaleFeed { seq: 5 },
        Bad::AdjustNegative { by: 1 },
        Bad::AdjustOverflow { by: 10 },
        Bad::ReturnOverflow { n: 10 },
        Bad::LotDuplicate,
        Bad::LotTooMany,
    ];
    for (i, bad) in samples.iter().enumerate() {
        let (cmd, want) = f.build(bad, id(2_000_000 + i as u128));
        expect_rejected(&f, T0, &cmd, want, before);
    }
    for which in 0..7 {
        let (cmd, want) = f.build(&Bad::WrongState { which }, id(3_000_000 + u128::from(which)));
        expect_rejected(&f, T0, &cmd, want, before);
    }
    for which in 0..5 {
        let (cmd, want) = f.build(&Bad::ChangeIdReused { which }, id(3_100_000 + u128::from(which)));
        expect_rejected(&f, T0, &cmd, want, before);
    }
    for which in 0..4 {
        let (cmd, want) = f.build(&Bad::FeedIdReused { which }, id(3_200_000 + u128::from(which)));
        expect_rejected(&f, T0, &cmd, want, before);
    }
    // One less than each limit is accepted (on a copy of the fixture), so the limits are exact.
    let g = fixture();
    let ok = |c: Command| g.engine.apply(T0, &c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
    ok(Command::AdjustOnHand {
        request: id(4_000_001),
        sku: g.big,
        node: g.dc1,
        delta: 9,
        reason: AdjustReason::Found,
    });
    ok(Command::AdjustOnHand {
        request: id(4_000_002),
        sku: g.a,
        node: g.dc1,
        delta: -20,
        reason: AdjustReason::Shrink,
    });
    ok(Command::SetOnHand {
        request: id(4_000_003),
        node: g.dc1,
        feed_seq: g.dc1_seq + 1,
        counts: vec![(g.a, Q_MAX)],
    });
    let out = ok(Command::Hold {
        hold: id(4_000_004),
        lines: vec![HoldLineRequest {
            sku: g.a,
            node: NodeChoice::Node(g.dc1),
            quantity: q(1),
            need_day: Some(g.today.plus(730)),
        }],
        ttl_ms: TTL_MAX_MS,
        partial: false,
    });
    assert!(
        matches!(out, Outcome::Hold(HoldOutcome::Granted { .. })),
        "{out:?}"
    );
    g.engine.check_invariants().unwrap();
}
