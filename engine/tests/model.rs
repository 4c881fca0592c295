//! Model-based property test: random command sequences applied to the real `Engine` and to a
//! reference model written plainly here (B-tree maps and loops, straight from the semantics in the
//! doc comments of `atp.rs`, `command.rs`, `hold.rs`, `hold_ops.rs` and DESIGN.md).
//!
//! After every command the outcome (or error code) must agree, every query must agree (ATP of
//! every position on several days, network ATP, timelines, positions, holds, feed sequence
//! numbers), and `check_invariants` must pass. The model also asserts the no-oversell rule: a
//! granted line never exceeds the ATP on its need day at the moment it is granted.
//!
//! The model derives `reserved`, `allocated` and the future-dated claims of every position from
//! the hold records on each query (it keeps no running totals), so a bookkeeping slip in the
//! engine's incremental counters cannot be mirrored by the model.
//!
//! Retention of finished records is modelled in two configurations:
//! - `model_time_window`: 4 SKU shards, 4 request shards, a one-day retention window and a record
//!   cap far above anything a case can reach, so only the time window forgets;
//! - `model_record_cap`: 2 SKU shards, one request shard and a cap of 6 records, so the cap
//!   (oldest first) forgets as well as a three-day window. With one request shard the engine-wide
//!   retention queue is the model's single queue, and no knowledge of the request-id hash is needed.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use promised_engine::hold::HoldOp;
use promised_engine::network::Capabilities;
use promised_engine::{
    Command, Day, Engine, EngineConfig, ErrorCode, GrantedLine, HoldLineRequest, HoldOutcome, HoldState,
    InboundLot, LineQuantity, LineRefusal, NodeChoice, NodeId, NodeStatus, Outcome, PositionView,
    RefusalReason, RequestId, SkuId, TimelinePoint, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// The network is the one `common::setup_commands` builds: nodes `N0..N3` and SKUs `S0..S4`.
// Node id 4 and SKU id 5 are never upserted.
use common::{
    DAY_MS, LineSpec, N_NODES, N_SKUS, SeqMode, T0, add_stats, assert_reached, day_offset, dt_s,
    fixed_runner, initial_s, node, node_spec, q, record_cap_config, seq_s, setup_commands, sku, spread_id,
    status_s, time_window_config,
};

const QUANTITY_MAX: u32 = 1 << 31;
const TTL_MAX_MS: u64 = 30 * DAY_MS;
const LOOKAHEAD_DAYS: u32 = 730;
const HOLD_LINES_MAX: usize = 1_000;
const FEED_LINES_MAX: usize = 10_000;
const LOTS_MAX: usize = 64;
/// How `Hold::lines[..].node` marks an `Any` line of a partial hold that found no node.
const NO_NODE: NodeId = NodeId::from_raw(u32::MAX);

// ---- the reference model ----------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct MPos {
    on_hand: u32,
    safety: u32,
    /// By reference: (arrival, quantity).
    lots: BTreeMap<String, (Day, u32)>,
}

#[derive(Clone, Debug)]
struct MLine {
    sku: SkuId,
    node: Option<NodeId>,
    need_day: Day,
    future: bool,
    requested: u32,
    granted: u32,
    remaining: u32,
}

#[derive(Clone, Debug)]
struct MHold {
    lines: Vec<MLine>,
    placed_at: Timestamp,
    expires_at: Timestamp,
    state: HoldState,
    partial: bool,
    /// (request, op, state after), in the order applied.
    ops: Vec<(RequestId, HoldOp, HoldState)>,
}

/// What the holds say about one position.
#[derive(Clone, Debug, Default)]
struct Agg {
    reserved: u64,
    allocated: u64,
    claims: BTreeMap<Day, u64>,
}

struct Model {
    retention_ms: u64,
    /// `Some(n)`: at most n finished records are remembered (oldest forgotten first).
    cap: Option<usize>,
    /// Node id = index: (name, status, capabilities).
    nodes: Vec<(String, NodeStatus, Capabilities)>,
    /// SKU id = index: (name, required capabilities).
    skus: Vec<(String, Capabilities)>,
    positions: BTreeMap<(SkuId, NodeId), MPos>,
    feed_seq: BTreeMap<NodeId, u64>,
    holds: BTreeMap<RequestId, MHold>,
    /// Remembered feed requests: id -> command kind.
    done: BTreeMap<RequestId, &'static str>,
    /// Finished records (feeds, finished holds) in the order they finished.
    retention: VecDeque<(Timestamp, RequestId)>,
}

type Res = Result<Outcome, ErrorCode>;

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic())
}

fn granted_outcome(id: RequestId, h: &MHold, repeated: bool) -> Outcome {
    Outcome::Hold(HoldOutcome::Granted {
        hold: id,
        expires_at: h.expires_at,
        lines: h
            .lines
            .iter()
            .map(|l| GrantedLine {
                sku: l.sku,
                node: l.node,
                requested: l.requested,
                granted: l.granted,
                need_day: l.need_day,
            })
            .collect(),
        repeated,
    })
}

impl Model {
    fn new(retention_ms: u64, cap: Option<usize>) -> Self {
        Self {
            retention_ms,
            cap,
            nodes: Vec::new(),
            skus: Vec::new(),
            positions: BTreeMap::new(),
            feed_seq: BTreeMap::new(),
            holds: BTreeMap::new(),
            done: BTreeMap::new(),
            retention: VecDeque::new(),
        }
    }

    fn sku_known(&self, sku: SkuId) -> bool {
        sku.index() < self.skus.len()
    }
    fn node_known(&self, node: NodeId) -> bool {
        node.index() < self.nodes.len()
    }
    fn is_open(&self, node: NodeId) -> bool {
        self.nodes
            .get(node.index())
            .is_some_and(|n| n.1 == NodeStatus::Open)
    }
    fn capable(&self, sku: SkuId, node: NodeId) -> bool {
        let required = self.skus[sku.index()].1;
        self.nodes
            .get(node.index())
            .is_some_and(|n| n.2.contains(required))
    }
    fn used_as_request(&self, id: RequestId) -> bool {
        self.holds.contains_key(&id) || self.done.contains_key(&id)
    }

    /// Sums the live holds (held or committed) per position.
    fn aggregates(&self) -> BTreeMap<(SkuId, NodeId), Agg> {
        let mut out: BTreeMap<(SkuId, NodeId), Agg> = BTreeMap::new();
        for h in self.holds.values() {
            for l in &h.lines {
                let Some(node) = l.node else { continue };
                if l.remaining == 0 {
                    continue;
                }
                let a = out.entry((l.sku, node)).or_default();
                match h.state {
                    HoldState::Held => a.reserved += u64::from(l.remaining),
                    HoldState::Committed => a.allocated += u64::from(l.remaining),
                    s => panic!("model: a {s:?} hold still has units"),
                }
                if l.future {
                    *a.claims.entry(l.need_day).or_default() += u64::from(l.remaining);
                }
            }
        }
        out
    }

