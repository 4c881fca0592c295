//! Chains of two moves for the orders ejection could not place.
//!
//! Ejection frees room for an order by moving other orders to plans that fit as things are. Near
//! a closed node every day is full, so the orders it would move have nowhere to go either. A
//! chain goes one step further: order `j` wants a day `r` that is full; a user `k` of `r` would
//! move to a plan that lacks room on one other resource `r2`; a user of `r2` moves to a plan
//! that fits. Tried only for orders far from any fair price (left out, or kept on a plan that no
//! longer ships), with small limits, after the ejection passes.

use super::solver::{EJECT_FAR_RATIO, Instance, User};

/// Cheaper candidates of a far order tried, cheapest first.
const TARGETS: usize = 8;
/// Users of the full resource tried per target.
const FIRST_TRIES: usize = 16;
/// Candidates of each such user tried.
const SECOND_CANDIDATES: usize = 3;
/// Users of the second resource tried per candidate.
const SECOND_TRIES: usize = 8;

/// The moves of one chain, undone in reverse on failure: (order, from, to).
type Moves = Vec<(usize, Option<u32>, Option<u32>)>;

/// Loads and users as the ejection keeps them.
pub(super) struct State<'a> {
    pub instance: &'a Instance,
    pub choice: &'a mut [Option<u32>],
    pub used: &'a mut [u64],
    /// Per resource, its users; stale ones (the order moved on) are skipped.
    pub users: &'a mut [Vec<User>],
}

impl<'a> State<'a> {
    fn uses(&self, j: usize, c: Option<u32>) -> &'a [(u32, u32)] {
        self.instance.uses_at(j, c)
    }

    fn cost(&self, j: usize, c: Option<u32>) -> f64 {
        c.map_or(0.0, |c| self.instance.candidates_of(j)[c as usize].cost)
    }

    fn fits(&self, j: usize, c: u32) -> bool {
        self.uses(j, Some(c))
            .iter()
            .all(|&(r, a)| self.used[r as usize] + u64::from(a) <= self.instance.capacity[r as usize])
    }

    /// The only resource candidate `c` of `j` lacks room on, if it lacks room on exactly one.
    fn one_short(&self, j: usize, c: u32) -> Option<(u32, u32)> {
        let mut short = None;
        for &(r, a) in self.uses(j, Some(c)) {
            if self.used[r as usize] + u64::from(a) > self.instance.capacity[r as usize] {
                if short.is_some() {
                    return None;
                }
                short = Some((r, a));
            }
        }
        short
    }

    fn set(&mut self, moves: &mut Moves, j: usize, to: Option<u32>) {
        let from = self.choice[j];
        for &(r, a) in self.uses(j, from) {
            self.used[r as usize] -= u64::from(a);
        }
        for &(r, a) in self.uses(j, to) {
            self.used[r as usize] += u64::from(a);
        }
        self.choice[j] = to;
        moves.push((j, from, to));
    }

    fn undo(&mut self, moves: &mut Moves, to_len: usize) {
        while moves.len() > to_len {
            let (j, from, _) = moves.pop().expect("longer than to_len");
            let mut scratch = Vec::new();
            self.set(&mut scratch, j, from);
        }
    }

    /// The `n` cheapest candidates of `j` that `keep` keeps, cheapest first.
    fn cheapest(&self, j: usize, n: usize, keep: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut out: Vec<u32> = (0..self.instance.candidates_of(j).len() as u32)
            .filter(|&c| keep(c))
            .collect();
        out.sort_by(|&x, &y| {
            self.cost(j, Some(x))
                .total_cmp(&self.cost(j, Some(y)))
                .then(x.cmp(&y))
        });
        out.truncate(n);
        out
    }

    /// Live users of `r`, at most `n`, not in `skip`.
    fn live_users(&self, r: u32, n: usize, skip: &[usize]) -> Vec<usize> {
        self.users[r as usize]
            .iter()
            .filter(|u| {
                self.choice[u.order as usize] == Some(u.candidate) && !skip.contains(&(u.order as usize))
            })
            .map(|u| u.order as usize)
            .take(n)
            .collect()
    }

    /// Moves one user of `r` (not in `skip`) to its cheapest candidate that fits and leaves
    /// `r` and `avoid` alone, once `r` lacks `a`; returns the extra cost, or `None` when none
    /// can go.
    fn free_one(&mut self, moves: &mut Moves, r: u32, a: u32, avoid: u32, skip: &[usize]) -> Option<f64> {
        for k in self.live_users(r, SECOND_TRIES, skip) {
            let from = self.choice[k];
            let mark = moves.len();
            self.set(moves, k, None);
            let pick = (0..self.instance.candidates_of(k).len() as u32)
                .filter(|&c| {
                    Some(c) != from
                        && !self.uses(k, Some(c)).iter().any(|u| u.0 == r || u.0 == avoid)
                        && self.fits(k, c)
                })
                .min_by(|&x, &y| {
                    self.cost(k, Some(x))
                        .total_cmp(&self.cost(k, Some(y)))
                        .then(x.cmp(&y))
                });
            match pick {
                Some(c) if self.used[r as usize] + u64::from(a) <= self.instance.capacity[r as usize] => {
                    self.set(moves, k, Some(c));
                    return Some(self.cost(k, Some(c)) - self.cost(k, from));
                }
                _ => self.undo(moves, mark),
            }
        }
        None
    }

    /// Places far order `j` on one of its cheaper candidates through chains; returns the moves.
    fn chain(&mut self, j: usize) -> Option<Moves> {
        let here = self.choice[j];
        let gain_max = match here {
            None => f64::INFINITY,
            Some(_) => self.cost(j, here),
        };
        let targets = self.cheapest(j, TARGETS, |c| self.cost(j, Some(c)) < gain_max - 1e-9);
        for to in targets {
            let mut moves: Moves = Vec::new();
            self.set(&mut moves, j, None);
            // Room made by an earlier chain.
            if self.fits(j, to) {
                self.set(&mut moves, j, Some(to));
                return Some(moves);
            }
            let Some((r, a)) = self.one_short(j, to) else {
                self.undo(&mut moves, 0);
                continue;
            };
            // The budget: what j saves, less what the moves add.
            let mut budget = gain_max.min(1e18) - self.cost(j, Some(to));
            for k in self.live_users(r, FIRST_TRIES, &[j]) {
                if self.used[r as usize] + u64::from(a) <= self.instance.capacity[r as usize] {
                    break;
                }
                let k_from = self.choice[k];
                // Moved by an earlier step of this chain.
                if !self.uses(k, k_from).iter().any(|u| u.0 == r) {
                    continue;
                }
                let mark = moves.len();
                self.set(&mut moves, k, None);
                let cands = self.cheapest(k, SECOND_CANDIDATES, |c| {
                    Some(c) != k_from && !self.uses(k, Some(c)).iter().any(|u| u.0 == r)
                });
                let mut placed = false;
                for c in cands {
                    let step = self.cost(k, Some(c)) - self.cost(k, k_from);
                    if step >= budget {
                        break;
                    }
                    let inner = moves.len();
                    let extra = if self.fits(k, c) {
                        Some(0.0)
                    } else if let Some((r2, a2)) = self.one_short(k, c)
                        && r2 != r
                    {
                        self.free_one(&mut moves, r2, a2, r, &[j, k])
                    } else {
                        None
                    };
                    match extra {
                        Some(extra) if step + extra < budget && self.fits(k, c) => {
                            self.set(&mut moves, k, Some(c));
                            budget -= step + extra;
                            placed = true;
                            break;
                        }
                        _ => self.undo(&mut moves, inner),
                    }
                }
                if !placed {
                    self.undo(&mut moves, mark);
                }
            }
            if budget > 1e-9 && self.fits(j, to) {
                self.set(&mut moves, j, Some(to));
                return Some(moves);
            }
            self.undo(&mut moves, 0);
        }
        None
    }
}

