//! Low-stock events. After a write takes effect, the ATP of every position it touched goes to a
//! broadcast channel, but only while someone subscribes: with no subscriber the request path
//! pays one atomic load. Each subscribed connection filters the changes through its [`Watch`]
//! and pushes a `LowStock` event when a watched position falls to its threshold or below.
//!
//! Events are alerts, not a change feed: one per position each time it goes low, re-armed when
//! a later write leaves it above the threshold. A subscriber that falls behind loses the oldest
//! changes (counted in `promised_events_dropped`), never slows a write down. Holds that expire
//! by the clock raise ATP and are not reported; the next write to the position re-arms it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use flatbuffers::FlatBufferBuilder;
use promised_engine::command::{Command, HoldOutcome, Outcome};
use promised_engine::reroute::RerouteOutcome;
use promised_engine::{Engine, NodeId, SkuId, Timestamp};
use promised_schemas::{frame, wire};
use tokio::sync::broadcast;

use crate::wire::WireError;

/// A position's ATP (today) just after a write touched it, and the sequence number the reading
/// reflects (writes on other threads may publish out of order; the number puts them back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub sku: SkuId,
    pub node: NodeId,
    pub atp: i64,
    pub seq: u64,
    pub at: Timestamp,
}

/// The changes of one write.
pub type Changes = Arc<[Change]>;

/// Where writes publish their changes and subscribers take them.
pub struct EventHub {
    tx: broadcast::Sender<Changes>,
}

/// Writes' changes buffered for a slow subscriber before it starts losing them.
const BACKLOG: usize = 4096;

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Changes> {
        self.tx.subscribe()
    }

    /// Publishes the ATP of the positions `command` touched, if anyone listens.
    pub fn publish(&self, engine: &Engine, command: &Command, outcome: &Outcome, now: Timestamp) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let changes: Vec<Change> = touched(engine, command, outcome)
            .into_iter()
            .filter_map(|(sku, node)| {
                let (atp, seq) = engine.atp_stamped(sku, node, now).ok()?;
                Some(Change {
                    sku,
                    node,
                    atp,
                    seq,
                    at: now,
                })
            })
            .collect();
        if !changes.is_empty() {
            // An error only means the last subscriber just left.
            let _ = self.tx.send(changes.into());
        }
    }
}

/// The positions whose ATP a write may have changed. Commits move units from held to
/// allocated (ATP unchanged); repeats and refusals change nothing.
fn touched(engine: &Engine, command: &Command, outcome: &Outcome) -> Vec<(SkuId, NodeId)> {
    match (command, outcome) {
        (_, Outcome::Fed { repeated: true })
        | (_, Outcome::HoldChanged { repeated: true, .. })
        | (Command::Commit { .. }, _) => Vec::new(),
        (
            _,
            Outcome::Hold(HoldOutcome::Granted {
                lines,
                repeated: false,
                ..
            })
            | Outcome::Route(HoldOutcome::Granted {
                lines,
                repeated: false,
                ..
            }),
        ) => lines
            .iter()
            .filter(|l| l.granted > 0)
            .filter_map(|l| Some((l.sku, l.node?)))
            .collect(),
        (
            Command::Release { hold, .. }
            | Command::CancelAllocation { hold, .. }
            | Command::Ship { hold, .. },
            Outcome::HoldChanged { .. },
        ) => engine
            .hold(*hold)
            .map(|h| h.lines.iter().map(|l| (l.sku, l.node)).collect())
            .unwrap_or_default(),
        (Command::SetOnHand { node, counts, .. }, Outcome::Fed { .. }) => {
            counts.iter().map(|&(sku, _)| (sku, *node)).collect()
        }
        (
            Command::AdjustOnHand { sku, node, .. }
            | Command::SetSafetyStock { sku, node, .. }
            | Command::AddInbound { sku, node, .. }
            | Command::ReceiveInbound { sku, node, .. }
            | Command::CancelInbound { sku, node, .. }
            | Command::Return { sku, node, .. },
            Outcome::Fed { .. },
        ) => vec![(*sku, *node)],
        // The positions the moved orders took (the ones they left only rose).
        (
            Command::Reroute { moves, .. },
            Outcome::Reroute(RerouteOutcome::Applied { repeated: false, .. }),
        ) => moves
            .iter()
            .filter_map(|m| engine.hold(m.order))
            .flat_map(|h| h.lines.iter().map(|l| (l.sku, l.node)).collect::<Vec<_>>())
            .collect(),
        _ => Vec::new(),
    }
}