    /// net(d) = on_hand + lots arriving by d - safety stock - reserved - allocated
    ///          + claims dated after d.
    fn net(pos: &MPos, agg: &Agg, d: Day) -> i64 {
        let arrived: i64 = pos
            .lots
            .values()
            .filter(|(arrival, _)| *arrival <= d)
            .map(|(_, q)| i64::from(*q))
            .sum();
        let later: i64 = agg
            .claims
            .iter()
            .filter(|(day, _)| **day > d)
            .map(|(_, q)| *q as i64)
            .sum();
        i64::from(pos.on_hand) + arrived - i64::from(pos.safety) - agg.reserved as i64 - agg.allocated as i64
            + later
    }

    /// The days on which net can change after `start`, plus `start` itself.
    fn event_days(pos: &MPos, agg: &Agg, start: Day) -> BTreeSet<Day> {
        let mut days = BTreeSet::from([start]);
        days.extend(pos.lots.values().map(|l| l.0).filter(|d| *d > start));
        days.extend(agg.claims.keys().copied().filter(|d| *d > start));
        days
    }

    /// ATP(t) = min over d >= max(t, today) of net(d); 0 for a position never stocked.
    fn atp_with(
        &self,
        aggs: &BTreeMap<(SkuId, NodeId), Agg>,
        sku: SkuId,
        node: NodeId,
        today: Day,
        t: Day,
    ) -> i64 {
        let Some(pos) = self.positions.get(&(sku, node)) else {
            return 0;
        };
        let empty = Agg::default();
        let agg = aggs.get(&(sku, node)).unwrap_or(&empty);
        let start = t.max(today);
        Self::event_days(pos, agg, start)
            .into_iter()
            .map(|d| Self::net(pos, agg, d))
            .min()
            .expect("at least the start day")
    }

    fn timeline_with(
        &self,
        aggs: &BTreeMap<(SkuId, NodeId), Agg>,
        sku: SkuId,
        node: NodeId,
        today: Day,
    ) -> Vec<TimelinePoint> {
        let Some(pos) = self.positions.get(&(sku, node)) else {
            return vec![TimelinePoint { day: today, atp: 0 }];
        };
        let empty = Agg::default();
        let agg = aggs.get(&(sku, node)).unwrap_or(&empty);
        let days: Vec<Day> = Self::event_days(pos, agg, today).into_iter().collect();
        days.iter()
            .map(|&day| TimelinePoint {
                day,
                atp: days
                    .iter()
                    .filter(|d| **d >= day)
                    .map(|&d| Self::net(pos, agg, d))
                    .min()
                    .expect("non-empty"),
            })
            .collect()
    }

    fn position_view(
        &self,
        aggs: &BTreeMap<(SkuId, NodeId), Agg>,
        sku: SkuId,
        node: NodeId,
    ) -> Option<PositionView> {
        let pos = self.positions.get(&(sku, node))?;
        let empty = Agg::default();
        let agg = aggs.get(&(sku, node)).unwrap_or(&empty);
        let mut lots: Vec<InboundLot> = pos
            .lots
            .iter()
            .map(|(r, &(arrival, quantity))| InboundLot {
                reference: r.as_str().into(),
                quantity,
                arrival,
            })
            .collect();
        lots.sort_by(|a, b| (a.arrival, &a.reference).cmp(&(b.arrival, &b.reference)));
        Some(PositionView {
            on_hand: pos.on_hand,
            safety_stock: pos.safety,
            reserved: agg.reserved as u32,
            allocated: agg.allocated as u32,
            lots,
            future_claims: agg.claims.iter().map(|(d, q)| (*d, *q as u32)).collect(),
        })
    }

    /// Remembers a finished record; forgets the oldest past the cap. Returns how many it forgot.
    fn retain(&mut self, now: Timestamp, id: RequestId) -> u32 {
        self.retention.push_back((now, id));
        let mut forgotten = 0;
        if let Some(cap) = self.cap {
            while self.retention.len() > cap {
                let (_, old) = self.retention.pop_front().expect("non-empty");
                self.forget(old);
                forgotten += 1;
            }
        }
        forgotten
    }

    fn forget(&mut self, id: RequestId) {
        let removed = self.holds.remove(&id).is_some() || self.done.remove(&id).is_some();
        assert!(removed, "model: forgetting {id}, which is not remembered");
    }

    fn apply(&mut self, now: Timestamp, cmd: &Command) -> Res {
        match cmd {
            Command::UpsertNode(spec) => {
                if !valid_name(&spec.name) {
                    return Err(ErrorCode::InvalidName);
                }
                let id = match self.nodes.iter().position(|n| n.0 == spec.name) {
                    Some(i) => {
                        self.nodes[i] = (spec.name.clone(), spec.status, spec.capabilities);
                        i
                    }
                    None => {
                        self.nodes
                            .push((spec.name.clone(), spec.status, spec.capabilities));
                        self.nodes.len() - 1
                    }
                };
                let id = NodeId::from_raw(id as u32);
                self.feed_seq.entry(id).or_insert(0);
                Ok(Outcome::NodeUpserted(id))
            }
            Command::UpsertSku { name, required } => {
                if !valid_name(name) {
                    return Err(ErrorCode::InvalidName);
                }
                let id = match self.skus.iter().position(|s| s.0 == *name) {
                    Some(i) => {
                        self.skus[i].1 = *required;
                        i
                    }
                    None => {
                        self.skus.push((name.clone(), *required));
                        self.skus.len() - 1
                    }
                };
                Ok(Outcome::SkuUpserted(SkuId::from_raw(id as u32)))
            }
            Command::Hold {
                hold,
                lines,
                ttl_ms,
                partial,
            } => self.hold(now, *hold, lines, *ttl_ms, *partial),
            Command::Commit { request, hold } => self.change(now, *request, *hold, HoldOp::Commit, &[]),
            Command::Release { request, hold, lines } => {
                self.change(now, *request, *hold, HoldOp::Release, lines)
            }
            Command::CancelAllocation { request, hold } => {
                self.change(now, *request, *hold, HoldOp::Cancel, &[])
            }
            Command::Ship { request, hold, lines } => self.change(now, *request, *hold, HoldOp::Ship, lines),
            Command::Tick => Ok(self.tick(now)),
            _ => self.feed(now, cmd),
        }
    }

