//! Inventory feed commands: absolute counts, deltas, safety stock, inbound lots, returns.
//!
//! Feeds come from WMS, ERP and store systems. Each carries a request id (a retry gets the first
//! answer), and absolute counts also carry a per-node feed sequence number so that a delayed or
//! replayed message can never overwrite a newer count.

use crate::atp::InboundLot;
use crate::command::{Command, Outcome};
use crate::error::EngineError;
use crate::hold::{DoneRecord, Record};
use crate::ids::{NodeId, RequestId, SkuId, Timestamp, check_name};
use crate::ledger::{Engine, LockedShards};
use crate::limits;

impl Engine {
    pub(crate) fn apply_feed(&self, now: Timestamp, command: &Command) -> Result<Outcome, EngineError> {
        let (request, node) = feed_target(command);
        check_feed_statically(command, now)?;
        let rs_idx = self.request_shard_of(request);
        let mut requests = self.lock_requests(&[rs_idx]);
        let rs = requests.get(rs_idx);
        if let Some(first) = rs.first_use(request) {
            return if first == command.kind() {
                Ok(Outcome::Fed { repeated: true })
            } else {
                Err(EngineError::RequestIdReused { request, first })
            };
        }
        let mut feeds = matches!(command, Command::SetOnHand { .. }).then(|| self.feeds.lock());
        let mut shards = self.lock_skus(feed_skus(command));
        if node.index() >= shards.any().network.n_nodes() {
            return Err(EngineError::UnknownNodeId(node));
        }
        for sku in feed_skus(command) {
            self.check_sku(&mut shards, sku)?;
        }
        if let (Some(feeds), Command::SetOnHand { feed_seq, .. }) = (feeds.as_deref(), command) {
            let last = feeds[node.index()];
            if *feed_seq <= last {
                return Err(EngineError::StaleFeedSequence {
                    node,
                    last,
                    got: *feed_seq,
                });
            }
        }
        self.check_feed_against_state(&mut shards, command)?;
        // Everything is checked: from here on the command cannot fail.
        self.mutate_feed(&mut shards, command);
        if let (Some(feeds), Command::SetOnHand { feed_seq, .. }) = (feeds.as_deref_mut(), command) {
            feeds[node.index()] = *feed_seq;
        }
        let outcome = Outcome::Fed { repeated: false };
        let rs = requests.get(rs_idx);
        rs.records
            .insert(request, Record::Done(DoneRecord { kind: command.kind() }));
        rs.retain(now, request, self.retained_per_shard());
        self.sequence(now, command);
        Ok(outcome)
    }

    pub(crate) fn retained_per_shard(&self) -> usize {
        self.config.retained_records_max / self.config.request_shards
    }