/// One pass over the far orders, in order index order; returns how many it placed. Asks `stop`
/// every 1,024 orders tried.
pub(super) fn pass(
    state: &mut State<'_>,
    cheapest: &[f64],
    stop: &(dyn Fn() -> bool + Sync),
) -> (usize, bool) {
    let mut placed = 0;
    let mut tried = 0usize;
    for (j, &cheapest) in cheapest.iter().enumerate() {
        let here = state.choice[j];
        let far = here.is_none_or(|_| state.cost(j, here) > EJECT_FAR_RATIO * cheapest);
        if !far || !cheapest.is_finite() {
            continue;
        }
        tried += 1;
        if tried.is_multiple_of(1024) && stop() {
            return (placed, true);
        }
        if let Some(moves) = state.chain(j) {
            placed += 1;
            for &(k, _, to) in &moves {
                if let Some(c) = to
                    && state.choice[k] == to
                {
                    let user = User::new(state.instance, k, c);
                    for &(r, _) in state.uses(k, Some(c)) {
                        state.users[r as usize].push(user);
                    }
                }
            }
        }
    }
    (placed, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// j wants resource 1, held by k; k could go to resource 2, held by k2; k2 can go to the
    /// free resource 3. One ejection finds nothing (k has nowhere to go as things are). Runs a
    /// pass; returns what it placed, the choice and the loads after.
    fn three_in_a_row(j_stay: f64, step: f64) -> (usize, Vec<Option<u32>>, Vec<u64>) {
        let mut inst = Instance {
            capacity: vec![1, 1, 1, 1],
            ..Default::default()
        };
        inst.push_order([(j_stay, &[(0, 1)][..]), (10.0, &[(1, 1)][..])]);
        inst.push_order([(1.0, &[(1, 1)][..]), (1.0 + step, &[(2, 1)][..])]);
        inst.push_order([(1.0, &[(2, 1)][..]), (1.0 + step, &[(3, 1)][..])]);
        let mut users = vec![
            vec![User::new(&inst, 0, 0)],
            vec![User::new(&inst, 1, 0)],
            vec![User::new(&inst, 2, 0)],
            Vec::new(),
        ];
        let (mut choice, mut used) = (vec![Some(0); 3], vec![1, 1, 1, 0]);
        let mut state = State {
            instance: &inst,
            choice: &mut choice,
            used: &mut used,
            users: &mut users,
        };
        let (placed, cut) = pass(&mut state, &[10.0, 1.0, 1.0], &|| false);
        assert!(!cut);
        (placed, choice, used)
    }

    #[test]
    fn a_chain_of_two_moves_places_an_order_left_on_a_broken_plan() {
        let (placed, choice, used) = three_in_a_row(50_000.0, 1.0);
        assert_eq!(placed, 1);
        assert_eq!(choice, vec![Some(1); 3]);
        assert_eq!(used, vec![0, 1, 1, 1]);
    }

    #[test]
    fn a_chain_that_costs_more_than_it_saves_is_not_made() {
        // j saves 90; moving k and k2 costs 50 each.
        let (placed, choice, used) = three_in_a_row(100.0, 50.0);
        assert_eq!(placed, 0);
        assert_eq!(choice, vec![Some(0); 3]);
        assert_eq!(used, vec![1, 1, 1, 0]);
    }
}
