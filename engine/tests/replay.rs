//! Replay equivalence of the durable engine: what recovery rebuilds (newest snapshot + the log
//! after it) is the state the live engine had, and it goes on behaving exactly like an engine that
//! never restarted.
//!
//! - `replay_equivalence` (proptest): random command sequences of every kind (holds with several
//!   lines, partial grants, `Any` nodes and future need days; commits, whole and partial releases,
//!   cancels, whole and partial ships; feeds of every kind with fresh, stale and skipping feed
//!   sequence numbers; inbound lots added, received and cancelled; returns; ticks that expire holds
//!   and forget requests; node and SKU upserts; retries and commands that fail) go through a
//!   `DurableEngine` on a `SimStorage` (fsync = always; 64 MiB or 1 KiB log segments; a one-day
//!   retention window or a cap of 6 remembered requests) and, in lockstep, through a plain
//!   in-memory `Engine`. Every outcome must agree. Snapshots are taken at random points (sometimes twice at one point) and
//!   the engine is restarted at random points. At every restart: a power loss at that moment
//!   loses nothing acknowledged, a clean close and reopen gives the live `state_digest()` and LSN,
//!   recovery loaded the newest snapshot and replayed exactly the records after it, and the
//!   invariants hold. Every snapshot file loads on its own into the live state. After the last
//!   restart the rest of the commands go to the reopened engine and to the never-restarted one:
//!   outcomes and digests must stay identical.
//! - `replay_generator_reaches_interesting_cases`: the generator above really reaches expiry,
//!   forgetting, partial grants, refusals, errors, snapshots and replays after a snapshot.
//! - `concurrent_replay_equivalence`: four threads apply random commands at once through one
//!   `DurableEngine` on a real directory (some with `apply`, some with `submit` + `wait`) on
//!   overlapping SKUs, while another thread takes three snapshots. Afterwards the reopened engine,
//!   a replay of the whole log from LSN 1 into a fresh `Engine`, and every snapshot taken plus
//!   the log after it must all give the live digest. A variant with 4 KiB segments rotates
//!   segments and prunes them behind the snapshots (there the whole-log replay is left out, and
//!   only the snapshots whose log is still kept are replayed). Several seeds; `PROMISED_TEST_SEED` pins one,
//!   and every assertion names its seed.
//! - `wal_writes_records_in_lsn_order_whatever_the_append_order`: `CommandLog::append` called with
//!   LSNs 2, 1, 3 (and then 6, 5, 4): nothing past a gap is acknowledged or written, and the log
//!   reads back 1..=6 in order with the right times and commands.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use promised_engine::codec;
use promised_engine::durable::{DurableEngine, DurableError, DurableOptions, Ticket};
use promised_engine::network::Capabilities;
use promised_engine::snapshot::{SnapshotFile, SnapshotInfo, parse_snapshot_name, snapshot_name};
use promised_engine::storage::{FsStorage, PowerLoss, SimStorage, Storage};
use promised_engine::wal::format::parse_segment_name;
use promised_engine::wal::{self, FsyncPolicy, LogTail, Wal, WalOptions};
use promised_engine::{
    AdjustReason, Command, CommandLog, Engine, EngineConfig, EngineError, HoldLineRequest, HoldOutcome,
    HoldState, LineQuantity, NodeChoice, NodeId, NodeStatus, Outcome, RefusalReason, RequestId, ShipSlot,
    SkuId, StateDigest, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::Rng;
use rand_pcg::Pcg64;

use common::{
    DAY_MS, LineSpec, N_NODES, N_SKUS, SeqMode, T0, add_stats, assert_reached, day_offset, dt_s,
    fixed_runner, inbound_lot_command, initial_s, node, node_spec, q, random_counts, random_hold,
    random_hold_change, record_cap_config, seeds, seq_s, setup_commands, sku, spread_id, status_s,
    thread_request_id, time_window_config, worker_rng,
};

fn durable_options(engine: EngineConfig, segment_bytes: u64) -> DurableOptions {
    DurableOptions {
        engine,
        wal: WalOptions {
            fsync: FsyncPolicy::Always,
            segment_bytes,
            // Small segments are written over prepared (zero-filled) files where the storage
            // offers them. One large segment is appended to, so that the whole log stays from
            // LSN 1 (a prepared segment would take over from the first one early, and snapshots
            // would prune that).
            preallocate: segment_bytes < WalOptions::default().segment_bytes,
            ..WalOptions::default()
        },
        snapshot_every_records: 0,
        snapshot_every: None,
    }
}

/// Replays the log from `from_lsn` into `engine` (fresh, or loaded from the snapshot at
/// `from_lsn - 1`); the records must come in LSN order from `from_lsn` and every one must apply.
/// Returns how many were replayed.
fn replay_log(storage: &dyn Storage, engine: &Engine, from_lsn: u64) -> Result<u64, String> {
    let mut next = from_lsn;
    wal::scan(storage, from_lsn, |rec| {
        if rec.lsn != next {
            return Err(format!("record {} where {next} was due", rec.lsn));
        }
        let cmd = codec::decode(rec.body).map_err(|e| format!("record {} does not decode: {e}", rec.lsn))?;
        engine
            .apply(Timestamp(rec.time), &cmd)
            .map_err(|e| format!("record {} ({cmd:?}) does not apply: {e}", rec.lsn))?;
        next += 1;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(next - from_lsn)
}

/// The snapshot files in a directory, by LSN.
fn snapshots_in(storage: &dyn Storage) -> BTreeSet<u64> {
    storage
        .list()
        .expect("list")
        .iter()
        .filter_map(|n| parse_snapshot_name(n))
        .collect()
}

fn segments_in(storage: &dyn Storage) -> BTreeSet<u64> {
    storage
        .list()
        .expect("list")
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect()
}

// ---- 1. replay equivalence (proptest) -----------------------------------------------------------

// The network starts as `common::setup_commands` builds it: nodes `N0..N3` and SKUs `S0..S4`.
// `N4` (id 4) and `S5` (id 5) exist only once an upsert adds them; SKU id 6 never does.

#[derive(Clone, Debug)]
enum Op {
    UpsertNode {
        node: u32,
        status: NodeStatus,
        caps: u32,
    },
    UpsertSku {
        sku: u32,
        hazmat: bool,
    },
    SetOnHand {
        node: u32,
        seq: SeqMode,
        counts: Vec<(u32, u32)>,
    },
    Adjust {
        sku: u32,
        node: u32,
        delta: i64,
    },
    Safety {
        sku: u32,
        node: u32,
        qty: u32,
    },
    AddLot {
        sku: u32,
        node: u32,
        lot: u8,
        qty: u32,
        arrival: i64,
    },
    /// Receive (`receive`) or cancel a lot: with `existing`, one added before (perhaps already
    /// gone), else the reference `PO-{lot}` at the given position.
    Lot {
        receive: bool,
        existing: bool,
        pick: usize,
        sku: u32,
        node: u32,
        lot: u8,
    },
    Return {
        sku: u32,
        node: u32,
        qty: u32,
    },
    Hold {
        lines: Vec<LineSpec>,
        ttl: u64,
        partial: bool,
    },
    Commit {
        pick: usize,
    },
    /// Empty `lines`: the whole hold; else (line pick, quantity).
    Release {
        pick: usize,
        lines: Vec<(usize, u32)>,
    },
    Cancel {
        pick: usize,
    },
    Ship {
        pick: usize,
        lines: Vec<(usize, u32)>,
    },
    Tick,
    /// A route order: (SKU, node, quantity) lines, one package per node shipping `day` days
    /// from today; `drop_package` leaves one out (an invalid order).
    Route {
        lines: Vec<(u32, u32, u32)>,
        day: i64,
        drop_package: bool,
    },
    /// An earlier command again, verbatim.
    Retry {
        pick: usize,
    },
}

#[derive(Clone, Debug)]
struct Step {
    /// Milliseconds the clock moves before the command.
    dt: u64,
    /// Reuse an earlier request id (which usually fails) instead of a fresh one.
    reuse: Option<usize>,
    op: Op,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Snapshot,
    Restart,
}

#[derive(Clone, Debug)]
struct Case {
    record_cap: bool,
    /// 1 KiB log segments instead of the default 64 MiB: rotation and pruning.
    small_segments: bool,
    /// Initial on-hand count per SKU x node (`None`: never stocked).
    initial: Vec<Option<u32>>,
    steps: Vec<Step>,
    /// Steps before the last restart (taken modulo `steps.len() + 1`).
    split: usize,
    /// (before step, what), positions taken modulo `split + 1`.
    events: Vec<(usize, Event)>,
}

fn sku_s() -> impl Strategy<Value = u32> {
    prop_oneof![30 => 0..N_SKUS, 1 => Just(N_SKUS), 1 => Just(N_SKUS + 1)]
}
fn node_s() -> impl Strategy<Value = u32> {
    prop_oneof![30 => 0..N_NODES, 1 => Just(N_NODES)]
}
fn line_s() -> impl Strategy<Value = LineSpec> {
    (
        sku_s(),
        prop_oneof![3 => node_s().prop_map(Some), 1 => Just(None)],
        1..=6u32,
        prop_oneof![
            10 => Just(None),
            8 => (0..=6i64).prop_map(Some),
            1 => Just(Some(-1i64)),
            1 => Just(Some(731i64)),
        ],
    )
        .prop_map(|(sku, node, qty, need)| LineSpec { sku, node, qty, need })
}
fn ttl_s() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        4 => Just(1u64),
        6 => Just(60_000u64),
        8 => Just(3_600_000u64),
        8 => Just(DAY_MS),
        4 => Just(3 * DAY_MS),
    ]
}
fn change_lines_s() -> impl Strategy<Value = Vec<(usize, u32)>> {
    prop_oneof![
        1 => Just(Vec::new()),
        1 => prop::collection::vec((0..4usize, 1..=4u32), 1..=2),
    ]
}
fn op_s() -> impl Strategy<Value = Op> {
    let status = status_s();
    let seq = seq_s(12);
    prop_oneof![
        2 => (0..=N_NODES, status, 0..4u32).prop_map(|(node, status, caps)| Op::UpsertNode { node, status, caps }),
        2 => (prop_oneof![3 => 0..N_SKUS, 1 => Just(N_SKUS)], prop::bool::weighted(0.25))
            .prop_map(|(sku, hazmat)| Op::UpsertSku { sku, hazmat }),
        7 => (node_s(), seq, prop::collection::vec((sku_s(), 0..=12u32), 1..=3))
            .prop_map(|(node, seq, counts)| Op::SetOnHand { node, seq, counts }),
        3 => (sku_s(), node_s(), -6..=6i64).prop_map(|(sku, node, delta)| Op::Adjust { sku, node, delta }),
        2 => (sku_s(), node_s(), 0..=4u32).prop_map(|(sku, node, qty)| Op::Safety { sku, node, qty }),
        4 => (sku_s(), node_s(), 0..4u8, 1..=8u32, prop_oneof![12 => -2..=8i64, 1 => Just(731i64)])
            .prop_map(|(sku, node, lot, qty, arrival)| Op::AddLot { sku, node, lot, qty, arrival }),
        4 => (any::<bool>(), prop::bool::weighted(0.8), any::<usize>(), sku_s(), node_s(), 0..4u8)
            .prop_map(|(receive, existing, pick, sku, node, lot)| Op::Lot { receive, existing, pick, sku, node, lot }),
        2 => (sku_s(), node_s(), 1..=4u32).prop_map(|(sku, node, qty)| Op::Return { sku, node, qty }),
        22 => (prop::collection::vec(line_s(), 1..=4), ttl_s(), any::<bool>())
            .prop_map(|(lines, ttl, partial)| Op::Hold { lines, ttl, partial }),
        8 => any::<usize>().prop_map(|pick| Op::Commit { pick }),
        6 => (any::<usize>(), change_lines_s()).prop_map(|(pick, lines)| Op::Release { pick, lines }),
        3 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        5 => (any::<usize>(), change_lines_s()).prop_map(|(pick, lines)| Op::Ship { pick, lines }),
        5 => Just(Op::Tick),
        10 => (
            // Mostly two nodes, so that orders meet on a day and fill it.
            prop::collection::vec((sku_s(), prop_oneof![4 => 0..2u32, 1 => node_s()], 1..=2u32), 1..=2),
            prop_oneof![6 => Just(0i64), 2 => 1..=2i64, 1 => Just(-2i64), 1 => Just(731i64)],
            prop::bool::weighted(0.05),
        )
            .prop_map(|(lines, day, drop_package)| Op::Route { lines, day, drop_package }),
        10 => any::<usize>().prop_map(|pick| Op::Retry { pick }),
    ]
}
fn step_s() -> impl Strategy<Value = Step> {
    let dt = dt_s();
    let reuse = prop_oneof![15 => Just(None), 1 => any::<usize>().prop_map(Some)];
    (dt, reuse, op_s()).prop_map(|(dt, reuse, op)| Step { dt, reuse, op })
}
fn case_s(steps: std::ops::Range<usize>) -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        prop::bool::weighted(0.3),
        initial_s(),
        prop::collection::vec(step_s(), steps),
        any::<usize>(),
        prop::collection::vec(
            (
                any::<usize>(),
                prop_oneof![4 => Just(Event::Snapshot), 1 => Just(Event::Restart)],
            ),
            0..=5,
        ),
    )
        .prop_map(
            |(record_cap, small_segments, initial, steps, split, events)| Case {
                record_cap,
                small_segments,
                initial,
                steps,
                split,
                events,
            },
        )
}

