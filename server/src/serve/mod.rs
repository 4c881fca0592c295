//! `promised serve`: the TCP server. It speaks the framed protocol of `schemas/PROTOCOL.md` over
//! TCP or TLS: the `Hello`
//! handshake with auth tokens and roles, single requests and batches, pipelined with replies out
//! of order, writes acknowledged after group commit, reads answered at once, limits on
//! connections, requests in flight and batch size (answered `Busy` / `BatchTooLarge`), and a
//! graceful shutdown on SIGINT/SIGTERM that sends every reply it owes.
//!
//! Settings come from a TOML file (`--config`, see `config.rs`), overridden by environment
//! variables and flags. Handshake, idle and write timeouts close connections that stall. An
//! admin HTTP port serves `/metrics` (Prometheus), `/health` and `/ready`.
//!
//! Logs go through `tracing` to stderr, as text or JSON (`--log-format`); the engine's storage
//! failure and recovery messages come out the same way.
//!
//! TLS (rustls) when a certificate is configured; low-stock events for subscribed connections
//! (`promised::events`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use flatbuffers::FlatBufferBuilder;
use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_engine::durable::{DurableEngine, DurableOptions, Ticket};
use promised_engine::storage::FsStorage;
use promised_engine::wal::{FsyncPolicy, WalOptions};
use promised_engine::{Command, Outcome, Timestamp};
use promised_schemas::frame::{self, MAX_FRAME_BYTES_DEFAULT};
use promised_schemas::wire;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use promised::config::{ConfigFile, fsync_policy};
use promised::events::{Changes, EventHub, Watch};
use promised::metrics::Metrics;
use promised::reply;
use promised::wire::{Act, Operation, PromiseAndAct, RerouteAsk, WireError, decode};
use promised_engine::reroute::{RerouteOutcome, solver::Effort};

mod replies;
use replies::{Replies, Served};

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// A TOML config file (see `promised config check`); flags and environment override it.
    #[arg(long, env = "PROMISED_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the write-ahead log and snapshots live [default: promised-data].
    #[arg(long, env = "PROMISED_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Protocol address [default: 127.0.0.1:7411]. Without tokens only a loopback address is
    /// allowed.
    #[arg(long, env = "PROMISED_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Generate this data set (small, retail, peak) into the data directory if it is empty.
    #[arg(long)]
    pub demo: Option<String>,
    /// always, never (benchmarks only), or interval-ms=N [default: always].
    #[arg(long, env = "PROMISED_FSYNC")]
    pub fsync: Option<String>,
    /// An auth token and its role, `ROLE:TOKEN` with ROLE read, write or admin; repeatable. Also
    /// from PROMISED_TOKENS (comma-separated). With none (here or in the config file), every
    /// connection is admin, which is allowed only on a loopback address.
    #[arg(long = "token", env = "PROMISED_TOKENS", value_delimiter = ',')]
    pub tokens: Vec<String>,
    /// Connections at once; more are answered `Busy` and closed [default: 10000].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Requests in flight per connection (read, not yet answered); more are answered `Busy`
    /// [default: 1024].
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Operations in one batch; more are answered `BatchTooLarge` [default: 10000].
    #[arg(long)]
    pub max_batch_ops: Option<usize>,
    /// A connection must complete its handshake within this many milliseconds [default: 5000].
    #[arg(long)]
    pub handshake_timeout_ms: Option<u64>,
    /// A connection that sends nothing for this many milliseconds is closed [default: 300000].
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// A client that does not take a reply within this many milliseconds is cut off
    /// [default: 30000].
    #[arg(long)]
    pub write_timeout_ms: Option<u64>,
    /// Admin HTTP address for /metrics, /health and /ready [default: 127.0.0.1:7412].
    #[arg(long, env = "PROMISED_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// PEM certificate chain for TLS on the protocol port (with --tls-key).
    #[arg(long, env = "PROMISED_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "PROMISED_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Due holds expire (and old dedupe records are forgotten) every this many milliseconds
    /// [default: 250].
    #[arg(long)]
    pub expiry_tick_ms: Option<u64>,
    /// Log lines as `text` or `json` (on stderr; the level from RUST_LOG, default info).
    #[arg(long, env = "PROMISED_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Logs go to stderr, one event a line; `json` for log shippers.
