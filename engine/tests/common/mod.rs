//! Helpers shared by the integration tests: the clock, ids and quantities, engine configurations,
//! the network the property tests start from, pieces of the proptest generators, and the random
//! commands of the multi-threaded tests.

// Each test binary compiles its own copy of this module and uses only a subset of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use promised_engine::network::Capabilities;
use promised_engine::{
    Command, Day, Engine, EngineConfig, HoldLineRequest, LineQuantity, NodeChoice, NodeId, NodeSpec,
    NodeStatus, Quantity, RequestId, SkuId, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

// ---- the clock, ids and quantities -------------------------------------------------------------

pub const DAY_MS: u64 = 86_400_000;
/// 2026-11-23, 09:00 UTC.
pub const T0: Timestamp = Timestamp(20_780 * DAY_MS + 9 * 3_600_000);

pub fn q(n: u32) -> Quantity {
    Quantity::new(i64::from(n)).expect("a valid quantity")
}
pub fn sku(i: u32) -> SkuId {
    SkuId::from_raw(i)
}
pub fn node(i: u32) -> NodeId {
    NodeId::from_raw(i)
}
pub fn node_spec(i: u32, status: NodeStatus, caps: u32) -> NodeSpec {
    let mut spec = NodeSpec::open(format!("N{i}"));
    spec.status = status;
    spec.capabilities = Capabilities(caps);
    // Small enough that route orders fill a day (even nodes: one unit a day).
    spec.capacity = promised_engine::network::DailyCapacity {
        orders: 1 + i % 2,
        units: 1 + 7 * (i % 2),
    };
    spec
}

/// The day `offset` days from the day of `now`.
pub fn day_offset(now: Timestamp, offset: i64) -> Day {
    Day((i64::from(now.day().0) + offset) as u32)
}

/// The `n`th fresh request id of a sequential test; the bits are spread so that ids land in
/// every request shard.
pub fn spread_id(n: u128) -> RequestId {
    RequestId(n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ 0x5EED)
}

/// The seeds to run: `default`, or the one `PROMISED_TEST_SEED` names.
pub fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("PROMISED_TEST_SEED") {
        Ok(s) => vec![s.parse().expect("PROMISED_TEST_SEED is a number")],
        Err(_) => default.to_vec(),
    }
}