    fn feed(&mut self, now: Timestamp, cmd: &Command) -> Res {
        let today = now.day();
        // Checks that need no state.
        match cmd {
            Command::SetOnHand { counts, .. } => {
                if counts.is_empty() {
                    return Err(ErrorCode::EmptyRequest);
                }
                if counts.len() > FEED_LINES_MAX {
                    return Err(ErrorCode::TooManyLines);
                }
                if counts.iter().any(|c| c.1 > QUANTITY_MAX) {
                    return Err(ErrorCode::InvalidQuantity);
                }
                let distinct: BTreeSet<SkuId> = counts.iter().map(|c| c.0).collect();
                if distinct.len() != counts.len() {
                    return Err(ErrorCode::DuplicateLine);
                }
            }
            Command::AdjustOnHand { delta, .. }
                if *delta == 0 || delta.unsigned_abs() > u64::from(QUANTITY_MAX) =>
            {
                return Err(ErrorCode::InvalidQuantity);
            }
            Command::SetSafetyStock { quantity, .. } if *quantity > QUANTITY_MAX => {
                return Err(ErrorCode::InvalidQuantity);
            }
            Command::AddInbound {
                reference, arrival, ..
            } => {
                if !valid_name(reference) {
                    return Err(ErrorCode::InvalidName);
                }
                if arrival.0 > today.0 + LOOKAHEAD_DAYS {
                    return Err(ErrorCode::InvalidDate);
                }
            }
            Command::ReceiveInbound { reference, .. } | Command::CancelInbound { reference, .. }
                if !valid_name(reference) =>
            {
                return Err(ErrorCode::InvalidName);
            }
            _ => {}
        }
        let (request, node, skus): (RequestId, NodeId, Vec<SkuId>) = match cmd {
            Command::SetOnHand {
                request,
                node,
                counts,
                ..
            } => (*request, *node, counts.iter().map(|c| c.0).collect()),
            Command::AdjustOnHand {
                request, sku, node, ..
            }
            | Command::SetSafetyStock {
                request, sku, node, ..
            }
            | Command::AddInbound {
                request, sku, node, ..
            }
            | Command::ReceiveInbound {
                request, sku, node, ..
            }
            | Command::CancelInbound {
                request, sku, node, ..
            }
            | Command::Return {
                request, sku, node, ..
            } => (*request, *node, vec![*sku]),
            _ => unreachable!(),
        };
        // A retry gets the first answer; an id used for something else is refused.
        if self.holds.contains_key(&request) {
            return Err(ErrorCode::RequestIdReused);
        }
        if let Some(kind) = self.done.get(&request) {
            return if *kind == cmd.kind() {
                Ok(Outcome::Fed { repeated: true })
            } else {
                Err(ErrorCode::RequestIdReused)
            };
        }
        if !self.node_known(node) {
            return Err(ErrorCode::UnknownNode);
        }
        if skus.iter().any(|s| !self.sku_known(*s)) {
            return Err(ErrorCode::UnknownSku);
        }
        if let Command::SetOnHand { feed_seq, .. } = cmd
            && *feed_seq <= self.feed_seq[&node]
        {
            return Err(ErrorCode::StaleFeedSequence);
        }
        let sku = skus[0];
        let on_hand = self.positions.get(&(sku, node)).map_or(0, |p| p.on_hand);
        match cmd {
            Command::AdjustOnHand { delta, .. } => {
                let new = i64::from(on_hand) + delta;
                if new < 0 {
                    return Err(ErrorCode::NegativeOnHand);
                }
                if new > i64::from(u32::MAX) {
                    return Err(ErrorCode::QuantityOverflow);
                }
            }
            Command::Return { quantity, .. }
                if u64::from(on_hand) + u64::from(quantity.get()) > u64::from(u32::MAX) =>
            {
                return Err(ErrorCode::QuantityOverflow);
            }
            Command::AddInbound { reference, .. } => {
                let lots = self.positions.get(&(sku, node)).map(|p| &p.lots);
                if lots.is_some_and(|l| l.contains_key(reference)) {
                    return Err(ErrorCode::DuplicateLot);
                }
                if lots.is_some_and(|l| l.len() >= LOTS_MAX) {
                    return Err(ErrorCode::TooManyLots);
                }
            }
            Command::ReceiveInbound { reference, .. } | Command::CancelInbound { reference, .. } => {
                let lot = self
                    .positions
                    .get(&(sku, node))
                    .and_then(|p| p.lots.get(reference));
                let Some(&(_, q)) = lot else {
                    return Err(ErrorCode::UnknownLot);
                };
                if matches!(cmd, Command::ReceiveInbound { .. })
                    && u64::from(on_hand) + u64::from(q) > u64::from(u32::MAX)
                {
                    return Err(ErrorCode::QuantityOverflow);
                }
            }
            _ => {}
        }
        match cmd {
            Command::SetOnHand {
                node,
                feed_seq,
                counts,
                ..
            } => {
                for &(sku, q) in counts {
                    self.positions.entry((sku, *node)).or_default().on_hand = q;
                }
                self.feed_seq.insert(*node, *feed_seq);
            }
            Command::AdjustOnHand { delta, .. } => {
                let p = self.positions.entry((sku, node)).or_default();
                p.on_hand = (i64::from(p.on_hand) + delta) as u32;
            }
            Command::SetSafetyStock { quantity, .. } => {
                self.positions.entry((sku, node)).or_default().safety = *quantity;
            }
            Command::Return { quantity, .. } => {
                self.positions.entry((sku, node)).or_default().on_hand += quantity.get();
            }
            Command::AddInbound {
                reference,
                quantity,
                arrival,
                ..
            } => {
                let p = self.positions.entry((sku, node)).or_default();
                p.lots.insert(reference.clone(), (*arrival, quantity.get()));
            }
            Command::ReceiveInbound { reference, .. } => {
                let p = self.positions.get_mut(&(sku, node)).expect("checked");
                let (_, q) = p.lots.remove(reference).expect("checked");
                p.on_hand += q;
            }
            Command::CancelInbound { reference, .. } => {
                let p = self.positions.get_mut(&(sku, node)).expect("checked");
                p.lots.remove(reference).expect("checked");
            }
            _ => unreachable!(),
        }
        self.done.insert(request, cmd.kind());
        self.retain(now, request);
        Ok(Outcome::Fed { repeated: false })
    }

    /// Which node a line would take from, what it could get there, and why it is not eligible.
    fn evaluate(
        &self,
        aggs: &BTreeMap<(SkuId, NodeId), Agg>,
        sku: SkuId,
        choice: NodeChoice,
        need: Day,
        today: Day,
    ) -> (Option<NodeId>, i64, Option<RefusalReason>) {
        match choice {
            NodeChoice::Node(n) => {
                if !self.is_open(n) {
                    (Some(n), 0, Some(RefusalReason::NodeNotOpen))
                } else if !self.capable(sku, n) {
                    (Some(n), 0, Some(RefusalReason::MissingCapability))
                } else if !self.positions.contains_key(&(sku, n)) {
                    (Some(n), 0, Some(RefusalReason::NotStocked))
                } else {
                    (Some(n), self.atp_with(aggs, sku, n, today, need), None)
                }
            }
            NodeChoice::Any => {
                // The open, capable, stocked node with the most ATP; the lowest id on ties.
                let mut best: Option<(NodeId, i64)> = None;
                for n in 0..self.nodes.len() as u32 {
                    let n = NodeId::from_raw(n);
                    if !self.positions.contains_key(&(sku, n)) || !self.is_open(n) || !self.capable(sku, n) {
                        continue;
                    }
                    let atp = self.atp_with(aggs, sku, n, today, need);
                    if best.is_none_or(|(_, b)| atp > b) {
                        best = Some((n, atp));
                    }
                }
                match best {
                    Some((n, atp)) => (Some(n), atp, None),
                    None => (None, 0, Some(RefusalReason::NotStocked)),
                }
            }
        }
    }