fn init_logs(format: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let installed = match format {
        "text" => builder.try_init(),
        "json" => builder.json().try_init(),
        _ => anyhow::bail!("--log-format: text or json, not {format:?}"),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// `/metrics` (Prometheus text), `/health` (200 unless storage failed), `/ready` (200 while
/// taking requests).
fn admin_routes(shared: Arc<Shared>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let metrics = {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                let text = shared.metrics.render(&shared.db);
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    text,
                )
            }
        }
    };
    let health = {
        let shared = shared.clone();
        move || {
            let shared = shared.clone();
            async move {
                match shared.db.wal().failure() {
                    None => (StatusCode::OK, "ok\n".to_string()),
                    Some(f) => (StatusCode::SERVICE_UNAVAILABLE, format!("storage failed: {f}\n")),
                }
            }
        }
    };
    let ready = move || {
        let shared = shared.clone();
        async move {
            if shared.ready.load(Ordering::Acquire) && shared.db.wal().failure().is_none() {
                (StatusCode::OK, "ready\n")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
    };
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// What every connection shares.
struct Shared {
    db: Arc<DurableEngine>,
    /// Token -> role; empty: no authentication (loopback only).
    tokens: HashMap<String, wire::Role>,
    max_in_flight: usize,
    max_batch_ops: usize,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
    metrics: Metrics,
    /// False once shutdown began (for `/ready`).
    ready: AtomicBool,
    /// Signalled by the `Shutdown` operation.
    shutdown: tokio::sync::Notify,
    /// Where writes publish position changes for low-stock subscribers.
    events: EventHub,
    /// TLS on the protocol port, when a certificate is configured.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

fn parse_tokens(raw: &[String]) -> anyhow::Result<HashMap<String, wire::Role>> {
    let mut tokens = HashMap::new();
    for t in raw.iter().filter(|t| !t.is_empty()) {
        let (role, token) = t
            .split_once(':')
            .with_context(|| format!("--token {t:?}: expected ROLE:TOKEN"))?;
        let role = promised::config::role_of(role).context("--token")?;
        anyhow::ensure!(
            token.len() >= 8,
            "--token: a token must have at least 8 characters"
        );
        tokens.insert(token.to_string(), role);
    }
    Ok(tokens)
}

/// The role an operation needs.
fn required_role(op: wire::Operation) -> wire::Role {
    use wire::Operation as O;
    match op {
        O::Atp
        | O::NetworkAtp
        | O::Timeline
        | O::GetPosition
        | O::GetHold
        | O::Promise
        | O::ListingPromise
        | O::Subscribe
        | O::Unsubscribe => wire::Role::Read,
        O::TakeSnapshot | O::StateDigest | O::Shutdown | O::Reroute => wire::Role::Admin,
        O::Hold
        | O::Commit
        | O::Release
        | O::CancelAllocation
        | O::Ship
        | O::SetOnHand
        | O::AdjustOnHand
        | O::SetSafetyStock
        | O::AddInbound
        | O::ReceiveInbound
        | O::CancelInbound
        | O::Return
        | O::UpsertNode
        | O::UpsertSku
        | O::UpsertZone
        | O::UpsertLane
        | O::PromiseAndHold
        | O::RouteOrder => wire::Role::Write,
        // Unknown to this build: any role may hear that it is unknown.
        _ => wire::Role::Read,
    }
}

/// After an error that closes a connection, how long the server keeps reading (and dropping)
/// what the client still sends, so the close does not reset the connection before the client
/// has read the error.
const LINGER: Duration = Duration::from_millis(500);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 << 10;
/// A new connection's read buffer: a `Hello` fits; it grows (by doubling, up to `READ_CHUNK` at
/// a time) only for a connection that sends more, so idle connections stay small.
const READ_START: usize = 4 << 10;
/// The largest frame accepted before the handshake: a `Hello` is a few hundred bytes.
const HELLO_FRAME_MAX: u32 = 4 << 10;
/// How long a shutdown waits for connections to send the replies they owe.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    init_logs(&args.log_format)?;
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let data_dir = args
        .data_dir
        .clone()
        .or(file.server.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("promised-data"));
    let listen = args
        .listen
        .or(file.server.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7411)));
    let d = &file.durability;
    let fsync = match &args.fsync {
        Some(flag) => fsync_policy(flag, d.fsync_interval_ms)?,
        None => fsync_policy(d.fsync.as_deref().unwrap_or("always"), d.fsync_interval_ms)?,
    };
    if fsync == FsyncPolicy::Never {
        tracing::warn!("fsync = never: acknowledged writes are lost on power failure (benchmarks only)");
    }
    let defaults = DurableOptions::default();
    let options = DurableOptions {
        wal: WalOptions {
            fsync,
            segment_bytes: d
                .segment_mb
                .map_or(WalOptions::default().segment_bytes, |mb| mb << 20),
            preallocate: d
                .preallocate_segments
                .unwrap_or(WalOptions::default().preallocate),
            concurrent_syncs: d
                .concurrent_syncs
                .unwrap_or(WalOptions::default().concurrent_syncs),
        },
        snapshot_every_records: d
            .snapshot_every_records
            .unwrap_or(defaults.snapshot_every_records),
        snapshot_every: d.snapshot_every_secs.map_or(defaults.snapshot_every, |s| {
            (s > 0).then(|| std::time::Duration::from_secs(s))
        }),
        ..defaults
    };
    let huge_pages = file.server.huge_pages.unwrap_or_default();
    huge_pages.apply(false);
    let storage = Arc::new(FsStorage::open(&data_dir).with_context(|| format!("{}", data_dir.display()))?);
    let db = promised::alloc::bulk_load(|| DurableEngine::open(storage, options))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &db.recovery().warnings {
        tracing::warn!("{w}");
    }
    if let Some(set) = &args.demo {
        load_demo(&db, set)?;
    }
    huge_pages.apply(true);
    let token_specs = if args.tokens.iter().any(|t| !t.is_empty()) {
        args.tokens.clone()
    } else {
        file.token_specs()
    };
    let tokens = parse_tokens(&token_specs)?;
    if tokens.is_empty() && !listen.ip().is_loopback() {
        anyhow::bail!(
            "{listen} is not a loopback address: configure at least one token (ROLE:TOKEN) to listen there"
        );
    }
    let tls = match (
        args.tls_cert.as_ref().or(file.tls.cert.as_ref()),
        args.tls_key.as_ref().or(file.tls.key.as_ref()),
    ) {
        (Some(cert), Some(key)) => {
            tracing::info!("TLS on: certificate {}", cert.display());
            Some(promised::tls::acceptor(cert, key)?)
        }
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both a certificate and a key (--tls-cert, --tls-key)"),
    };
    let l = &file.limits;
    let shared = Arc::new(Shared {
        db: db.clone(),
        tokens,
        max_in_flight: args.max_in_flight.or(l.max_in_flight).unwrap_or(1_024).max(1),
        max_batch_ops: args.max_batch_ops.or(l.max_batch_ops).unwrap_or(10_000).max(1),
        handshake_timeout: Duration::from_millis(
            args.handshake_timeout_ms
                .or(l.handshake_timeout_ms)
                .unwrap_or(5_000)
                .max(1),
        ),
        idle_timeout: Duration::from_millis(
            args.idle_timeout_ms
                .or(l.idle_timeout_ms)
                .unwrap_or(300_000)
                .max(1),
        ),
        write_timeout: Duration::from_millis(
            args.write_timeout_ms
                .or(l.write_timeout_ms)
                .unwrap_or(30_000)
                .max(1),
        ),
        metrics: Metrics::new(),
        ready: AtomicBool::new(true),
        shutdown: tokio::sync::Notify::new(),
        events: EventHub::new(),
        tls,
    });
    let admin_listen = args
        .admin_listen
        .or(file.server.admin_listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7412)));
    let max_connections = args
        .max_connections
        .or(l.max_connections)
        .unwrap_or(10_000)
        .max(1);
    let expiry_tick = Duration::from_millis(
        args.expiry_tick_ms
            .or(file.server.expiry_tick_ms)
            .unwrap_or(250)
            .max(1),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let admin = TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("cannot listen on {admin_listen} (admin HTTP)"))?;
        tracing::info!("admin HTTP on {}", admin.local_addr()?);
        let app = admin_routes(shared.clone());
        tokio::spawn(async move { axum::serve(admin, app).await });
        let expiry = tokio::spawn(expire_holds(shared.clone(), expiry_tick));
        let served = serve(shared, listen, max_connections).await;
        expiry.abort();
        served
    });
    db.close()?;
    result
}

