//! `--verify`: the journal of every acknowledged write, and the reconciliation against the
//! target afterwards. It assumes the harness is the only writer to the positions it touches
//! (the server's own hold expiry cannot interfere: holds live ten minutes and every session
//! commits or releases its hold before the run ends).

use std::collections::{BTreeMap, HashMap};

use promised_client::{Answer, Client, HoldState, Op, RequestId};

use crate::catalog::{Catalog, Pos};
use crate::target::RedisAdmin;
use crate::workload::{Act, Line, NOT_APPLIED, Reply};

/// A hold or routed order the target granted.
#[derive(Clone, Debug)]
pub struct Granted {
    pub lines: Vec<Line>,
    pub order: bool,
}

/// An applied feed: (node, feed sequence, (SKU, on hand) counts).
pub type Fed = (u32, u64, Vec<(u32, u32)>);

/// Every acknowledged write of a run.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    pub granted: HashMap<RequestId, Granted>,
    pub committed: Vec<RequestId>,
    pub released: Vec<RequestId>,
    pub cancelled: Vec<RequestId>,
    pub fed: Vec<Fed>,
    /// Orders a batch re-route moved: their lines' new nodes, in line order.
    pub moved: Vec<(RequestId, Vec<u32>)>,
    /// Writes answered with an error that does not say whether they took effect.
    pub unknown: Vec<String>,
}

impl Journal {
    pub fn record(&mut self, act: &Act, reply: &Reply) {
        match (act, reply) {
            (Act::Hold { id, .. }, Reply::Granted(lines)) => {
                self.granted.insert(
                    *id,
                    Granted {
                        lines: lines.clone(),
                        order: false,
                    },
                );
            }
            (Act::RouteOrder { order, .. }, Reply::Granted(lines)) => {
                self.granted.insert(
                    *order,
                    Granted {
                        lines: lines.clone(),
                        order: true,
                    },
                );
            }
            (Act::Commit { hold, .. }, Reply::Done) => self.committed.push(*hold),
            (Act::Release { hold, .. }, Reply::Done) => self.released.push(*hold),
            (Act::CancelOrder { order, .. }, Reply::Done) => self.cancelled.push(*order),
            (
                Act::Feed {
                    node, seq, counts, ..
                },
                Reply::Done,
            ) => self.fed.push((*node, *seq, counts.clone())),
            (a, Reply::Error(code, message)) if a.kind().is_write() && !NOT_APPLIED.contains(code) => {
                self.unknown
                    .push(format!("{:?} answered error {code}: {message}", a.kind()));
            }
            _ => {}
        }
    }

    pub fn merge(&mut self, o: Journal) {
        self.granted.extend(o.granted);
        self.committed.extend(o.committed);
        self.released.extend(o.released);
        self.cancelled.extend(o.cancelled);
        self.fed.extend(o.fed);
        self.moved.extend(o.moved);
        self.unknown.extend(o.unknown);
    }

    /// Each granted hold's or order's final state as the acknowledged writes imply, with its
    /// lines (moved orders at their new nodes).
    pub fn final_states(&self) -> BTreeMap<RequestId, (HoldState, Vec<Line>)> {
        let mut out: BTreeMap<RequestId, (HoldState, Vec<Line>)> = self
            .granted
            .iter()
            .map(|(id, g)| {
                let state = if g.order {
                    HoldState::Committed
                } else {
                    HoldState::Held
                };
                (*id, (state, g.lines.clone()))
            })
            .collect();
        for (order, nodes) in &self.moved {
            if let Some((_, lines)) = out.get_mut(order) {
                for (l, &n) in lines.iter_mut().zip(nodes) {
                    l.node = n;
                }
            }
        }
        let mut set = |ids: &[RequestId], state: HoldState| {
            for id in ids {
                if let Some(e) = out.get_mut(id) {
                    e.0 = state;
                }
            }
        };
        set(&self.committed, HoldState::Committed);
        set(&self.released, HoldState::Released);
        set(&self.cancelled, HoldState::Cancelled);
        out
    }

