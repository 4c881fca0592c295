//! The exact search: which node ships each line of a cart, so that the cart arrives as early as
//! possible and, among the plans that arrive then, costs least.
//!
//! A plan's packages are its distinct nodes; a node ships its lines together, on the first day it
//! can ship all of them (the latest stock among them, the capacity for their units), and the
//! package arrives that day plus the lane's transit. The cart arrives with its last package.
//! Cost = per package (the lane's package cost) + per unit (the lane's unit cost), both times the
//! node's cost factor.
//!
//! Branch and bound over the lines, fewest candidates first, each line's candidates earliest and
//! cheapest first. The first complete plan comes from the best single node (the common case: one
//! package), so most branches are cut at once. A branch is cut when its lower bound is not better
//! than the best plan: the date bound is the latest of the packages so far and of each remaining
//! line's earliest delivery alone (a package only gets later as lines join it: more units, later
//! stock); the cost bound adds each remaining line's cheapest units and no package cost.

use crate::ids::{Day, NodeId};

use super::ship::ShipDay;

/// One node that could ship one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub node: NodeId,
    /// The first day the node has the line's units promisable (inbound supply included).
    pub ready: Day,
    pub unit_cost: u64,
    pub package_cost: u64,
    pub transit: u32,
    /// The line's delivery day if it were shipped alone from this node.
    pub solo: u32,
}

/// A line to place, and where it could go.
#[derive(Clone, Debug)]
pub(crate) struct LineChoices {
    pub units: u32,
    pub candidates: Vec<Candidate>,
}

/// (delivery day, cost): smaller is better, date first.
pub(crate) type Key = (u32, u64);

/// The best plan: one candidate index per line, and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Solution {
    pub key: Key,
    pub choice: Vec<usize>,
    /// False when the search ran out of budget: the best plan found, not proven best.
    pub exact: bool,
}

/// Branches one search may visit: tens of milliseconds on one core. Real carts need far fewer (10-line
/// carts on `retail` visit about a thousand); a cart built to defeat the bounds (ten SKUs
/// stocked at every one of hundreds of nodes) stops here with the best plan found so far,
/// marked inexact, instead of holding a server thread for minutes.
pub(crate) const SEARCH_BUDGET: u32 = 2_000_000;

/// When a node ships a package: `(node, ready, units) -> ship day`.
pub(crate) type ShipFn<'a> = dyn Fn(NodeId, Day, u32) -> Option<ShipDay> + 'a;

/// A package being built: one node's lines so far.
#[derive(Clone, Copy, Debug)]
struct Package {
    node: NodeId,
    ready: Day,
    units: u32,
    delivery: u32,
}

/// The key of a complete assignment (`choice[i]` indexes line i's candidates), or `None` if some
/// package cannot ship. Also the reference the search is tested against.
pub(crate) fn evaluate(lines: &[LineChoices], choice: &[usize], ship: &ShipFn<'_>) -> Option<Key> {
    let mut packages: Vec<(NodeId, Day, u32, u64, u32)> = Vec::new();
    let mut cost = 0u64;
    for (line, &c) in lines.iter().zip(choice) {
        let cand = &line.candidates[c];
        cost = cost.saturating_add(cand.unit_cost);
        match packages.iter_mut().find(|p| p.0 == cand.node) {
            Some(p) => {
                p.1 = p.1.max(cand.ready);
                p.2 = p.2.saturating_add(line.units);
            }
            None => packages.push((cand.node, cand.ready, line.units, cand.package_cost, cand.transit)),
        }
    }
    let mut date = 0;
    for (node, ready, units, package_cost, transit) in packages {
        let s = ship(node, ready, units)?;
        date = date.max(s.day.0.saturating_add(transit));
        cost = cost.saturating_add(package_cost);
    }
    Some((date, cost))
}