    fn hold(
        &mut self,
        now: Timestamp,
        id: RequestId,
        lines: &[HoldLineRequest],
        ttl: u64,
        partial: bool,
    ) -> Res {
        let today = now.day();
        if lines.is_empty() {
            return Err(ErrorCode::EmptyRequest);
        }
        if lines.len() > HOLD_LINES_MAX {
            return Err(ErrorCode::TooManyLines);
        }
        if ttl == 0 || ttl > TTL_MAX_MS {
            return Err(ErrorCode::InvalidTtl);
        }
        if lines
            .iter()
            .any(|l| l.need_day.is_some_and(|d| d.0 > today.0 + LOOKAHEAD_DAYS))
        {
            return Err(ErrorCode::InvalidDate);
        }
        // Each position at most once; a SKU asked from any node may not appear again at all.
        for (i, a) in lines.iter().enumerate() {
            for b in &lines[..i] {
                if a.sku == b.sku
                    && (a.node == b.node || a.node == NodeChoice::Any || b.node == NodeChoice::Any)
                {
                    return Err(ErrorCode::DuplicateLine);
                }
            }
        }
        if let Some(h) = self.holds.get(&id) {
            return Ok(granted_outcome(id, h, true));
        }
        if self.done.contains_key(&id) {
            return Err(ErrorCode::RequestIdReused);
        }
        for l in lines {
            if !self.sku_known(l.sku) {
                return Err(ErrorCode::UnknownSku);
            }
            if let NodeChoice::Node(n) = l.node
                && !self.node_known(n)
            {
                return Err(ErrorCode::UnknownNode);
            }
        }
        let aggs = self.aggregates();
        let mut plan = Vec::new();
        let mut refusals = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let need = l.need_day.unwrap_or(today).max(today);
            let (node, available, ineligible) = self.evaluate(&aggs, l.sku, l.node, need, today);
            let requested = l.quantity.get();
            let grant = if ineligible.is_some() {
                0
            } else if available >= i64::from(requested) {
                requested
            } else if partial {
                available.clamp(0, i64::from(requested)) as u32
            } else {
                0
            };
            if grant < requested {
                refusals.push(LineRefusal {
                    line_idx: i as u16,
                    sku: l.sku,
                    node,
                    requested,
                    available,
                    reason: ineligible.unwrap_or(RefusalReason::InsufficientAtp),
                });
            }
            plan.push(MLine {
                sku: l.sku,
                node,
                need_day: need,
                future: need > today,
                requested,
                granted: grant,
                remaining: grant,
            });
        }
        if (!partial && !refusals.is_empty()) || plan.iter().all(|l| l.granted == 0) {
            // Nothing held, nothing remembered.
            return Ok(Outcome::Hold(HoldOutcome::Refused { lines: refusals }));
        }
        let h = MHold {
            lines: plan,
            placed_at: now,
            expires_at: Timestamp(now.0 + ttl),
            state: HoldState::Held,
            partial,
            ops: Vec::new(),
        };
        let out = granted_outcome(id, &h, false);
        self.holds.insert(id, h);
        Ok(out)
    }

    fn change(
        &mut self,
        now: Timestamp,
        request: RequestId,
        id: RequestId,
        op: HoldOp,
        lines: &[LineQuantity],
    ) -> Res {
        if lines.len() > HOLD_LINES_MAX {
            return Err(ErrorCode::TooManyLines);
        }
        for (i, a) in lines.iter().enumerate() {
            if lines[..i].iter().any(|b| (a.sku, a.node) == (b.sku, b.node)) {
                return Err(ErrorCode::DuplicateLine);
            }
        }
        // The request id may not be the hold's own id. Operations' ids are remembered on their
        // hold only, so a retry is recognised there first; after that the id may not name
        // another hold or a feed.
        if request == id {
            return Err(ErrorCode::RequestIdReused);
        }
        let Some(h) = self.holds.get(&id) else {
            return Err(ErrorCode::UnknownHold);
        };
        if let Some(&(_, first_op, after)) = h.ops.iter().find(|o| o.0 == request) {
            if first_op != op {
                return Err(ErrorCode::RequestIdReused);
            }
            return Ok(if op == HoldOp::Commit && after == HoldState::Expired {
                Outcome::HoldRefused {
                    hold: id,
                    reason: RefusalReason::HoldExpired,
                    repeated: true,
                }
            } else {
                Outcome::HoldChanged {
                    hold: id,
                    state: after,
                    repeated: true,
                }
            });
        }
        if self.used_as_request(request) {
            return Err(ErrorCode::RequestIdReused);
        }
        let expired_now = h.state == HoldState::Held && now >= h.expires_at;
        match (op, h.state) {
            (HoldOp::Commit | HoldOp::Release, HoldState::Held) => {}
            (HoldOp::Release, HoldState::Released | HoldState::Expired) => {
                // Releasing (any part of) a cart that is already gone changes nothing and is not
                // remembered.
                return Ok(Outcome::HoldChanged {
                    hold: id,
                    state: h.state,
                    repeated: false,
                });
            }
            (HoldOp::Commit, HoldState::Expired) => {
                // Too late: refused the same way whether or not a tick expired it first.
                return Ok(Outcome::HoldRefused {
                    hold: id,
                    reason: RefusalReason::HoldExpired,
                    repeated: false,
                });
            }
            (HoldOp::Cancel | HoldOp::Ship, HoldState::Committed) => {}
            _ => return Err(ErrorCode::WrongHoldState),
        }
        let mut amounts: Vec<u32> = h.lines.iter().map(|l| l.remaining).collect();
        if !lines.is_empty() && !expired_now {
            amounts = vec![0; h.lines.len()];
            for lq in lines {
                let idx = h
                    .lines
                    .iter()
                    .position(|l| l.sku == lq.sku && l.node == Some(lq.node));
                let have = idx.map_or(0, |i| h.lines[i].remaining);
                if lq.quantity.get() > have {
                    return Err(if op == HoldOp::Release {
                        ErrorCode::ExceedsHeld
                    } else {
                        ErrorCode::ExceedsAllocated
                    });
                }
                amounts[idx.expect("have > 0")] = lq.quantity.get();
            }
        }
        if op == HoldOp::Ship {
            for (l, &q) in h.lines.iter().zip(&amounts) {
                if q > 0 && self.positions[&(l.sku, l.node.expect("shipped line"))].on_hand < q {
                    return Err(ErrorCode::NegativeOnHand);
                }
            }
        }
        let h = self.holds.get_mut(&id).expect("looked up");
        let outcome = if expired_now {
            for l in &mut h.lines {
                l.remaining = 0;
            }
            h.state = HoldState::Expired;
            h.ops.push((request, op, HoldState::Expired));
            if op == HoldOp::Commit {
                Outcome::HoldRefused {
                    hold: id,
                    reason: RefusalReason::HoldExpired,
                    repeated: false,
                }
            } else {
                Outcome::HoldChanged {
                    hold: id,
                    state: HoldState::Expired,
                    repeated: false,
                }
            }
        } else {
            if op != HoldOp::Commit {
                for (l, &q) in h.lines.iter_mut().zip(&amounts) {
                    l.remaining -= q;
                    if op == HoldOp::Ship && q > 0 {
                        let node = l.node.expect("shipped line");
                        self.positions.get_mut(&(l.sku, node)).expect("stocked").on_hand -= q;
                    }
                }
            }
            let all_gone = h.lines.iter().all(|l| l.remaining == 0);
            h.state = match op {
                HoldOp::Commit => HoldState::Committed,
                HoldOp::Release if all_gone => HoldState::Released,
                HoldOp::Cancel => HoldState::Cancelled,
                HoldOp::Ship if all_gone => HoldState::Shipped,
                _ => h.state,
            };
            h.ops.push((request, op, h.state));
            Outcome::HoldChanged {
                hold: id,
                state: h.state,
                repeated: false,
            }
        };
        let finished = !matches!(self.holds[&id].state, HoldState::Held | HoldState::Committed);
        if finished {
            self.retain(now, id);
        }
        Ok(outcome)
    }

    fn tick(&mut self, now: Timestamp) -> Outcome {
        let mut due: Vec<(Timestamp, RequestId)> = self
            .holds
            .iter()
            .filter(|(_, h)| h.state == HoldState::Held && h.expires_at <= now)
            .map(|(id, h)| (h.expires_at, *id))
            .collect();
        due.sort();
        let mut forgotten = 0;
        for &(_, id) in &due {
            let h = self.holds.get_mut(&id).expect("due");
            for l in &mut h.lines {
                l.remaining = 0;
            }
            h.state = HoldState::Expired;
            forgotten += self.retain(now, id);
        }
        let horizon = now.0.saturating_sub(self.retention_ms);
        while let Some(&(at, id)) = self.retention.front() {
            if at.0 > horizon {
                break;
            }
            self.retention.pop_front();
            self.forget(id);
            forgotten += 1;
        }
        Outcome::Ticked {
            expired: due.len() as u32,
            forgotten,
        }
    }
}

