//! Applying a re-route as one command (one log record): every move or none, or (`partial`)
//! the moves that still fit.
//!
//! Under every request-shard lock, the capacity book and the SKU shards of the moved orders:
//! check each move's shape against its order; give back every moved order's stock and capacity;
//! then take each new plan as a route order would (stock on the package's ship day, the node's
//! orders and units that day). If any new plan does not fit, everything taken is given back and
//! every old plan taken again, exactly, and the command is refused with the order and reasons:
//! nothing changed, nothing logged. Holds wait only while it runs.
//!
//! Under live load stock moves between a plan and its apply, so an all-or-nothing apply of
//! thousands of moves is rarely accepted. A partial apply moves order by order instead: give back
//! one order's plan, take its new one, or take the old one back exactly if the new one does not
//! fit; orders no longer open are skipped. Skipped moves get further passes while others make
//! progress (a move may need the stock another order's move frees). The outcome is a function of
//! the state and the command, so replaying the log gives the same result.

use smallvec::SmallVec;

use crate::capacity::{CapacityBook, ShipSlot};
use crate::command::{Command, HoldLineRequest, LineRefusal, NodeChoice, Outcome};
use crate::error::EngineError;
use crate::hold::{DoneRecord, HoldLine, HoldState, Record};
use crate::hold_ops::EvaluatedHold;
use crate::ids::{Day, NodeId, Quantity, RequestId, Timestamp};
use crate::ledger::{Engine, LockedShards};
use crate::limits::{HOLD_LINES_MAX, REROUTE_MOVES_MAX};
use crate::network::Network;
use crate::route_ops::{check_floor, check_packages, refuse_full_days};

/// One order's new plan: the node of each of its lines (in the order's line order) and one
/// package per shipping node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RerouteMove {
    pub order: RequestId,
    pub line_nodes: Vec<NodeId>,
    pub packages: Vec<ShipSlot>,
}

/// A re-route's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RerouteOutcome {
    /// `moved` orders took their new plans; a partial apply lists the orders it `skipped`. A
    /// repeat (`repeated`) answers with the moves asked and no skipped list: the first answer
    /// had them.
    Applied {
        moved: u32,
        repeated: bool,
        skipped: Vec<RequestId>,
    },
    /// The plan no longer fits (stock or capacity moved since the dry run): the order, its
    /// lines' reasons. Nothing changed.
    Refused {
        order: RequestId,
        lines: Vec<LineRefusal>,
    },
}

/// A move with a package before `first` (a ship day that has passed since the plan).
fn passed(m: &RerouteMove, first: Day) -> bool {
    m.packages.iter().any(|p| p.day < first)
}

/// Checks the moves' shape against no order: every move, also those a partial apply skips as
/// passed (`skip_from`: their ship days alone are not checked), so no malformed command is
/// logged.
fn check_statically(moves: &[RerouteMove], today: Day, skip_from: Option<Day>) -> Result<(), EngineError> {
    let invalid = |what: String| Err(EngineError::InvalidOption { what });
    if moves.is_empty() {
        return Err(EngineError::EmptyRequest);
    }
    if moves.len() > REROUTE_MOVES_MAX {
        return Err(EngineError::CapacityExceeded {
            what: "moves in one re-route",
            max: REROUTE_MOVES_MAX,
        });
    }
    let mut ids: Vec<RequestId> = moves.iter().map(|m| m.order).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return invalid(format!("order {} is moved twice", w[0]));
    }
    for m in moves {
        // The log's reader takes no longer lists: a move it could not read back is refused here.
        if m.line_nodes.len() > HOLD_LINES_MAX {
            return Err(EngineError::CapacityExceeded {
                what: "line nodes in one re-route move",
                max: HOLD_LINES_MAX,
            });
        }
        let line_nodes: Vec<Option<NodeId>> = m.line_nodes.iter().copied().map(Some).collect();
        let window = (!skip_from.is_some_and(|first| passed(m, first))).then_some(today);
        check_packages(&line_nodes, &m.packages, window)
            .or_else(|what| invalid(format!("order {}: {what}", m.order)))?;
    }
    Ok(())
}