fn fail(msg: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(msg.into())
}

/// A durable engine and a never-restarted in-memory engine, fed the same commands.
struct Replay {
    storage: SimStorage,
    options: DurableOptions,
    db: Arc<DurableEngine>,
    reference: Engine,
    now: Timestamp,
    next_id: u128,
    used_ids: Vec<RequestId>,
    hold_ids: Vec<RequestId>,
    lots: Vec<(SkuId, NodeId, String)>,
    history: Vec<Command>,
    /// The LSN of the newest snapshot taken, if any.
    latest_snapshot: Option<u64>,
    stats: BTreeMap<&'static str, u32>,
}

impl Replay {
    fn new(case: &Case) -> Result<Self, TestCaseError> {
        let config = if case.record_cap {
            record_cap_config()
        } else {
            time_window_config()
        };
        let segment_bytes = if case.small_segments {
            1024
        } else {
            WalOptions::default().segment_bytes
        };
        let options = durable_options(config.clone(), segment_bytes);
        let storage = SimStorage::new();
        let db = DurableEngine::open(Arc::new(storage.clone()), options.clone())
            .map_err(|e| fail(format!("open a new directory: {e}")))?;
        let mut r = Self {
            storage,
            options,
            db,
            reference: Engine::new(config),
            now: T0,
            next_id: 0,
            used_ids: Vec::new(),
            hold_ids: Vec::new(),
            lots: Vec::new(),
            history: Vec::new(),
            latest_snapshot: None,
            stats: BTreeMap::new(),
        };
        for cmd in setup_commands(&case.initial, &mut r.next_id) {
            r.apply(&cmd)?;
        }
        prop_assert_eq!(r.stats.get("error"), None, "a setup command failed");
        Ok(r)
    }