/// Expires due holds and forgets old dedupe records: a logged `tick` command every `every`, so
/// replay expires the same holds at the same instants. Nothing waits for its durability; a
/// failed log is reported once by the log itself.
async fn expire_holds(shared: Arc<Shared>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Ok(submitted) = shared.db.submit(now(), &Command::Tick)
            && let Ok(Outcome::Ticked { expired, .. }) = submitted.result
            && expired > 0
        {
            shared.metrics.holds_expired(expired);
        }
    }
}

fn load_demo(db: &DurableEngine, set: &str) -> anyhow::Result<()> {
    if db.engine().n_skus() > 0 {
        tracing::info!("{set}: the data directory already holds data; serving it as it is");
        return Ok(());
    }
    let spec = DataSetSpec::by_name(set)
        .with_context(|| format!("unknown data set {set:?}: choose one of {:?}", DataSetSpec::NAMES))?;
    let ds = DataSet::generate(&spec);
    promised::alloc::bulk_load(|| ds.load(db.engine(), now())).context("loading the data set")?;
    db.wait(Ticket {
        lsn: db.engine().next_seq() - 1,
    })?;
    tracing::info!("loaded the {set} data set");
    Ok(())
}

async fn serve(shared: Arc<Shared>, addr: SocketAddr, max_connections: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!("serving on {}", listener.local_addr()?);
    let mut connections = tokio::task::JoinSet::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let mut stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, or a client gone before accept: keep serving
                        // the others; back off a moment so a full table can drain.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                while connections.try_join_next().is_some() {}
                if connections.len() >= max_connections {
                    if shared.tls.is_some() {
                        // No room for a TLS handshake to say why: closed at once.
                        shared.metrics.rejected(wire::ErrorCode::Busy);
                        continue;
                    }
                    // Answered and closed at once, off the accept loop.
                    tokio::spawn(async move {
                        let text = format!("the server holds its maximum of {max_connections} connections");
                        let _ = stream.write_all(&error_frame(0, wire::ErrorCode::Busy, &text)).await;
                    });
                    continue;
                }
                connections.spawn(connection_counted(shared.clone(), stream, stopping.clone()));
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = shared.shutdown.notified() => break,
        }
    }
    // Stop accepting and reading; every connection sends the replies it owes (writes wait for
    // their group commit), then closes. Past the grace period, what is left is cut off.
    drop(listener);
    tracing::info!("shutting down: finishing {} connection(s)", connections.len());
    shared.ready.store(false, Ordering::Release);
    let _ = stopping_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "shutdown grace period over: closing {} connection(s)",
            connections.len()
        );
        connections.abort_all();
    }
    Ok(())
}

