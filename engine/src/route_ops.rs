//! Applying `RouteOrder`: allocate a planned order's lines and take its packages' node capacity,
//! all or nothing, under the locks of every shard and of the capacity book.
//!
//! The plan comes from a promise (`Engine::plan_route`), worked out without locks; this command
//! checks it again under the locks. If stock or capacity moved meanwhile, it is refused line by
//! line and nothing changes: the caller promises again.

use smallvec::SmallVec;

use crate::capacity::{CapacityBook, Routed, ShipSlot};
use crate::command::{
    Command, HoldLineRequest, HoldOutcome, LineRefusal, NodeChoice, Outcome, RefusalReason,
};
use crate::error::EngineError;
use crate::hold::{Hold, HoldState, Record};
use crate::hold_ops::{check_hold_statically, granted};
use crate::ids::{Day, NodeId, Timestamp};
use crate::ledger::Engine;
use crate::limits::LOOKAHEAD_DAYS_MAX;
use crate::network::{Network, ServiceLevel};
use crate::promise::Destination;

impl Engine {
    pub(crate) fn apply_route(&self, now: Timestamp, command: &Command) -> Result<Outcome, EngineError> {
        let Command::RouteOrder {
            order,
            lines,
            packages,
            destination,
            promised,
            level,
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
        check_route_statically(lines, packages, destination, *promised, *level, today)?;
        let mut book = self.capacity.write();
        check_floor(&book, packages)?;
        let mut shards = self.lock_skus(lines.iter().map(|l| l.sku));
        let mut evaluated = self.evaluate_hold(&mut shards, lines, false, today)?;
        let network = shards.any().network.clone();
        refuse_full_days(&book, &network, lines, packages, &mut evaluated.refusals)?;
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
                level: *level,
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
    level: ServiceLevel,
    today: Day,
) -> Result<(), EngineError> {
    check_hold_statically(lines, 1, today)?;
    if level == ServiceLevel::Pickup {
        return Err(EngineError::InvalidOption {
            what: "a pickup (BOPIS) is held at the store, not routed: route orders ship".into(),
        });
    }
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
    let line_nodes: Vec<Option<NodeId>> = lines
        .iter()
        .map(|l| match l.node {
            NodeChoice::Node(n) => Some(n),
            NodeChoice::Any => None,
        })
        .collect();
    check_packages(&line_nodes, packages, Some(today)).or_else(invalid)?;
    Ok(())
}

/// Checks packages against the nodes their lines ship from (`None`: a line with no node): one
/// to as many packages as lines, one per node, each with a line, every line at a package's node,
/// shipping from yesterday (west of UTC) to the end of the look-ahead horizon. Says what is wrong.
pub(crate) fn check_packages(
    line_nodes: &[Option<NodeId>],
    packages: &[ShipSlot],
    today: Option<Day>,
) -> Result<(), String> {
    if packages.is_empty() || packages.len() > line_nodes.len() {
        return Err(format!(
            "a route order has one to {} packages (one per shipping node), not {}",
            line_nodes.len(),
            packages.len()
        ));
    }
    for (i, slot) in packages.iter().enumerate() {
        if packages[..i].iter().any(|p| p.node == slot.node) {
            return Err(format!("node {} has two packages", slot.node.raw()));
        }
        if let Some(today) = today
            && (slot.day.0.saturating_add(1) < today.0
                || slot.day.0 > today.0.saturating_add(LOOKAHEAD_DAYS_MAX))
        {
            return Err(format!(
                "package ship day {} is outside yesterday..today+{LOOKAHEAD_DAYS_MAX} (today is {})",
                slot.day.0, today.0
            ));
        }
        if !line_nodes.contains(&Some(slot.node)) {
            return Err(format!("the package of node {} has no line", slot.node.raw()));
        }
    }
    match line_nodes
        .iter()
        .position(|n| !n.is_some_and(|n| packages.iter().any(|p| p.node == n)))
    {
        Some(i) => Err(format!("line {i} does not name a node with a package")),
        None => Ok(()),
    }
}

/// The book has forgotten the days before its floor (a tick moved it): a package there could be
/// taken but never given back. Only a command stamped earlier than a tick applied before it
/// meets this.
pub(crate) fn check_floor(book: &CapacityBook, packages: &[ShipSlot]) -> Result<(), EngineError> {
    match packages.iter().find(|p| p.day < book.floor()) {
        Some(slot) => Err(EngineError::InvalidOption {
            what: format!(
                "package ship day {} is before day {}, the first day node capacity is still kept for",
                slot.day.0,
                book.floor().0
            ),
        }),
        None => Ok(()),
    }
}

/// Refuses (`CapacityFull`, `available` = units left, 0 when the order count is full) every line
/// of a package whose node has no room for it on its ship day.
pub(crate) fn refuse_full_days(
    book: &CapacityBook,
    network: &Network,
    lines: &[HoldLineRequest],
    packages: &[ShipSlot],
    refusals: &mut Vec<LineRefusal>,
) -> Result<(), EngineError> {
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
            let refused = refusals.iter().any(|r| usize::from(r.line_idx) == i);
            if l.node == NodeChoice::Node(slot.node) && !refused {
                refusals.push(LineRefusal {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::capacity::ShipSlot;
    use crate::command::{Command, HoldLineRequest, NodeChoice};
    use crate::error::ErrorCode;
    use crate::ids::{Day, MS_PER_DAY, NodeId, Quantity, RequestId, SkuId, Timestamp, ZoneId};
    use crate::ledger::{Engine, EngineConfig};
    use crate::network::ServiceLevel;
    use crate::promise::Destination;

    /// A route order stamped before a tick that was applied first ships on a day the book has
    /// forgotten: refused before anything changes, not taken and never given back.
    #[test]
    fn a_package_before_the_books_floor_is_refused() {
        let engine = Engine::new(EngineConfig::default());
        let at = |day: u64| Timestamp(day * MS_PER_DAY + 9 * 3_600_000);
        engine.apply(at(20), &Command::Tick).unwrap();
        let before = engine.state_digest();
        let node = NodeId::from_raw(0);
        let route = Command::RouteOrder {
            order: RequestId(7),
            lines: vec![HoldLineRequest {
                sku: SkuId::from_raw(0),
                node: NodeChoice::Node(node),
                quantity: Quantity::new(1).unwrap(),
                need_day: None,
            }],
            packages: vec![ShipSlot { node, day: Day(10) }],
            destination: Destination {
                zone: ZoneId(1),
                point: None,
            },
            promised: Day(12),
            level: ServiceLevel::Ground,
        };
        // Day 10 is today for the order, but the tick of day 20 moved the floor to day 19.
        let e = engine.apply(at(10), &route).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidOption, "{e}");
        assert!(e.to_string().contains("before day 19"), "{e}");
        assert_eq!(engine.state_digest(), before);
    }
}
