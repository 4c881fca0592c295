//! The pool: a few connections shared by every caller, opened lazily and replaced when they
//! break, with per-request timeouts and retries for the requests whose id makes them safe.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use promised_schemas::wire;
use tokio::sync::mpsc;

use crate::answer::{
    Answer, HoldChange, HoldOutcome, HoldView, LevelAnswer, ListedDelivery, LowStock, Position, RerouteAnswer,
};
use crate::connection::{Connection, Decoded, Dial, Session};
use crate::error::{ClientError, ServerError};
use crate::ops::{Hold, LineQuantity, NodeSpec, Op, PromiseCart, RequestId, Reroute, ServiceLevel};
use crate::tls::TlsConfig;

/// Settings of a [`Client`]. `ClientConfig::new(addr)` gives sensible defaults.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` of the protocol port.
    pub addr: String,
    /// The auth token; `None` for a server without tokens (loopback only).
    pub token: Option<String>,
    /// Sent in the handshake; appears in the server's logs.
    pub client_name: String,
    /// Connections in the pool; requests are spread over them round-robin.
    pub pool_size: usize,
    /// For connecting and the handshake.
    pub connect_timeout: Duration,
    /// For one attempt of one request, from queueing to its reply.
    pub request_timeout: Duration,
    /// Extra attempts for a retryable failure of a retry-safe request.
    pub retries: u32,
    /// The first retry's delay; it doubles each time (with jitter), up to a second.
    pub retry_backoff: Duration,
    pub tls: Option<TlsConfig>,
}

impl ClientConfig {
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token: None,
            client_name: concat!("promised-client ", env!("CARGO_PKG_VERSION")).to_string(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            retries: 3,
            retry_backoff: Duration::from_millis(20),
            tls: None,
        }
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn dial(&self) -> Dial {
        Dial {
            addr: self.addr.clone(),
            token: self.token.clone(),
            client_name: self.client_name.clone(),
            connect_timeout: self.connect_timeout,
            tls: self.tls.clone(),
        }
    }
}

struct Inner {
    config: ClientConfig,
    dial: Dial,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Connection>>>>,
    next: AtomicUsize,
}

/// A pooled, pipelining client. Clone it freely: clones share the pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// One operation's result inside a batch.
pub type BatchResult = Result<Answer, ServerError>;