/// One connection's state once the handshake is done.
struct Session {
    role: wire::Role,
    /// Permits for requests in flight; a request without one is answered `Busy`.
    in_flight: Arc<Semaphore>,
    /// The task pushing this connection's low-stock events, while subscribed.
    events: Option<tokio::task::JoinHandle<()>>,
    /// Builds every reply of the connection (reset before each).
    builder: FlatBufferBuilder<'static>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = self.events.take() {
            task.abort();
        }
    }
}

async fn connection_counted(
    shared: Arc<Shared>,
    stream: TcpStream,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    shared.metrics.connection_opened();
    match &shared.tls {
        None => {
            let (rd, wr) = stream.into_split();
            connection(shared.clone(), rd, wr, stopping).await;
        }
        Some(acceptor) => {
            // The TLS handshake counts against the protocol handshake's time.
            let accepted = tokio::time::timeout(shared.handshake_timeout, acceptor.accept(stream)).await;
            match accepted {
                Ok(Ok(tls)) => {
                    let (rd, wr) = tokio::io::split(tls);
                    connection(shared.clone(), rd, wr, stopping).await;
                }
                Ok(Err(e)) => {
                    shared.metrics.rejected(wire::ErrorCode::HandshakeRequired);
                    tracing::debug!("TLS handshake failed: {e}");
                }
                Err(_) => shared.metrics.rejected(wire::ErrorCode::Timeout),
            }
        }
    }
    shared.metrics.connection_closed();
}