    /// Checks that need the ledger: lots exist or not, counts stay in range.
    fn check_feed_against_state(
        &self,
        shards: &mut LockedShards<'_>,
        command: &Command,
    ) -> Result<(), EngineError> {
        match command {
            Command::AdjustOnHand { sku, node, delta, .. } => {
                let on_hand = self.read(shards, *sku, *node, |p, _| p.map_or(0, |p| p.on_hand));
                let new = i64::from(on_hand) + delta;
                if new < 0 {
                    return Err(EngineError::NegativeOnHand {
                        sku: *sku,
                        node: *node,
                        on_hand,
                        by: delta.unsigned_abs(),
                    });
                }
                if new > i64::from(u32::MAX) {
                    return Err(EngineError::QuantityOverflow {
                        sku: *sku,
                        node: *node,
                    });
                }
            }
            Command::Return {
                sku, node, quantity, ..
            } => {
                let on_hand = self.read(shards, *sku, *node, |p, _| p.map_or(0, |p| p.on_hand));
                if on_hand.checked_add(quantity.get()).is_none() {
                    return Err(EngineError::QuantityOverflow {
                        sku: *sku,
                        node: *node,
                    });
                }
            }
            Command::AddInbound {
                sku, node, reference, ..
            } => {
                let (n_lots, exists) = self.read(shards, *sku, *node, |p, d| {
                    let lots = p.and(d).map_or(&[][..], |d| &d.lots[..]);
                    (lots.len(), lots.iter().any(|l| &*l.reference == reference))
                });
                if exists {
                    return Err(EngineError::DuplicateLot {
                        sku: *sku,
                        node: *node,
                        reference: reference.clone(),
                    });
                }
                if n_lots >= limits::LOTS_PER_POSITION_MAX {
                    return Err(EngineError::TooManyLots {
                        sku: *sku,
                        node: *node,
                        max: limits::LOTS_PER_POSITION_MAX,
                    });
                }
            }
            Command::ReceiveInbound {
                sku, node, reference, ..
            }
            | Command::CancelInbound {
                sku, node, reference, ..
            } => {
                let found = self.read(shards, *sku, *node, |p, d| {
                    let lots = p.and(d).map_or(&[][..], |d| &d.lots[..]);
                    let lot = lots.iter().find(|l| &*l.reference == reference);
                    lot.map(|l| (p.expect("lot has a position").on_hand, l.quantity))
                });
                let Some((on_hand, quantity)) = found else {
                    return Err(EngineError::UnknownLot {
                        sku: *sku,
                        node: *node,
                        reference: reference.clone(),
                    });
                };
                if matches!(command, Command::ReceiveInbound { .. })
                    && on_hand.checked_add(quantity).is_none()
                {
                    return Err(EngineError::QuantityOverflow {
                        sku: *sku,
                        node: *node,
                    });
                }
            }
            Command::SetOnHand { .. } | Command::SetSafetyStock { .. } => {}
            _ => unreachable!("not a feed command"),
        }
        Ok(())
    }

    fn read<T>(
        &self,
        shards: &mut LockedShards<'_>,
        sku: SkuId,
        node: NodeId,
        f: impl FnOnce(Option<&crate::shard::Position>, Option<&crate::atp::Dated>) -> T,
    ) -> T {
        let shard = shards.get(self.map.shard_of(sku));
        let p = shard.position(self.map.slot_of(sku), node);
        let d = p.and_then(|p| shard.dated_of(p));
        f(p, d)
    }

    /// Applies a fully checked feed command.
    fn mutate_feed(&self, shards: &mut LockedShards<'_>, command: &Command) {
        let map = self.map;
        let at = |shards: &mut LockedShards<'_>, sku: SkuId, node: NodeId| {
            let shard = shards.get(map.shard_of(sku));
            let slot = map.slot_of(sku);
            let idx = shard.position_index_or_insert(slot, node);
            (slot, idx)
        };
        match command {
            Command::SetOnHand { node, counts, .. } => {
                for &(sku, quantity) in counts {
                    let (slot, idx) = at(shards, sku, *node);
                    let shard = shards.get(map.shard_of(sku));
                    shard.skus[slot].positions[idx].on_hand = quantity;
                }
            }
            Command::AdjustOnHand { sku, node, delta, .. } => {
                let (slot, idx) = at(shards, *sku, *node);
                let shard = shards.get(map.shard_of(*sku));
                let p = &mut shard.skus[slot].positions[idx];
                p.on_hand = (i64::from(p.on_hand) + delta) as u32;
            }
            Command::SetSafetyStock {
                sku, node, quantity, ..
            } => {
                let (slot, idx) = at(shards, *sku, *node);
                let shard = shards.get(map.shard_of(*sku));
                shard.skus[slot].positions[idx].safety_stock = *quantity;
            }
            Command::Return {
                sku, node, quantity, ..
            } => {
                let (slot, idx) = at(shards, *sku, *node);
                let shard = shards.get(map.shard_of(*sku));
                shard.skus[slot].positions[idx].on_hand += quantity.get();
            }
            Command::AddInbound {
                sku,
                node,
                reference,
                quantity,
                arrival,
                ..
            } => {
                let (slot, idx) = at(shards, *sku, *node);
                let shard = shards.get(map.shard_of(*sku));
                shard.dated_mut(slot, idx).insert_lot(InboundLot {
                    reference: reference.as_str().into(),
                    quantity: quantity.get(),
                    arrival: *arrival,
                });
            }
            Command::ReceiveInbound {
                sku, node, reference, ..
            }
            | Command::CancelInbound {
                sku, node, reference, ..
            } => {
                let (slot, idx) = at(shards, *sku, *node);
                let shard = shards.get(map.shard_of(*sku));
                let dated = shard.dated_mut(slot, idx);
                let lot_idx = dated.lot_index(reference).expect("lot checked");
                let lot = dated.lots.remove(lot_idx);
                if matches!(command, Command::ReceiveInbound { .. }) {
                    shard.skus[slot].positions[idx].on_hand += lot.quantity;
                }
                shard.release_dated_if_empty(slot, idx);
            }
            _ => unreachable!("not a feed command"),
        }
    }
}