struct Search<'a, 'f> {
    lines: &'a [LineChoices],
    /// Lines in search order.
    order: Vec<usize>,
    max_packages: usize,
    ship: &'a ShipFn<'f>,
    /// Bounds for the lines from depth k on.
    date_bound: Vec<u32>,
    cost_bound: Vec<u64>,
    best: Option<Solution>,
    choice: Vec<usize>,
    packages: Vec<Package>,
    memo: &'a mut ShipMemo,
    /// Branches left to visit.
    budget: u32,
    /// A branch was left unvisited for want of budget: the result is not proven.
    cut: bool,
}

/// Ship days already worked out in one promise: the same package shape recurs across branches,
/// and across service levels (a ship day does not depend on the level). Direct-mapped: a slot
/// keeps the last key that hashed to it, so a lookup is a multiply and a compare, and a
/// collision only costs working the day out again. One per thread, reused: `begin` starts a
/// new promise without clearing (slots of older generations do not match).
pub(crate) struct ShipMemo {
    generation: u32,
    /// (generation, node, ready, units) -> ship day.
    slots: Vec<(u32, u32, u32, u32, Option<ShipDay>)>,
}

const MEMO_BITS: u32 = 10;

impl ShipMemo {
    /// Slots are stamped 0, a generation no promise ever has (`begin` skips it), so nothing is
    /// remembered until the first `begin`.
    pub fn new() -> Self {
        Self {
            generation: 1,
            slots: vec![(0, 0, 0, 0, None); 1 << MEMO_BITS],
        }
    }

    /// Forgets every remembered day (they were for another time, capacity or network).
    pub fn begin(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: every stamp from 1 up may come round again. Stamp every slot 0, which
            // no generation has, and start again at 1.
            self.slots.iter_mut().for_each(|s| s.0 = 0);
            self.generation = 1;
        }
    }

    pub fn get(&mut self, node: NodeId, ready: Day, units: u32, ship: &ShipFn<'_>) -> Option<ShipDay> {
        let key = (u64::from(node.raw()) << 32 | u64::from(ready.0))
            ^ u64::from(units).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let i = (key.wrapping_mul(0x2545_F491_4F6C_DD1D) >> (64 - MEMO_BITS)) as usize;
        let slot = &mut self.slots[i];
        if *slot == (self.generation, node.raw(), ready.0, units, slot.4) {
            return slot.4;
        }
        let day = ship(node, ready, units);
        *slot = (self.generation, node.raw(), ready.0, units, day);
        day
    }
}

impl Search<'_, '_> {
    fn ship(&mut self, node: NodeId, ready: Day, units: u32) -> Option<ShipDay> {
        self.memo.get(node, ready, units, self.ship)
    }

    /// With every package open, each line still to place must join one of them: its bound
    /// counts only those nodes (its earliest delivery alone and its cheapest units there), and
    /// a line none of them has ends the branch. Cuts most of a big cart's branches at the depth
    /// where the last package opens instead of lines later.
    fn full_can_beat(&self, depth: usize, cost: u64) -> bool {
        let mut date = self.packages.iter().map(|p| p.delivery).max().unwrap_or(0);
        let mut cost = cost;
        for &li in &self.order[depth..] {
            let open = self.lines[li]
                .candidates
                .iter()
                .filter(|c| self.packages.iter().any(|p| p.node == c.node));
            let Some((solo, unit)) = open.fold(None, |acc: Option<(u32, u64)>, c| {
                Some(acc.map_or((c.solo, c.unit_cost), |(s, u)| {
                    (s.min(c.solo), u.min(c.unit_cost))
                }))
            }) else {
                return false;
            };
            date = date.max(solo);
            cost = cost.saturating_add(unit);
        }
        self.better((date, cost))
    }

    fn better(&self, key: Key) -> bool {
        self.best.as_ref().is_none_or(|b| key < b.key)
    }

