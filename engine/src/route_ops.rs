//! Applying `RouteOrder`: allocate a planned order's lines and take its packages' node capacity,
//! all or nothing, under the locks of every shard and of the capacity book.
//!
//! The plan comes from a promise (`Engine::plan_route`), worked out without locks; this command
//! checks it again under the locks. If stock or capacity moved meanwhile, it is refused line by
//! line and nothing changes: the caller promises again.

use smallvec::SmallVec;

use crate::capacity::{Routed, ShipSlot};
use crate::command::{
    Command, HoldLineRequest, HoldOutcome, LineRefusal, NodeChoice, Outcome, RefusalReason,
};
use crate::error::EngineError;
use crate::hold::{Hold, HoldState, Record};
use crate::hold_ops::{check_hold_statically, granted};
use crate::ids::{Day, Timestamp};
use crate::ledger::Engine;
use crate::limits::LOOKAHEAD_DAYS_MAX;
use crate::promise::Destination;

impl Engine {
    pub(crate) fn apply_route(&self, now: Timestamp, command: &Command) -> Result<Outcome, EngineError> {
        let Command::RouteOrder {
            order,
            lines,
            packages,
            destination,
            promised,
        } = command
        else {
            unreachable!("not a route order")
        };
        let today = now.day();
        let rs_idx = self.request_shard_of(*order);
        let mut requests = self.lock_requests(&[rs_idx]);
        // A retry gets the first answer whatever it says (its ship days may be past by now).
        match requests.get(rs_idx).records.get(order) {
            Some(Record::Hold(first)) if first.routed.is_some() => {
                return Ok(Outcome::Route(granted(first, true)));
            }
            Some(Record::Hold(_)) => {
                return Err(EngineError::RequestIdReused {
                    request: *order,
                    first: "hold",
                });
            }
            Some(Record::Done(d)) => {
                return Err(EngineError::RequestIdReused {
                    request: *order,
                    first: d.kind,
                });
            }
            None => {}
        }
        check_route_statically(lines, packages, destination, *promised, today)?;
        let mut book = self.capacity.write();
        let mut shards = self.lock_skus(lines.iter().map(|l| l.sku));
        let mut evaluated = self.evaluate_hold(&mut shards, lines, false, today)?;
        let network = shards.any().network.clone();
        for slot in packages {
            let spec = network
                .node(slot.node)
                .ok_or(EngineError::UnknownNodeId(slot.node))?;
            let units: u64 = lines
                .iter()
                .filter(|l| l.node == NodeChoice::Node(slot.node))
                .map(|l| u64::from(l.quantity.get()))
                .sum();
            let used = book.load(slot.node, slot.day);
            let limit = |c: u32| if c == 0 { u64::MAX } else { u64::from(c) };
            let units_left = limit(spec.capacity.units).saturating_sub(u64::from(used.units));
            let orders_full = u64::from(used.orders) >= limit(spec.capacity.orders);
            if !orders_full && units <= units_left && u64::from(used.units) + units <= u64::from(u32::MAX) {
                continue;
            }
            for (i, l) in lines.iter().enumerate() {
                let refused = evaluated.refusals.iter().any(|r| usize::from(r.line_idx) == i);
                if l.node == NodeChoice::Node(slot.node) && !refused {
                    evaluated.refusals.push(LineRefusal {
                        line_idx: i as u16,
                        sku: l.sku,
                        node: Some(slot.node),
                        requested: l.quantity.get(),
                        available: if orders_full {
                            0
                        } else {
                            units_left.min(i64::MAX as u64) as i64
                        },
                        reason: RefusalReason::CapacityFull,
                    });
                }
            }
        }
        if !evaluated.refusals.is_empty() {
            evaluated.refusals.sort_unstable_by_key(|r| r.line_idx);
            return Ok(Outcome::Route(HoldOutcome::Refused {
                lines: evaluated.refusals,
            }));
        }

        // Everything is checked: from here on the order cannot fail.
        self.take_stock(&mut shards, &evaluated, true);
        for &slot in packages {
            let units = evaluated
                .plan
                .iter()
                .filter(|l| l.node == slot.node)
                .map(|l| l.granted)
                .sum();
            book.take(slot, units);
        }
        let routed = Hold {
            id: *order,
            lines: evaluated.plan,
            placed_at: now,
            expires_at: now,
            state: HoldState::Committed,
            partial: false,
            ops: SmallVec::new(),
            routed: Some(Box::new(Routed {
                packages: packages.as_slice().into(),
                zone: destination.zone,
                point_bits: destination.point.map(|(lat, lon)| (lat.to_bits(), lon.to_bits())),
                promised: *promised,
            })),
        };
        let outcome = granted(&routed, false);
        requests.get(rs_idx).records.insert(*order, Record::Hold(routed));
        self.sequence(now, command);
        Ok(Outcome::Route(outcome))
    }
}

/// Checks a route order's shape: the lines as for a hold, each at a named node with a package;
/// one package per node, each with a line, shipping from yesterday (west of UTC) to the end of
/// the look-ahead horizon.
fn check_route_statically(
    lines: &[HoldLineRequest],
    packages: &[ShipSlot],
    destination: &Destination,
    promised: Day,
    today: Day,
) -> Result<(), EngineError> {
    check_hold_statically(lines, 1, today)?;
    if let Some((lat, lon)) = destination.point {
        crate::network::check_point(lat, lon)?;
    }
    let invalid = |what: String| Err(EngineError::InvalidOption { what });
    if let Some(late) = packages.iter().map(|p| p.day).max()
        && promised < late
    {
        return invalid(format!(
            "promised delivery day {} is before a package's ship day {}",
            promised.0, late.0
        ));
    }
    if packages.is_empty() || packages.len() > lines.len() {
        return invalid(format!(
            "a route order has one to {} packages (one per shipping node), not {}",
            lines.len(),
            packages.len()
        ));
    }
    for (i, slot) in packages.iter().enumerate() {
        if packages[..i].iter().any(|p| p.node == slot.node) {
            return invalid(format!("node {} has two packages", slot.node.raw()));
        }
        if slot.day.0 + 1 < today.0 || slot.day.0 > today.0 + LOOKAHEAD_DAYS_MAX {
            return invalid(format!(
                "package ship day {} is outside yesterday..today+{LOOKAHEAD_DAYS_MAX} (today is {})",
                slot.day.0, today.0
            ));
        }
        if !lines.iter().any(|l| l.node == NodeChoice::Node(slot.node)) {
            return invalid(format!("the package of node {} has no line", slot.node.raw()));
        }
    }
    for (i, l) in lines.iter().enumerate() {
        match l.node {
            NodeChoice::Node(n) if packages.iter().any(|p| p.node == n) => {}
            _ => return invalid(format!("line {i} does not name a node with a package")),
        }
    }
    Ok(())
}
