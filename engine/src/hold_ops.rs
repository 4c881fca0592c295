//! Applying hold commands: hold, commit, release, cancel, ship, and `tick`, which expires holds.
//!
//! Each command checks everything under its locks before it changes anything, so an error leaves
//! the state as it was. ATP is read and consumed under the same SKU-shard locks: a hold can never
//! be granted against stock that a concurrent hold has already taken.

use smallvec::SmallVec;

use crate::command::{
    Command, GrantedLine, HoldLineRequest, HoldOutcome, LineQuantity, LineRefusal, NodeChoice, Outcome,
    RefusalReason,
};
use crate::error::EngineError;
use crate::hold::{Hold, HoldLine, HoldOp, HoldState, NO_NODE, OpRecord, Record};
use crate::ids::{Day, NodeId, RequestId, SkuId, Timestamp};
use crate::ledger::{Engine, LockedShards};
use crate::limits;
use crate::shard::Shard;

impl Engine {
    pub(crate) fn apply_hold(&self, now: Timestamp, command: &Command) -> Result<Outcome, EngineError> {
        let Command::Hold {
            hold: id,
            lines,
            ttl_ms,
            partial,
        } = command
        else {
            unreachable!("not a hold")
        };
        let today = now.day();
        check_hold_statically(lines, *ttl_ms, today)?;
        // The SKU shards' lock lines start coming while the request shard is looked up.
        self.prefetch_sku_locks(lines.iter().map(|l| l.sku));
        let rs_idx = self.request_shard_of(*id);
        let mut requests = self.lock_requests(&[rs_idx]);
        let rs = requests.get(rs_idx);
        match rs.records.get(id) {
            Some(Record::Hold(existing)) if existing.routed.is_some() => {
                return Err(EngineError::RequestIdReused {
                    request: *id,
                    first: "route_order",
                });
            }
            Some(Record::Hold(existing)) => return Ok(Outcome::Hold(granted(existing, true))),
            Some(Record::Done(d)) => {
                return Err(EngineError::RequestIdReused {
                    request: *id,
                    first: d.kind,
                });
            }
            None => {}
        }
        let mut shards = self.lock_skus(lines.iter().map(|l| l.sku));
        let evaluated = self.evaluate_hold(&mut shards, lines, *partial, today)?;
        if (!*partial && !evaluated.refusals.is_empty()) || evaluated.plan.iter().all(|l| l.granted == 0) {
            return Ok(Outcome::Hold(HoldOutcome::Refused {
                lines: evaluated.refusals,
            }));
        }
        // Everything is checked: from here on the hold cannot fail.
        self.take_stock(&mut shards, &evaluated, false);
        // Logged while the SKU shards are still locked (the log's order is the order holds
        // took stock); the record is filed under the request shard's lock alone, so threads
        // waiting for a hot SKU's shard do not wait for the request table too.
        self.sequence(now, command);
        drop(shards);
        let plan = evaluated.plan;
        let expires_at = now.saturating_add_ms(*ttl_ms);
        let hold = Hold {
            id: *id,
            lines: plan,
            placed_at: now,
            expires_at,
            state: HoldState::Held,
            partial: *partial,
            ops: SmallVec::new(),
            routed: None,
        };
        let outcome = granted(&hold, false);
        let rs = requests.get(rs_idx);
        rs.expiry.push(expires_at, *id);
        rs.records.insert(*id, Record::Hold(hold));
        Ok(Outcome::Hold(outcome))
    }