    fn go(&mut self, depth: usize, cost: u64) {
        if self.budget == 0 {
            // Only a branch left unvisited makes the search inexact: one that used its budget
            // to the last branch and finished is exact.
            self.cut = true;
            return;
        }
        self.budget -= 1;
        if depth == self.order.len() {
            let date = self.packages.iter().map(|p| p.delivery).max().unwrap_or(0);
            if self.better((date, cost)) {
                self.best = Some(Solution {
                    key: (date, cost),
                    choice: self.choice.clone(),
                    exact: true,
                });
            }
            return;
        }
        if self.packages.len() == self.max_packages && !self.full_can_beat(depth, cost) {
            return;
        }
        let li = self.order[depth];
        let lines = self.lines;
        let line = &lines[li];
        for (ci, cand) in line.candidates.iter().enumerate() {
            let at = self.packages.iter().position(|p| p.node == cand.node);
            if at.is_none() && self.packages.len() == self.max_packages {
                continue;
            }
            let (ready, units) = match at {
                Some(i) => (
                    self.packages[i].ready.max(cand.ready),
                    self.packages[i].units.saturating_add(line.units),
                ),
                None => (cand.ready, line.units),
            };
            let Some(s) = self.ship(cand.node, ready, units) else {
                continue;
            };
            let delivery = s.day.0.saturating_add(cand.transit);
            let others = self
                .packages
                .iter()
                .enumerate()
                .filter(|&(i, _)| Some(i) != at)
                .map(|(_, p)| p.delivery)
                .max()
                .unwrap_or(0);
            let new_cost = cost
                .saturating_add(cand.unit_cost)
                .saturating_add(if at.is_none() { cand.package_cost } else { 0 });
            let bound = (
                others.max(delivery).max(self.date_bound[depth + 1]),
                new_cost.saturating_add(self.cost_bound[depth + 1]),
            );
            if !self.better(bound) {
                continue;
            }
            let saved = at.map(|i| self.packages[i]);
            match at {
                Some(i) => {
                    let p = &mut self.packages[i];
                    (p.ready, p.units, p.delivery) = (ready, units, delivery);
                }
                None => self.packages.push(Package {
                    node: cand.node,
                    ready,
                    units,
                    delivery,
                }),
            }
            self.choice[li] = ci;
            self.go(depth + 1, new_cost);
            match (at, saved) {
                (Some(i), Some(p)) => self.packages[i] = p,
                _ => {
                    self.packages.pop();
                }
            }
        }
    }
}

/// Drops the candidates no best plan needs. A node that only one line can use is that line's
/// own package wherever it is chosen, so among such exclusive candidates of a line one with a
/// later solo delivery and no lower solo cost (units + package) is never better: swapping it for
/// the other keeps the package count and neither delivers later nor costs more. Only the
/// exclusive candidates on the (solo day, cost) frontier stay. On the data sets each SKU is at
/// 40 of 200 nodes, so most of a small cart's nodes are exclusive and the frontier is a few
/// days long: the search space shrinks by orders of magnitude. Candidates must be sorted by
/// (solo, cost) within each line.
///
/// Returns how many lines each node (by index) can ship: a node every line has can ship the
/// cart in one package.
pub(crate) fn drop_dominated(lines: &mut [LineChoices]) -> Vec<u8> {
    // Lines per node, by node index (a few hundred bytes: cheaper than hashing).
    let n = lines
        .iter()
        .flat_map(|l| l.candidates.iter().map(|c| c.node.index() + 1))
        .max()
        .unwrap_or(0);
    let mut uses = vec![0u8; n];
    for line in lines.iter() {
        for c in &line.candidates {
            uses[c.node.index()] += 1;
        }
    }
    if lines.len() < 2 {
        // One line: the search tries each candidate once anyway.
        return uses;
    }
    for line in lines.iter_mut() {
        let mut cheapest = u64::MAX;
        line.candidates.retain(|c| {
            if uses[c.node.index()] > 1 {
                return true;
            }
            let total = c.unit_cost.saturating_add(c.package_cost);
            let keep = total < cheapest;
            cheapest = cheapest.min(total);
            keep
        });
    }
    uses
}