    /// Expected (reserved, allocated) change per position, and the on-hand counts feeds set.
    pub fn effects(&self) -> (HashMap<Pos, (i64, i64)>, HashMap<Pos, u32>) {
        let mut delta: HashMap<Pos, (i64, i64)> = HashMap::new();
        for (state, lines) in self.final_states().values() {
            for l in lines {
                let d = delta
                    .entry(Pos {
                        sku: l.sku,
                        node: l.node,
                    })
                    .or_default();
                match *state {
                    HoldState::Held => d.0 += i64::from(l.quantity),
                    HoldState::Committed => d.1 += i64::from(l.quantity),
                    _ => {}
                }
            }
        }
        let mut feeds: Vec<_> = self.fed.iter().collect();
        feeds.sort_by_key(|f| f.1);
        let mut on_hand = HashMap::new();
        for (node, _, counts) in feeds {
            for &(sku, q) in counts {
                on_hand.insert(Pos { sku, node: *node }, q);
            }
        }
        (delta, on_hand)
    }
}

/// One position's counts, as read from promised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub on_hand: i64,
    pub safety: i64,
    pub reserved: i64,
    pub allocated: i64,
    /// Available to promise today: negative only if holds took more than there was (or a
    /// feed counted stock down below what was already claimed).
    pub atp: i64,
}

/// What the reconciliation found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Verdict {
    pub positions_checked: usize,
    pub holds_checked: usize,
    pub acknowledged_holds: usize,
    pub acknowledged_feeds: usize,
    pub mismatches: Vec<String>,
    /// Mismatches past the first 50 are counted, not listed.
    pub more: usize,
}