    /// Evaluates hold lines under their locked shards: what each line gets (all of it, part of it
    /// with `partial`, or nothing) and why not. Changes nothing.
    pub(crate) fn evaluate_hold(
        &self,
        shards: &mut LockedShards<'_>,
        lines: &[HoldLineRequest],
        partial: bool,
        today: Day,
    ) -> Result<EvaluatedHold, EngineError> {
        let n_nodes = shards.any().network.n_nodes();
        for l in lines {
            self.check_sku(shards, l.sku)?;
            if let NodeChoice::Node(n) = l.node
                && n.index() >= n_nodes
            {
                return Err(EngineError::UnknownNodeId(n));
            }
        }
        let mut plan: SmallVec<[HoldLine; 2]> = SmallVec::with_capacity(lines.len());
        let mut position_idx: SmallVec<[usize; 4]> = SmallVec::with_capacity(lines.len());
        let mut refusals = Vec::new();
        for (line_idx, l) in lines.iter().enumerate() {
            let need_day = l.need_day.unwrap_or(today).max(today);
            let shard = shards.get(self.map.shard_of(l.sku));
            let slot = self.map.slot_of(l.sku);
            let Evaluation {
                node,
                idx,
                available,
                ineligible,
            } = evaluate_line(shard, slot, l.node, need_day, today);
            let requested = l.quantity.get();
            let grant = match ineligible {
                None if available >= i64::from(requested) => requested,
                None if partial => available.clamp(0, i64::from(requested)) as u32,
                _ => 0,
            };
            if grant < requested {
                refusals.push(LineRefusal {
                    line_idx: line_idx as u16,
                    sku: l.sku,
                    node,
                    requested,
                    available,
                    reason: ineligible.unwrap_or(RefusalReason::InsufficientAtp),
                });
            }
            if grant > 0 {
                let node = node.expect("granted lines have a node");
                let p = &shard.skus[slot].positions[idx.expect("granted lines have a position")];
                // Keeping reserved + allocated within u32 also bounds every later commit
                // (reserved -> allocated) and every per-day future claim.
                if u64::from(p.reserved) + u64::from(p.allocated) + u64::from(grant) > u64::from(u32::MAX) {
                    return Err(EngineError::QuantityOverflow { sku: l.sku, node });
                }
            }
            position_idx.push(idx.unwrap_or(usize::MAX));
            plan.push(HoldLine {
                sku: l.sku,
                node: node.unwrap_or(NO_NODE),
                need_day,
                future: need_day > today,
                requested,
                granted: grant,
                remaining: grant,
            });
        }
        Ok(EvaluatedHold {
            plan,
            position_idx,
            refusals,
        })
    }

    /// Takes what `evaluate_hold` granted: reserved for a hold, allocated for a routed order.
    pub(crate) fn take_stock(
        &self,
        shards: &mut LockedShards<'_>,
        evaluated: &EvaluatedHold,
        allocate: bool,
    ) {
        let lines = evaluated.plan.iter().zip(&evaluated.position_idx);
        for (line, &idx) in lines.filter(|(l, _)| l.granted > 0) {
            let shard = shards.get(self.map.shard_of(line.sku));
            let slot = self.map.slot_of(line.sku);
            debug_assert_eq!(shard.position_index(slot, line.node), Some(idx));
            let p = &mut shard.skus[slot].positions[idx];
            if allocate {
                p.allocated += line.granted;
            } else {
                p.reserved += line.granted;
            }
            if line.future {
                shard.dated_mut(slot, idx).add_claim(line.need_day, line.granted);
            }
        }
    }