// ---- random command sequences -----------------------------------------------------------------

#[derive(Clone, Debug)]
enum IdPick {
    Fresh,
    /// An id used before (for anything), picked modulo the ids used so far.
    Reuse(usize),
}

#[derive(Clone, Debug)]
enum Op {
    UpsertNode {
        node: u32,
        status: NodeStatus,
        caps: u32,
    },
    UpsertSku {
        sku: u32,
        required: u32,
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
    /// With `existing`, a lot the model knows of (picked by `lot`), if there is one.
    ReceiveLot {
        sku: u32,
        node: u32,
        lot: u8,
        existing: bool,
    },
    CancelLot {
        sku: u32,
        node: u32,
        lot: u8,
        existing: bool,
    },
    Return {
        sku: u32,
        node: u32,
        qty: u32,
    },
    Hold {
        lines: Vec<LineSpec>,
        allow_dup: bool,
        ttl: u64,
        partial: bool,
    },
    Commit {
        pick: usize,
    },
    Release {
        pick: usize,
        lines: ChangeLines,
    },
    Cancel {
        pick: usize,
    },
    Ship {
        pick: usize,
        lines: ChangeLines,
    },
    Tick,
    /// Send an earlier command again, verbatim: one of the last few, or any.
    Retry {
        pick: usize,
        recent: bool,
    },
}

/// Lines of a partial release or ship as (line pick, quantity); empty means the whole hold.
/// Repeated positions are dropped unless `allow_dup`.
#[derive(Clone, Debug)]
struct ChangeLines {
    picks: Vec<(usize, u32)>,
    allow_dup: bool,
}

#[derive(Clone, Debug)]
struct Step {
    /// Milliseconds the clock advances before this command.
    dt: u64,
    id: IdPick,
    op: Op,
}

fn sku_s() -> impl Strategy<Value = u32> {
    prop_oneof![24 => 0..N_SKUS, 1 => Just(N_SKUS)]
}
fn node_s() -> impl Strategy<Value = u32> {
    prop_oneof![24 => 0..N_NODES, 1 => Just(N_NODES)]
}
fn line_s() -> impl Strategy<Value = LineSpec> {
    (
        prop_oneof![49 => 0..N_SKUS, 1 => Just(N_SKUS)],
        prop_oneof![3 => node_s().prop_map(Some), 1 => Just(None)],
        1..=6u32,
        prop_oneof![
            40 => Just(None),
            32 => (0..=6i64).prop_map(Some),
            8 => (-2..0i64).prop_map(Some),
            1 => (731..=733i64).prop_map(Some),
        ],
    )
        .prop_map(|(sku, node, qty, need)| LineSpec { sku, node, qty, need })
}
fn ttl_s() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        6 => Just(1u64),
        9 => Just(60_000u64),
        12 => Just(3_600_000u64),
        12 => Just(DAY_MS),
        6 => Just(3 * DAY_MS),
        3 => Just(TTL_MAX_MS),
        1 => Just(TTL_MAX_MS + 1),
    ]
}
fn change_lines_s() -> impl Strategy<Value = ChangeLines> {
    (
        prop_oneof![
            1 => Just(Vec::new()),
            1 => prop::collection::vec((0..4usize, 1..=4u32), 1..=3),
        ],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(picks, allow_dup)| ChangeLines { picks, allow_dup })
}
fn counts_s() -> impl Strategy<Value = Vec<(u32, u32)>> {
    prop_oneof![
        12 => prop::collection::btree_map(sku_s(), 0..=12u32, 1..=3).prop_map(|m| m.into_iter().collect()),
        1 => prop::collection::vec((sku_s(), 0..=12u32), 0..=3),
    ]
}

