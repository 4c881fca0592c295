//! Promise-and-hold: promise a cart at one service level, then hold exactly the plan (each line
//! at its package's node, needed on the package's ship day so that future supply counts).
//!
//! The promise is a read; the hold is an ordinary all-or-nothing `Hold` command, so it is logged,
//! replayed and deduplicated like any other. If stock moved between the two, the hold is refused
//! line by line (`HoldRefused`) and nothing changes: the checkout re-promises. A retry with the
//! same hold id returns the first answer, whatever the stock does meanwhile.

use crate::command::{Command, HoldLineRequest, NodeChoice};
use crate::error::EngineError;
use crate::hold::Hold;
use crate::ids::{Quantity, RequestId, Timestamp};
use crate::ledger::Engine;

use super::{LevelPromise, PromiseRequest};

/// A promise and the command that holds its plan.
#[derive(Clone, Debug, PartialEq)]
pub struct HoldPlan {
    /// `None` on a retry of a hold already placed: the answer is the first hold's, and a promise
    /// worked out now (against the stock that hold took) would contradict it.
    pub promise: Option<LevelPromise>,
    /// The `Hold` to apply; `None` when nothing can be promised. For a hold id already used, the
    /// first hold's lines (the engine answers it with the first answer).
    pub command: Option<Command>,
}

impl Engine {
    /// Promises `request` (exactly one level) and builds the hold of its plan under `hold`.
    /// Apply `command` (through the durable engine, to log it) to place the hold.
    pub fn plan_hold(
        &self,
        now: Timestamp,
        request: &PromiseRequest,
        hold: RequestId,
        ttl_ms: u64,
    ) -> Result<HoldPlan, EngineError> {
        if request.levels.len() != 1 {
            return Err(EngineError::InvalidOption {
                what: format!(
                    "promise-and-hold holds one plan: ask one service level, not {}",
                    request.levels.len()
                ),
            });
        }
        if let Some(first) = self.hold(hold) {
            return Ok(HoldPlan {
                promise: None,
                command: Some(repeat_of(&first)),
            });
        }
        let promise = self.promise(now, request)?.remove(0);
        let today = now.day();
        let command = promise.plan.as_ref().map(|plan| {
            let mut lines: Vec<(usize, HoldLineRequest)> = plan
                .packages
                .iter()
                .flat_map(|pkg| {
                    pkg.lines.iter().map(move |&i| {
                        let line = &request.lines[i];
                        let need_day = (pkg.ship_day > today).then_some(pkg.ship_day);
                        (
                            i,
                            HoldLineRequest {
                                sku: line.sku,
                                node: NodeChoice::Node(pkg.node),
                                quantity: line.quantity,
                                need_day,
                            },
                        )
                    })
                })
                .collect();
            // In the cart's order, so refusals name the cart's lines.
            lines.sort_by_key(|l| l.0);
            Command::Hold {
                hold,
                lines: lines.into_iter().map(|l| l.1).collect(),
                ttl_ms,
                partial: false,
            }
        });
        Ok(HoldPlan {
            promise: Some(promise),
            command,
        })
    }
}

/// A `Hold` command with the id and lines of a hold already placed.
fn repeat_of(first: &Hold) -> Command {
    Command::Hold {
        hold: first.id,
        lines: first
            .lines
            .iter()
            .map(|l| HoldLineRequest {
                sku: l.sku,
                node: NodeChoice::Node(l.node),
                quantity: Quantity::new(i64::from(l.requested.max(1))).expect("a held quantity is valid"),
                // The engine answers a known hold id with its first answer before looking at
                // the lines; today passes the date check however long ago the hold was placed.
                need_day: None,
            })
            .collect(),
        ttl_ms: first.expires_at.0.saturating_sub(first.placed_at.0).max(1),
        partial: first.partial,
    }
}
