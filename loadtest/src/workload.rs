//! The scenarios as sessions: each session is a short chain of operations in which the next
//! step depends on the last answer (a promise's plan is what gets held; a granted hold is what
//! gets committed or released). Connections interleave many sessions to fill their pipeline.

use std::sync::atomic::{AtomicU64, Ordering};

use promised_client::RequestId;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::catalog::Catalog;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Promise a cart (1-10 lines, Zipf SKUs), hold the plan, then commit or release.
    Checkout,
    /// 1-line holds on the 10 best sellers, then commit or release.
    FlashSale,
    /// Inventory feed storms: absolute on-hand counts per node (SetOnHand).
    Feed,
    /// Checkout that routes orders, and one batch re-route of every open order halfway through.
    Reroute,
    /// Checkout sessions, ATP reads and feeds together.
    Mixed,
    /// Holds of `--lines` lines at chosen nodes, then commit or release (the Redis comparison).
    Hold,
    /// ATP queries of one position.
    Atp,
}

impl Scenario {
    /// The name on the command line (and in the JSON results).
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }

    /// The share of granted holds committed unless `--commit-ratio` says otherwise. Micro
    /// scenarios release everything so that stock never runs out during a measurement.
    pub fn default_commit_ratio(self) -> f64 {
        match self {
            Self::Hold | Self::Atp | Self::Feed => 0.0,
            _ => 0.7,
        }
    }
}

/// What a session step asks. Indexes point into the [`Catalog`].
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    /// Promise a cart at ground; then hold its plan (or route it, for `route`).
    Promise {
        cart: Vec<(u32, u32)>,
        zone: u32,
        route: bool,
    },
    Hold {
        id: RequestId,
        lines: Vec<Line>,
    },
    Commit {
        request: RequestId,
        hold: RequestId,
    },
    Release {
        request: RequestId,
        hold: RequestId,
    },
    RouteOrder {
        order: RequestId,
        cart: Vec<(u32, u32)>,
        zone: u32,
    },
    CancelOrder {
        request: RequestId,
        order: RequestId,
    },
    Atp {
        sku: u32,
        node: u32,
    },
    Feed {
        request: RequestId,
        node: u32,
        seq: u64,
        counts: Vec<(u32, u32)>,
    },
}

/// One held line: (SKU, node, units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: u32,
    pub node: u32,
    pub quantity: u32,
}

/// The operation kinds reported apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Promise,
    Hold,
    Commit,
    Release,
    RouteOrder,
    CancelOrder,
    Atp,
    Feed,
}

impl OpKind {
    pub const ALL: [OpKind; 8] = [
        Self::Promise,
        Self::Hold,
        Self::Commit,
        Self::Release,
        Self::RouteOrder,
        Self::CancelOrder,
        Self::Atp,
        Self::Feed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Promise => "promise",
            Self::Hold => "hold",
            Self::Commit => "commit",
            Self::Release => "release",
            Self::RouteOrder => "route-order",
            Self::CancelOrder => "cancel-order",
            Self::Atp => "atp",
            Self::Feed => "feed",
        }
    }

    pub fn is_write(self) -> bool {
        !matches!(self, Self::Promise | Self::Atp)
    }
}

impl Act {
    pub fn kind(&self) -> OpKind {
        match self {
            Self::Promise { .. } => OpKind::Promise,
            Self::Hold { .. } => OpKind::Hold,
            Self::Commit { .. } => OpKind::Commit,
            Self::Release { .. } => OpKind::Release,
            Self::RouteOrder { .. } => OpKind::RouteOrder,
            Self::CancelOrder { .. } => OpKind::CancelOrder,
            Self::Atp { .. } => OpKind::Atp,
            Self::Feed { .. } => OpKind::Feed,
        }
    }
}

/// An answer, reduced to what the sessions and the verifier need.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A promise's plan: the node of each cart line.
    Plan(Vec<u32>),
    /// Nothing could be promised (or held, routed, changed): a business answer, not an error.
    Refused,
    /// A hold or a routed order, with its granted lines.
    Granted(Vec<Line>),
    /// A commit, release, cancel or feed took effect; a query answered.
    Done,
    /// The server's typed error: (code, message).
    Error(u16, String),
}

/// Error codes that say the request was not applied at all (safe to count as "nothing
/// happened" when reconciling).
pub const NOT_APPLIED: [u16; 4] = [
    promised_client::ErrorCode::Busy.0,
    promised_client::ErrorCode::BatchTooLarge.0,
    promised_client::ErrorCode::ShuttingDown.0,
    promised_client::ErrorCode::PermissionDenied.0,
];

/// The knobs of the sessions.
#[derive(Clone, Debug)]
pub struct Mix {
    pub scenario: Scenario,
    /// Lines per hold in the `hold` scenario; carts draw 1-10 lines when `None`.
    pub lines: Option<u32>,
    /// Share of promised carts that go on to a hold.
    pub hold_ratio: f64,
    /// Share of granted holds committed (the rest released).
    pub commit_ratio: f64,
    /// Share of routed orders cancelled again.
    pub cancel_ratio: f64,
    /// SKUs drawn uniformly instead of by popularity.
    pub uniform: bool,
    /// SKUs per feed message.
    pub feed_skus: usize,
    /// Checkout holds its carts at stocked nodes without promising first (a target that
    /// cannot promise: Redis).
    pub hold_only: bool,
}