fn op_s() -> impl Strategy<Value = Op> {
    let status = status_s();
    let seq = seq_s(14);
    prop_oneof![
        2 => (0..N_NODES, status, 0..4u32).prop_map(|(node, status, caps)| Op::UpsertNode { node, status, caps }),
        1 => (0..N_SKUS, prop_oneof![3 => Just(0u32), 1 => Just(Capabilities::HAZMAT.0)])
            .prop_map(|(sku, required)| Op::UpsertSku { sku, required }),
        8 => (node_s(), seq, counts_s())
            .prop_map(|(node, seq, counts)| Op::SetOnHand { node, seq, counts }),
        4 => (sku_s(), node_s(), -6..=6i64).prop_map(|(sku, node, delta)| Op::Adjust { sku, node, delta }),
        2 => (sku_s(), node_s(), 0..=4u32).prop_map(|(sku, node, qty)| Op::Safety { sku, node, qty }),
        5 => (sku_s(), node_s(), 0..4u8, 1..=8u32, prop_oneof![12 => -3..=10i64, 1 => Just(731i64)])
            .prop_map(|(sku, node, lot, qty, arrival)| Op::AddLot { sku, node, lot, qty, arrival }),
        3 => (sku_s(), node_s(), 0..4u8, prop::bool::weighted(0.7))
            .prop_map(|(sku, node, lot, existing)| Op::ReceiveLot { sku, node, lot, existing }),
        2 => (sku_s(), node_s(), 0..4u8, prop::bool::weighted(0.7))
            .prop_map(|(sku, node, lot, existing)| Op::CancelLot { sku, node, lot, existing }),
        3 => (sku_s(), node_s(), 1..=4u32).prop_map(|(sku, node, qty)| Op::Return { sku, node, qty }),
        24 => (prop::collection::vec(line_s(), 1..=4), prop::bool::weighted(0.1), ttl_s(), any::<bool>())
            .prop_map(|(lines, allow_dup, ttl, partial)| Op::Hold { lines, allow_dup, ttl, partial }),
        8 => any::<usize>().prop_map(|pick| Op::Commit { pick }),
        7 => (any::<usize>(), change_lines_s()).prop_map(|(pick, lines)| Op::Release { pick, lines }),
        3 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        5 => (any::<usize>(), change_lines_s()).prop_map(|(pick, lines)| Op::Ship { pick, lines }),
        6 => Just(Op::Tick),
        8 => (any::<usize>(), any::<bool>()).prop_map(|(pick, recent)| Op::Retry { pick, recent }),
    ]
}

fn step_s() -> impl Strategy<Value = Step> {
    // Exact TTLs too, so that holds are committed or released exactly at their expiry.
    let dt = dt_s();
    let id = prop_oneof![14 => Just(IdPick::Fresh), 1 => any::<usize>().prop_map(IdPick::Reuse)];
    (dt, id, op_s()).prop_map(|(dt, id, op)| Step { dt, id, op })
}

// ---- the harness ------------------------------------------------------------------------------

struct Harness {
    engine: Engine,
    model: Model,
    now: Timestamp,
    next_id: u128,
    /// Every request id used so far, in order (with repeats).
    used_ids: Vec<RequestId>,
    /// Every hold id tried so far (granted or not).
    hold_ids: Vec<RequestId>,
    /// Every command built so far, for verbatim retries.
    history: Vec<Command>,
    /// Counts of interesting outcomes, to check the generator reaches them.
    stats: BTreeMap<&'static str, u32>,
}

impl Harness {
    /// An engine and a model with the nodes and SKUs upserted and the initial stock (per SKU x
    /// node, `None` = never stocked) fed in.
    fn new(config: EngineConfig, cap: Option<usize>, initial: &[Option<u32>]) -> Self {
        let model = Model::new(config.retention_ms, cap);
        let mut h = Self {
            engine: Engine::new(config),
            model,
            now: T0,
            next_id: 0,
            used_ids: Vec::new(),
            hold_ids: Vec::new(),
            history: Vec::new(),
            stats: BTreeMap::new(),
        };
        for cmd in setup_commands(initial, &mut h.next_id) {
            h.setup(cmd);
        }
        h
    }

    fn setup(&mut self, cmd: Command) {
        let got = self.engine.apply(self.now, &cmd).map_err(|e| e.code());
        let want = self.model.apply(self.now, &cmd);
        assert_eq!(got, want, "setup command {cmd:?}");
        assert!(got.is_ok());
    }

    fn fresh_id(&mut self) -> RequestId {
        self.next_id += 1;
        spread_id(self.next_id)
    }

    fn request_id(&mut self, pick: &IdPick) -> RequestId {
        let id = match pick {
            IdPick::Reuse(p) if !self.used_ids.is_empty() => self.used_ids[p % self.used_ids.len()],
            _ => self.fresh_id(),
        };
        self.used_ids.push(id);
        id
    }

    /// A hold id for a hold change: mostly one in a state the operation accepts, often the newest.
    fn pick_hold(&mut self, pick: usize, wanted: HoldState) -> RequestId {
        let fitting: Vec<RequestId> = self
            .model
            .holds
            .iter()
            .filter(|(_, h)| h.state == wanted)
            .map(|(id, _)| *id)
            .collect();
        let newest = self
            .hold_ids
            .iter()
            .rev()
            .find(|id| fitting.contains(id))
            .copied();
        let remembered: Vec<RequestId> = self.model.holds.keys().copied().collect();
        let id = match pick % 10 {
            0..=2 if newest.is_some() => newest.expect("checked"),
            0..=6 if !fitting.is_empty() => fitting[(pick / 10) % fitting.len()],
            0..=8 if !remembered.is_empty() => remembered[(pick / 10) % remembered.len()],
            _ if !self.hold_ids.is_empty() => self.hold_ids[(pick / 10) % self.hold_ids.len()],
            _ => self.fresh_id(),
        };
        self.used_ids.push(id);
        id
    }

    /// Lines of a partial release or ship: (line pick, quantity), turned into positions of the hold.
    fn change_lines(&self, hold: RequestId, spec: &ChangeLines) -> Vec<LineQuantity> {
        let lines = self.model.holds.get(&hold).map(|h| &h.lines);
        let mut out: Vec<LineQuantity> = spec
            .picks
            .iter()
            .map(|&(pick, quantity)| {
                let (s, n) = match lines {
                    Some(lines) => {
                        let l = &lines[pick % lines.len()];
                        (l.sku, l.node.unwrap_or(node(pick as u32 % N_NODES)))
                    }
                    None => (sku(pick as u32 % N_SKUS), node(pick as u32 % N_NODES)),
                };
                LineQuantity {
                    sku: s,
                    node: n,
                    quantity: q(quantity),
                }
            })
            .collect();
        if !spec.allow_dup {
            let mut seen = BTreeSet::new();
            out.retain(|l| seen.insert((l.sku, l.node)));
        }
        out
    }

    /// A lot to receive or cancel: with `existing`, one the model knows of (if any), else the
    /// given position and reference, which may name no lot.
    fn lot_target(&self, s: u32, n: u32, lot: u8, existing: bool) -> (SkuId, NodeId, String) {
        let lots: Vec<(SkuId, NodeId, &String)> = self
            .model
            .positions
            .iter()
            .flat_map(|(&(s, n), p)| p.lots.keys().map(move |r| (s, n, r)))
            .collect();
        if existing && !lots.is_empty() {
            let (s, n, r) = lots[(s as usize * 7 + n as usize * 3 + lot as usize) % lots.len()];
            (s, n, r.clone())
        } else {
            (sku(s), node(n), format!("PO-{lot}"))
        }
    }

    fn day_offset(&self, offset: i64) -> Day {
        day_offset(self.now, offset)
    }