    pub(crate) fn apply_hold_change(
        &self,
        now: Timestamp,
        command: &Command,
    ) -> Result<Outcome, EngineError> {
        let (request, hold_id, op, lines): (RequestId, RequestId, HoldOp, &[LineQuantity]) = match command {
            Command::Commit { request, hold } => (*request, *hold, HoldOp::Commit, &[]),
            Command::Release { request, hold, lines } => (*request, *hold, HoldOp::Release, lines),
            Command::CancelAllocation { request, hold } => (*request, *hold, HoldOp::Cancel, &[]),
            Command::Ship { request, hold, lines } => (*request, *hold, HoldOp::Ship, lines),
            _ => unreachable!("not a hold change"),
        };
        check_change_lines(lines)?;
        let h_idx = self.request_shard_of(hold_id);
        let r_idx = self.request_shard_of(request);
        let mut requests = self.lock_requests(&[h_idx, r_idx]);
        if request == hold_id {
            return Err(EngineError::RequestIdReused {
                request,
                first: "hold",
            });
        }
        // Read first, answer in order below: one lookup of the hold, mutable, serves the command.
        let first_use = requests.get(r_idx).first_use(request);
        let Some(hold) = requests.get(h_idx).hold_mut(&hold_id) else {
            return Err(EngineError::UnknownHold(hold_id));
        };
        // An operation's request id is remembered on its hold (not in the request table), so a
        // retry is recognised here first, whatever the id was used for since.
        if let Some(rec) = hold.op(request) {
            return if rec.op == op {
                Ok(repeat_outcome(hold_id, rec))
            } else {
                Err(EngineError::RequestIdReused {
                    request,
                    first: rec.op.name(),
                })
            };
        }
        if hold.ops.len() >= limits::OPS_PER_HOLD_MAX {
            return Err(EngineError::TooManyOperations {
                hold: hold_id,
                max: limits::OPS_PER_HOLD_MAX,
            });
        }
        if let Some(first) = first_use {
            return Err(EngineError::RequestIdReused { request, first });
        }
        let expired_now = hold.state == HoldState::Held && now >= hold.expires_at;
        let wrong_state = || EngineError::WrongHoldState {
            hold: hold_id,
            state: hold.state.name(),
            action: op.name(),
        };
        match (op, hold.state) {
            (HoldOp::Commit | HoldOp::Release, HoldState::Held) => {}
            (HoldOp::Release, HoldState::Released | HoldState::Expired) => {
                // Releasing (all or part of) a cart that is already gone is not an error; nothing
                // changes, and nothing is remembered.
                return Ok(Outcome::HoldChanged {
                    hold: hold_id,
                    state: hold.state,
                    repeated: false,
                });
            }
            (HoldOp::Commit, HoldState::Expired) => {
                // Too late, whether or not a tick got there first: the same answer either way.
                return Ok(Outcome::HoldRefused {
                    hold: hold_id,
                    reason: RefusalReason::HoldExpired,
                    repeated: false,
                });
            }
            (HoldOp::Cancel | HoldOp::Ship, HoldState::Committed) => {}
            _ => return Err(wrong_state()),
        }
        // Cancelling a routed order gives back the capacity of its packages not yet shipped.
        let mut book = (op == HoldOp::Cancel && hold.routed.is_some()).then(|| self.capacity.write());
        let mut shards = self.lock_skus(hold.lines.iter().filter(|l| l.node != NO_NODE).map(|l| l.sku));

        // Check the lines asked for against the hold (and, for a ship, against on hand).
        let mut amounts: SmallVec<[u32; 4]> = hold.lines.iter().map(|l| l.remaining).collect();
        if !lines.is_empty() && !expired_now {
            amounts.iter_mut().for_each(|a| *a = 0);
            for lq in lines {
                let idx = hold.line_index(lq.sku, lq.node);
                let have = idx.map_or(0, |i| hold.lines[i].remaining);
                if lq.quantity.get() > have {
                    return Err(if op == HoldOp::Release {
                        EngineError::ExceedsHeld {
                            hold: hold_id,
                            sku: lq.sku,
                            node: lq.node,
                            held: have,
                            requested: lq.quantity.get(),
                        }
                    } else {
                        EngineError::ExceedsAllocated {
                            hold: hold_id,
                            sku: lq.sku,
                            node: lq.node,
                            allocated: have,
                            requested: lq.quantity.get(),
                        }
                    });
                }
                amounts[idx.expect("have > 0")] = lq.quantity.get();
            }
        }
        if op == HoldOp::Ship {
            for (line, &q) in hold.lines.iter().zip(&amounts) {
                if q == 0 {
                    continue;
                }
                let shard = shards.get(self.map.shard_of(line.sku));
                let p = shard
                    .position(self.map.slot_of(line.sku), line.node)
                    .expect("held position");
                if p.on_hand < q {
                    return Err(EngineError::NegativeOnHand {
                        sku: line.sku,
                        node: line.node,
                        on_hand: p.on_hand,
                        by: u64::from(q),
                    });
                }
            }
        }

        // Everything is checked: from here on the command cannot fail.
        let (state_after, outcome) = if expired_now {
            self.expire(hold, &mut shards);
            let outcome = if op == HoldOp::Commit {
                Outcome::HoldRefused {
                    hold: hold_id,
                    reason: RefusalReason::HoldExpired,
                    repeated: false,
                }
            } else {
                Outcome::HoldChanged {
                    hold: hold_id,
                    state: HoldState::Expired,
                    repeated: false,
                }
            };
            (HoldState::Expired, outcome)
        } else {
            if let (Some(book), Some(routed)) = (book.as_deref_mut(), &hold.routed) {
                for &slot in routed.packages.iter() {
                    let package = hold.lines.iter().filter(|l| l.node == slot.node);
                    if package.clone().all(|l| l.remaining == l.granted) {
                        book.give_back(slot, package.map(|l| l.granted).sum());
                    }
                }
            }
            for (line, &q) in hold.lines.iter_mut().zip(&amounts) {
                if q == 0 {
                    continue;
                }
                let shard = shards.get(self.map.shard_of(line.sku));
                let slot = self.map.slot_of(line.sku);
                let idx = shard.position_index(slot, line.node).expect("held position");
                let p = &mut shard.skus[slot].positions[idx];
                match op {
                    HoldOp::Commit => {
                        p.reserved -= q;
                        p.allocated += q;
                    }
                    HoldOp::Release => {
                        p.reserved -= q;
                        line.remaining -= q;
                    }
                    HoldOp::Cancel => {
                        p.allocated -= q;
                        line.remaining -= q;
                    }
                    HoldOp::Ship => {
                        p.allocated -= q;
                        p.on_hand -= q;
                        line.remaining -= q;
                    }
                }
                if op != HoldOp::Commit && line.future {
                    remove_claim(shard, slot, idx, line.need_day, q);
                }
            }
            let all_gone = hold.lines.iter().all(|l| l.remaining == 0);
            hold.state = match op {
                HoldOp::Commit => HoldState::Committed,
                HoldOp::Release if all_gone => HoldState::Released,
                HoldOp::Cancel => HoldState::Cancelled,
                HoldOp::Ship if all_gone => HoldState::Shipped,
                _ => hold.state,
            };
            let outcome = Outcome::HoldChanged {
                hold: hold_id,
                state: hold.state,
                repeated: false,
            };
            (hold.state, outcome)
        };
        // Logged while the SKU shards are still locked; what is left changes only the request
        // shard (see `apply_hold`).
        self.sequence(now, command);
        drop(shards);
        drop(book);
        hold.ops.push(OpRecord {
            request,
            op,
            state_after,
        });
        let finished = hold.state.is_finished();
        if finished {
            let cap = self.retained_per_shard();
            requests.get(h_idx).retain(now, hold_id, cap);
        }
        Ok(outcome)
    }