impl Client {
    /// Opens the first connection now, so a wrong address or token fails here; the others open
    /// when first needed.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let slots = (0..config.pool_size.max(1))
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        let client = Self {
            inner: Arc::new(Inner {
                dial: config.dial(),
                config,
                slots,
                next: AtomicUsize::new(0),
            }),
        };
        client.connection(0).await?;
        Ok(client)
    }

    /// What the server granted (role, limits), from one of the pool's connections.
    pub async fn session(&self) -> Result<Session, ClientError> {
        Ok(self.connection(0).await?.session().clone())
    }

    /// The pool's connection in `slot`, opening a new one if it is missing or broken.
    async fn connection(&self, slot: usize) -> Result<Arc<Connection>, ClientError> {
        let mut guard = self.inner.slots[slot].lock().await;
        if let Some(c) = guard.as_ref()
            && c.closed().is_none()
        {
            return Ok(c.clone());
        }
        let c = Arc::new(Connection::open(&self.inner.dial).await?);
        *guard = Some(c.clone());
        Ok(c)
    }

    fn next_slot(&self) -> usize {
        self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len()
    }

    /// Sends `op` and returns its answer, retrying a retry-safe op on a retryable failure.
    pub async fn call(&self, op: &Op) -> Result<Answer, ClientError> {
        let retry_safe = op.is_retry_safe();
        self.with_retries(retry_safe, |conn| async move {
            match conn
                .call(|b| {
                    let r = op.encode(b);
                    (wire::Body::Request, r.as_union_value())
                })
                .await?
            {
                Decoded::One(one) => one.map_err(ClientError::Server),
                Decoded::Many(_) => Err(ClientError::Protocol("a batch reply to a single request".into())),
            }
        })
        .await
    }

    /// Sends `ops` as batches (split to the server's batch limit) and returns one result per
    /// op, in order. Not atomic: each op succeeds or fails on its own. A batch is retried only
    /// when every op in it is retry-safe.
    pub async fn batch(&self, ops: &[Op]) -> Result<Vec<BatchResult>, ClientError> {
        let limit = self.session().await?.max_batch_ops.max(1) as usize;
        let mut results = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(limit) {
            let retry_safe = chunk.iter().all(Op::is_retry_safe);
            let answers = self
                .with_retries(retry_safe, |conn| async move {
                    let decoded = conn.call(|b| crate::codec::batch_body(b, chunk)).await?;
                    match decoded {
                        Decoded::Many(many) if many.len() == chunk.len() => Ok(many),
                        Decoded::Many(many) => Err(ClientError::Protocol(format!(
                            "{} replies to a batch of {}",
                            many.len(),
                            chunk.len()
                        ))),
                        // The batch as a whole was refused (busy, too large, ...).
                        Decoded::One(Err(e)) => Err(ClientError::Server(e)),
                        Decoded::One(Ok(a)) => {
                            Err(ClientError::Protocol(format!("a single reply to a batch: {a:?}")))
                        }
                    }
                })
                .await?;
            results.extend(answers);
        }
        Ok(results)
    }

    async fn with_retries<'o, T, F, Fut>(&self, retry_safe: bool, attempt: F) -> Result<T, ClientError>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>> + 'o,
    {
        let config = &self.inner.config;
        let mut tries = 0u32;
        loop {
            let slot = self.next_slot();
            let timeout = config.request_timeout;
            let result = match self.connection(slot).await {
                Ok(conn) => tokio::time::timeout(timeout, attempt(conn))
                    .await
                    .unwrap_or(Err(ClientError::Timeout(timeout))),
                Err(e) => Err(e),
            };
            match result {
                Err(e) if retry_safe && e.is_retryable() && tries < config.retries => {
                    let backoff = config
                        .retry_backoff
                        .saturating_mul(1 << tries.min(16))
                        .min(Duration::from_secs(1));
                    // Full jitter: retries from many callers do not arrive together.
                    let wait = backoff.mul_f64(rand::random::<f64>());
                    tracing::debug!("retrying after {e} (attempt {})", tries + 1);
                    tokio::time::sleep(wait).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    fn unexpected<T>(op: &str, answer: Answer) -> Result<T, ClientError> {
        Err(ClientError::Protocol(format!(
            "unexpected answer to {op}: {answer:?}"
        )))
    }

    // ---- holds ----------------------------------------------------------------------------

    /// Places a hold (all lines or nothing unless `hold.partial`). Retried with the same id,
    /// so at most one hold is ever placed.
    pub async fn hold(&self, hold: Hold) -> Result<HoldOutcome, ClientError> {
        match self.call(&Op::Hold(hold)).await? {
            Answer::Hold(o) => Ok(o),
            other => Self::unexpected("Hold", other),
        }
    }

    /// Turns a hold into an allocation.
    pub async fn commit(&self, hold: RequestId) -> Result<HoldChange, ClientError> {
        self.hold_change(Op::Commit {
            request: RequestId::random(),
            hold,
        })
        .await
    }

    /// Releases a whole hold (`lines` empty) or some of its units.
    pub async fn release(
        &self,
        hold: RequestId,
        lines: Vec<LineQuantity>,
    ) -> Result<HoldChange, ClientError> {
        self.hold_change(Op::Release {
            request: RequestId::random(),
            hold,
            lines,
        })
        .await
    }

    pub async fn cancel_allocation(&self, hold: RequestId) -> Result<HoldChange, ClientError> {
        self.hold_change(Op::CancelAllocation {
            request: RequestId::random(),
            hold,
        })
        .await
    }

    /// Ships an allocation (`lines` empty: every remaining unit).
    pub async fn ship(&self, hold: RequestId, lines: Vec<LineQuantity>) -> Result<HoldChange, ClientError> {
        self.hold_change(Op::Ship {
            request: RequestId::random(),
            hold,
            lines,
        })
        .await
    }

    async fn hold_change(&self, op: Op) -> Result<HoldChange, ClientError> {
        let name = op.name();
        match self.call(&op).await? {
            Answer::HoldChange(c) => Ok(c),
            other => Self::unexpected(name, other),
        }
    }

    /// A hold as the server remembers it; `None` if it never existed or was forgotten.
    pub async fn get_hold(&self, hold: RequestId) -> Result<Option<HoldView>, ClientError> {
        match self.call(&Op::GetHold { hold }).await? {
            Answer::HoldView(h) => Ok(Some(h)),
            Answer::NotFound => Ok(None),
            other => Self::unexpected("GetHold", other),
        }
    }

    // ---- queries --------------------------------------------------------------------------

    /// Available to promise at one node, today (`day` `None`) or on a day.
    pub async fn atp(&self, sku: &str, node: &str, day: Option<u32>) -> Result<i64, ClientError> {
        let op = Op::Atp {
            sku: sku.into(),
            node: node.into(),
            day,
        };
        match self.call(&op).await? {
            Answer::Atp(v) => Ok(v),
            other => Self::unexpected("Atp", other),
        }
    }

    /// ATP over every open node able to ship the SKU.
    pub async fn network_atp(&self, sku: &str, day: Option<u32>) -> Result<i64, ClientError> {
        match self.call(&Op::NetworkAtp { sku: sku.into(), day }).await? {
            Answer::Atp(v) => Ok(v),
            other => Self::unexpected("NetworkAtp", other),
        }
    }

    /// Many positions' ATP in as few frames as the batch limit allows; one result each.
    pub async fn atp_many(
        &self,
        positions: &[(&str, &str)],
        day: Option<u32>,
    ) -> Result<Vec<Result<i64, ServerError>>, ClientError> {
        let ops: Vec<Op> = positions
            .iter()
            .map(|(sku, node)| Op::Atp {
                sku: (*sku).into(),
                node: (*node).into(),
                day,
            })
            .collect();
        self.batch(&ops)
            .await?
            .into_iter()
            .map(|r| match r {
                Ok(Answer::Atp(v)) => Ok(Ok(v)),
                Ok(other) => Self::unexpected("Atp", other),
                Err(e) => Ok(Err(e)),
            })
            .collect()
    }

    /// (day, cumulative ATP) for one position.
    pub async fn timeline(&self, sku: &str, node: &str) -> Result<Vec<(u32, i64)>, ClientError> {
        let op = Op::Timeline {
            sku: sku.into(),
            node: node.into(),
        };
        match self.call(&op).await? {
            Answer::Timeline(t) => Ok(t),
            other => Self::unexpected("Timeline", other),
        }
    }

    /// One position's counts; `None` if the node does not stock the SKU.
    pub async fn position(&self, sku: &str, node: &str) -> Result<Option<Position>, ClientError> {
        let op = Op::GetPosition {
            sku: sku.into(),
            node: node.into(),
        };
        match self.call(&op).await? {
            Answer::Position(p) => Ok(Some(p)),
            Answer::NotFound => Ok(None),
            other => Self::unexpected("GetPosition", other),
        }
    }

    /// When can this cart arrive, and from where: one answer per level asked.
    pub async fn promise(&self, cart: PromiseCart) -> Result<Vec<LevelAnswer>, ClientError> {
        match self.call(&Op::Promise(cart)).await? {
            Answer::Promise(levels) => Ok(levels),
            other => Self::unexpected("Promise", other),
        }
    }

    /// Listing-page promises: for each SKU, the earliest delivery of one unit to `zone` at
    /// `level` (`None`: not deliverable). At most 1,000 SKUs a call.
    pub async fn listing(
        &self,
        skus: &[&str],
        zone: u32,
        level: ServiceLevel,
    ) -> Result<Vec<Option<ListedDelivery>>, ClientError> {
        let op = Op::ListingPromise {
            skus: skus.iter().map(|s| (*s).to_string()).collect(),
            zone,
            point: None,
            level,
        };
        match self.call(&op).await? {
            Answer::Listing(found) => Ok(found),
            other => Self::unexpected("ListingPromise", other),
        }
    }

    /// Promises one level of `cart` and holds its plan under `hold` (keep it to commit). Retried
    /// with the same id, so at most one hold is placed. `None` for the hold when the level cannot
    /// be promised; a refused hold means stock moved since the plan: promise again. The promise
    /// is `None` when the hold id was already used (a retry): the first hold's answer stands.
    pub async fn promise_and_hold(
        &self,
        cart: PromiseCart,
        hold: RequestId,
        ttl: Duration,
    ) -> Result<(Option<LevelAnswer>, Option<HoldOutcome>), ClientError> {
        match self.call(&Op::PromiseAndHold { cart, hold, ttl }).await? {
            Answer::PromiseHeld { promise, held } => Ok((promise, held)),
            other => Self::unexpected("PromiseAndHold", other),
        }
    }

    /// Promises one level of `cart` and routes its plan as order `order`: a committed
    /// allocation (no commit needed) that also takes each shipping node's capacity for its ship
    /// day, so later promises see the day fill up. Cancel it with `cancel_allocation(_, order)`
    /// to give the stock and the capacity of unshipped packages back. Retried with the same id,
    /// so at most one order is routed; answers as `promise_and_hold` does (a refusal names
    /// `CapacityFull` when a node's day filled up since the plan).
    pub async fn route_order(
        &self,
        cart: PromiseCart,
        order: RequestId,
    ) -> Result<(Option<LevelAnswer>, Option<HoldOutcome>), ClientError> {
        match self.call(&Op::RouteOrder { cart, order }).await? {
            Answer::PromiseHeld { promise, held } => Ok((promise, held)),
            other => Self::unexpected("RouteOrder", other),
        }
    }

    /// Re-routes open allocations (admin role): the plan, its lower bound and gap, and with
    /// `apply` set, the plan applied as one logged command, every move or none (a refusal names
    /// the first order that no longer fits). Retried with the same apply id, it is applied once.
    pub async fn reroute(&self, reroute: Reroute) -> Result<RerouteAnswer, ClientError> {
        match self.call(&Op::Reroute(reroute)).await? {
            Answer::Reroute(r) => Ok(*r),
            other => Self::unexpected("Reroute", other),
        }
    }

    // ---- feeds and network ----------------------------------------------------------------

    /// Sends a feed-type write (set on-hand, adjust, safety stock, inbound, return); `true` if
    /// it repeated one already applied.
    pub async fn feed(&self, op: Op) -> Result<bool, ClientError> {
        let name = op.name();
        match self.call(&op).await? {
            Answer::Fed { repeated } => Ok(repeated),
            other => Self::unexpected(name, other),
        }
    }

    /// Absolute on-hand counts at `node` from feed message number `feed_seq`.
    pub async fn set_on_hand(
        &self,
        node: &str,
        feed_seq: u64,
        counts: &[(&str, u32)],
    ) -> Result<bool, ClientError> {
        self.feed(Op::SetOnHand {
            request: RequestId::random(),
            node: node.into(),
            feed_seq,
            counts: counts.iter().map(|(s, q)| ((*s).to_string(), *q)).collect(),
        })
        .await
    }

    pub async fn upsert_node(&self, node: NodeSpec) -> Result<(), ClientError> {
        match self.call(&Op::UpsertNode(node)).await? {
            Answer::NodeUpserted(_) => Ok(()),
            other => Self::unexpected("UpsertNode", other),
        }
    }

    /// A destination zone's centre point (default lanes are measured to it).
    pub async fn upsert_zone(&self, zone: u32, lat: f32, lon: f32) -> Result<(), ClientError> {
        match self.call(&Op::UpsertZone { zone, lat, lon }).await? {
            Answer::Ack => Ok(()),
            other => Self::unexpected("UpsertZone", other),
        }
    }

    pub async fn upsert_sku(&self, name: &str, required_capabilities: u32) -> Result<(), ClientError> {
        let op = Op::UpsertSku {
            name: name.into(),
            required_capabilities,
        };
        match self.call(&op).await? {
            Answer::SkuUpserted(_) => Ok(()),
            other => Self::unexpected("UpsertSku", other),
        }
    }

    // ---- admin ----------------------------------------------------------------------------

    /// Writes a snapshot now: (its LSN, its size in bytes).
    pub async fn take_snapshot(&self) -> Result<(u64, u64), ClientError> {
        match self.call(&Op::TakeSnapshot).await? {
            Answer::SnapshotTaken { lsn, bytes } => Ok((lsn, bytes)),
            other => Self::unexpected("TakeSnapshot", other),
        }
    }

    /// (last applied LSN, digest of the whole state): equal digests, equal states.
    pub async fn state_digest(&self) -> Result<(u64, u128), ClientError> {
        match self.call(&Op::StateDigest).await? {
            Answer::Digest { lsn, digest } => Ok((lsn, digest)),
            other => Self::unexpected("StateDigest", other),
        }
    }

    /// Asks the server to shut down gracefully.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        match self.call(&Op::Shutdown).await? {
            Answer::Ack => Ok(()),
            other => Self::unexpected("Shutdown", other),
        }
    }

    // ---- events ---------------------------------------------------------------------------

    /// Subscribes to low-stock events on a connection of its own (events follow their
    /// connection, so the pool's are left alone). Empty `skus` or `nodes` means all.
    pub async fn subscribe(
        &self,
        skus: &[&str],
        nodes: &[&str],
        threshold: i64,
    ) -> Result<Subscription, ClientError> {
        let conn = Connection::open(&self.inner.dial).await?;
        let op = Op::Subscribe {
            skus: skus.iter().map(|s| (*s).to_string()).collect(),
            nodes: nodes.iter().map(|s| (*s).to_string()).collect(),
            threshold,
        };
        let timeout = self.inner.config.request_timeout;
        let reply = tokio::time::timeout(
            timeout,
            conn.call(|b| {
                let r = op.encode(b);
                (wire::Body::Request, r.as_union_value())
            }),
        )
        .await
        .unwrap_or(Err(ClientError::Timeout(timeout)))?;
        match reply {
            Decoded::One(Ok(Answer::Subscribed)) => {}
            Decoded::One(Err(e)) => return Err(ClientError::Server(e)),
            Decoded::One(Ok(other)) => return Self::unexpected("Subscribe", other),
            Decoded::Many(_) => {
                return Err(ClientError::Protocol("a batch reply to Subscribe".into()));
            }
        }
        let events = conn
            .take_events()
            .ok_or_else(|| ClientError::Protocol("events already taken".into()))?;
        Ok(Subscription {
            conn: Arc::new(conn),
            events,
        })
    }
}

/// A stream of low-stock events, on its own connection. Dropping it closes the connection.
pub struct Subscription {
    conn: Arc<Connection>,
    events: mpsc::Receiver<LowStock>,
}

impl Subscription {
    /// The next event; `None` once the connection has ended (see [`Subscription::closed`]).
    pub async fn next(&mut self) -> Option<LowStock> {
        self.events.recv().await
    }

    /// Why the connection ended, once it has.
    pub fn closed(&self) -> Option<String> {
        self.conn.closed()
    }

    /// Events lost because they were not read fast enough.
    pub fn dropped(&self) -> u64 {
        self.conn.events_dropped()
    }

    /// Ends the subscription but keeps the connection; events already on their way may still
    /// arrive before the acknowledgement.
    pub async fn unsubscribe(&self, timeout: Duration) -> Result<(), ClientError> {
        let op = Op::Unsubscribe;
        let call = self.conn.call(|b| {
            let r = op.encode(b);
            (wire::Body::Request, r.as_union_value())
        });
        match tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(ClientError::Timeout(timeout)))?
        {
            Decoded::One(Ok(Answer::Ack)) => Ok(()),
            Decoded::One(Err(e)) => Err(ClientError::Server(e)),
            Decoded::One(Ok(other)) => Client::unexpected("Unsubscribe", other),
            Decoded::Many(_) => Err(ClientError::Protocol("a batch reply to Unsubscribe".into())),
        }
    }
}
