//! Batch re-routing of open allocations: a store closes, a DC falls behind, a truck is late, and
//! planners move thousands to millions of routed orders at once.
//!
//! 1. **Select** the routed orders that are still committed and unshipped and match the filter
//!    (nodes, SKUs, ship days, or explicit ids).
//! 2. **Candidates** ([`candidates`]): per order, its current plan and other plans from the
//!    promise cost model, with the stock and node-day capacity each draws on. What the selected
//!    orders hold now counts as free: they may trade places.
//! 3. **Solve** ([`solver`]): least total cost = shipping + a penalty per extra package + a
//!    penalty per day late against the order's promised day + a cost per moved order, within
//!    every stock and capacity limit; with a Lagrangian lower bound and the gap.
//! 4. **Dry run or apply**: [`Engine::plan_reroute`] changes nothing and returns the report;
//!    its [`RerouteReport::command`] is one `Reroute` command that applies every move or none
//!    (`apply.rs`), logged as one record.

mod apply;
pub mod candidates;
mod chain;
mod instance;
pub mod network;
mod presolve;
mod pricing;
pub mod solver;

use smallvec::SmallVec;

use crate::capacity::ShipSlot;
use crate::command::Command;
use crate::error::EngineError;
use crate::hold::{Hold, HoldState, NO_NODE, Record};
use crate::ids::{Day, NodeId, RequestId, SkuId, Timestamp};
use crate::ledger::Engine;
use crate::limits::REROUTE_MOVES_MAX;
use crate::network::{NodeKind, ServiceLevel};
use crate::promise::Destination;
use candidates::{Context, Freed, PlanCandidate, Resource};

pub use apply::{RerouteMove, RerouteOutcome};

/// Which open allocations to re-route. Every non-empty part must match (an order matches a list
/// when any of its packages or lines is in it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RerouteFilter {
    /// Orders with a package at one of these nodes.
    pub nodes: Vec<NodeId>,
    /// Orders with a line of one of these SKUs.
    pub skus: Vec<SkuId>,
    /// Orders with a package shipping on one of these days (inclusive range).
    pub ship_days: Option<(Day, Day)>,
    /// Only these orders; each must be a routed order that is committed and unshipped.
    pub orders: Vec<RequestId>,
}

impl RerouteFilter {
    fn matches(&self, hold: &Hold) -> bool {
        let Some(routed) = &hold.routed else { return false };
        (self.nodes.is_empty() || routed.packages.iter().any(|p| self.nodes.contains(&p.node)))
            && (self.skus.is_empty() || hold.lines.iter().any(|l| self.skus.contains(&l.sku)))
            && self
                .ship_days
                .is_none_or(|(a, b)| routed.packages.iter().any(|p| p.day >= a && p.day <= b))
    }
}

/// The prices of the cost model beyond shipping, and the rules a new plan follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReroutePolicy {
    /// Per package beyond the first, in cents.
    pub package_cents: u64,
    /// Per day a plan delivers after the order's promised day, in cents.
    pub late_day_cents: u64,
    /// Per order that moves from its current plan, in cents (warehouse work redone).
    pub move_cents: u64,
    /// Packages per order at most (an order already split in more keeps its count).
    pub max_packages: u8,
    /// Node kinds that may ship (empty: all).
    pub kinds: Vec<NodeKind>,
    pub ship_from_store: bool,
    /// Per order left on a plan that no longer ships (a closed node), in cents: what the
    /// optimiser weighs against moving it at great cost. Keeps the problem always solvable, so
    /// the bound and gap mean something even when some orders cannot be served.
    pub unserved_cents: u64,
}

impl Default for ReroutePolicy {
    fn default() -> Self {
        Self {
            package_cents: 300,
            late_day_cents: 500,
            move_cents: 100,
            max_packages: 3,
            kinds: Vec::new(),
            ship_from_store: true,
            unserved_cents: 50_000,
        }
    }
}

/// The current node of a line of an order not routed yet (no current plan, no move cost).
pub const NO_CURRENT_NODE: NodeId = NO_NODE;