impl Engine {
    pub(crate) fn apply_reroute(&self, now: Timestamp, command: &Command) -> Result<Outcome, EngineError> {
        let Command::Reroute {
            request,
            moves,
            partial,
        } = command
        else {
            unreachable!("not a re-route")
        };
        let today = now.day();
        let mut requests = self.lock_all_requests();
        let r_idx = self.request_shard_of(*request);
        match requests.peek(r_idx).records.get(request) {
            Some(Record::Done(d)) if d.kind == "reroute" => {
                return Ok(Outcome::Reroute(RerouteOutcome::Applied {
                    moved: moves.len() as u32,
                    repeated: true,
                    skipped: Vec::new(),
                }));
            }
            Some(Record::Done(d)) => {
                return Err(EngineError::RequestIdReused {
                    request: *request,
                    first: d.kind,
                });
            }
            Some(Record::Hold(_)) => {
                return Err(EngineError::RequestIdReused {
                    request: *request,
                    first: "hold",
                });
            }
            None => {}
        }
        // A partial apply skips the moves whose ship days have passed since the plan (made
        // before midnight, applied after): before yesterday, or before the book's floor (a tick
        // moves it, under every request lock, which this holds). They were right when planned,
        // and the rest still are.
        let first = Day(today.0.saturating_sub(1)).max(self.capacity.read().floor());
        let skip_from = partial.then_some(first);
        check_statically(moves, today, skip_from)?;
        let skips = |m: &RerouteMove| skip_from.is_some_and(|first| passed(m, first));
        let mut skipped: Vec<RequestId> = moves.iter().filter(|m| skips(m)).map(|m| m.order).collect();
        // Each move against its order: routed, committed, unshipped, one node per line. A partial
        // apply skips the orders that are no longer open (cancelled, shipped, forgotten).
        let mut old: Vec<(SmallVec<[HoldLine; 2]>, Vec<ShipSlot>)> = Vec::with_capacity(moves.len());
        let mut kept: Vec<&RerouteMove> = Vec::with_capacity(moves.len());
        for m in moves.iter().filter(|m| !skips(m)) {
            let hold = match requests
                .peek(self.request_shard_of(m.order))
                .records
                .get(&m.order)
            {
                Some(Record::Hold(h)) => h,
                _ if *partial => {
                    skipped.push(m.order);
                    continue;
                }
                _ => return Err(EngineError::UnknownHold(m.order)),
            };
            let open =
                hold.state == HoldState::Committed && hold.lines.iter().all(|l| l.remaining == l.granted);
            if *partial && (!open || hold.routed.is_none()) {
                skipped.push(m.order);
                continue;
            }
            let Some(routed) = hold.routed.as_ref().filter(|_| open) else {
                return Err(EngineError::WrongHoldState {
                    hold: m.order,
                    state: if hold.routed.is_none() {
                        "not routed"
                    } else {
                        hold.state.name()
                    },
                    action: "reroute",
                });
            };
            if m.line_nodes.len() != hold.lines.len() {
                return Err(EngineError::InvalidOption {
                    what: format!(
                        "order {}: {} line nodes for an order of {} lines",
                        m.order,
                        m.line_nodes.len(),
                        hold.lines.len()
                    ),
                });
            }
            old.push((hold.lines.clone(), routed.packages.to_vec()));
            kept.push(m);
        }
        if kept.is_empty() {
            // A partial apply with every move skipped: nothing to lock or move.
            return Ok(self.finish_reroute(&mut requests, now, command, *request, 0, skipped));
        }
        let mut book = self.capacity.write();
        for m in &kept {
            check_floor(&book, &m.packages)?;
        }
        let mut shards = self.lock_skus(old.iter().flat_map(|o| o.0.iter().map(|l| l.sku)));
        let network = shards.any().network.clone();
        if *partial {
            let mut pending: Vec<usize> = (0..kept.len()).collect();
            let mut taken: Vec<(usize, SmallVec<[HoldLine; 2]>)> = Vec::with_capacity(kept.len());
            loop {
                let before = pending.len();
                pending.retain(|&i| {
                    let (m, (lines, packages)) = (kept[i], &old[i]);
                    self.shift(&mut shards, &mut book, lines, packages, false);
                    match self.take_plan(&mut shards, &mut book, &network, m, lines, today) {
                        Ok(plan) => {
                            taken.push((i, plan));
                            false
                        }
                        Err(_) => {
                            self.shift(&mut shards, &mut book, lines, packages, true);
                            true
                        }
                    }
                });
                if pending.is_empty() || pending.len() == before {
                    break;
                }
            }
            skipped.extend(pending.iter().map(|&i| kept[i].order));
            let moved = taken.len() as u32;
            self.settle_moves(&mut requests, taken.into_iter().map(|(i, plan)| (kept[i], plan)));
            return Ok(self.finish_reroute(&mut requests, now, command, *request, moved, skipped));
        }
        for (lines, packages) in &old {
            self.shift(&mut shards, &mut book, lines, packages, false);
        }
        let mut taken: Vec<SmallVec<[HoldLine; 2]>> = Vec::with_capacity(moves.len());
        for (m, (lines, _)) in kept.iter().zip(&old) {
            match self.take_plan(&mut shards, &mut book, &network, m, lines, today) {
                Ok(plan) => taken.push(plan),
                Err(refusal) => {
                    // Undo in reverse: the new plans given back, the old ones taken again.
                    for (m, plan) in kept.iter().zip(&taken).rev() {
                        self.shift(&mut shards, &mut book, plan, &m.packages, false);
                    }
                    for (lines, packages) in &old {
                        self.shift(&mut shards, &mut book, lines, packages, true);
                    }
                    return refusal;
                }
            }
        }
        // Everything fits: the orders take their new plans.
        let moved = taken.len() as u32;
        self.settle_moves(&mut requests, kept.iter().copied().zip(taken));
        Ok(self.finish_reroute(&mut requests, now, command, *request, moved, skipped))
    }