    /// Gives back everything a held hold still reserves and marks it expired.
    fn expire(&self, hold: &mut Hold, shards: &mut LockedShards<'_>) {
        assert_eq!(hold.state, HoldState::Held);
        for line in hold.lines.iter_mut().filter(|l| l.remaining > 0) {
            let shard = shards.get(self.map.shard_of(line.sku));
            let slot = self.map.slot_of(line.sku);
            let idx = shard.position_index(slot, line.node).expect("held position");
            shard.skus[slot].positions[idx].reserved -= line.remaining;
            if line.future {
                remove_claim(shard, slot, idx, line.need_day, line.remaining);
            }
            line.remaining = 0;
        }
        hold.state = HoldState::Expired;
    }

    /// Expires every hold due at `now` and forgets finished requests older than the retention
    /// window. Takes every lock: it runs rarely (about once a second) and must be one atomic step.
    pub(crate) fn tick(&self, now: Timestamp, command: &Command) -> Outcome {
        let mut requests = self.lock_all_requests();
        // No order ships before yesterday (a node west of UTC may still be on yesterday). The
        // floor moves once a day: most ticks only read it, and take no write lock that would
        // stop promises reading the book.
        let floor = Day(now.day().0.saturating_sub(1));
        if self.capacity.read().floor() < floor {
            self.capacity.write().forget_before(floor);
        }
        let mut shards = self.lock_all_skus();
        let horizon = Timestamp(now.0.saturating_sub(self.config.retention_ms));
        let cap = self.retained_per_shard();
        let (mut expired, mut forgotten) = (0u32, 0u32);
        for rs_idx in 0..self.config.request_shards {
            // Most shards have nothing due: leave them untouched, so a snapshot in progress need
            // not copy them out.
            let view = requests.peek(rs_idx);
            let due_now = view.expiry.peek().is_some_and(|(at, _)| at <= now);
            let old = view.retention.front().is_some_and(|&(at, _)| at <= horizon);
            if !due_now && !old && !view.needs_compaction() {
                continue;
            }
            let rs = requests.get(rs_idx);
            let mut due: SmallVec<[RequestId; 8]> = SmallVec::new();
            while let Some((at, id)) = rs.expiry.peek() {
                if at > now {
                    break;
                }
                rs.expiry.pop();
                if let Some(hold) = rs.hold_mut(&id)
                    && hold.state == HoldState::Held
                    && hold.expires_at == at
                {
                    self.expire(hold, &mut shards);
                    due.push(id);
                }
            }
            expired += due.len() as u32;
            for id in due {
                forgotten += rs.retain(now, id, cap);
            }
            forgotten += rs.forget_before(horizon);
            rs.compact_expiry();
        }
        self.sequence(now, command);
        Outcome::Ticked { expired, forgotten }
    }
}

