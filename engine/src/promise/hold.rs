//! Promise-and-hold and route order: promise a cart at one service level, then hold (or
//! allocate, taking node capacity) exactly the plan: each line at its package's node, needed on
//! the package's ship day so that future supply counts.
//!
//! The promise is a read; the hold is an ordinary all-or-nothing `Hold` command, so it is logged,
//! replayed and deduplicated like any other. If stock moved between the two, the hold is refused
//! line by line (`HoldRefused`) and nothing changes: the checkout re-promises. A retry with the
//! same hold id returns the first answer, whatever the stock does meanwhile.

use crate::capacity::ShipSlot;
use crate::command::{Command, HoldLineRequest, NodeChoice};
use crate::error::EngineError;
use crate::hold::Hold;
use crate::ids::{Day, Quantity, RequestId, Timestamp};
use crate::ledger::Engine;
use crate::network::ServiceLevel;

use super::{Destination, LevelPromise, PromiseRequest};

/// A promise and the command that holds (or routes) its plan.
#[derive(Clone, Debug, PartialEq)]
pub struct HoldPlan {
    /// `None` on a retry of a hold already placed: the answer is the first hold's, and a promise
    /// worked out now (against the stock that hold took) would contradict it.
    pub promise: Option<LevelPromise>,
    /// The `Hold` or `RouteOrder` to apply; `None` when nothing can be promised. For an id
    /// already used, the first command's lines (the engine answers it with the first answer).
    pub command: Option<Command>,
}

/// What to do with a promised plan.
#[derive(Copy, Clone)]
enum Act {
    Hold { ttl_ms: u64 },
    Route,
}

/// What a route order keeps besides its lines.
struct RouteParts {
    packages: Vec<ShipSlot>,
    destination: Destination,
    promised: Day,
    level: ServiceLevel,
}

impl Act {
    fn command(self, id: RequestId, lines: Vec<HoldLineRequest>, route: RouteParts) -> Command {
        match self {
            Self::Hold { ttl_ms } => Command::Hold {
                hold: id,
                lines,
                ttl_ms,
                partial: false,
            },
            Self::Route => Command::RouteOrder {
                order: id,
                lines,
                packages: route.packages,
                destination: route.destination,
                promised: route.promised,
                level: route.level,
            },
        }
    }
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
        self.plan(now, request, hold, Act::Hold { ttl_ms })
    }

    /// Promises `request` (exactly one level) and builds the route order of its plan under
    /// `order`: every line allocated at its package's node, and each package's node capacity
    /// taken on its ship day. Apply `command` (through the durable engine) to route it.
    pub fn plan_route(
        &self,
        now: Timestamp,
        request: &PromiseRequest,
        order: RequestId,
    ) -> Result<HoldPlan, EngineError> {
        self.plan(now, request, order, Act::Route)
    }

    fn plan(
        &self,
        now: Timestamp,
        request: &PromiseRequest,
        id: RequestId,
        act: Act,
    ) -> Result<HoldPlan, EngineError> {
        if request.levels.len() != 1 {
            return Err(EngineError::InvalidOption {
                what: format!(
                    "promise-and-hold and route order act on one plan: ask one service level, not {}",
                    request.levels.len()
                ),
            });
        }
        if let Some(first) = self.hold(id) {
            // The engine answers a known id before it looks at the lines: with the first
            // answer, or with an error if the id placed the other kind of command.
            return Ok(HoldPlan {
                promise: None,
                command: Some(repeat_of(&first, act)),
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
            let route = RouteParts {
                packages: plan
                    .packages
                    .iter()
                    .map(|p| ShipSlot {
                        node: p.node,
                        day: p.ship_day,
                    })
                    .collect(),
                destination: request.destination,
                promised: plan.delivery,
                level: request.levels[0],
            };
            act.command(id, lines.into_iter().map(|l| l.1).collect(), route)
        });
        Ok(HoldPlan {
            promise: Some(promise),
            command,
        })
    }
}

/// `act` under the id of a hold or routed order already placed, with its lines.
fn repeat_of(first: &Hold, act: Act) -> Command {
    let lines = first
        .lines
        .iter()
        .map(|l| HoldLineRequest {
            sku: l.sku,
            node: NodeChoice::Node(l.node),
            quantity: Quantity::new(i64::from(l.requested.max(1))).expect("a held quantity is valid"),
            // Today passes the date check however long ago the first was placed.
            need_day: None,
        })
        .collect();
    // A hold's id asked as a route (or the reverse) is answered `RequestIdReused` before the
    // engine looks at the rest.
    let route = match &first.routed {
        Some(r) => RouteParts {
            packages: r.packages.to_vec(),
            destination: Destination {
                zone: r.zone,
                point: r.point(),
            },
            promised: r.promised,
            level: r.level,
        },
        None => RouteParts {
            packages: Vec::new(),
            destination: Destination {
                zone: crate::ids::ZoneId(0),
                point: None,
            },
            promised: Day(0),
            level: ServiceLevel::Ground,
        },
    };
    act.command(first.id, lines, route)
}