    fn fresh_id(&mut self) -> RequestId {
        self.next_id += 1;
        spread_id(self.next_id)
    }

    fn request_id(&mut self, reuse: Option<usize>) -> RequestId {
        let id = match reuse {
            Some(p) if !self.used_ids.is_empty() => self.used_ids[p % self.used_ids.len()],
            _ => self.fresh_id(),
        };
        self.used_ids.push(id);
        id
    }

    /// A hold id for a change: mostly one in the state the change wants, sometimes any hold
    /// tried before (perhaps refused, finished or forgotten), rarely one never used.
    fn pick_hold(&mut self, pick: usize, wanted: HoldState) -> RequestId {
        let fitting: Vec<RequestId> = self
            .hold_ids
            .iter()
            .copied()
            .filter(|&id| self.reference.hold(id).is_some_and(|h| h.state == wanted))
            .collect();
        let id = match pick % 8 {
            0..=5 if !fitting.is_empty() => fitting[fitting.len() - 1 - (pick / 8) % fitting.len()],
            0..=6 if !self.hold_ids.is_empty() => self.hold_ids[(pick / 8) % self.hold_ids.len()],
            _ => self.fresh_id(),
        };
        self.used_ids.push(id);
        id
    }

    fn change_lines(&self, hold: RequestId, picks: &[(usize, u32)]) -> Vec<LineQuantity> {
        let lines = self.reference.hold(hold).map(|h| h.lines);
        let mut seen = BTreeSet::new();
        picks
            .iter()
            .map(|&(pick, quantity)| {
                let (s, n) = match &lines {
                    Some(lines) => {
                        let l = &lines[pick % lines.len()];
                        (l.sku, l.node)
                    }
                    None => (sku(pick as u32 % N_SKUS), node(pick as u32 % N_NODES)),
                };
                LineQuantity {
                    sku: s,
                    node: n,
                    quantity: q(quantity),
                }
            })
            .filter(|l| seen.insert((l.sku, l.node)))
            .collect()
    }