fn remove_claim(shard: &mut Shard, slot: usize, idx: usize, day: Day, quantity: u32) {
    shard.dated_mut(slot, idx).remove_claim(day, quantity);
    shard.release_dated_if_empty(slot, idx);
}

/// Hold lines evaluated under their locks (see `Engine::evaluate_hold`).
pub(crate) struct EvaluatedHold {
    pub plan: SmallVec<[HoldLine; 2]>,
    /// Where each planned line's position sits in its SKU's vector, so taking the stock does not
    /// search again (`usize::MAX` for a line that got nothing).
    pub position_idx: SmallVec<[usize; 4]>,
    pub refusals: Vec<LineRefusal>,
}

/// What a hold line could get: the node and position it would take from, what is promisable
/// there on its day, and why it is not eligible, if it is not.
struct Evaluation {
    node: Option<NodeId>,
    idx: Option<usize>,
    available: i64,
    ineligible: Option<RefusalReason>,
}

fn evaluate_line(shard: &Shard, slot: usize, choice: NodeChoice, need_day: Day, today: Day) -> Evaluation {
    let refuse = |node, reason| Evaluation {
        node,
        idx: None,
        available: 0,
        ineligible: Some(reason),
    };
    let entry = &shard.skus[slot];
    let network = &shard.network;
    let capable = |n: NodeId| {
        network
            .node(n)
            .is_some_and(|s| s.capabilities.contains(entry.required))
    };
    match choice {
        NodeChoice::Node(n) => {
            if !network.is_open(n) {
                return refuse(Some(n), RefusalReason::NodeNotOpen);
            }
            if !capable(n) {
                return refuse(Some(n), RefusalReason::MissingCapability);
            }
            match shard.position_index(slot, n) {
                Some(i) => Evaluation {
                    node: Some(n),
                    idx: Some(i),
                    available: shard.atp(&entry.positions[i], today, need_day),
                    ineligible: None,
                },
                None => refuse(Some(n), RefusalReason::NotStocked),
            }
        }
        NodeChoice::Any => {
            let mut best: Option<(NodeId, usize, i64)> = None;
            for (i, (&node, p)) in entry.nodes.iter().zip(&entry.positions).enumerate() {
                if !network.is_open(node) || !capable(node) {
                    continue;
                }
                let atp = shard.atp(p, today, need_day);
                if best.is_none_or(|(_, _, b)| atp > b) {
                    best = Some((node, i, atp));
                }
            }
            match best {
                Some((n, i, atp)) => Evaluation {
                    node: Some(n),
                    idx: Some(i),
                    available: atp,
                    ineligible: None,
                },
                None => refuse(None, RefusalReason::NotStocked),
            }
        }
    }
}