impl Verdict {
    fn mismatch(&mut self, m: String) {
        if self.mismatches.len() < 50 {
            self.mismatches.push(m);
        } else {
            self.more += 1;
        }
    }

    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Every position the run may touch: checkout and feed positions.
pub fn watched(cat: &Catalog) -> Vec<Pos> {
    cat.checkout_positions
        .iter()
        .copied()
        .chain(cat.feed_positions())
        .collect()
}

/// Reads every position's counts and ATP from promised (in batches of 1,000 operations).
pub async fn read_positions(
    client: &Client,
    cat: &Catalog,
    at: &[Pos],
) -> anyhow::Result<Vec<Option<Counts>>> {
    let mut out = Vec::with_capacity(at.len());
    for chunk in at.chunks(500) {
        let ops: Vec<Op> = chunk
            .iter()
            .flat_map(|p| {
                let (sku, node) = (
                    cat.skus[p.sku as usize].clone(),
                    cat.nodes[p.node as usize].clone(),
                );
                [
                    Op::GetPosition {
                        sku: sku.clone(),
                        node: node.clone(),
                    },
                    Op::Atp { sku, node, day: None },
                ]
            })
            .collect();
        let answers = client.batch(&ops).await?;
        for (p, pair) in chunk.iter().zip(answers.chunks(2)) {
            out.push(match (&pair[0], &pair[1]) {
                (Ok(Answer::Position(v)), Ok(Answer::Atp(atp))) => Some(Counts {
                    on_hand: i64::from(v.on_hand),
                    safety: i64::from(v.safety_stock),
                    reserved: i64::from(v.reserved),
                    allocated: i64::from(v.allocated),
                    atp: *atp,
                }),
                (Ok(Answer::NotFound), _) => None,
                other => anyhow::bail!(
                    "GetPosition and Atp of {} at {}: {other:?}",
                    cat.skus[p.sku as usize],
                    cat.nodes[p.node as usize]
                ),
            });
        }
    }
    Ok(out)
}

fn unknown_writes(journal: &Journal, v: &mut Verdict) {
    for u in &journal.unknown {
        v.mismatch(format!("a write of unknown outcome: {u}"));
    }
}

fn name(cat: &Catalog, p: Pos) -> String {
    format!("{} at {}", cat.skus[p.sku as usize], cat.nodes[p.node as usize])
}

/// Reconciles promised's ledger with the journal: every position's counts, no oversell, and
/// every acknowledged hold and order in the state its acknowledged writes imply.
pub async fn verify_promised(
    client: &Client,
    cat: &Catalog,
    at: &[Pos],
    before: &[Option<Counts>],
    journal: &Journal,
) -> anyhow::Result<Verdict> {
    let mut v = Verdict {
        acknowledged_holds: journal.granted.len(),
        acknowledged_feeds: journal.fed.len(),
        ..Verdict::default()
    };
    unknown_writes(journal, &mut v);
    let after = read_positions(client, cat, at).await?;
    let (delta, fed) = journal.effects();
    let index: HashMap<Pos, usize> = at.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    for p in delta.keys().chain(fed.keys()) {
        if !index.contains_key(p) {
            v.mismatch(format!(
                "{}: touched, but not a position the run watches",
                name(cat, *p)
            ));
        }
    }
    for (i, p) in at.iter().enumerate() {
        v.positions_checked += 1;
        let (b, a) = (before[i].unwrap_or_default(), after[i].unwrap_or_default());
        let (dr, da) = delta.get(p).copied().unwrap_or_default();
        let want = Counts {
            on_hand: fed.get(p).map_or(b.on_hand, |&q| i64::from(q)),
            safety: b.safety,
            reserved: b.reserved + dr,
            allocated: b.allocated + da,
            atp: a.atp,
        };
        if a != want {
            v.mismatch(format!(
                "{}: the server has on hand {}, reserved {}, allocated {}; the acknowledged writes imply {}, {}, {}",
                name(cat, *p),
                a.on_hand,
                a.reserved,
                a.allocated,
                want.on_hand,
                want.reserved,
                want.allocated
            ));
        }
        if (dr > 0 || da > 0) && b.atp >= 0 && a.atp < 0 {
            v.mismatch(format!(
                "{}: oversold: ATP {} after the run (reserved {}, allocated {}, on hand {})",
                name(cat, *p),
                a.atp,
                a.reserved,
                a.allocated,
                a.on_hand
            ));
        }
    }
    let states: Vec<_> = journal.final_states().into_iter().collect();
    for chunk in states.chunks(1_000) {
        let ops: Vec<Op> = chunk.iter().map(|(id, _)| Op::GetHold { hold: *id }).collect();
        for ((id, (state, lines)), r) in chunk.iter().zip(client.batch(&ops).await?) {
            v.holds_checked += 1;
            let view = match r {
                Ok(Answer::HoldView(h)) => h,
                Ok(Answer::NotFound) if matches!(*state, HoldState::Released | HoldState::Cancelled) => {
                    continue;
                }
                other => {
                    v.mismatch(format!(
                        "hold {id}: acknowledged as {state:?}, the server says {other:?}"
                    ));
                    continue;
                }
            };
            if view.state != *state {
                v.mismatch(format!(
                    "hold {id}: acknowledged as {state:?}, the server says {:?}",
                    view.state
                ));
                continue;
            }
            if matches!(*state, HoldState::Held | HoldState::Committed) {
                let got: Vec<(Option<u32>, Option<u32>, u32)> = view
                    .lines
                    .iter()
                    .map(|l| {
                        (
                            cat.sku_index(&l.sku),
                            l.node.as_deref().and_then(|n| cat.node_index(n)),
                            l.granted,
                        )
                    })
                    .collect();
                let want: Vec<(Option<u32>, Option<u32>, u32)> = lines
                    .iter()
                    .map(|l| (Some(l.sku), Some(l.node), l.quantity))
                    .collect();
                if got != want {
                    v.mismatch(format!("hold {id}: lines {got:?}, acknowledged {want:?}"));
                }
            }
        }
    }
    Ok(v)
}

/// Reconciles Redis's promisable units with the journal (seeded units minus what open holds
/// and commits took).
pub fn verify_redis(redis: &mut RedisAdmin, cat: &Catalog, journal: &Journal) -> anyhow::Result<Verdict> {
    let mut v = Verdict {
        acknowledged_holds: journal.granted.len(),
        ..Verdict::default()
    };
    unknown_writes(journal, &mut v);
    let seeded: Vec<(Pos, u32)> = cat.seeded_units().collect();
    let at: Vec<Pos> = seeded.iter().map(|s| s.0).collect();
    let units = redis.units(&at)?;
    let (delta, _) = journal.effects();
    for ((p, seed), have) in seeded.iter().zip(units) {
        v.positions_checked += 1;
        let (dr, da) = delta.get(p).copied().unwrap_or_default();
        let want = i64::from(*seed) - dr - da;
        if have != want {
            v.mismatch(format!(
                "{}: Redis has {have} units; the acknowledged writes imply {want}",
                name(cat, *p)
            ));
        }
        if have < 0 {
            v.mismatch(format!("{}: oversold ({have} units)", name(cat, *p)));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> RequestId {
        RequestId(n)
    }

    fn line(sku: u32, node: u32, quantity: u32) -> Line {
        Line { sku, node, quantity }
    }

    #[test]
    fn acknowledged_writes_imply_each_positions_change() {
        let mut j = Journal::default();
        let hold = |id| Act::Hold {
            id,
            lines: vec![line(1, 2, 3)],
        };
        // Open, committed, released, and an order that was moved, and one cancelled.
        j.record(&hold(id(1)), &Reply::Granted(vec![line(1, 2, 3)]));
        j.record(&hold(id(2)), &Reply::Granted(vec![line(1, 2, 3)]));
        j.record(&hold(id(3)), &Reply::Granted(vec![line(1, 2, 3)]));
        j.record(&hold(id(4)), &Reply::Refused);
        j.record(
            &Act::Commit {
                request: id(10),
                hold: id(2),
            },
            &Reply::Done,
        );
        j.record(
            &Act::Release {
                request: id(11),
                hold: id(3),
            },
            &Reply::Done,
        );
        let route = |order| Act::RouteOrder {
            order,
            cart: vec![(5, 1), (6, 2)],
            zone: 0,
        };
        j.record(
            &route(id(20)),
            &Reply::Granted(vec![line(5, 0, 1), line(6, 0, 2)]),
        );
        j.record(
            &route(id(21)),
            &Reply::Granted(vec![line(5, 0, 1), line(6, 0, 2)]),
        );
        j.record(
            &Act::CancelOrder {
                request: id(12),
                order: id(21),
            },
            &Reply::Done,
        );
        j.moved.push((id(20), vec![7, 0]));
        // A write whose outcome is unknown is kept for the verdict.
        j.record(
            &Act::Commit {
                request: id(13),
                hold: id(1),
            },
            &Reply::Error(1010, "timeout".into()),
        );
        // Busy says it was not applied.
        j.record(
            &Act::Commit {
                request: id(14),
                hold: id(1),
            },
            &Reply::Error(1008, "busy".into()),
        );
        assert_eq!(j.unknown.len(), 1);

        let states = j.final_states();
        assert_eq!(states[&id(1)].0, HoldState::Held);
        assert_eq!(states[&id(2)].0, HoldState::Committed);
        assert_eq!(states[&id(3)].0, HoldState::Released);
        assert!(!states.contains_key(&id(4)));
        assert_eq!(
            states[&id(20)],
            (HoldState::Committed, vec![line(5, 7, 1), line(6, 0, 2)])
        );
        assert_eq!(states[&id(21)].0, HoldState::Cancelled);

        let (delta, fed) = j.effects();
        assert_eq!(delta[&Pos { sku: 1, node: 2 }], (3, 3));
        assert_eq!(delta[&Pos { sku: 5, node: 7 }], (0, 1));
        assert_eq!(
            delta.get(&Pos { sku: 5, node: 0 }).copied().unwrap_or_default(),
            (0, 0)
        );
        assert_eq!(delta[&Pos { sku: 6, node: 0 }], (0, 2));
        assert!(fed.is_empty());
    }

    #[test]
    fn the_newest_applied_feed_sets_on_hand() {
        let mut j = Journal::default();
        let feed = |seq, counts: Vec<(u32, u32)>| Act::Feed {
            request: id(u128::from(seq)),
            node: 3,
            seq,
            counts,
        };
        // Acknowledged out of order; a stale one was refused.
        j.record(&feed(9, vec![(1, 90), (2, 20)]), &Reply::Done);
        j.record(&feed(5, vec![(1, 50), (3, 30)]), &Reply::Done);
        j.record(&feed(7, vec![(1, 70)]), &Reply::Refused);
        let (_, fed) = j.effects();
        assert_eq!(fed[&Pos { sku: 1, node: 3 }], 90);
        assert_eq!(fed[&Pos { sku: 2, node: 3 }], 20);
        assert_eq!(fed[&Pos { sku: 3, node: 3 }], 30);
    }
}