    fn build(&mut self, step: &Step) -> Command {
        match &step.op {
            Op::Retry { pick } if !self.history.is_empty() => {
                let n = self.history.len();
                self.history[n - 1 - pick % n.min(8)].clone()
            }
            Op::Retry { .. } | Op::Tick => Command::Tick,
            Op::UpsertNode { node, status, caps } => Command::UpsertNode(node_spec(*node, *status, *caps)),
            Op::UpsertSku { sku, hazmat } => Command::UpsertSku {
                name: format!("S{sku}"),
                required: if *hazmat {
                    Capabilities::HAZMAT
                } else {
                    Capabilities::default()
                },
            },
            Op::SetOnHand { node: n, seq, counts } => {
                let feed_seq = seq.feed_seq(self.reference.feed_seq(node(*n)));
                let mut seen = BTreeSet::new();
                Command::SetOnHand {
                    request: self.request_id(step.reuse),
                    node: node(*n),
                    feed_seq,
                    counts: counts
                        .iter()
                        .filter(|c| seen.insert(c.0))
                        .map(|&(s, c)| (sku(s), c))
                        .collect(),
                }
            }
            Op::Adjust {
                sku: s,
                node: n,
                delta,
            } => Command::AdjustOnHand {
                request: self.request_id(step.reuse),
                sku: sku(*s),
                node: node(*n),
                delta: *delta,
                reason: AdjustReason::CycleCount,
            },
            Op::Safety { sku: s, node: n, qty } => Command::SetSafetyStock {
                request: self.request_id(step.reuse),
                sku: sku(*s),
                node: node(*n),
                quantity: *qty,
            },
            Op::AddLot {
                sku: s,
                node: n,
                lot,
                qty,
                arrival,
            } => {
                let reference = format!("PO-{lot}");
                self.lots.push((sku(*s), node(*n), reference.clone()));
                Command::AddInbound {
                    request: self.request_id(step.reuse),
                    sku: sku(*s),
                    node: node(*n),
                    reference,
                    quantity: q(*qty),
                    arrival: day_offset(self.now, *arrival),
                }
            }
            Op::Lot {
                receive,
                existing,
                pick,
                sku: s,
                node: n,
                lot,
            } => {
                let (sku, node, reference) = if *existing && !self.lots.is_empty() {
                    self.lots[pick % self.lots.len()].clone()
                } else {
                    (sku(*s), node(*n), format!("PO-{lot}"))
                };
                let request = self.request_id(step.reuse);
                inbound_lot_command(*receive, request, sku, node, reference)
            }
            Op::Return { sku: s, node: n, qty } => Command::Return {
                request: self.request_id(step.reuse),
                sku: sku(*s),
                node: node(*n),
                quantity: q(*qty),
            },
            Op::Hold { lines, ttl, partial } => {
                let lines = lines.iter().map(|l| l.request(self.now)).collect();
                let hold = self.request_id(step.reuse);
                self.hold_ids.push(hold);
                Command::Hold {
                    hold,
                    lines,
                    ttl_ms: *ttl,
                    partial: *partial,
                }
            }
            Op::Route {
                lines,
                day,
                drop_package,
            } => {
                let mut seen = BTreeSet::new();
                let lines: Vec<HoldLineRequest> = lines
                    .iter()
                    .filter(|l| seen.insert((l.0, l.1)))
                    .map(|&(s, n, qty)| HoldLineRequest {
                        sku: sku(s),
                        node: NodeChoice::Node(node(n)),
                        quantity: q(qty),
                        need_day: (*day > 0).then(|| day_offset(self.now, *day)),
                    })
                    .collect();
                let nodes: BTreeSet<u32> = lines
                    .iter()
                    .map(|l| match l.node {
                        NodeChoice::Node(n) => n.raw(),
                        NodeChoice::Any => unreachable!(),
                    })
                    .collect();
                let mut packages: Vec<ShipSlot> = nodes
                    .into_iter()
                    .map(|n| ShipSlot {
                        node: node(n),
                        day: day_offset(self.now, *day),
                    })
                    .collect();
                if *drop_package {
                    packages.pop();
                }
                let order = self.request_id(step.reuse);
                self.hold_ids.push(order);
                // Half the orders to a point, half to a zone's centre; promised a day or two after.
                let destination = promised_engine::promise::Destination {
                    zone: promised_engine::ZoneId(1 + (*day as u32 & 1)),
                    point: (day & 2 == 0).then_some((40.5, -3.25)),
                };
                Command::RouteOrder {
                    order,
                    lines,
                    packages,
                    destination,
                    promised: day_offset(self.now, (*day).max(0) + 1 + (*day & 1)),
                    level: if day & 4 == 0 {
                        promised_engine::network::ServiceLevel::Ground
                    } else {
                        promised_engine::network::ServiceLevel::TwoDay
                    },
                }
            }
            Op::Commit { pick } => {
                let hold = self.pick_hold(*pick, HoldState::Held);
                Command::Commit {
                    request: self.request_id(step.reuse),
                    hold,
                }
            }
            Op::Release { pick, lines } => {
                let hold = self.pick_hold(*pick, HoldState::Held);
                Command::Release {
                    request: self.request_id(step.reuse),
                    hold,
                    lines: self.change_lines(hold, lines),
                }
            }
            Op::Cancel { pick } => {
                let hold = self.pick_hold(*pick, HoldState::Committed);
                Command::CancelAllocation {
                    request: self.request_id(step.reuse),
                    hold,
                }
            }
            Op::Ship { pick, lines } => {
                let hold = self.pick_hold(*pick, HoldState::Committed);
                Command::Ship {
                    request: self.request_id(step.reuse),
                    hold,
                    lines: self.change_lines(hold, lines),
                }
            }
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    /// Applies `cmd` to the durable engine and to the reference; the answers must agree.
    fn apply(&mut self, cmd: &Command) -> Result<(), TestCaseError> {
        let now = self.now;
        let want: Result<Outcome, EngineError> = self.reference.apply(now, cmd);
        let got = match self.db.apply(now, cmd) {
            Ok(out) => Ok(out),
            Err(DurableError::Engine(e)) => Err(e),
            Err(DurableError::Storage(f)) => return Err(fail(format!("{cmd:?}: storage failed: {f}"))),
        };
        prop_assert_eq!(&got, &want, "answers differ for {:?} at {:?}", cmd, now);
        prop_assert_eq!(
            self.db.engine().next_seq(),
            self.reference.next_seq(),
            "LSNs differ after {:?}",
            cmd
        );
        self.history.push(cmd.clone());
        match &want {
            Err(_) => self.count("error"),
            Ok(Outcome::Hold(HoldOutcome::Granted {
                lines,
                repeated: false,
                ..
            })) => {
                self.count("hold granted");
                if lines.iter().any(|l| l.granted < l.requested) {
                    self.count("partial grant");
                }
                if lines.iter().any(|l| l.need_day > now.day() && l.granted > 0) {
                    self.count("future grant");
                }
            }
            Ok(Outcome::Hold(HoldOutcome::Granted { repeated: true, .. })) => self.count("hold repeated"),
            Ok(Outcome::Hold(HoldOutcome::Refused { .. })) => self.count("hold refused"),
            Ok(Outcome::HoldChanged { state, repeated, .. }) => {
                self.count(if *repeated { "change repeated" } else { "change" });
                if let (Command::Release { lines, .. } | Command::Ship { lines, .. }, false) = (cmd, repeated)
                    && !lines.is_empty()
                {
                    self.count("partial change");
                }
                if *state == HoldState::Shipped {
                    self.count("shipped");
                }
            }
            Ok(Outcome::HoldRefused { .. }) => self.count("commit of expired hold"),
            Ok(Outcome::Route(HoldOutcome::Granted { repeated, .. })) => {
                self.count(if *repeated { "route repeated" } else { "routed" });
            }
            Ok(Outcome::Route(HoldOutcome::Refused { lines })) => {
                self.count("route refused");
                if lines.iter().any(|l| l.reason == RefusalReason::CapacityFull) {
                    self.count("route refused for capacity");
                }
            }
            Ok(Outcome::Fed { repeated: true }) => self.count("feed repeated"),
            Ok(Outcome::Fed { repeated: false }) => self.count(match cmd {
                Command::SetOnHand { .. } => "set on hand",
                Command::AddInbound { .. } => "lot added",
                Command::ReceiveInbound { .. } => "lot received",
                Command::CancelInbound { .. } => "lot cancelled",
                Command::Return { .. } => "returned",
                _ => "other feed",
            }),
            Ok(Outcome::NodeUpserted(n)) if n.raw() == N_NODES => self.count("node added"),
            Ok(Outcome::SkuUpserted(s)) if s.raw() == N_SKUS => self.count("SKU added"),
            Ok(Outcome::Ticked { expired, forgotten }) => {
                if *expired > 0 {
                    self.count("tick expired");
                }
                if *forgotten > 0 {
                    self.count("tick forgot");
                }
            }
            Ok(_) => {}
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        self.now = Timestamp(self.now.0 + step.dt);
        let cmd = self.build(step);
        self.apply(&cmd)
    }

    fn snapshot(&mut self) -> Result<(), TestCaseError> {
        let lsn = self.db.engine().next_seq() - 1;
        let info = self
            .db
            .snapshot()
            .map_err(|e| fail(format!("snapshot at LSN {lsn}: {e}")))?;
        prop_assert_eq!(info.lsn, lsn, "snapshot LSN");
        self.latest_snapshot = Some(lsn);
        self.count("snapshot");
        // The newest two are kept, the newest being this one.
        let snaps = snapshots_in(&self.storage);
        prop_assert!(
            snaps.len() <= 2 && snaps.last() == Some(&lsn),
            "snapshots on disk after one at {}: {:?}",
            lsn,
            snaps
        );
        // The file alone loads into the live state.
        let bytes = self
            .storage
            .read(&snapshot_name(lsn))
            .map_err(|e| fail(format!("read snapshot {lsn}: {e}")))?;
        let file = SnapshotFile::parse(&bytes).map_err(|e| fail(format!("snapshot {lsn} parses: {e}")))?;
        prop_assert_eq!(file.lsn, lsn);
        let loaded = file
            .load(None)
            .map_err(|e| fail(format!("snapshot {lsn} loads: {e}")))?;
        prop_assert_eq!(loaded.next_seq(), lsn + 1);
        prop_assert_eq!(
            loaded.state_digest(),
            self.db.engine().state_digest(),
            "snapshot {} loads into another state",
            lsn
        );
        Ok(())
    }

    /// Opens `storage` and checks that recovery rebuilt exactly the live state: the newest
    /// snapshot, then exactly the records after it.
    fn recover(
        &self,
        storage: &SimStorage,
        what: &str,
        live: StateDigest,
        last_lsn: u64,
    ) -> Result<Arc<DurableEngine>, TestCaseError> {
        let db = DurableEngine::open(Arc::new(storage.clone()), self.options.clone())
            .map_err(|e| fail(format!("{what}: open failed: {e}")))?;
        let r = db.recovery();
        prop_assert_eq!(
            r.snapshot.as_ref().map(|s| s.0),
            self.latest_snapshot,
            "{}: the snapshot recovery loaded",
            what
        );
        prop_assert_eq!(
            r.replayed,
            last_lsn - self.latest_snapshot.unwrap_or(0),
            "{}: records replayed after snapshot {:?} with the log at {}",
            what,
            self.latest_snapshot,
            last_lsn
        );
        prop_assert_eq!(r.next_lsn, last_lsn + 1, "{}: next LSN", what);
        prop_assert!(r.warnings.is_empty(), "{}: warnings {:?}", what, r.warnings);
        prop_assert_eq!(db.engine().next_seq(), last_lsn + 1, "{}: next_seq", what);
        prop_assert_eq!(db.engine().state_digest(), live, "{}: recovered state", what);
        db.engine()
            .check_invariants()
            .map_err(|e| fail(format!("{what}: invariants: {e}")))?;
        Ok(db)
    }

    /// A power loss now, then a clean close and reopen: both must recover the live state.
    fn restart(&mut self, what: &str) -> Result<(), TestCaseError> {
        let live = self.db.engine().state_digest();
        let last_lsn = self.db.engine().next_seq() - 1;
        prop_assert_eq!(live, self.reference.state_digest(), "{}: live state", what);
        prop_assert_eq!(self.db.wal().durable_lsn(), last_lsn, "{}: acknowledged", what);

        // Every write was acknowledged under fsync = always: a power loss loses none of them.
        let crashed = self.storage.power_loss(PowerLoss::DropUnsynced);
        let db = self.recover(&crashed, &format!("{what}, after a power loss"), live, last_lsn)?;
        db.close()
            .map_err(|e| fail(format!("{what}: close after power loss: {e}")))?;
        drop(db);

        self.db.close().map_err(|e| fail(format!("{what}: close: {e}")))?;
        self.db = self.recover(&self.storage.clone(), what, live, last_lsn)?;
        self.count("restart");
        if self.latest_snapshot.is_some() && self.db.recovery().replayed > 0 {
            self.count("replayed after a snapshot");
        }
        Ok(())
    }

    fn event(&mut self, event: Event, i: usize) -> Result<(), TestCaseError> {
        match event {
            Event::Snapshot => self.snapshot(),
            Event::Restart => self.restart(&format!("restart before step {i}")),
        }
    }
}

fn run_case(case: &Case) -> Result<BTreeMap<&'static str, u32>, TestCaseError> {
    let mut r = Replay::new(case)?;
    let split = case.split % (case.steps.len() + 1);
    let mut events: Vec<(usize, Event)> = case.events.iter().map(|&(at, e)| (at % (split + 1), e)).collect();
    events.sort();
    let mut pending = events.into_iter().peekable();
    for i in 0..=split {
        while let Some(&(_, e)) = pending.peek().filter(|(at, _)| *at == i) {
            pending.next();
            r.event(e, i)?;
        }
        if i < split {
            r.step(&case.steps[i])?;
        }
    }
    r.restart(&format!("restart after {split} steps"))?;
    // The rest goes to the reopened engine and to the one that never restarted.
    for step in &case.steps[split..] {
        r.step(step)?;
    }
    prop_assert_eq!(
        r.db.engine().state_digest(),
        r.reference.state_digest(),
        "states differ after the steps that followed the restart"
    );
    r.db.engine()
        .check_invariants()
        .map_err(|e| fail(format!("invariants at the end: {e}")))?;
    r.restart("the final restart")?;
    r.db.close().map_err(|e| fail(format!("close: {e}")))?;
    Ok(r.stats)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replay_equivalence(case in case_s(1..150)) {
        run_case(&case)?;
    }
}

/// The generator must reach the interesting cases, or the property above is weaker than it looks.
#[test]
fn replay_generator_reaches_interesting_cases() {
    use proptest::strategy::ValueTree;
    let mut runner = fixed_runner(9);
    let mut totals: BTreeMap<&'static str, u32> = BTreeMap::new();
    for i in 0..16 {
        let case = case_s(60..100).new_tree(&mut runner).expect("a case").current();
        let stats = run_case(&case).unwrap_or_else(|e| panic!("case {i}: {e}\n{case:?}"));
        add_stats(&mut totals, stats);
    }
    eprintln!("totals over 16 cases: {totals:?}");
    for what in [
        "error",
        "hold granted",
        "hold refused",
        "hold repeated",
        "partial grant",
        "future grant",
        "commit of expired hold",
        "change",
        "change repeated",
        "partial change",
        "shipped",
        "feed repeated",
        "set on hand",
        "lot added",
        "lot received",
        "lot cancelled",
        "returned",
        "node added",
        "SKU added",
        "tick expired",
        "tick forgot",
        "routed",
        "route repeated",
        "route refused",
        "route refused for capacity",
        "snapshot",
        "restart",
        "replayed after a snapshot",
    ] {
        assert_reached(&totals, what);
    }
}

// ---- 2. concurrent replay equivalence -----------------------------------------------------------

const THREADS: usize = 4;
const C_SKUS: u32 = 6;
const C_NODES: u32 = 3;
const C_COMMANDS: u64 = 1_000;
const C_SNAPSHOTS: u64 = 3;
const C_FILLER_SKUS: u32 = 6_000;

fn c_config() -> EngineConfig {
    EngineConfig {
        sku_shards: 8,
        request_shards: 4,
        retention_ms: 40,
        retained_records_max: 64,
        ..EngineConfig::default()
    }
}

struct CShared {
    db: Arc<DurableEngine>,
    /// Hold ids granted so far, by any thread.
    holds: Mutex<Vec<RequestId>>,
    /// Next feed sequence number per node; threads race, so some arrive stale.
    feed_seq: Vec<AtomicU64>,
    /// Commands tried so far, by all threads: the snapshot thread paces itself by it.
    attempted: AtomicU64,
}

fn c_command(
    sh: &CShared,
    rng: &mut Pcg64,
    t: usize,
    i: u64,
    request: RequestId,
    sent: &[Command],
) -> Command {
    let engine = sh.db.engine();
    let today = Timestamp(T0.0 + i * 2).day();
    let sku = SkuId::from_raw(rng.random_range(0..C_SKUS));
    let node = NodeId::from_raw(rng.random_range(0..C_NODES));
    let roll = rng.random_range(0..100);
    if roll < 32 {
        return random_hold(rng, request, today, C_SKUS, C_NODES);
    }
    if roll < 56 {
        return random_hold_change(rng, &sh.holds, engine, request);
    }
    if roll < 60 && !sent.is_empty() {
        return sent[rng.random_range(0..sent.len())].clone();
    }
    if roll < 70 {
        let feed_seq = sh.feed_seq[node.index()].fetch_add(1, Ordering::Relaxed) + 1;
        return Command::SetOnHand {
            request,
            node,
            feed_seq,
            counts: random_counts(rng, C_SKUS),
        };
    }
    match roll {
        70..75 => Command::AdjustOnHand {
            request,
            sku,
            node,
            delta: [-3, -1, 1, 2, 5][rng.random_range(0..5)],
            reason: AdjustReason::Damage,
        },
        75..81 => Command::AddInbound {
            request,
            sku,
            node,
            reference: format!("T{t}-{}", i % 8),
            quantity: q(rng.random_range(1..=8)),
            arrival: today.plus(rng.random_range(0..5)),
        },
        81..85 => Command::ReceiveInbound {
            request,
            sku,
            node,
            reference: format!("T{t}-{}", rng.random_range(0..8)),
        },
        85..87 => Command::CancelInbound {
            request,
            sku,
            node,
            reference: format!("T{t}-{}", rng.random_range(0..8)),
        },
        87..91 => Command::Return {
            request,
            sku,
            node,
            quantity: q(rng.random_range(1..=3)),
        },
        91..93 => Command::SetSafetyStock {
            request,
            sku,
            node,
            quantity: rng.random_range(0..=2),
        },
        93..94 => {
            let status = [NodeStatus::Open, NodeStatus::Open, NodeStatus::Paused][rng.random_range(0..3)];
            Command::UpsertNode(node_spec(node.raw(), status, 0))
        }
        94..95 => Command::UpsertSku {
            name: format!("K{}", sku.raw()),
            required: if rng.random_bool(0.3) {
                Capabilities::HAZMAT
            } else {
                Capabilities::default()
            },
        },
        _ => Command::Tick,
    }
}

/// One worker: random commands, half with `apply`, half with `submit` (up to 4 in flight).
/// Returns how many took effect.
fn c_worker(sh: &CShared, seed: u64, t: usize, start: &Barrier) -> u64 {
    let mut rng = worker_rng(seed, t);
    let mut sent: Vec<Command> = Vec::new();
    let mut applied = 0u64;
    let mut in_flight: Option<Ticket> = None;
    let mut n_in_flight = 0;
    start.wait();
    for i in 0..C_COMMANDS {
        let request = thread_request_id(t, i + 1);
        let cmd = c_command(sh, &mut rng, t, i, request, &sent);
        // Clocks differ per thread and do not always move forward together.
        let now = Timestamp(T0.0 + i * 2 + rng.random_range(0..20));
        let result = if rng.random_bool(0.5) {
            sh.db.apply(now, &cmd)
        } else {
            match sh.db.submit(now, &cmd) {
                Ok(submitted) => {
                    in_flight = Some(submitted.ticket);
                    n_in_flight += 1;
                    submitted.result.map_err(DurableError::from)
                }
                Err(failed) => Err(DurableError::from(failed)),
            }
        };
        match result {
            Ok(out) => {
                applied += 1;
                if let Outcome::Hold(HoldOutcome::Granted {
                    hold,
                    repeated: false,
                    ..
                }) = out
                {
                    sh.holds.lock().unwrap().push(hold);
                }
            }
            Err(DurableError::Engine(_)) => {}
            Err(e @ DurableError::Storage(_)) => panic!("seed {seed} thread {t}: {cmd:?}: {e}"),
        }
        if n_in_flight >= 4 || i + 1 == C_COMMANDS {
            if let Some(ticket) = in_flight.take() {
                sh.db
                    .wait(ticket)
                    .unwrap_or_else(|e| panic!("seed {seed} thread {t}: wait: {e}"));
            }
            n_in_flight = 0;
        }
        sent.push(cmd);
        sh.attempted.fetch_add(1, Ordering::Relaxed);
    }
    applied
}

fn run_concurrent(seed: u64, segment_bytes: u64) {
    let small = segment_bytes < WalOptions::default().segment_bytes;
    let ctx = format!("seed {seed}, {segment_bytes}-byte segments");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{ctx}: temp dir: {e}"));
    let storage = Arc::new(FsStorage::open(dir.path()).unwrap_or_else(|e| panic!("{ctx}: storage: {e}")));
    let options = durable_options(c_config(), segment_bytes);
    let db =
        DurableEngine::open(storage.clone(), options.clone()).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
    // The hot SKUs the threads share, then filler SKUs stocked everywhere, so that a snapshot
    // takes long enough for writers to reach shards it has not written yet (and copy them out).
    let mut setup: Vec<Command> = (0..C_NODES)
        .map(|n| Command::UpsertNode(node_spec(n, NodeStatus::Open, 0)))
        .collect();
    setup.extend((0..C_SKUS).map(|s| Command::UpsertSku {
        name: format!("K{s}"),
        required: Capabilities::default(),
    }));
    setup.extend((0..C_FILLER_SKUS).map(|f| Command::UpsertSku {
        name: format!("F{f}"),
        required: Capabilities::default(),
    }));
    setup.extend((0..C_NODES).map(|n| {
        Command::SetOnHand {
            request: thread_request_id(THREADS, u64::from(n) + 1),
            node: node(n),
            feed_seq: 1,
            counts: (0..C_SKUS + C_FILLER_SKUS)
                .map(|s| (sku(s), if s < C_SKUS { 10 } else { 50 }))
                .collect(),
        }
    }));
    let mut ticket = None;
    for cmd in &setup {
        let submitted = db
            .submit(T0, cmd)
            .unwrap_or_else(|e| panic!("{ctx}: setup {}: {e}", cmd.kind()));
        submitted
            .result
            .unwrap_or_else(|e| panic!("{ctx}: setup {}: {e}", cmd.kind()));
        ticket = Some(submitted.ticket);
    }
    if let Some(t) = ticket {
        db.wait(t).unwrap_or_else(|e| panic!("{ctx}: setup: {e}"));
    }
    let setup_lsn = db.engine().next_seq() - 1;
    let sh = CShared {
        db,
        holds: Mutex::new(Vec::new()),
        feed_seq: (0..C_NODES).map(|_| AtomicU64::new(1)).collect(),
        attempted: AtomicU64::new(0),
    };
    let total = C_COMMANDS * THREADS as u64;
    let start = Barrier::new(THREADS + 1);
    let (applied, taken): (u64, Vec<(SnapshotInfo, Vec<u8>)>) = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (sh, start) = (&sh, &start);
                s.spawn(move || c_worker(sh, seed, t, start))
            })
            .collect();
        let snapshotter = s.spawn(|| {
            start.wait();
            let mut taken = Vec::new();
            for k in 1..=C_SNAPSHOTS {
                while sh.attempted.load(Ordering::Relaxed) < k * total / (C_SNAPSHOTS + 1) {
                    thread::sleep(Duration::from_micros(200));
                }
                let info = sh
                    .db
                    .snapshot()
                    .unwrap_or_else(|e| panic!("{ctx}: snapshot {k}: {e}"));
                let bytes = storage
                    .read(&snapshot_name(info.lsn))
                    .unwrap_or_else(|e| panic!("{ctx}: read snapshot {k}: {e}"));
                taken.push((info, bytes));
            }
            taken
        });
        let applied = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| panic!("{ctx}: a worker panicked")))
            .sum();
        let taken = snapshotter
            .join()
            .unwrap_or_else(|_| panic!("{ctx}: the snapshot thread panicked"));
        (applied, taken)
    });
    let CShared { db, .. } = sh;
    let live = db.engine().state_digest();
    let last_lsn = db.engine().next_seq() - 1;
    db.engine()
        .check_invariants()
        .unwrap_or_else(|e| panic!("{ctx}: live invariants: {e}"));
    assert!(
        last_lsn - setup_lsn > total / 3 && applied > total / 2,
        "{ctx}: only {} records logged, {applied} commands applied",
        last_lsn - setup_lsn
    );
    assert_eq!(db.wal().durable_lsn(), last_lsn, "{ctx}: acknowledged LSN");
    let lsns: Vec<u64> = taken.iter().map(|(info, _)| info.lsn).collect();
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]) && lsns[0] > setup_lsn && *lsns.last().unwrap() < last_lsn,
        "{ctx}: snapshot LSNs {lsns:?} with the log at {last_lsn}"
    );
    let copied: usize = taken.iter().map(|(info, _)| info.copied_by_writers).sum();
    eprintln!("{ctx}: {last_lsn} records, snapshots at {lsns:?}, {copied} shards copied by writers");
    db.close().unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
    drop(db);

    // Each snapshot taken while the threads ran is a consistent cut: it, plus the log after it,
    // gives the live state. With small segments, the first one's log was pruned behind the others.
    let kept = snapshots_in(&*storage);
    assert_eq!(
        kept,
        lsns[lsns.len() - 2..].iter().copied().collect(),
        "{ctx}: snapshots kept"
    );
    for (info, bytes) in &taken {
        if small && !kept.contains(&info.lsn) {
            continue;
        }
        let file = SnapshotFile::parse(bytes).unwrap_or_else(|e| panic!("{ctx}: snapshot {}: {e}", info.lsn));
        assert_eq!(file.lsn, info.lsn, "{ctx}");
        let engine = file
            .load(None)
            .unwrap_or_else(|e| panic!("{ctx}: snapshot {} loads: {e}", info.lsn));
        let n = replay_log(&*storage, &engine, info.lsn + 1)
            .unwrap_or_else(|e| panic!("{ctx}: replay after snapshot {}: {e}", info.lsn));
        assert_eq!(
            n,
            last_lsn - info.lsn,
            "{ctx}: records after snapshot {}",
            info.lsn
        );
        assert_eq!(
            engine.state_digest(),
            live,
            "{ctx}: snapshot {} plus the log after it",
            info.lsn
        );
    }

    if small {
        let segments = segments_in(&*storage);
        assert!(
            segments.len() > 2,
            "{ctx}: the log did not rotate: segments {segments:?}"
        );
        let oldest_kept_snapshot = *kept.first().unwrap();
        assert!(
            !segments.contains(&1) && *segments.first().unwrap() <= oldest_kept_snapshot + 1,
            "{ctx}: segments {segments:?} with snapshots {kept:?}"
        );
    } else {
        // The whole log, from LSN 1, into a fresh engine.
        let fresh = Engine::new(c_config());
        let n = replay_log(&*storage, &fresh, 1).unwrap_or_else(|e| panic!("{ctx}: full replay: {e}"));
        assert_eq!(n, last_lsn, "{ctx}: records in the whole log");
        assert_eq!(fresh.next_seq(), last_lsn + 1, "{ctx}");
        assert_eq!(fresh.state_digest(), live, "{ctx}: the whole log replayed");
    }

    let db = DurableEngine::open(storage.clone(), options).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    let r = db.recovery();
    assert_eq!(
        r.snapshot.as_ref().map(|s| s.0),
        lsns.last().copied(),
        "{ctx}: the snapshot recovery loaded"
    );
    assert_eq!(
        r.replayed,
        last_lsn - lsns.last().unwrap(),
        "{ctx}: records replayed"
    );
    assert!(r.warnings.is_empty(), "{ctx}: warnings {:?}", r.warnings);
    assert_eq!(db.engine().next_seq(), last_lsn + 1, "{ctx}: next LSN");
    assert_eq!(db.engine().state_digest(), live, "{ctx}: reopened state");
    db.engine()
        .check_invariants()
        .unwrap_or_else(|e| panic!("{ctx}: invariants after reopen: {e}"));
    db.close()
        .unwrap_or_else(|e| panic!("{ctx}: close after reopen: {e}"));
}