    /// The moved orders' records take their new lines and packages.
    fn settle_moves<'m>(
        &self,
        requests: &mut crate::ledger::LockedRequests<'_>,
        moved: impl Iterator<Item = (&'m RerouteMove, SmallVec<[HoldLine; 2]>)>,
    ) {
        for (m, plan) in moved {
            let rs = requests.get(self.request_shard_of(m.order));
            let hold = rs.hold_mut(&m.order).expect("checked above");
            hold.lines = plan;
            if let Some(routed) = hold.routed.as_mut() {
                routed.packages = m.packages.as_slice().into();
            }
        }
    }

    /// Records the re-route's request id and sequences the command.
    fn finish_reroute(
        &self,
        requests: &mut crate::ledger::LockedRequests<'_>,
        now: Timestamp,
        command: &Command,
        request: RequestId,
        moved: u32,
        skipped: Vec<RequestId>,
    ) -> Outcome {
        let cap = self.retained_per_shard();
        let rs = requests.get(self.request_shard_of(request));
        rs.records
            .insert(request, Record::Done(DoneRecord { kind: "reroute" }));
        rs.retain(now, request, cap);
        self.sequence(now, command);
        Outcome::Reroute(RerouteOutcome::Applied {
            moved,
            repeated: false,
            skipped,
        })
    }

    /// Gives back what an order's lines allocate and its packages' capacity, or, with `take`,
    /// takes exactly that again (the undo).
    fn shift(
        &self,
        shards: &mut LockedShards<'_>,
        book: &mut CapacityBook,
        lines: &[HoldLine],
        packages: &[ShipSlot],
        take: bool,
    ) {
        for l in lines.iter().filter(|l| l.remaining > 0) {
            let shard = shards.get(self.map.shard_of(l.sku));
            let slot = self.map.slot_of(l.sku);
            let idx = shard.position_index(slot, l.node).expect("allocated position");
            let p = &mut shard.skus[slot].positions[idx];
            if take {
                p.allocated += l.remaining;
                if l.future {
                    shard.dated_mut(slot, idx).add_claim(l.need_day, l.remaining);
                }
            } else {
                p.allocated -= l.remaining;
                if l.future {
                    shard.dated_mut(slot, idx).remove_claim(l.need_day, l.remaining);
                    shard.release_dated_if_empty(slot, idx);
                }
            }
        }
        for &p in packages {
            let units = package_units(lines, p.node);
            // The book ignores giving back to a forgotten day: so does taking again.
            if !take {
                book.give_back(p, units);
            } else if p.day >= book.floor() {
                book.take(p, units);
            }
        }
    }

    /// Takes `m`'s new plan for the order's `lines` as a route order would, or says why not.
    fn take_plan(
        &self,
        shards: &mut LockedShards<'_>,
        book: &mut CapacityBook,
        network: &Network,
        m: &RerouteMove,
        lines: &[HoldLine],
        today: Day,
    ) -> Result<SmallVec<[HoldLine; 2]>, Result<Outcome, EngineError>> {
        let refuse = |lines: Vec<LineRefusal>| {
            Err(Ok(Outcome::Reroute(RerouteOutcome::Refused {
                order: m.order,
                lines,
            })))
        };
        let request: Vec<HoldLineRequest> = lines
            .iter()
            .zip(&m.line_nodes)
            .map(|(l, &node)| {
                let day = m
                    .packages
                    .iter()
                    .find(|p| p.node == node)
                    .map_or(today, |p| p.day);
                HoldLineRequest {
                    sku: l.sku,
                    node: NodeChoice::Node(node),
                    quantity: Quantity::new(i64::from(l.remaining)).expect("an allocated quantity is valid"),
                    need_day: (day > today).then_some(day),
                }
            })
            .collect();
        let mut evaluated: EvaluatedHold = self.evaluate_hold(shards, &request, false, today).map_err(Err)?;
        refuse_full_days(book, network, &request, &m.packages, &mut evaluated.refusals).map_err(Err)?;
        if !evaluated.refusals.is_empty() {
            evaluated.refusals.sort_unstable_by_key(|r| r.line_idx);
            return refuse(evaluated.refusals);
        }
        self.take_stock(shards, &evaluated, true);
        for &slot in &m.packages {
            book.take(slot, package_units(&evaluated.plan, slot.node));
        }
        Ok(evaluated.plan)
    }
}

fn package_units(lines: &[HoldLine], node: NodeId) -> u32 {
    lines
        .iter()
        .filter(|l| l.node == node)
        .fold(0u32, |a, l| a.saturating_add(l.remaining))
}