/// The id every run uses as the high half of its request ids, so reruns never collide with the
/// dedupe records of an earlier run.
pub fn run_nonce() -> u64 {
    rand::random::<u64>() | 1 << 63
}

/// One connection's session generator.
pub struct Workload<'c> {
    cat: &'c Catalog,
    mix: &'c Mix,
    rng: Pcg64Mcg,
    id_hi: u64,
    id_lo: u64,
    feed_seq: &'c AtomicU64,
}

impl<'c> Workload<'c> {
    pub fn new(cat: &'c Catalog, mix: &'c Mix, nonce: u64, conn: u64, feed_seq: &'c AtomicU64) -> Self {
        Self {
            cat,
            mix,
            rng: Pcg64Mcg::seed_from_u64(nonce ^ conn.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            id_hi: nonce,
            id_lo: conn << 40,
            feed_seq,
        }
    }

    fn id(&mut self) -> RequestId {
        self.id_lo += 1;
        RequestId(u128::from(self.id_hi) << 64 | u128::from(self.id_lo))
    }

    fn chance(&mut self, p: f64) -> bool {
        p >= 1.0 || (p > 0.0 && self.rng.random_bool(p))
    }

    fn sku(&mut self) -> u32 {
        if self.mix.uniform {
            self.cat.uniform_sku(&mut self.rng)
        } else {
            self.cat.popular_sku(&mut self.rng)
        }
    }

    /// Cart sizes 1-10, smaller carts likelier (P(k) proportional to 1/k), distinct SKUs.
    fn cart(&mut self) -> Vec<(u32, u32)> {
        let n = match self.mix.lines {
            Some(n) => n,
            None => {
                let weights: f64 = (1..=10).map(|k| 1.0 / f64::from(k)).sum();
                let mut x = self.rng.random_range(0.0..weights);
                let mut k = 1;
                while k < 10 && x >= 1.0 / f64::from(k) {
                    x -= 1.0 / f64::from(k);
                    k += 1;
                }
                k
            }
        };
        let mut cart: Vec<(u32, u32)> = Vec::with_capacity(n as usize);
        for _ in 0..n * 4 {
            if cart.len() == n as usize {
                break;
            }
            let s = self.sku();
            if cart.iter().all(|&(c, _)| c != s) {
                let q = if self.rng.random_bool(0.8) { 1 } else { 2 };
                cart.push((s, q));
            }
        }
        cart
    }

    fn hold_at_stocked_nodes(&mut self, skus: &[(u32, u32)]) -> Act {
        let lines = skus
            .iter()
            .map(|&(sku, quantity)| Line {
                sku,
                node: self.cat.stocked_node(sku, &mut self.rng),
                quantity,
            })
            .collect();
        Act::Hold { id: self.id(), lines }
    }

    fn feed(&mut self) -> Act {
        let nodes = self.cat.feed_skus.len() as u32;
        let mut node = self.rng.random_range(0..nodes);
        for _ in 0..nodes {
            if !self.cat.feed_skus[node as usize].is_empty() {
                break;
            }
            node = (node + 1) % nodes;
        }
        let skus = &self.cat.feed_skus[node as usize];
        let take = self.mix.feed_skus.min(skus.len());
        let start = if skus.len() > take {
            self.rng.random_range(0..=skus.len() - take)
        } else {
            0
        };
        let counts = skus[start..start + take]
            .iter()
            .map(|&s| (s, self.rng.random_range(0..=500)))
            .collect();
        Act::Feed {
            request: self.id(),
            node,
            seq: self.feed_seq.fetch_add(1, Ordering::Relaxed),
            counts,
        }
    }

    fn atp(&mut self) -> Act {
        let sku = self.sku();
        Act::Atp {
            sku,
            node: self.cat.stocked_node(sku, &mut self.rng),
        }
    }

    /// The first step of a new session.
    pub fn fresh(&mut self) -> Act {
        let zone = self.rng.random_range(0..self.cat.zones.max(1));
        match self.mix.scenario {
            Scenario::Checkout if self.mix.hold_only => {
                let cart = self.cart();
                self.hold_at_stocked_nodes(&cart)
            }
            Scenario::Checkout => Act::Promise {
                cart: self.cart(),
                zone,
                route: false,
            },
            Scenario::Reroute => Act::Promise {
                cart: self.cart(),
                zone,
                route: true,
            },
            Scenario::FlashSale => {
                let sku = self.cat.hot_sku(&mut self.rng);
                self.hold_at_stocked_nodes(&[(sku, 1)])
            }
            Scenario::Hold => {
                let cart: Vec<(u32, u32)> = self.cart().into_iter().map(|(s, _)| (s, 1)).collect();
                self.hold_at_stocked_nodes(&cart)
            }
            Scenario::Atp => self.atp(),
            Scenario::Feed => self.feed(),
            Scenario::Mixed => match self.rng.random_range(0..100) {
                0..50 => self.atp(),
                50..90 => Act::Promise {
                    cart: self.cart(),
                    zone,
                    route: false,
                },
                _ => self.feed(),
            },
        }
    }

    /// The session's next step after `act` was answered with `reply`, if any.
    pub fn advance(&mut self, act: &Act, reply: &Reply) -> Option<Act> {
        match (act, reply) {
            (Act::Promise { cart, zone, route }, Reply::Plan(nodes)) => {
                if *route {
                    return Some(Act::RouteOrder {
                        order: self.id(),
                        cart: cart.clone(),
                        zone: *zone,
                    });
                }
                if !self.chance(self.mix.hold_ratio) {
                    return None;
                }
                let lines = cart
                    .iter()
                    .zip(nodes)
                    .map(|(&(sku, quantity), &node)| Line { sku, node, quantity })
                    .collect();
                Some(Act::Hold { id: self.id(), lines })
            }
            (Act::Hold { id, .. }, Reply::Granted(_)) => {
                let (request, hold) = (self.id(), *id);
                Some(if self.chance(self.mix.commit_ratio) {
                    Act::Commit { request, hold }
                } else {
                    Act::Release { request, hold }
                })
            }
            (Act::RouteOrder { order, .. }, Reply::Granted(_)) if self.chance(self.mix.cancel_ratio) => {
                Some(Act::CancelOrder {
                    request: self.id(),
                    order: *order,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(scenario: Scenario) -> Mix {
        Mix {
            scenario,
            lines: None,
            hold_ratio: 1.0,
            commit_ratio: 1.0,
            cancel_ratio: 0.0,
            uniform: false,
            feed_skus: 50,
            hold_only: false,
        }
    }

    #[test]
    fn a_checkout_session_promises_holds_the_plan_then_commits() {
        let cat = Catalog::generate("small", None).unwrap();
        let (m, seq) = (mix(Scenario::Checkout), AtomicU64::new(1));
        let mut w = Workload::new(&cat, &m, 7, 0, &seq);
        let mut sizes = [0u32; 11];
        for _ in 0..2_000 {
            let Act::Promise { cart, .. } = w.fresh() else {
                panic!("checkout starts with a promise")
            };
            assert!((1..=10).contains(&cart.len()));
            sizes[cart.len()] += 1;
            let skus: std::collections::HashSet<_> = cart.iter().map(|l| l.0).collect();
            assert_eq!(skus.len(), cart.len(), "distinct SKUs per cart");
        }
        // Smaller carts are likelier.
        assert!(
            sizes[1] > sizes[5] && sizes[5] > sizes[10] && sizes[10] > 0,
            "{sizes:?}"
        );
        let promise = w.fresh();
        let Act::Promise { cart, .. } = &promise else {
            unreachable!()
        };
        let nodes: Vec<u32> = cart.iter().map(|&(s, _)| cat.stocked[s as usize][0].0).collect();
        let Some(Act::Hold { id, lines }) = w.advance(&promise, &Reply::Plan(nodes.clone())) else {
            panic!("a planned cart is held")
        };
        assert_eq!(lines.iter().map(|l| l.node).collect::<Vec<_>>(), nodes);
        let hold = Act::Hold {
            id,
            lines: lines.clone(),
        };
        assert!(
            matches!(w.advance(&hold, &Reply::Granted(lines)), Some(Act::Commit { hold, .. }) if hold == id)
        );
        assert_eq!(w.advance(&hold, &Reply::Refused), None);
        assert_eq!(w.advance(&promise, &Reply::Refused), None);
    }

    #[test]
    fn flash_sales_hit_the_hot_skus_and_feeds_the_tail() {
        let cat = Catalog::generate("small", None).unwrap();
        let seq = AtomicU64::new(100);
        let m = mix(Scenario::FlashSale);
        let mut w = Workload::new(&cat, &m, 7, 1, &seq);
        for _ in 0..500 {
            let Act::Hold { lines, .. } = w.fresh() else {
                panic!()
            };
            assert!(lines.len() == 1 && lines[0].sku < crate::catalog::HOT_SKUS);
        }
        let m = mix(Scenario::Feed);
        let mut w = Workload::new(&cat, &m, 7, 2, &seq);
        let mut last = 0;
        for _ in 0..100 {
            let Act::Feed {
                seq, counts, node, ..
            } = w.fresh()
            else {
                panic!()
            };
            assert!(seq > last);
            last = seq;
            assert!(!counts.is_empty() && counts.len() <= 50);
            // Feeds never touch what checkout holds.
            assert!(counts.iter().all(|&(s, _)| s >= cat.checkout_skus()));
            assert!(
                counts
                    .iter()
                    .all(|&(s, _)| cat.feed_skus[node as usize].contains(&s))
            );
        }
    }
}