/// An order as the re-route sees it: lines (SKU, units, current node or [`NO_CURRENT_NODE`]),
/// current packages, and what it promised.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenOrder {
    pub id: RequestId,
    pub lines: SmallVec<[(SkuId, u32, NodeId); 4]>,
    pub packages: SmallVec<[ShipSlot; 2]>,
    pub destination: Destination,
    pub level: ServiceLevel,
    pub promised: Option<Day>,
}

impl OpenOrder {
    fn of(hold: &Hold) -> Option<Self> {
        let routed = hold.routed.as_ref()?;
        Some(Self {
            id: hold.id,
            lines: hold.lines.iter().map(|l| (l.sku, l.remaining, l.node)).collect(),
            packages: routed.packages.iter().copied().collect(),
            destination: Destination {
                zone: routed.zone,
                point: routed.point(),
            },
            level: routed.level,
            promised: Some(routed.promised),
        })
    }
}

/// One order's move.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderMove {
    pub order: RequestId,
    pub from: Vec<ShipSlot>,
    pub to: Vec<ShipSlot>,
    /// The new node of each line, in the order's line order.
    pub line_nodes: Vec<NodeId>,
    /// The current plan's cost, when it can still ship.
    pub cost_before: Option<f64>,
    pub cost_after: f64,
    pub delivery: Day,
    pub promised: Option<Day>,
}

/// Why an order keeps its current allocation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LeftOutReason {
    /// No open, capable node with a lane has every line in stock (within the package limit).
    NoPlan,
    /// It has plans, but none fit in what the other orders left.
    NoRoom,
}

impl LeftOutReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::NoPlan => "no_plan",
            Self::NoRoom => "no_room",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LeftOut {
    pub order: RequestId,
    pub reason: LeftOutReason,
    /// Its current plan still ships (its nodes are open); when false, it needs a planner.
    pub current_ships: bool,
}

/// The resources the candidates draw on that could run short, and whether the plan overfills
/// any. Not counted: the positions of a SKU whose every position has on hand all the units the
/// orders ask of it, and a node's days when it has no daily limit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceCheck {
    pub positions: usize,
    pub node_days: usize,
    /// Resources the plan uses past their limit (0 for every plan the solver returns).
    pub over: usize,
    /// The highest use / limit over all resources.
    pub tightest: f64,
}

/// A dry run's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct RerouteReport {
    pub now: Timestamp,
    /// Orders selected.
    pub orders: usize,
    /// Candidate plans considered, in all.
    pub candidates: usize,
    /// Orders whose plan changes.
    pub moves: Vec<OrderMove>,
    /// Orders that keep their current allocation because no plan was found for them.
    pub left_out: Vec<LeftOut>,
    /// Orders whose current plan can no longer ship (a closed node, a lost lane).
    pub broken_before: usize,
    /// What the current plans cost, over the orders whose current plan still ships.
    pub cost_before: f64,
    /// What the new plan costs, over the orders it serves.
    pub cost_after: f64,
    /// `unserved_cents` for each order left on a plan that no longer ships.
    pub penalties: f64,
    /// No plan from the candidates has a lower `cost_after + penalties`.
    pub lower_bound: f64,
    /// (cost_after + penalties - lower_bound) / (cost_after + penalties); `None` when an order
    /// has no candidate at all.
    pub gap: Option<f64>,
    pub iterations: u32,
    pub stopped: bool,
    pub check: ResourceCheck,
}

impl RerouteReport {
    /// The command that applies every move or none, under `request` (its idempotency key).
    /// The plan's moves as one command under `request`; `partial`: apply the moves that still
    /// fit when some no longer do, instead of none.
    pub fn command(&self, request: RequestId, partial: bool) -> Result<Command, EngineError> {
        if self.moves.len() > REROUTE_MOVES_MAX {
            return Err(EngineError::CapacityExceeded {
                what: "moves in one re-route",
                max: REROUTE_MOVES_MAX,
            });
        }
        Ok(Command::Reroute {
            request,
            moves: self
                .moves
                .iter()
                .map(|m| RerouteMove {
                    order: m.order,
                    line_nodes: m.line_nodes.clone(),
                    packages: m.to.clone(),
                })
                .collect(),
            partial,
        })
    }
}