/// One connection's subscription: which positions, the threshold, and which positions it has
/// already reported low.
#[derive(Debug)]
pub struct Watch {
    /// `None`: every SKU.
    skus: Option<HashSet<SkuId>>,
    /// `None`: every node.
    nodes: Option<HashSet<NodeId>>,
    pub threshold: i64,
    low: HashSet<(SkuId, NodeId)>,
    /// The newest reading seen per watched position: an older one arriving late is ignored.
    seen: HashMap<(SkuId, NodeId), u64>,
}

impl Watch {
    /// The subscription a `Subscribe` asks for; unknown SKUs or nodes are errors.
    pub fn decode(engine: &Engine, s: &wire::Subscribe<'_>) -> Result<Self, WireError> {
        let skus = match s.skus() {
            Some(list) if !list.is_empty() => Some(
                list.iter()
                    .map(|name| engine.sku_id(name).map_err(WireError::from))
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
            _ => None,
        };
        let nodes = match s.nodes() {
            Some(list) if !list.is_empty() => Some(
                list.iter()
                    .map(|name| engine.node_id(name).map_err(WireError::from))
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
            _ => None,
        };
        Ok(Self {
            skus,
            nodes,
            threshold: s.threshold(),
            low: HashSet::new(),
            seen: HashMap::new(),
        })
    }

    /// Whether `change` is news for this subscriber: a watched position newly at or below the
    /// threshold.
    pub fn observe(&mut self, c: &Change) -> bool {
        let watched = self.skus.as_ref().is_none_or(|s| s.contains(&c.sku))
            && self.nodes.as_ref().is_none_or(|n| n.contains(&c.node));
        if !watched {
            return false;
        }
        let newest = self.seen.entry((c.sku, c.node)).or_insert(0);
        if c.seq < *newest {
            return false;
        }
        *newest = c.seq;
        if c.atp <= self.threshold {
            self.low.insert((c.sku, c.node))
        } else {
            self.low.remove(&(c.sku, c.node));
            false
        }
    }
}

/// The `LowStock` event frame for `change` (request id 0, as every event).
pub fn low_stock_frame(engine: &Engine, change: &Change, threshold: i64) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let sku = crate::reply::sku_name(&mut b, engine, change.sku);
    let node = crate::reply::node_name(&mut b, engine, change.node);
    let low = wire::LowStock::create(
        &mut b,
        &wire::LowStockArgs {
            sku: Some(sku),
            node: Some(node),
            atp: change.atp,
            threshold,
            at_ms: change.at.0,
        },
    );
    let event = wire::EventMessage::create(
        &mut b,
        &wire::EventMessageArgs {
            event_type: wire::Event::LowStock,
            event: Some(low.as_union_value()),
        },
    );
    frame::finish_frame(&mut b, 0, wire::Body::EventMessage, event.as_union_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(sku: u32, node: u32, atp: i64) -> Change {
        stamped(sku, node, atp, 0)
    }

    fn stamped(sku: u32, node: u32, atp: i64, seq: u64) -> Change {
        Change {
            sku: SkuId::from_raw(sku),
            node: NodeId::from_raw(node),
            atp,
            seq,
            at: Timestamp(0),
        }
    }

    #[test]
    fn a_position_is_reported_once_per_fall_and_rearmed_above_the_threshold() {
        let mut w = Watch {
            skus: Some([SkuId::from_raw(1)].into()),
            nodes: None,
            threshold: 5,
            low: HashSet::new(),
            seen: HashMap::new(),
        };
        assert!(!w.observe(&change(1, 0, 9)), "above the threshold");
        assert!(w.observe(&change(1, 0, 5)), "at the threshold: low");
        assert!(!w.observe(&change(1, 0, 2)), "already reported");
        assert!(w.observe(&change(1, 3, 0)), "another node of the SKU");
        assert!(!w.observe(&change(2, 0, 0)), "an unwatched SKU");
        assert!(!w.observe(&change(1, 0, 6)), "back above: re-armed");
        assert!(w.observe(&change(1, 0, 4)), "low again");
    }

    #[test]
    fn a_reading_that_arrives_late_is_ignored() {
        let mut w = Watch {
            skus: None,
            nodes: None,
            threshold: 5,
            low: HashSet::new(),
            seen: HashMap::new(),
        };
        // Reading 20 (ATP 10) is published before reading 10 (ATP 3): the older one is stale.
        assert!(!w.observe(&stamped(1, 0, 10, 20)));
        assert!(!w.observe(&stamped(1, 0, 3, 10)), "stale: the position is at 10");
        assert!(w.observe(&stamped(1, 0, 2, 30)), "a real fall is still reported");
    }
}