/// How a search ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Searched {
    /// The best plan (exact, or the best found when the budget ran out: `exact` says which).
    Found(Solution),
    /// Every branch was searched (or cut by a bound): no plan exists.
    NoPlan,
    /// The budget ran out before any plan was found: one may exist. Not a shortfall the
    /// caller may report as certain.
    GaveUp,
}

/// The earliest, then cheapest, plan with at most `max_packages` packages, telling "no plan
/// exists" (a line without candidates, or no combination that can ship) from "the budget ran
/// out before a plan was found".
pub(crate) fn search_outcome(
    lines: &[LineChoices],
    uses: &[u8],
    max_packages: usize,
    ship: &ShipFn<'_>,
    memo: &mut ShipMemo,
    budget: u32,
) -> Searched {
    run(lines, uses, max_packages, ship, memo, budget).0
}

/// The search, and the branches it visited.
fn run(
    lines: &[LineChoices],
    uses: &[u8],
    max_packages: usize,
    ship: &ShipFn<'_>,
    memo: &mut ShipMemo,
    budget: u32,
) -> (Searched, u32) {
    if lines.is_empty() || lines.iter().any(|l| l.candidates.is_empty()) || max_packages == 0 {
        return (Searched::NoPlan, 0);
    }
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by_key(|&i| (lines[i].candidates.len(), i));
    let n = order.len();
    let (mut date_bound, mut cost_bound) = (vec![0u32; n + 1], vec![0u64; n + 1]);
    for d in (0..n).rev() {
        let line = &lines[order[d]];
        let solo = line.candidates.iter().map(|c| c.solo).min().unwrap_or(0);
        let cheapest = line.candidates.iter().map(|c| c.unit_cost).min().unwrap_or(0);
        date_bound[d] = date_bound[d + 1].max(solo);
        cost_bound[d] = cost_bound[d + 1].saturating_add(cheapest);
    }
    let mut s = Search {
        lines,
        order,
        max_packages,
        ship,
        date_bound,
        cost_bound,
        best: None,
        choice: vec![0; n],
        packages: Vec::with_capacity(max_packages.min(n)),
        memo,
        budget,
        cut: false,
    };
    // The fast path first: the best single node that has every line (one package).
    let first = &lines[0];
    let mut choice = vec![0; n];
    for (ci, cand) in first.candidates.iter().enumerate() {
        if usize::from(uses[cand.node.index()]) < lines.len() {
            continue;
        }
        choice[0] = ci;
        let mut units = first.units;
        let (mut ready, mut cost) = (cand.ready, cand.unit_cost.saturating_add(cand.package_cost));
        let everywhere = lines.iter().enumerate().skip(1).all(|(li, l)| {
            let Some(at) = l.candidates.iter().position(|c| c.node == cand.node) else {
                return false;
            };
            choice[li] = at;
            units = units.saturating_add(l.units);
            ready = ready.max(l.candidates[at].ready);
            cost = cost.saturating_add(l.candidates[at].unit_cost);
            true
        });
        if everywhere
            && let Some(day) = s.ship(cand.node, ready, units)
            && s.better((day.day.0.saturating_add(cand.transit), cost))
        {
            s.best = Some(Solution {
                key: (day.day.0.saturating_add(cand.transit), cost),
                choice: choice.clone(),
                exact: true,
            });
        }
    }
    if s.best.is_none()
        && let Some(choice) = greedy_cover(lines, max_packages)
            .into_iter()
            .collect::<Option<Vec<_>>>()
        && let Some(key) = evaluate(lines, &choice, ship)
    {
        s.best = Some(Solution {
            key,
            choice,
            exact: true,
        });
    }
    s.go(0, 0);
    let (cut, visited) = (s.cut, budget - s.budget);
    let searched = match s.best {
        Some(b) => Searched::Found(Solution { exact: !cut, ..b }),
        None if cut => Searched::GaveUp,
        None => Searched::NoPlan,
    };
    (searched, visited)
}