async fn connection<R, W>(
    shared: Arc<Shared>,
    mut rd: R,
    wr: W,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = Replies::new();
    let write_timeout = shared.write_timeout;
    let writer = tokio::spawn(replies::write_replies(shared.clone(), wr, rx, write_timeout));
    let mut buf: Vec<u8> = Vec::with_capacity(READ_START);
    let mut session: Option<Session> = None;
    // One deadline for the whole handshake: bytes trickling in do not extend it.
    let handshake_deadline = tokio::time::Instant::now() + shared.handshake_timeout;
    'read: loop {
        // Handle every whole frame in the buffer, then drop them with one move.
        let mut at = 0;
        loop {
            // Before the handshake only a small Hello is welcome.
            let max = if session.is_some() {
                MAX_FRAME_BYTES_DEFAULT
            } else {
                HELLO_FRAME_MAX
            };
            let (message, used) = match frame::split_frame(&buf[at..], max) {
                Ok(Some(split)) => split,
                Ok(None) => break,
                Err(e) => {
                    let code = match (&e, &session) {
                        (_, None) => wire::ErrorCode::HandshakeRequired,
                        (frame::FrameError::TooLarge { .. }, _) => wire::ErrorCode::FrameTooLarge,
                        (frame::FrameError::Empty, _) => wire::ErrorCode::MalformedMessage,
                    };
                    let _ = tx.send(refuse(&shared, 0, code, &e.to_string())).await;
                    break 'read;
                }
            };
            at += used;
            // The frame is handled in place: the buffer only moves after the loop.
            if !handle(&shared, &tx, message, &mut session).await {
                break 'read;
            }
        }
        buf.drain(..at);
        if buf.capacity() > 4 * READ_CHUNK && buf.len() < READ_CHUNK {
            // A large frame came and went: give its memory back.
            buf.shrink_to(READ_CHUNK);
        }
        let (deadline, limit, why) = match session {
            None => (
                handshake_deadline,
                shared.handshake_timeout,
                "no handshake within",
            ),
            Some(_) => {
                let idle = shared.idle_timeout;
                (tokio::time::Instant::now() + idle, idle, "nothing received for")
            }
        };
        if buf.capacity() - buf.len() < READ_START / 2 {
            buf.reserve(buf.capacity().clamp(READ_START, READ_CHUNK));
        }
        enum Woke {
            Read,
            Stop,
            TimedOut,
        }
        let woke = tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => Woke::Read,
            },
            _ = stopping.wait_for(|stop| *stop) => Woke::Stop,
            // The writer gave up on this client (it stopped reading): stop reading it too.
            _ = tx.closed() => break,
            _ = tokio::time::sleep_until(deadline) => Woke::TimedOut,
        };
        match woke {
            Woke::Read => {}
            Woke::Stop => {
                // Every reply owed goes out first (writes wait for their group commit); then
                // the client is told to go elsewhere, with nothing of its own left unanswered.
                if let Some(s) = &session {
                    let _ = s.in_flight.acquire_many(shared.max_in_flight as u32).await;
                }
                let text = "the server is shutting down: reconnect later or to another server";
                let _ = tx
                    .send(refuse(&shared, 0, wire::ErrorCode::ShuttingDown, text))
                    .await;
                break;
            }
            Woke::TimedOut => {
                let text = format!("{why} {} ms: closing", limit.as_millis());
                let _ = tx.send(refuse(&shared, 0, wire::ErrorCode::Timeout, &text)).await;
                break;
            }
        }
    }
    // The event task holds a sender of the reply queue: end it first, or the writer would wait
    // for it forever.
    drop(session);
    drop(tx);
    if let Ok(true) = writer.await {
        // Read and drop what the client still sends for a moment: closing a socket with unread
        // input resets it, and the reset can destroy the error reply still on its way.
        let _ = tokio::time::timeout(LINGER, async {
            let mut sink = vec![0u8; 4096];
            while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// Handles one message; false closes the connection.
async fn handle(shared: &Arc<Shared>, tx: &Replies, bytes: &[u8], session: &mut Option<Session>) -> bool {
    let message = match frame::parse_message(bytes) {
        Ok(m) => m,
        Err(e) => {
            // Before the handshake nothing but a valid Hello is tolerated.
            let code = match session {
                None => wire::ErrorCode::HandshakeRequired,
                Some(_) => wire::ErrorCode::MalformedMessage,
            };
            let _ = tx.send(refuse(shared, 0, code, &e.to_string())).await;
            return session.is_some();
        }
    };
    let id = message.request_id();
    let Some(sess) = session else {
        let Some(hello) = message.body_as_hello() else {
            let _ = tx
                .send(refuse(
                    shared,
                    id,
                    wire::ErrorCode::HandshakeRequired,
                    "the first message must be a Hello",
                ))
                .await;
            return false;
        };
        if hello.magic() != promised_schemas::HELLO_MAGIC {
            let _ = tx
                .send(refuse(
                    shared,
                    id,
                    wire::ErrorCode::HandshakeRequired,
                    "bad magic: the first message must be a promised Hello",
                ))
                .await;
            return false;
        }
        if hello.min_version() > promised_schemas::PROTOCOL_VERSION_MAX
            || hello.max_version() < promised_schemas::PROTOCOL_VERSION_MIN
        {
            let text = format!(
                "this server speaks protocol versions {}..={}",
                promised_schemas::PROTOCOL_VERSION_MIN,
                promised_schemas::PROTOCOL_VERSION_MAX
            );
            let _ = tx
                .send(refuse(shared, id, wire::ErrorCode::UnsupportedVersion, &text))
                .await;
            return false;
        }
        let role = if shared.tokens.is_empty() {
            wire::Role::Admin
        } else {
            match hello.auth_token().and_then(|t| shared.tokens.get(t)) {
                Some(&role) => role,
                None => {
                    let _ = tx
                        .send(refuse(
                            shared,
                            id,
                            wire::ErrorCode::AuthenticationFailed,
                            "unknown auth token",
                        ))
                        .await;
                    return false;
                }
            }
        };
        *session = Some(Session {
            role,
            in_flight: Arc::new(Semaphore::new(shared.max_in_flight)),
            events: None,
            builder: FlatBufferBuilder::new(),
        });
        let version = hello.max_version().min(promised_schemas::PROTOCOL_VERSION_MAX);
        let _ = tx.send(hello_reply(id, version, role, shared)).await;
        return true;
    };
    let Ok(permit) = sess.in_flight.clone().try_acquire_owned() else {
        let text = format!(
            "more than {} requests in flight on this connection",
            shared.max_in_flight
        );
        let _ = tx.send(refuse(shared, id, wire::ErrorCode::Busy, &text)).await;
        return true;
    };
    let started = Instant::now();
    // One clock reading per frame; one builder per connection, reused.
    let now = now();
    let mut b = std::mem::replace(&mut sess.builder, FlatBufferBuilder::new());
    b.reset();
    let handled = respond(shared, sess, tx, &mut b, &message, now, started, permit).await;
    sess.builder = b;
    handled
}

/// A builder that grew for a large reply is dropped, so an idle connection does not keep it.
fn shrink_if_large(b: &mut FlatBufferBuilder<'static>, frame: &[u8]) {
    if frame.len() > READ_CHUNK {
        *b = FlatBufferBuilder::new();
    }
}

/// Answers a `Request` or a `Batch` (or says it is neither).
#[allow(clippy::too_many_arguments)]
async fn respond(
    shared: &Arc<Shared>,
    sess: &mut Session,
    tx: &Replies,
    b: &mut FlatBufferBuilder<'static>,
    message: &wire::Message<'_>,
    now: Timestamp,
    started: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> bool {
    let id = message.request_id();
    if let Some(request) = message.body_as_request() {
        let (reply, ticket) = answer(shared, sess, tx, b, &request, now);
        let frame = finish(b, id, wire::Body::Reply, reply.as_union_value());
        shrink_if_large(b, &frame);
        let op = request.op_type().variant_name().unwrap_or("unknown");
        tx.reply(
            shared,
            frame,
            ticket.map(|t| t.lsn),
            Served { op, started, permit },
        );
        return true;
    }
    if let Some(batch) = message.body_as_batch() {
        if batch.requests().is_empty() {
            let _ = tx
                .send(refuse(
                    shared,
                    id,
                    wire::ErrorCode::EmptyRequest,
                    "the batch has no requests",
                ))
                .await;
            return true;
        }
        if batch.requests().len() > shared.max_batch_ops {
            let text = format!(
                "{} operations in one batch; at most {} are allowed",
                batch.requests().len(),
                shared.max_batch_ops
            );
            let _ = tx
                .send(refuse(shared, id, wire::ErrorCode::BatchTooLarge, &text))
                .await;
            return true;
        }
        let mut replies = Vec::with_capacity(batch.requests().len());
        let mut last = None;
        for request in batch.requests() {
            let (reply, ticket) = answer(shared, sess, tx, b, &request, now);
            replies.push(reply);
            last = ticket.or(last);
        }
        let replies = b.create_vector(&replies);
        let br = wire::BatchReply::create(
            b,
            &wire::BatchReplyArgs {
                replies: Some(replies),
            },
        );
        let frame = finish(b, id, wire::Body::BatchReply, br.as_union_value());
        shrink_if_large(b, &frame);
        let served = Served {
            op: "Batch",
            started,
            permit,
        };
        tx.reply(shared, frame, last.map(|t| t.lsn), served);
        return true;
    }
    let _ = tx
        .send(refuse(
            shared,
            id,
            wire::ErrorCode::UnknownOperation,
            "expected a Request or a Batch",
        ))
        .await;
    true
}

/// Applies or answers one request; returns the reply and, for a write, the ticket it waits on.
fn answer<'a>(
    shared: &Arc<Shared>,
    sess: &mut Session,
    tx: &Replies,
    b: &mut FlatBufferBuilder<'a>,
    request: &wire::Request<'_>,
    now: Timestamp,
) -> (flatbuffers::WIPOffset<wire::Reply<'a>>, Option<Ticket>) {
    let role = sess.role;
    let db = &*shared.db;
    let engine = db.engine();
    let error = |b: &mut FlatBufferBuilder<'a>, e: &WireError| {
        shared.metrics.rejected(e.code);
        reply::error(b, e)
    };
    let needed = required_role(request.op_type());
    if needed.0 > role.0 {
        let e = WireError {
            code: wire::ErrorCode::PermissionDenied,
            message: format!(
                "{} needs the {} role; this connection has {}",
                request.op_type().variant_name().unwrap_or("this operation"),
                needed.variant_name().unwrap_or("?"),
                role.variant_name().unwrap_or("?")
            ),
        };
        return (error(b, &e), None);
    }
    match decode(engine, request) {
        Err(e) => (error(b, &e), None),
        Ok(Operation::Query(q)) => (reply::query(b, engine, &q, now), None),
        Ok(Operation::Control(wire::Operation::Subscribe | wire::Operation::Unsubscribe)) => {
            (subscription(shared, sess, tx, b, request), None)
        }
        Ok(Operation::PromiseAndAct(p)) => match plan_act(engine, now, &p) {
            Err(e) => (error(b, &e.into()), None),
            Ok(plan) => match &plan.command {
                None => (reply::promise_held(b, engine, plan.promise.as_ref(), None), None),
                Some(command) => match db.submit(now, command) {
                    Err(failed) => {
                        let e = WireError {
                            code: wire::ErrorCode::StorageFailed,
                            message: failed.to_string(),
                        };
                        (error(b, &e), None)
                    }
                    Ok(submitted) => {
                        let reply = match &submitted.result {
                            Ok(
                                outcome @ (promised_engine::Outcome::Hold(held)
                                | promised_engine::Outcome::Route(held)),
                            ) => {
                                shared.events.publish(engine, command, outcome, now);
                                reply::promise_held(b, engine, plan.promise.as_ref(), Some(held))
                            }
                            Ok(_) => reply::promise_held(b, engine, plan.promise.as_ref(), None),
                            Err(e) => error(b, &e.clone().into()),
                        };
                        (reply, Some(submitted.ticket))
                    }
                },
            },
        },
        Ok(Operation::Command(command)) => match db.submit(now, &command) {
            Err(failed) => (
                error(
                    b,
                    &WireError {
                        code: wire::ErrorCode::StorageFailed,
                        message: failed.to_string(),
                    },
                ),
                None,
            ),
            Ok(submitted) => {
                let reply = match &submitted.result {
                    Ok(outcome) => {
                        shared.events.publish(engine, &command, outcome, now);
                        reply::outcome(b, engine, outcome)
                    }
                    Err(e) => error(b, &e.clone().into()),
                };
                (reply, Some(submitted.ticket))
            }
        },
        Ok(Operation::Control(op)) => (control(shared, b, op), None),
        Ok(Operation::Reroute(ask)) => reroute(shared, b, &ask, now),
    }
}

/// Time a re-route's solve may take when the request does not say.
const REROUTE_TIME_LIMIT_MS: u32 = 30_000;

/// A batch re-route: the plan (seconds of work on every core: off the async workers' queue),
/// and with `apply`, the plan as one command through the log.
fn reroute<'a>(
    shared: &Arc<Shared>,
    b: &mut FlatBufferBuilder<'a>,
    ask: &RerouteAsk,
    now: Timestamp,
) -> (flatbuffers::WIPOffset<wire::Reply<'a>>, Option<Ticket>) {
    let db = &*shared.db;
    let engine = db.engine();
    let error = |b: &mut FlatBufferBuilder<'a>, e: WireError| {
        shared.metrics.rejected(e.code);
        reply::error(b, &e)
    };
    let limit_ms = match ask.time_limit_ms {
        0 => REROUTE_TIME_LIMIT_MS,
        ms => ms,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(u64::from(limit_ms));
    let stop = move || std::time::Instant::now() >= deadline;
    let planned = tokio::task::block_in_place(|| {
        engine.plan_reroute(now, &ask.filter, &ask.policy, &Effort::default(), &stop)
    });
    let report = match planned {
        Ok(r) => r,
        Err(e) => return (error(b, e.into()), None),
    };
    let Some(request) = ask.apply else {
        return (reply::reroute(b, engine, &report, ask.moves_max, None), None);
    };
    if report.moves.is_empty() {
        // Nothing to move: nothing to log.
        let done = RerouteOutcome::Applied {
            moved: 0,
            repeated: false,
            skipped: Vec::new(),
        };
        return (
            reply::reroute(b, engine, &report, ask.moves_max, Some(&done)),
            None,
        );
    }
    let command = match report.command(request, ask.partial) {
        Ok(c) => c,
        Err(e) => return (error(b, e.into()), None),
    };
    match db.submit(now, &command) {
        Err(failed) => {
            let e = WireError {
                code: wire::ErrorCode::StorageFailed,
                message: failed.to_string(),
            };
            (error(b, e), None)
        }
        Ok(submitted) => {
            let reply = match &submitted.result {
                Ok(outcome @ promised_engine::Outcome::Reroute(applied)) => {
                    shared.events.publish(engine, &command, outcome, now);
                    reply::reroute(b, engine, &report, ask.moves_max, Some(applied))
                }
                Ok(other) => unreachable!("a re-route answers Reroute, not {other:?}"),
                Err(e) => error(b, e.clone().into()),
            };
            (reply, Some(submitted.ticket))
        }
    }
}

/// `Subscribe` replaces the connection's subscription; `Unsubscribe` ends it.
/// Promises and builds the hold or route order of the plan (see `Engine::plan_hold`).
fn plan_act(
    engine: &promised_engine::Engine,
    now: Timestamp,
    p: &PromiseAndAct,
) -> Result<promised_engine::promise::HoldPlan, promised_engine::EngineError> {
    match p.act {
        Act::Hold { ttl_ms } => engine.plan_hold(now, &p.request, p.id, ttl_ms),
        Act::Route => engine.plan_route(now, &p.request, p.id),
    }
}

fn subscription<'a>(
    shared: &Arc<Shared>,
    sess: &mut Session,
    tx: &Replies,
    b: &mut FlatBufferBuilder<'a>,
    request: &wire::Request<'_>,
) -> flatbuffers::WIPOffset<wire::Reply<'a>> {
    if let Some(task) = sess.events.take() {
        task.abort();
    }
    if let Some(subscribe) = request.op_as_subscribe() {
        let watch = match Watch::decode(shared.db.engine(), &subscribe) {
            Ok(w) => w,
            Err(e) => {
                shared.metrics.rejected(e.code);
                return reply::error(b, &e);
            }
        };
        let changes = shared.events.subscribe();
        sess.events = Some(tokio::spawn(push_events(
            shared.clone(),
            changes,
            watch,
            tx.clone(),
        )));
        let s = wire::Subscribed::create(b, &wire::SubscribedArgs {});
        return wire::Reply::create(
            b,
            &wire::ReplyArgs {
                result_type: wire::ReplyBody::Subscribed,
                result: Some(s.as_union_value()),
            },
        );
    }
    let a = wire::Ack::create(b, &wire::AckArgs {});
    wire::Reply::create(
        b,
        &wire::ReplyArgs {
            result_type: wire::ReplyBody::Ack,
            result: Some(a.as_union_value()),
        },
    )
}