/// The grant as first answered, rebuilt from the hold record.
pub(crate) fn granted(hold: &Hold, repeated: bool) -> HoldOutcome {
    HoldOutcome::Granted {
        hold: hold.id,
        expires_at: hold.expires_at,
        lines: hold
            .lines
            .iter()
            .map(|l| GrantedLine {
                sku: l.sku,
                node: (l.node != NO_NODE).then_some(l.node),
                requested: l.requested,
                granted: l.granted,
                need_day: l.need_day,
            })
            .collect(),
        repeated,
    }
}

fn repeat_outcome(hold: RequestId, rec: &OpRecord) -> Outcome {
    if rec.op == HoldOp::Commit && rec.state_after == HoldState::Expired {
        Outcome::HoldRefused {
            hold,
            reason: RefusalReason::HoldExpired,
            repeated: true,
        }
    } else {
        Outcome::HoldChanged {
            hold,
            state: rec.state_after,
            repeated: true,
        }
    }
}

pub(crate) fn check_hold_statically(
    lines: &[HoldLineRequest],
    ttl_ms: u64,
    today: Day,
) -> Result<(), EngineError> {
    if lines.is_empty() {
        return Err(EngineError::EmptyRequest);
    }
    if lines.len() > limits::HOLD_LINES_MAX {
        return Err(EngineError::TooManyLines {
            n_lines: lines.len(),
            max: limits::HOLD_LINES_MAX,
        });
    }
    if ttl_ms == 0 || ttl_ms > limits::HOLD_TTL_MS_MAX {
        return Err(EngineError::InvalidTtl { ttl_ms });
    }
    let max_days = limits::LOOKAHEAD_DAYS_MAX;
    for l in lines {
        if let Some(day) = l.need_day
            && day.0 > today.0 + max_days
        {
            return Err(EngineError::InvalidDate { day, max_days });
        }
    }
    // Each position at most once; a SKU asked from `Any` node may not appear again at all.
    if lines.len() == 1 {
        return Ok(());
    }
    let mut keys: SmallVec<[(SkuId, u32, usize); 8]> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let node = match l.node {
                NodeChoice::Node(n) => n.raw(),
                NodeChoice::Any => u32::MAX,
            };
            (l.sku, node, i)
        })
        .collect();
    keys.sort_unstable();
    for w in keys.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.0 == b.0 && (a.1 == b.1 || b.1 == u32::MAX) {
            let node = (b.1 != u32::MAX).then(|| NodeId::from_raw(b.1));
            return Err(EngineError::DuplicateLine {
                line_idx: a.2.max(b.2),
                sku: b.0,
                node,
            });
        }
    }
    Ok(())
}

fn check_change_lines(lines: &[LineQuantity]) -> Result<(), EngineError> {
    if lines.len() > limits::CHANGE_LINES_MAX {
        return Err(EngineError::TooManyLines {
            n_lines: lines.len(),
            max: limits::CHANGE_LINES_MAX,
        });
    }
    for (i, a) in lines.iter().enumerate() {
        if lines[..i].iter().any(|b| a.sku == b.sku && a.node == b.node) {
            return Err(EngineError::DuplicateLine {
                line_idx: i,
                sku: a.sku,
                node: Some(a.node),
            });
        }
    }
    Ok(())
}