/// Request ids unique per (thread, counter), spread over all request shards.
pub fn thread_request_id(thread: usize, n: u64) -> RequestId {
    let raw = (u128::from(n) << 8 | thread as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    RequestId(raw | 1)
}

/// The random number generator of worker thread `t` under `seed`.
pub fn worker_rng(seed: u64, t: usize) -> Pcg64 {
    Pcg64::seed_from_u64(seed.wrapping_mul(31) ^ (t as u64 + 7).wrapping_mul(0xE703_7ED1_A0B4_28DB))
}

// ---- the network the property tests start from -------------------------------------------------

/// Nodes `N0..N3` exist from the start.
pub const N_NODES: u32 = 4;
/// SKUs `S0..S4` exist from the start.
pub const N_SKUS: u32 = 5;

/// Four SKU shards, four request shards, a one-day retention window and a record cap far above
/// anything a case can reach: only the time window forgets.
pub fn time_window_config() -> EngineConfig {
    EngineConfig {
        sku_shards: 4,
        request_shards: 4,
        retention_ms: DAY_MS,
        retained_records_max: 1 << 20,
        ..EngineConfig::default()
    }
}

/// One request shard and a cap of 6 remembered records: the cap forgets too.
pub fn record_cap_config() -> EngineConfig {
    EngineConfig {
        sku_shards: 2,
        request_shards: 1,
        retention_ms: 3 * DAY_MS,
        retained_records_max: 6,
        ..EngineConfig::default()
    }
}

/// The commands that set up the network: nodes `N0..N3` (capabilities: N0 everything, N1 gift
/// wrap, N2 hazmat, N3 nothing), SKUs `S0..S4` (S4 needs hazmat), and the initial on-hand count
/// per SKU x node (`None`: never stocked), one feed per node with a count, each with a fresh id
/// taken from `next_id` (see [`spread_id`]).
pub fn setup_commands(initial: &[Option<u32>], next_id: &mut u128) -> Vec<Command> {
    let mut setup = Vec::new();
    let caps = [3, Capabilities::GIFT_WRAP.0, Capabilities::HAZMAT.0, 0];
    for i in 0..N_NODES {
        setup.push(Command::UpsertNode(node_spec(
            i,
            NodeStatus::Open,
            caps[i as usize],
        )));
    }
    for i in 0..N_SKUS {
        let required = if i == 4 {
            Capabilities::HAZMAT
        } else {
            Capabilities::default()
        };
        setup.push(Command::UpsertSku {
            name: format!("S{i}"),
            required,
        });
    }
    for n in 0..N_NODES {
        let counts: Vec<(SkuId, u32)> = (0..N_SKUS)
            .filter_map(|s| initial[(s * N_NODES + n) as usize].map(|c| (sku(s), c)))
            .collect();
        if !counts.is_empty() {
            *next_id += 1;
            setup.push(Command::SetOnHand {
                request: spread_id(*next_id),
                node: node(n),
                feed_seq: 1,
                counts,
            });
        }
    }
    setup
}

// ---- pieces of the proptest generators ---------------------------------------------------------

/// The feed sequence number a feed sends, relative to the node's last one.
#[derive(Clone, Debug)]
pub enum SeqMode {
    Next,
    Same,
    Older,
    Jump(u64),
}

impl SeqMode {
    pub fn feed_seq(&self, last: u64) -> u64 {
        match self {
            SeqMode::Next => last + 1,
            SeqMode::Same => last,
            SeqMode::Older => last.saturating_sub(1),
            SeqMode::Jump(k) => last + k,
        }
    }
}

/// One line of a generated hold.
#[derive(Clone, Debug)]
pub struct LineSpec {
    pub sku: u32,
    /// `None`: any node.
    pub node: Option<u32>,
    pub qty: u32,
    /// Need day as days from today; `None`: today.
    pub need: Option<i64>,
}

impl LineSpec {
    /// The hold line this asks for at `now`.
    pub fn request(&self, now: Timestamp) -> HoldLineRequest {
        HoldLineRequest {
            sku: sku(self.sku),
            node: self.node.map_or(NodeChoice::Any, |n| NodeChoice::Node(node(n))),
            quantity: q(self.qty),
            need_day: self.need.map(|o| day_offset(now, o)),
        }
    }
}

/// Initial on-hand count per SKU x node of the `N_SKUS` x `N_NODES` network.
pub fn initial_s() -> impl Strategy<Value = Vec<Option<u32>>> {
    prop::collection::vec(
        prop_oneof![1 => Just(None), 3 => (0..=10u32).prop_map(Some)],
        (N_SKUS * N_NODES) as usize,
    )
}

pub fn status_s() -> impl Strategy<Value = NodeStatus> {
    prop_oneof![
        6 => Just(NodeStatus::Open),
        1 => Just(NodeStatus::Paused),
        1 => Just(NodeStatus::Closed),
    ]
}

/// Feed sequence modes, `Next` with weight `next` against 2 + 1 + 2 for the others.
pub fn seq_s(next: u32) -> impl Strategy<Value = SeqMode> {
    prop_oneof![
        next => Just(SeqMode::Next),
        2 => Just(SeqMode::Same),
        1 => Just(SeqMode::Older),
        2 => (2..5u64).prop_map(SeqMode::Jump),
    ]
}

/// Milliseconds the clock moves before a command: often none, sometimes exact TTLs, up to two days.
pub fn dt_s() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(0u64),
        1 => prop_oneof![Just(1u64), Just(60_000), Just(3_600_000), Just(DAY_MS)],
        4 => 1..600_000u64,
        2 => 600_000..21_600_000u64,
        1 => 21_600_000..2 * DAY_MS,
    ]
}

// ---- random commands of the multi-threaded tests -----------------------------------------------