/// Pushes `LowStock` events for the changes `watch` cares about, until the connection ends.
async fn push_events(
    shared: Arc<Shared>,
    mut changes: tokio::sync::broadcast::Receiver<Changes>,
    mut watch: Watch,
    tx: Replies,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match changes.recv().await {
            Ok(batch) => {
                for change in batch.iter() {
                    if watch.observe(change) {
                        let frame =
                            promised::events::low_stock_frame(shared.db.engine(), change, watch.threshold);
                        if tx.send(frame).await.is_err() {
                            return;
                        }
                        shared.metrics.event_sent();
                    }
                }
            }
            Err(RecvError::Lagged(n)) => shared.metrics.events_dropped(n),
            Err(RecvError::Closed) => return,
        }
    }
}

fn control<'a>(
    shared: &Shared,
    b: &mut FlatBufferBuilder<'a>,
    op: wire::Operation,
) -> flatbuffers::WIPOffset<wire::Reply<'a>> {
    let db = &*shared.db;
    let body = match op {
        // Acknowledged, then the same graceful shutdown as SIGTERM.
        wire::Operation::Shutdown => {
            tracing::info!("shutdown requested by an admin client");
            shared.shutdown.notify_one();
            let a = wire::Ack::create(b, &wire::AckArgs {});
            (wire::ReplyBody::Ack, a.as_union_value())
        }
        wire::Operation::StateDigest => {
            let digest = db.engine().state_digest();
            let d = wire::Digest::create(
                b,
                &wire::DigestArgs {
                    lsn: db.engine().next_seq() - 1,
                    hi: (digest.0 >> 64) as u64,
                    lo: digest.0 as u64,
                },
            );
            (wire::ReplyBody::Digest, d.as_union_value())
        }
        // Writing a snapshot takes seconds of disk work: off the async workers' queue.
        wire::Operation::TakeSnapshot => match tokio::task::block_in_place(|| db.snapshot()) {
            Ok(info) => {
                let s = wire::SnapshotTaken::create(
                    b,
                    &wire::SnapshotTakenArgs {
                        lsn: info.lsn,
                        bytes: info.bytes,
                    },
                );
                (wire::ReplyBody::SnapshotTaken, s.as_union_value())
            }
            Err(e) => {
                return reply::error(
                    b,
                    &WireError {
                        code: wire::ErrorCode::StorageFailed,
                        message: format!("snapshot failed: {e}"),
                    },
                );
            }
        },
        other => {
            let name = other.variant_name().unwrap_or("?");
            return reply::error(
                b,
                &WireError {
                    code: wire::ErrorCode::UnknownOperation,
                    message: format!("{name} is not available in this build yet"),
                },
            );
        }
    };
    wire::Reply::create(
        b,
        &wire::ReplyArgs {
            result_type: body.0,
            result: Some(body.1),
        },
    )
}

