//! The explicit problem form, for planners who bring their own cost matrix (`docs/solve-format.md`):
//!
//! ```json
//! {"nodes": [{"id": "A", "capacity": 36}],
//!  "orders": [{"id": "o1", "options": [{"node": "A", "cost": 17, "load": 8}]}]}
//! ```
//!
//! Each order goes whole to exactly one of its options; a node's loads must not exceed its
//! capacity; the total cost is minimised. Reading checks everything and names the place of the
//! first fault: the line and column for malformed JSON, the path (`orders[3].options[1] (order
//! "o4")`) for a value that makes no sense.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Agent, OrderOption, Problem, Solution};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    nodes: Vec<NodeEntry>,
    orders: Vec<OrderEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    id: String,
    capacity: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderEntry {
    id: String,
    options: Vec<OptionEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionEntry {
    node: String,
    cost: f64,
    load: f64,
}

/// A problem read from the explicit form, with the ids to write the plan back in.
#[derive(Clone, Debug)]
pub struct Explicit {
    pub problem: Problem,
    pub node_ids: Vec<String>,
    pub order_ids: Vec<String>,
}

/// Why a problem file was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct FormatError {
    /// `line L, column C` or a JSON path.
    pub at: String,
    pub reason: String,
}

/// Costs, loads and capacities larger than this in magnitude are refused: sums of a few million
/// of them stay exact enough in `f64` for the bound, the gap and the capacity checks to mean
/// something.
pub const MAGNITUDE_MAX: f64 = 1e15;

pub(crate) fn bad(at: impl Into<String>, reason: impl Into<String>) -> FormatError {
    FormatError {
        at: at.into(),
        reason: reason.into(),
    }
}

/// An order's id, shared by both file forms: not empty, and not an earlier order's.
pub(crate) fn check_order_id<'f>(
    seen: &mut HashMap<&'f str, usize>,
    id: &'f str,
    j: usize,
    at: impl Fn() -> String,
) -> Result<(), FormatError> {
    if id.is_empty() {
        return Err(bad(at(), "an empty order id"));
    }
    if let Some(first) = seen.insert(id, j) {
        return Err(bad(at(), format!("the order id of orders[{first}] again")));
    }
    Ok(())
}

/// Reads and checks an explicit-form problem.
pub fn parse(text: &str) -> Result<Explicit, FormatError> {
    let file: File = serde_json::from_str(text)
        .map_err(|e| bad(format!("line {}, column {}", e.line(), e.column()), e.to_string()))?;
    let mut node_index: HashMap<&str, u32> = HashMap::with_capacity(file.nodes.len());
    let mut agents = Vec::with_capacity(file.nodes.len());
    for (i, n) in file.nodes.iter().enumerate() {
        let at = || format!("nodes[{i}] (id {:?})", n.id);
        if n.id.is_empty() {
            return Err(bad(at(), "an empty node id"));
        }
        if node_index.insert(&n.id, i as u32).is_some() {
            return Err(bad(at(), "a node id given twice"));
        }
        if !n.capacity.is_finite() || n.capacity < 0.0 {
            return Err(bad(
                at(),
                format!("capacity {} (a finite number, 0 or more)", n.capacity),
            ));
        }
        if n.capacity > MAGNITUDE_MAX {
            return Err(bad(
                at(),
                format!("capacity {} (at most {MAGNITUDE_MAX:e})", n.capacity),
            ));
        }
        agents.push(Agent { capacity: n.capacity });
    }
    if u32::try_from(file.nodes.len()).is_err() {
        return Err(bad("nodes", "more than 2^32 nodes"));
    }
    let mut problem = Problem {
        agents,
        ..Problem::default()
    };
    let mut order_seen: HashMap<&str, usize> = HashMap::with_capacity(file.orders.len());
    // Per node, the last order that listed it: a node listed twice in one order is found in
    // one look, whatever the number of options.
    let mut listed_by: Vec<usize> = vec![usize::MAX; problem.agents.len()];
    for (j, order) in file.orders.iter().enumerate() {
        let at = || format!("orders[{j}] (id {:?})", order.id);
        check_order_id(&mut order_seen, &order.id, j, at)?;
        if order.options.is_empty() {
            return Err(bad(at(), "no options: the order could go nowhere"));
        }
        let mut options = Vec::with_capacity(order.options.len());
        for (k, o) in order.options.iter().enumerate() {
            let at = || format!("orders[{j}].options[{k}] (order {:?})", order.id);
            let Some(&agent) = node_index.get(o.node.as_str()) else {
                return Err(bad(at(), format!("unknown node {:?}", o.node)));
            };
            if std::mem::replace(&mut listed_by[agent as usize], j) == j {
                return Err(bad(at(), format!("node {:?} is listed twice", o.node)));
            }
            if !o.cost.is_finite() {
                return Err(bad(at(), format!("cost {} (a finite number)", o.cost)));
            }
            if o.cost.abs() > MAGNITUDE_MAX {
                return Err(bad(
                    at(),
                    format!("cost {} (at most {MAGNITUDE_MAX:e} in magnitude)", o.cost),
                ));
            }
            if !o.load.is_finite() || o.load < 0.0 {
                return Err(bad(at(), format!("load {} (a finite number, 0 or more)", o.load)));
            }
            if o.load > MAGNITUDE_MAX {
                return Err(bad(at(), format!("load {} (at most {MAGNITUDE_MAX:e})", o.load)));
            }
            options.push(OrderOption {
                agent,
                cost: o.cost,
                load: o.load,
            });
        }
        problem.push_order(options);
    }
    if problem.starts.is_empty() {
        problem.starts.push(0);
    }
    Ok(Explicit {
        problem,
        node_ids: file.nodes.into_iter().map(|n| n.id).collect(),
        order_ids: file.orders.into_iter().map(|o| o.id).collect(),
    })
}

#[derive(Serialize)]
struct PlanFile<'a> {
    assignments: Vec<Assignment<'a>>,
    /// Orders no plan found room for.
    unassigned: Vec<&'a str>,
}

#[derive(Serialize)]
struct Assignment<'a> {
    order: &'a str,
    node: &'a str,
}

/// The plan file: `{"assignments": [{"order": ID, "node": ID}, ...], "unassigned": [ID, ...]}`.
pub fn plan_json(e: &Explicit, solution: &Solution) -> String {
    let mut assignments = Vec::new();
    let mut unassigned = Vec::new();
    for (j, c) in solution.choice.iter().enumerate() {
        match c {
            Some(c) => {
                let agent = e.problem.options_of(j)[*c as usize].agent as usize;
                assignments.push(Assignment {
                    order: &e.order_ids[j],
                    node: &e.node_ids[agent],
                });
            }
            None => unassigned.push(e.order_ids[j].as_str()),
        }
    }
    serde_json::to_string(&PlanFile {
        assignments,
        unassigned,
    })
    .expect("a plan serialises")
}