    fn build(&mut self, step: &Step) -> Command {
        let lot_ref = |lot: u8| format!("PO-{lot}");
        match &step.op {
            Op::Retry { pick, recent } if !self.history.is_empty() => {
                let n = self.history.len();
                let back = if *recent { pick % n.min(6) } else { pick % n };
                self.history[n - 1 - back].clone()
            }
            Op::Retry { .. } | Op::Tick => Command::Tick,
            Op::UpsertNode { node, status, caps } => Command::UpsertNode(node_spec(*node, *status, *caps)),
            Op::UpsertSku { sku, required } => Command::UpsertSku {
                name: format!("S{sku}"),
                required: Capabilities(*required),
            },
            Op::SetOnHand { node: n, seq, counts } => {
                let feed_seq = seq.feed_seq(self.model.feed_seq.get(&node(*n)).copied().unwrap_or(0));
                Command::SetOnHand {
                    request: self.request_id(&step.id),
                    node: node(*n),
                    feed_seq,
                    counts: counts.iter().map(|&(s, c)| (sku(s), c)).collect(),
                }
            }
            Op::Adjust {
                sku: s,
                node: n,
                delta,
            } => Command::AdjustOnHand {
                request: self.request_id(&step.id),
                sku: sku(*s),
                node: node(*n),
                delta: *delta,
                reason: promised_engine::AdjustReason::CycleCount,
            },
            Op::Safety { sku: s, node: n, qty } => Command::SetSafetyStock {
                request: self.request_id(&step.id),
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
            } => Command::AddInbound {
                request: self.request_id(&step.id),
                sku: sku(*s),
                node: node(*n),
                reference: lot_ref(*lot),
                quantity: q(*qty),
                arrival: self.day_offset(*arrival),
            },
            Op::ReceiveLot {
                sku: s,
                node: n,
                lot,
                existing,
            } => {
                let (sku, node, reference) = self.lot_target(*s, *n, *lot, *existing);
                Command::ReceiveInbound {
                    request: self.request_id(&step.id),
                    sku,
                    node,
                    reference,
                }
            }
            Op::CancelLot {
                sku: s,
                node: n,
                lot,
                existing,
            } => {
                let (sku, node, reference) = self.lot_target(*s, *n, *lot, *existing);
                Command::CancelInbound {
                    request: self.request_id(&step.id),
                    sku,
                    node,
                    reference,
                }
            }
            Op::Return { sku: s, node: n, qty } => Command::Return {
                request: self.request_id(&step.id),
                sku: sku(*s),
                node: node(*n),
                quantity: q(*qty),
            },
            Op::Hold {
                lines,
                allow_dup,
                ttl,
                partial,
            } => {
                let mut out: Vec<HoldLineRequest> = Vec::new();
                for l in lines {
                    let line = l.request(self.now);
                    let clash = out.iter().any(|o| {
                        o.sku == line.sku
                            && (o.node == line.node
                                || o.node == NodeChoice::Any
                                || line.node == NodeChoice::Any)
                    });
                    if !clash || *allow_dup {
                        out.push(line);
                    }
                }
                let id = self.request_id(&step.id);
                self.hold_ids.push(id);
                Command::Hold {
                    hold: id,
                    lines: out,
                    ttl_ms: *ttl,
                    partial: *partial,
                }
            }
            Op::Commit { pick } => {
                let hold = self.pick_hold(*pick, HoldState::Held);
                Command::Commit {
                    request: self.request_id(&step.id),
                    hold,
                }
            }
            Op::Release { pick, lines } => {
                let hold = self.pick_hold(*pick, HoldState::Held);
                Command::Release {
                    request: self.request_id(&step.id),
                    hold,
                    lines: self.change_lines(hold, lines),
                }
            }
            Op::Cancel { pick } => {
                let hold = self.pick_hold(*pick, HoldState::Committed);
                Command::CancelAllocation {
                    request: self.request_id(&step.id),
                    hold,
                }
            }
            Op::Ship { pick, lines } => {
                let hold = self.pick_hold(*pick, HoldState::Committed);
                Command::Ship {
                    request: self.request_id(&step.id),
                    hold,
                    lines: self.change_lines(hold, lines),
                }
            }
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn step(&mut self, i: usize, step: &Step) -> Result<(), TestCaseError> {
        self.now = Timestamp(self.now.0 + step.dt);
        let now = self.now;
        let today = now.day();
        let cmd = self.build(step);
        self.history.push(cmd.clone());

        // ATP of every (line, node) before the command, for the no-oversell check.
        let mut atp_before: BTreeMap<(SkuId, NodeId, Day), i64> = BTreeMap::new();
        if let Command::Hold { lines, .. } = &cmd {
            let aggs = self.model.aggregates();
            for l in lines {
                let need = l.need_day.unwrap_or(today).max(today);
                for n in 0..self.model.nodes.len() as u32 {
                    if self.model.sku_known(l.sku) {
                        let atp = self.model.atp_with(&aggs, l.sku, node(n), today, need);
                        atp_before.insert((l.sku, node(n), need), atp);
                    }
                }
            }
        }

        let got = self.engine.apply(now, &cmd).map_err(|e| e.code());
        let want = self.model.apply(now, &cmd);
        prop_assert_eq!(&got, &want, "step {}: outcome of {:?} at {:?}", i, cmd, now);

        match &got {
            Err(code) => {
                self.count("error");
                if std::env::var_os("MODEL_STATS").is_some() {
                    eprintln!("error {code:?} from {}", cmd.kind());
                }
            }
            Ok(Outcome::Hold(HoldOutcome::Granted {
                lines,
                repeated: false,
                ..
            })) => {
                self.count("hold granted");
                for l in lines.iter().filter(|l| l.granted > 0) {
                    let n = l.node.expect("a granted line has a node");
                    let before = atp_before[&(l.sku, n, l.need_day)];
                    prop_assert!(
                        i64::from(l.granted) <= before,
                        "step {i}: oversold: granted {} of {:?}@{:?} on {:?} with ATP {before}",
                        l.granted,
                        l.sku,
                        n,
                        l.need_day
                    );
                    let after = self
                        .engine
                        .atp(l.sku, n, now, Some(l.need_day))
                        .expect("known position");
                    prop_assert_eq!(
                        after,
                        before - i64::from(l.granted),
                        "step {}: ATP after grant",
                        i
                    );
                }
                if lines.iter().any(|l| l.granted < l.requested) {
                    self.count("partial grant");
                }
                if lines.iter().any(|l| l.need_day > today && l.granted > 0) {
                    self.count("future grant");
                }
            }
            Ok(Outcome::Hold(HoldOutcome::Granted { repeated: true, .. })) => self.count("hold repeated"),
            Ok(Outcome::Hold(HoldOutcome::Refused { .. })) => self.count("hold refused"),
            Ok(Outcome::HoldRefused { .. }) => self.count("commit of expired hold"),
            Ok(Outcome::HoldChanged { state, repeated, .. }) => {
                self.count(if *repeated { "change repeated" } else { "change" });
                if *state == HoldState::Shipped {
                    self.count("shipped");
                }
            }
            Ok(Outcome::Fed { repeated: true }) => self.count("feed repeated"),
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

        if let Err(e) = self.engine.check_invariants() {
            return Err(TestCaseError::fail(format!(
                "step {i}: invariants broken after {cmd:?}: {e}"
            )));
        }
        self.compare_queries(i)
    }

    fn compare_queries(&mut self, i: usize) -> Result<(), TestCaseError> {
        let now = self.now;
        let today = now.day();
        let aggs = self.model.aggregates();
        let days: Vec<Option<Day>> = [
            None,
            Some(-1),
            Some(0),
            Some(1),
            Some(2),
            Some(3),
            Some(5),
            Some(8),
            Some(12),
        ]
        .into_iter()
        .map(|o| o.map(|o| self.day_offset(o)))
        .collect();
        for s in (0..=N_SKUS).map(sku) {
            for &on in &days {
                let got = self.engine.network_atp(s, now, on).map_err(|e| e.code());
                let want = if self.model.sku_known(s) {
                    let t = on.unwrap_or(today);
                    Ok((0..self.model.nodes.len() as u32)
                        .map(node)
                        .filter(|n| self.model.is_open(*n) && self.model.capable(s, *n))
                        .map(|n| self.model.atp_with(&aggs, s, n, today, t).max(0))
                        .sum())
                } else {
                    Err(ErrorCode::UnknownSku)
                };
                prop_assert_eq!(got, want, "step {}: network_atp({:?}, {:?})", i, s, on);
            }
            for n in (0..=N_NODES).map(node) {
                let known = if !self.model.sku_known(s) {
                    Err(ErrorCode::UnknownSku)
                } else if !self.model.node_known(n) {
                    Err(ErrorCode::UnknownNode)
                } else {
                    Ok(())
                };
                for &on in &days {
                    let got = self.engine.atp(s, n, now, on).map_err(|e| e.code());
                    let want = known.map(|()| self.model.atp_with(&aggs, s, n, today, on.unwrap_or(today)));
                    prop_assert_eq!(got, want, "step {}: atp({:?}, {:?}, {:?})", i, s, n, on);
                }
                let got = self.engine.timeline(s, n, now).map_err(|e| e.code());
                let want = known.map(|()| self.model.timeline_with(&aggs, s, n, today));
                prop_assert_eq!(got, want, "step {}: timeline({:?}, {:?})", i, s, n);
                let got = self.engine.position(s, n).map_err(|e| e.code());
                let want = known.map(|()| self.model.position_view(&aggs, s, n));
                prop_assert_eq!(got, want, "step {}: position({:?}, {:?})", i, s, n);
            }
        }
        // Every position at once, unknown ids among them, several times over (the look-ahead
        // runs past its distances): the same answers as one at a time.
        let all: Vec<(SkuId, NodeId)> = (0..=N_SKUS)
            .flat_map(|s| (0..=N_NODES).map(move |n| (sku(s), node(n))))
            .collect();
        let queries: Vec<(SkuId, NodeId)> = all.iter().chain(&all).chain(&all).copied().collect();
        for &on in &days {
            let got: Vec<_> = self
                .engine
                .atp_many(&queries, now, on)
                .into_iter()
                .map(|r| r.map_err(|e| e.code()))
                .collect();
            let want: Vec<_> = queries
                .iter()
                .map(|&(s, n)| self.engine.atp(s, n, now, on).map_err(|e| e.code()))
                .collect();
            prop_assert_eq!(got, want, "step {}: atp_many on {:?}", i, on);
        }
        for n in (0..=N_NODES).map(node) {
            let want = self.model.feed_seq.get(&n).copied().unwrap_or(0);
            prop_assert_eq!(self.engine.feed_seq(n), want, "step {}: feed_seq({:?})", i, n);
        }
        let ids: BTreeSet<RequestId> = self.used_ids.iter().copied().collect();
        for id in ids {
            let got = self.engine.hold(id);
            let want = self.model.holds.get(&id);
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    let lines: Vec<_> = g
                        .lines
                        .iter()
                        .map(|l| {
                            let node = (l.node != NO_NODE).then_some(l.node);
                            (
                                l.sku,
                                node,
                                l.need_day,
                                l.future,
                                l.requested,
                                l.granted,
                                l.remaining,
                            )
                        })
                        .collect();
                    let want_lines: Vec<_> = w
                        .lines
                        .iter()
                        .map(|l| {
                            (
                                l.sku,
                                l.node,
                                l.need_day,
                                l.future,
                                l.requested,
                                l.granted,
                                l.remaining,
                            )
                        })
                        .collect();
                    prop_assert_eq!(g.id, id);
                    prop_assert_eq!(lines, want_lines, "step {}: lines of hold {}", i, id);
                    prop_assert_eq!(
                        (g.placed_at, g.expires_at, g.state, g.partial),
                        (w.placed_at, w.expires_at, w.state, w.partial),
                        "step {}: hold {}",
                        i,
                        id
                    );
                    let ops: Vec<_> = g.ops.iter().map(|o| (o.request, o.op, o.state_after)).collect();
                    prop_assert_eq!(&ops, &w.ops, "step {}: ops of hold {}", i, id);
                }
                (g, w) => {
                    return Err(TestCaseError::fail(format!(
                        "step {i}: hold {id}: engine has {g:?}, model has {w:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn run(
    config: EngineConfig,
    cap: Option<usize>,
    initial: &[Option<u32>],
    steps: &[Step],
) -> Result<BTreeMap<&'static str, u32>, TestCaseError> {
    let mut h = Harness::new(config, cap, initial);
    h.compare_queries(0)?;
    for (i, step) in steps.iter().enumerate() {
        h.step(i, step)?;
    }
    Ok(h.stats)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn model_time_window(initial in initial_s(), steps in prop::collection::vec(step_s(), 1..160)) {
        run(time_window_config(), None, &initial, &steps)?;
    }

    #[test]
    fn model_record_cap(initial in initial_s(), steps in prop::collection::vec(step_s(), 1..160)) {
        run(record_cap_config(), Some(6), &initial, &steps)?;
    }
}

/// The generator must actually reach the interesting cases; otherwise the properties above are
/// weaker than they look. Runs a fixed batch of sequences and counts outcomes.
#[test]
fn model_generator_reaches_interesting_cases() {
    use proptest::strategy::ValueTree;
    let mut runner = fixed_runner(7);
    let mut totals: BTreeMap<&'static str, u32> = BTreeMap::new();
    for case in 0..40 {
        let (initial, steps) = (initial_s(), prop::collection::vec(step_s(), 60..120))
            .new_tree(&mut runner)
            .expect("a value")
            .current();
        let config = if case % 2 == 0 {
            time_window_config()
        } else {
            record_cap_config()
        };
        let cap = (case % 2 == 1).then_some(6);
        let stats = run(config, cap, &initial, &steps).unwrap_or_else(|e| panic!("case {case}: {e}"));
        add_stats(&mut totals, stats);
    }
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
        "shipped",
        "feed repeated",
        "tick expired",
        "tick forgot",
    ] {
        assert_reached(&totals, what);
        eprintln!("{what}: {}", totals.get(what).copied().unwrap_or(0));
    }
}