fn finish(
    b: &mut FlatBufferBuilder<'_>,
    request_id: u64,
    body_type: wire::Body,
    body: flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let out = frame::finish_frame(b, request_id, body_type, body);
    let len = out.len() - frame::LENGTH_BYTES;
    if len > MAX_FRAME_BYTES_DEFAULT as usize {
        // The client could not read it: say so instead (writes in it still took effect).
        let text = format!(
            "the reply would be {len} bytes, above the {MAX_FRAME_BYTES_DEFAULT}-byte frame limit: \
             ask for less per batch"
        );
        return error_frame(request_id, wire::ErrorCode::FrameTooLarge, &text);
    }
    out
}

/// An error reply, counted in the rejections metric.
fn refuse(shared: &Shared, request_id: u64, code: wire::ErrorCode, message: &str) -> Vec<u8> {
    shared.metrics.rejected(code);
    error_frame(request_id, code, message)
}

fn error_frame(request_id: u64, code: wire::ErrorCode, message: &str) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let reply = reply::error(
        &mut b,
        &WireError {
            code,
            message: message.to_string(),
        },
    );
    finish(&mut b, request_id, wire::Body::Reply, reply.as_union_value())
}

fn hello_reply(request_id: u64, version: u16, role: wire::Role, shared: &Shared) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let name = b.create_string(concat!("promised ", env!("CARGO_PKG_VERSION")));
    let r = wire::HelloReply::create(
        &mut b,
        &wire::HelloReplyArgs {
            version,
            server_name: Some(name),
            role,
            max_frame_bytes: MAX_FRAME_BYTES_DEFAULT,
            max_batch_ops: shared.max_batch_ops as u32,
            max_in_flight: shared.max_in_flight as u32,
        },
    );
    finish(&mut b, request_id, wire::Body::HelloReply, r.as_union_value())
}