impl Engine {
    /// The routed orders that are committed and unshipped and match `filter`, by id.
    pub fn open_orders(&self, filter: &RerouteFilter) -> Result<Vec<OpenOrder>, EngineError> {
        let network = self.network.load_full();
        for &n in &filter.nodes {
            network.node(n).ok_or(EngineError::UnknownNodeId(n))?;
        }
        for &s in &filter.skus {
            self.sku_required(s)?;
        }
        let open =
            |h: &Hold| h.state == HoldState::Committed && h.lines.iter().all(|l| l.remaining == l.granted);
        let mut orders = Vec::new();
        if filter.orders.is_empty() {
            for shard in self.requests.iter() {
                let rs = shard.lock();
                orders.extend(rs.records.iter().filter_map(|(_, r)| match r {
                    Record::Hold(h) if open(h) && filter.matches(h) => OpenOrder::of(h),
                    _ => None,
                }));
            }
        } else {
            for &id in &filter.orders {
                let rs = self.requests[self.request_shard_of(id)].lock();
                let hold = match rs.records.get(&id) {
                    Some(Record::Hold(h)) => h,
                    _ => return Err(EngineError::UnknownHold(id)),
                };
                if hold.routed.is_none() || !open(hold) {
                    return Err(EngineError::WrongHoldState {
                        hold: id,
                        state: if hold.routed.is_none() {
                            "not routed"
                        } else {
                            hold.state.name()
                        },
                        action: "reroute",
                    });
                }
                if filter.matches(hold) {
                    orders.extend(OpenOrder::of(hold));
                }
            }
        }
        orders.sort_unstable_by_key(|o| o.id);
        orders.dedup_by_key(|o| o.id);
        Ok(orders)
    }