/// The request id and node of a feed command.
fn feed_target(command: &Command) -> (RequestId, NodeId) {
    match command {
        Command::SetOnHand { request, node, .. }
        | Command::AdjustOnHand { request, node, .. }
        | Command::SetSafetyStock { request, node, .. }
        | Command::AddInbound { request, node, .. }
        | Command::ReceiveInbound { request, node, .. }
        | Command::CancelInbound { request, node, .. }
        | Command::Return { request, node, .. } => (*request, *node),
        _ => unreachable!("not a feed command"),
    }
}

fn feed_skus(command: &Command) -> Box<dyn Iterator<Item = SkuId> + '_> {
    match command {
        Command::SetOnHand { counts, .. } => Box::new(counts.iter().map(|c| c.0)),
        Command::AdjustOnHand { sku, .. }
        | Command::SetSafetyStock { sku, .. }
        | Command::AddInbound { sku, .. }
        | Command::ReceiveInbound { sku, .. }
        | Command::CancelInbound { sku, .. }
        | Command::Return { sku, .. } => Box::new(std::iter::once(*sku)),
        _ => unreachable!("not a feed command"),
    }
}

/// Checks that need no state: sizes, ranges, names, duplicates.
fn check_feed_statically(command: &Command, now: Timestamp) -> Result<(), EngineError> {
    match command {
        Command::SetOnHand { counts, .. } => {
            if counts.is_empty() {
                return Err(EngineError::EmptyRequest);
            }
            if counts.len() > limits::FEED_LINES_MAX {
                return Err(EngineError::TooManyLines {
                    n_lines: counts.len(),
                    max: limits::FEED_LINES_MAX,
                });
            }
            for &(_, q) in counts {
                if q > limits::QUANTITY_MAX {
                    return Err(EngineError::InvalidQuantity { value: i64::from(q) });
                }
            }
            let mut skus: Vec<SkuId> = counts.iter().map(|c| c.0).collect();
            skus.sort_unstable();
            if let Some(w) = skus.windows(2).find(|w| w[0] == w[1]) {
                let line_idx = counts.iter().rposition(|c| c.0 == w[0]).expect("present");
                return Err(EngineError::DuplicateLine {
                    line_idx,
                    sku: w[0],
                    node: None,
                });
            }
        }
        Command::AdjustOnHand { delta, .. } => {
            if *delta == 0 || delta.unsigned_abs() > u64::from(limits::QUANTITY_MAX) {
                return Err(EngineError::InvalidQuantity { value: *delta });
            }
        }
        Command::SetSafetyStock { quantity, .. } => {
            if *quantity > limits::QUANTITY_MAX {
                return Err(EngineError::InvalidQuantity {
                    value: i64::from(*quantity),
                });
            }
        }
        Command::AddInbound {
            reference, arrival, ..
        } => {
            check_name(reference)?;
            let max_days = limits::LOOKAHEAD_DAYS_MAX;
            if arrival.0 > now.day().0 + max_days {
                return Err(EngineError::InvalidDate {
                    day: *arrival,
                    max_days,
                });
            }
        }
        Command::ReceiveInbound { reference, .. } | Command::CancelInbound { reference, .. } => {
            check_name(reference)?;
        }
        Command::Return { .. } => {}
        _ => unreachable!("not a feed command"),
    }
    Ok(())
}