/// Up to `max_packages` nodes, each the one that can ship the most lines still open (earliest,
/// then cheapest, on a tie), and the candidate each line gets from them (`None`: no chosen node
/// has it). Not optimal: it gives the search a first plan to cut with when no single node has
/// every line, and a partial promise the lines to keep when not all fit in the packages.
pub(crate) fn greedy_cover(lines: &[LineChoices], max_packages: usize) -> Vec<Option<usize>> {
    let mut choice: Vec<Option<usize>> = vec![None; lines.len()];
    for _ in 0..max_packages {
        // (lines covered, latest solo delivery among them, their cost) for each node.
        let mut best: Option<(NodeId, usize, u32, u64)> = None;
        let mut nodes: Vec<NodeId> = Vec::new();
        for (li, line) in lines.iter().enumerate() {
            if choice[li].is_none() {
                nodes.extend(line.candidates.iter().map(|c| c.node));
            }
        }
        nodes.sort_unstable();
        nodes.dedup();
        for &node in &nodes {
            let (mut n, mut date, mut cost) = (0usize, 0u32, 0u64);
            for (li, line) in lines.iter().enumerate() {
                if choice[li].is_some() {
                    continue;
                }
                if let Some(c) = line.candidates.iter().find(|c| c.node == node) {
                    n += 1;
                    date = date.max(c.solo);
                    cost = cost.saturating_add(c.unit_cost.saturating_add(c.package_cost));
                }
            }
            let better = match best {
                None => true,
                Some((_, bn, bd, bc)) => (std::cmp::Reverse(n), date, cost) < (std::cmp::Reverse(bn), bd, bc),
            };
            if better {
                best = Some((node, n, date, cost));
            }
        }
        let Some((node, ..)) = best else { break };
        for (li, line) in lines.iter().enumerate() {
            if choice[li].is_none() {
                choice[li] = line.candidates.iter().position(|c| c.node == node);
            }
        }
        if choice.iter().all(Option::is_some) {
            break;
        }
    }
    choice
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promise::Binding;

    /// `n_lines` lines that every one of `n_nodes` nodes can ship, at costs that make splits
    /// tempting: the bounds cut little.
    fn everywhere(n_lines: usize, n_nodes: u32) -> Vec<LineChoices> {
        (0..n_lines)
            .map(|li| LineChoices {
                units: 1,
                candidates: (0..n_nodes)
                    .map(|n| Candidate {
                        node: NodeId::from_raw(n),
                        ready: Day(10),
                        // Every line's cheapest node differs, and packages are free: the
                        // best three nodes must be searched for.
                        unit_cost: u64::from((n * 7919 + li as u32 * 104_729) % 1_000),
                        package_cost: 0,
                        transit: 0,
                        solo: 10,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Every node ships the day its stock is there.
    fn ships_when_ready(_: NodeId, ready: Day, _: u32) -> Option<ShipDay> {
        Some(ShipDay {
            day: ready,
            binding: Binding::Transit,
        })
    }

    #[test]
    fn the_budget_stops_a_search_built_to_defeat_the_bounds() {
        let ship = ships_when_ready;
        let mut memo = ShipMemo::new();
        memo.begin();
        let lines = everywhere(10, 40);
        let mut lines = lines;
        let uses = drop_dominated(&mut lines);
        let Searched::Found(cut) = search_outcome(&lines, &uses, 3, &ship, &mut memo, 5_000) else {
            panic!("the single-node plan at least");
        };
        assert!(!cut.exact);
        // What it returns is a real plan with the key it claims.
        assert_eq!(evaluate(&lines, &cut.choice, &ship), Some(cut.key));
        // A small instance finishes within the budget and is exact, and no assignment beats it.
        let mut small = everywhere(4, 5);
        let uses = drop_dominated(&mut small);
        let Searched::Found(best) = search_outcome(&small, &uses, 3, &ship, &mut memo, SEARCH_BUDGET) else {
            panic!("a plan");
        };
        assert!(best.exact);
        let mut brute: Option<Key> = None;
        for code in 0..5usize.pow(4) {
            let choice: Vec<usize> = (0..4).map(|i| code / 5usize.pow(i) % 5).collect();
            let mut nodes = choice.clone();
            nodes.sort_unstable();
            nodes.dedup();
            if nodes.len() <= 3
                && let Some(k) = evaluate(&small, &choice, &ship)
            {
                brute = Some(brute.map_or(k, |b: Key| b.min(k)));
            }
        }
        assert_eq!(Some(best.key), brute);
    }

    #[test]
    fn a_search_that_finishes_on_its_last_branch_is_exact() {
        let ship = ships_when_ready;
        let mut memo = ShipMemo::new();
        memo.begin();
        let mut lines = everywhere(4, 5);
        let uses = drop_dominated(&mut lines);
        let (full, visited) = run(&lines, &uses, 3, &ship, &mut memo, SEARCH_BUDGET);
        let Searched::Found(best) = full else {
            panic!("{full:?}")
        };
        assert!(best.exact && visited > 1);
        // Exactly the branches it needs: finished, so exact.
        let (just, _) = run(&lines, &uses, 3, &ship, &mut memo, visited);
        assert_eq!(just, Searched::Found(best.clone()));
        // One fewer: a branch was left unvisited.
        let (short, _) = run(&lines, &uses, 3, &ship, &mut memo, visited - 1);
        assert!(
            matches!(short, Searched::Found(Solution { exact: false, .. })),
            "{short:?}"
        );
    }

    #[test]
    fn a_budget_spent_before_any_plan_is_not_a_proof_that_none_exists() {
        // One package of at most two units, for three lines: a full search proves there is no
        // plan, but only on the third line; a search cut before that has proven nothing.
        let two = |_: NodeId, ready: Day, units: u32| {
            (units <= 2).then_some(ShipDay {
                day: ready,
                binding: Binding::Transit,
            })
        };
        let mut memo = ShipMemo::new();
        memo.begin();
        let mut lines = everywhere(3, 4);
        let uses = drop_dominated(&mut lines);
        assert_eq!(
            search_outcome(&lines, &uses, 1, &two, &mut memo, SEARCH_BUDGET),
            Searched::NoPlan
        );
        assert_eq!(
            search_outcome(&lines, &uses, 1, &two, &mut memo, 3),
            Searched::GaveUp
        );
    }

    #[test]
    fn the_memo_forgets_across_a_generation_wrap() {
        let node = NodeId::from_raw(0);
        let on = |d: u32| {
            move |_: NodeId, _: Day, _: u32| {
                Some(ShipDay {
                    day: Day(d),
                    binding: Binding::Transit,
                })
            }
        };
        let mut memo = ShipMemo::new();
        // Before any `begin`, the slots' initial contents are not a remembered day.
        assert_eq!(memo.get(node, Day(0), 0, &on(5)).map(|s| s.day), Some(Day(5)));
        memo.begin();
        assert_eq!(memo.get(node, Day(3), 1, &on(7)).map(|s| s.day), Some(Day(7)));
        assert_eq!(memo.get(node, Day(3), 1, &on(9)).map(|s| s.day), Some(Day(7)));
        // Wrap, then count every generation up to the last one before the next wrap.
        memo.generation = u32::MAX;
        memo.begin();
        assert_eq!(memo.generation, 1);
        memo.generation = u32::MAX - 1;
        memo.begin();
        assert_eq!(memo.generation, u32::MAX);
        // The slot written before the wrap must not look current.
        assert_eq!(memo.get(node, Day(3), 1, &on(9)).map(|s| s.day), Some(Day(9)));
    }
}