    /// A dry run: the best plan for the selected orders, its certificate and its moves. Changes
    /// nothing; apply `report.command(id)` to carry it out.
    pub fn plan_reroute(
        &self,
        now: Timestamp,
        filter: &RerouteFilter,
        policy: &ReroutePolicy,
        effort: &solver::Effort,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<RerouteReport, EngineError> {
        let orders = self.open_orders(filter)?;
        self.plan_orders(now, &orders, policy, effort, stop)
    }

    /// [`Engine::plan_reroute`] for orders given whole (also orders not yet routed: no current
    /// plan, no move cost).
    pub fn plan_orders(
        &self,
        now: Timestamp,
        orders: &[OpenOrder],
        policy: &ReroutePolicy,
        effort: &solver::Effort,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<RerouteReport, EngineError> {
        let (plans, instance, resources) = self.candidates_and_instance(now, orders, policy)?;
        let solved = solver::solve(&instance, effort, stop);
        let check = check(&instance, &solved.choice, &resources);
        let mut report = RerouteReport {
            now,
            orders: orders.len(),
            candidates: instance.candidates.len(),
            moves: Vec::new(),
            left_out: Vec::new(),
            broken_before: 0,
            cost_before: 0.0,
            cost_after: solved.cost,
            penalties: 0.0,
            lower_bound: solved.lower_bound,
            gap: solved.gap,
            iterations: solved.iterations,
            stopped: solved.stopped,
            check,
        };
        for ((order, plans), choice) in orders.iter().zip(&plans).zip(&solved.choice) {
            let current = plans.iter().find(|p| p.current && !p.broken);
            match current {
                Some(c) => report.cost_before += c.cost,
                None if !order.packages.is_empty() => report.broken_before += 1,
                None => {}
            }
            let kept_broken = choice.is_some_and(|i| plans[i as usize].broken);
            match choice {
                None => report.left_out.push(LeftOut {
                    order: order.id,
                    reason: if plans.is_empty() {
                        LeftOutReason::NoPlan
                    } else {
                        LeftOutReason::NoRoom
                    },
                    current_ships: current.is_some(),
                }),
                Some(_) if kept_broken => {
                    report.penalties += policy.unserved_cents as f64;
                    report.cost_after -= policy.unserved_cents as f64;
                    report.left_out.push(LeftOut {
                        order: order.id,
                        reason: if plans.len() == 1 {
                            LeftOutReason::NoPlan
                        } else {
                            LeftOutReason::NoRoom
                        },
                        current_ships: false,
                    });
                }
                Some(i) if !plans[*i as usize].current => {
                    let p: &PlanCandidate = &plans[*i as usize];
                    report.moves.push(OrderMove {
                        order: order.id,
                        from: order.packages.to_vec(),
                        to: p.packages.to_vec(),
                        line_nodes: p.line_node.to_vec(),
                        cost_before: current.map(|c| c.cost),
                        cost_after: p.cost,
                        delivery: p.delivery,
                        promised: order.promised,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(report)
    }

    /// The solver's instance for `orders`, as [`Engine::plan_orders`] builds it: for tools that
    /// study the solver alone (`reroute_bench --save-instance`, then `reroute_solve`).
    pub fn reroute_instance(
        &self,
        now: Timestamp,
        orders: &[OpenOrder],
        policy: &ReroutePolicy,
    ) -> Result<solver::Instance, EngineError> {
        Ok(self.candidates_and_instance(now, orders, policy)?.1)
    }

    /// Each order's candidate plans, the solver's instance over them and its resources.
    #[allow(clippy::type_complexity)]
    fn candidates_and_instance(
        &self,
        now: Timestamp,
        orders: &[OpenOrder],
        policy: &ReroutePolicy,
    ) -> Result<(Vec<Vec<PlanCandidate>>, solver::Instance, Vec<Resource>), EngineError> {
        check_policy(policy)?;
        let network = self.network.load_full();
        let ctx = Context {
            engine: self,
            network: &network,
            now,
            policy,
        };
        let started = std::time::Instant::now();
        let plans = candidates::all_candidates(&ctx, orders);
        let candidates_s = started.elapsed().as_secs_f64();
        // The solver's instance, built in parallel (`instance.rs`) against a copy of the
        // capacity book (a few thousand node-days): route orders need its write lock, and a
        // million-order build takes seconds.
        let freed = Freed::of(orders);
        let book = self.capacity.read().clone();
        let src = instance::Sources {
            engine: self,
            network: &network,
            book: &book,
            freed: &freed,
            today: now.day(),
        };
        let (instance, resources) = instance::build(&src, orders, &plans);
        let instance_s = started.elapsed().as_secs_f64() - candidates_s;
        tracing::info!(
            target: "promised::reroute",
            orders = orders.len(),
            candidates = instance.candidates.len(),
            resources = resources.len(),
            candidates_s,
            instance_s,
            "re-route instance built"
        );
        Ok((plans, instance, resources))
    }
}

fn check_policy(policy: &ReroutePolicy) -> Result<(), EngineError> {
    if policy.max_packages == 0 {
        return Err(EngineError::InvalidOption {
            what: "max_packages must be at least 1".into(),
        });
    }
    Ok(())
}

/// Counts the plan's use of every resource against its limit.
fn check(instance: &solver::Instance, choice: &[Option<u32>], resources: &[Resource]) -> ResourceCheck {
    let mut used = vec![0u64; instance.capacity.len()];
    for (j, c) in choice.iter().enumerate() {
        if let Some(c) = c {
            for &(r, a) in instance.uses_of(&instance.candidates_of(j)[*c as usize]) {
                used[r as usize] += u64::from(a);
            }
        }
    }
    let mut out = ResourceCheck::default();
    for ((u, cap), r) in used.iter().zip(&instance.capacity).zip(resources) {
        match r {
            Resource::Stock(..) => out.positions += 1,
            Resource::Orders(..) => out.node_days += 1,
            Resource::Units(..) => {}
        }
        if u > cap {
            out.over += 1;
        }
        if *u > 0 {
            out.tightest = out.tightest.max(*u as f64 / (*cap).max(1) as f64);
        }
    }
    out
}