#[test]
fn concurrent_replay_equivalence() {
    for seed in seeds(&[21, 22, 23]) {
        run_concurrent(seed, WalOptions::default().segment_bytes);
        run_concurrent(seed, 4096);
    }
}

// ---- 3. the WAL writer orders records by LSN --------------------------------------------------------

#[test]
fn wal_writes_records_in_lsn_order_whatever_the_append_order() {
    let storage = SimStorage::new();
    let wal = Wal::open(
        Arc::new(storage.clone()),
        LogTail {
            next_lsn: 1,
            prev_crc: 0,
        },
        WalOptions::default(),
    )
    .unwrap();
    let cmds: Vec<Command> = (1..=6u32)
        .map(|i| match i % 3 {
            0 => Command::Tick,
            1 => Command::UpsertSku {
                name: format!("W{i}"),
                required: Capabilities::default(),
            },
            _ => Command::UpsertNode(node_spec(i, NodeStatus::Open, i)),
        })
        .collect();
    let time = |lsn: u64| Timestamp(T0.0 + 1_000 * lsn);
    let append = |lsn: u64| wal.append(lsn, time(lsn), &cmds[lsn as usize - 1]);
    let read_back = || {
        let mut seen = Vec::new();
        let report = wal::scan(&storage, 1, |rec| {
            seen.push((
                rec.lsn,
                rec.time,
                codec::decode(rec.body).map_err(|e| e.to_string())?,
            ));
            Ok(())
        })
        .expect("the log scans");
        (seen, report)
    };

    // Waits with a deadline: a writer that lost a record would otherwise hang the test.
    let acked = |lsn: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal.durable_lsn() < lsn {
            assert!(wal.failure().is_none(), "{:?}", wal.failure());
            assert!(
                Instant::now() < deadline,
                "record {lsn} not acknowledged within 10 s (acknowledged up to {})",
                wal.durable_lsn()
            );
            thread::sleep(Duration::from_millis(1));
        }
        wal.wait_durable(lsn).unwrap();
    };

    // LSN 2 alone: it must wait for 1, neither written nor acknowledged.
    append(2);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(wal.durable_lsn(), 0, "record 2 acknowledged before record 1");
    assert_eq!(read_back().0, vec![], "record 2 written before record 1");
    append(1);
    acked(2);
    append(3);
    acked(3);
    assert_eq!(wal.durable_lsn(), 3);
    // Then three at once, backwards: most likely one batch, sorted by the writer.
    append(6);
    append(5);
    append(4);
    acked(6);

    let (seen, report) = read_back();
    let want: Vec<(u64, u64, Command)> = (1..=6u64)
        .map(|lsn| (lsn, time(lsn).0, cmds[lsn as usize - 1].clone()))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(report.records, 6);
    assert_eq!(report.tail.next_lsn, 7);
    assert_eq!(wal.stats().records, 6);
    wal.close().unwrap();
    assert_eq!(read_back().0, want, "after close");
}