/// A hold of 1-3 lines (repeated SKUs dropped) on SKUs `0..skus`, any node or one of `0..nodes`,
/// some for later days.
pub fn random_hold(rng: &mut Pcg64, hold: RequestId, today: Day, skus: u32, nodes: u32) -> Command {
    let mut lines: Vec<HoldLineRequest> = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let sku = SkuId::from_raw(rng.random_range(0..skus));
        if lines.iter().any(|l| l.sku == sku) {
            continue;
        }
        lines.push(HoldLineRequest {
            sku,
            node: if rng.random_bool(0.3) {
                NodeChoice::Any
            } else {
                NodeChoice::Node(NodeId::from_raw(rng.random_range(0..nodes)))
            },
            quantity: q(rng.random_range(1..=5)),
            need_day: rng.random_bool(0.3).then(|| today.plus(rng.random_range(0..4))),
        });
    }
    Command::Hold {
        hold,
        lines,
        ttl_ms: [1, 10, 50, 3_600_000][rng.random_range(0..4)],
        partial: rng.random_bool(0.3),
    }
}

/// A commit, whole or partial release, cancel, or whole or partial ship of a hold picked from
/// `holds`; a tick if there is none yet.
pub fn random_hold_change(
    rng: &mut Pcg64,
    holds: &Mutex<Vec<RequestId>>,
    engine: &Engine,
    request: RequestId,
) -> Command {
    let picked = {
        let holds = holds.lock().unwrap();
        (!holds.is_empty()).then(|| holds[rng.random_range(0..holds.len())])
    };
    let Some(hold) = picked else {
        return Command::Tick;
    };
    let lines = || -> Vec<LineQuantity> {
        let Some(h) = engine.hold(hold) else { return vec![] };
        h.lines
            .iter()
            .filter(|l| l.remaining > 0)
            .take(1)
            .map(|l| LineQuantity {
                sku: l.sku,
                node: l.node,
                quantity: q(l.remaining.div_ceil(2)),
            })
            .collect()
    };
    match rng.random_range(0..6) {
        0 | 1 => Command::Commit { request, hold },
        2 => Command::Release {
            request,
            hold,
            lines: vec![],
        },
        3 => Command::Release {
            request,
            hold,
            lines: lines(),
        },
        4 => Command::CancelAllocation { request, hold },
        _ => Command::Ship {
            request,
            hold,
            lines: if rng.random_bool(0.5) { lines() } else { vec![] },
        },
    }
}

/// 1-3 absolute counts (repeated SKUs dropped) on SKUs `0..skus`.
pub fn random_counts(rng: &mut Pcg64, skus: u32) -> Vec<(SkuId, u32)> {
    let mut counts: Vec<(SkuId, u32)> = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let sku = SkuId::from_raw(rng.random_range(0..skus));
        if !counts.iter().any(|c| c.0 == sku) {
            counts.push((sku, rng.random_range(0..=15)));
        }
    }
    counts
}

/// Receive (`receive`) or cancel the inbound lot `reference`.
pub fn inbound_lot_command(
    receive: bool,
    request: RequestId,
    sku: SkuId,
    node: NodeId,
    reference: String,
) -> Command {
    if receive {
        Command::ReceiveInbound {
            request,
            sku,
            node,
            reference,
        }
    } else {
        Command::CancelInbound {
            request,
            sku,
            node,
            reference,
        }
    }
}

// ---- checks that a generator reaches the interesting cases -------------------------------------

/// A proptest runner with a fixed seed (32 bytes of `seed`), for drawing a fixed batch of cases.
pub fn fixed_runner(seed: u8) -> TestRunner {
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

/// Adds the counts of one case to the totals.
pub fn add_stats(totals: &mut BTreeMap<&'static str, u32>, stats: BTreeMap<&'static str, u32>) {
    for (k, v) in stats {
        *totals.entry(k).or_default() += v;
    }
}

/// `what` must have been reached at least three times.
pub fn assert_reached(totals: &BTreeMap<&'static str, u32>, what: &str) {
    assert!(
        totals.get(what).copied().unwrap_or(0) >= 3,
        "the generator rarely reaches {what:?}: {totals:?}"
    );
}
