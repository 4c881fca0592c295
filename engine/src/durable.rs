//! The durable engine: an `Engine` whose every change is in the write-ahead log before it is
//! acknowledged, recovered at start from the newest good snapshot plus the log after it.
//!
//! Files in the data directory:
//! - `promised.meta`: the engine config that shapes state (shard counts, retention, the request
//!   hash key), written once when the directory is created;
//! - `wal-<first LSN>.log`: log segments;
//! - `snap-<LSN>.snap`: snapshots (the newest two are kept, so recovery can fall back one).
//!
//! A write is acknowledged when `apply` returns (or when the ticket from `submit` resolves):
//! by then its record, and every record before it, is durable under the fsync policy.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::command::{Command, Outcome};
use crate::error::{EngineError, ErrorCode};
use crate::ids::Timestamp;
use crate::ledger::{CommandLog, Engine, EngineConfig};
use crate::snapshot::{self, SnapshotFile, SnapshotInfo, parse_snapshot_name, snapshot_name};
use crate::storage::Storage;
use crate::wal::{self, FsyncPolicy, LogTail, Wal, WalDamage, WalFailed, WalOptions, WalStats};

pub const META_FILE: &str = "promised.meta";

/// How a data directory is run.
#[derive(Clone, Debug)]
pub struct DurableOptions {
    /// Used only when the directory is new; an existing one keeps its own.
    pub engine: EngineConfig,
    pub wal: WalOptions,
    /// Take a snapshot after this many records since the last one (0: never by count).
    pub snapshot_every_records: u64,
    /// Take a snapshot this long after the last one if anything changed (`None`: never by time).
    pub snapshot_every: Option<Duration>,
}

impl Default for DurableOptions {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            wal: WalOptions::default(),
            snapshot_every_records: 5_000_000,
            snapshot_every: Some(Duration::from_secs(600)),
        }
    }
}

/// Why a data directory could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Io {
        what: String,
        error: io::Error,
    },
    /// Damage before the tail of the log.
    Damage(WalDamage),
    /// The directory is inconsistent (a bad meta file, no usable snapshot, a gap).
    Corrupt(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { what, error } => write!(f, "{what}: {error}"),
            Self::Damage(d) => d.fmt(f),
            Self::Corrupt(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for OpenError {}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> OpenError {
    let what = what.into();
    move |error| OpenError::Io { what, error }
}

/// A write that was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurableError {
    /// The command was refused; nothing changed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Storage failed: the write may or may not survive a restart, and no write is accepted now.
    #[error(transparent)]
    Storage(#[from] WalFailed),
}

impl DurableError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Engine(e) => e.code(),
            Self::Storage(_) => ErrorCode::StorageFailed,
        }
    }
}

/// What recovery found and did, for the start-up log.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// The snapshot loaded, if any: its LSN and file.
    pub snapshot: Option<(u64, String)>,
    pub snapshot_load: Duration,
    /// Records replayed from the log after the snapshot.
    pub replayed: u64,
    pub replay: Duration,
    /// The LSN the next record gets.
    pub next_lsn: u64,
    /// Things an operator should know (a torn tail cut off, a damaged snapshot skipped).
    pub warnings: Vec<String>,
}

/// An engine with a write-ahead log and snapshots.
pub struct DurableEngine {
    engine: Arc<Engine>,
    wal: Arc<Wal>,
    storage: Arc<dyn Storage>,
    snapshot_lock: Mutex<()>,
    last_snapshot: Mutex<(u64, Instant)>,
    recovery: RecoveryReport,
    stop: Arc<(Mutex<bool>, Condvar)>,
    snapshotter: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// What `submit` did: the answer, to be sent once `ticket` is durable.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub result: Result<Outcome, EngineError>,
    pub ticket: Ticket,
}

/// The durability a caller waits for after `submit`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// Every record up to this LSN must be durable before the answer may go out.
    pub lsn: u64,
}

impl DurableEngine {
    /// Opens (or creates) a data directory: recovers the state, then starts the log writer and,
    /// if configured, the periodic snapshotter.
    pub fn open(storage: Arc<dyn Storage>, options: DurableOptions) -> Result<Arc<Self>, OpenError> {
        let config = read_or_create_meta(&*storage, &options.engine)?;
        let (mut engine, tail, mut recovery) = recover(&*storage, &config)?;
        if options.wal.fsync == FsyncPolicy::Never {
            recovery.warnings.push(
                "fsync = never: acknowledged writes are NOT durable and a power loss loses them; \
                 use this for benchmarks only"
                    .into(),
            );
        }
        let wal = Arc::new(
            Wal::open(storage.clone(), tail, options.wal.clone()).map_err(io_err(format!(
                "cannot start the write-ahead log in {}",
                storage.describe("")
            )))?,
        );
        for w in &recovery.warnings {
            tracing::warn!(target: "promised::recovery", "{w}");
        }
        tracing::info!(
            target: "promised::recovery",
            snapshot = ?recovery.snapshot.as_ref().map(|s| s.0),
            replayed = recovery.replayed,
            next_lsn = recovery.next_lsn,
            "recovered in {:.1?} (snapshot load {:.1?}, replay {:.1?})",
            recovery.snapshot_load + recovery.replay,
            recovery.snapshot_load,
            recovery.replay
        );
        engine.attach_log(wal.clone() as Arc<dyn CommandLog>);
        let this = Arc::new(Self {
            engine: Arc::new(engine),
            wal,
            storage,
            snapshot_lock: Mutex::new(()),
            last_snapshot: Mutex::new((recovery.snapshot.as_ref().map_or(0, |s| s.0), Instant::now())),
            recovery,
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            snapshotter: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        if options.snapshot_every_records > 0 || options.snapshot_every.is_some() {
            let weak = Arc::downgrade(&this);
            let stop = this.stop.clone();
            let handle = std::thread::Builder::new()
                .name("snapshotter".into())
                .spawn(move || snapshot_loop(weak, stop, options))
                .map_err(io_err("cannot start the snapshot thread"))?;
            *this.snapshotter.lock() = Some(handle);
        }
        Ok(this)
    }

    /// The engine, for queries. Writes must go through `apply` or `submit`.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    pub fn wal_stats(&self) -> WalStats {
        self.wal.stats()
    }

    /// Applies a command and returns once it is durable (the acknowledgement). A refused
    /// command's error is returned only once everything applied before it is durable too.
    pub fn apply(&self, now: Timestamp, command: &Command) -> Result<Outcome, DurableError> {
        let submitted = self.submit(now, command)?;
        self.wal.wait_durable(submitted.ticket.lsn)?;
        Ok(submitted.result?)
    }

    /// Applies a command without waiting: its answer (outcome or error) may be sent only once
    /// `ticket` is durable (`wait` or `Wal::durable`). Lets one thread keep many writes in
    /// flight. Fails at once, changing nothing, when the log has failed.
    pub fn submit(&self, now: Timestamp, command: &Command) -> Result<Submitted, WalFailed> {
        if let Some(f) = self.wal.refusal() {
            return Err(f);
        }
        let result = self.engine.apply(now, command);
        // Wait for everything applied so far, not just this record: a repeated request's first
        // answer, or an error or refusal computed from changes still in flight ("wrong hold
        // state", "stale feed"), must not get out before those changes are durable.
        Ok(Submitted {
            result,
            ticket: Ticket {
                lsn: self.engine.next_seq() - 1,
            },
        })
    }

    pub fn wait(&self, ticket: Ticket) -> Result<(), DurableError> {
        Ok(self.wal.wait_durable(ticket.lsn)?)
    }

    /// Takes a snapshot now (one at a time), then drops files it makes unnecessary.
    pub fn snapshot(&self) -> io::Result<SnapshotInfo> {
        let _one = self.snapshot_lock.lock();
        if let Some(f) = self.wal.failure() {
            return Err(io::Error::other(f));
        }
        let info = snapshot::write_snapshot_with(&self.engine, &*self.storage, |lsn| {
            self.wal.sync_to(lsn).map_err(io::Error::other)
        })?;
        *self.last_snapshot.lock() = (info.lsn, Instant::now());
        self.prune()?;
        Ok(info)
    }

    /// The LSN and age of the newest snapshot (LSN 0 if none yet).
    pub fn last_snapshot(&self) -> (u64, Duration) {
        let (lsn, at) = *self.last_snapshot.lock();
        (lsn, at.elapsed())
    }

    /// Keeps the newest two snapshots and the log segments recovery may need from the older.
    fn prune(&self) -> io::Result<()> {
        let mut snaps: Vec<u64> = self
            .storage
            .list()?
            .iter()
            .filter_map(|n| parse_snapshot_name(n))
            .collect();
        snaps.sort_unstable_by(|a, b| b.cmp(a));
        for &old in snaps.iter().skip(2) {
            self.storage.remove(&snapshot_name(old))?;
        }
        // Recovery must be able to fall back one snapshot: keep the log back to the older of the
        // two kept (back to LSN 1 while there is only one).
        if let Some(&older) = snaps.get(1) {
            self.wal.remove_segments_before(older + 1)?;
        }
        Ok(())
    }

    /// Stops the snapshotter, writes and syncs the log, and stops the writer. Idempotent.
    pub fn close(&self) -> Result<(), WalFailed> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            let (lock, cv) = &*self.stop;
            *lock.lock() = true;
            cv.notify_all();
        }
        if let Some(h) = self.snapshotter.lock().take()
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
        self.wal.close()
    }
}

impl Drop for DurableEngine {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn snapshot_loop(
    engine: std::sync::Weak<DurableEngine>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    options: DurableOptions,
) {
    loop {
        {
            let (lock, cv) = &*stop;
            let mut stopped = lock.lock();
            if *stopped {
                return;
            }
            cv.wait_for(&mut stopped, Duration::from_millis(100));
            if *stopped {
                return;
            }
        }
        let Some(this) = engine.upgrade() else { return };
        let (last_lsn, age) = this.last_snapshot();
        let now_lsn = this.engine.next_seq() - 1;
        let by_count = options.snapshot_every_records > 0
            && now_lsn.saturating_sub(last_lsn) >= options.snapshot_every_records;
        let by_time = options.snapshot_every.is_some_and(|every| age >= every) && now_lsn > last_lsn;
        if (by_count || by_time) && this.wal.failure().is_none() {
            // A failed snapshot leaves the previous ones in place; the next round tries again.
            let _ = this.snapshot();
        }
    }
}

/// Reads the directory's engine config, or writes `config` as it if the directory is new.
fn read_or_create_meta(storage: &dyn Storage, config: &EngineConfig) -> Result<EngineConfig, OpenError> {
    let names = storage
        .list()
        .map_err(io_err(format!("cannot list {}", storage.describe(""))))?;
    if names.iter().any(|n| n == META_FILE) {
        let bytes = storage
            .read(META_FILE)
            .map_err(io_err(format!("cannot read {}", storage.describe(META_FILE))))?;
        return decode_meta(&bytes).map_err(|reason| {
            OpenError::Corrupt(format!("{} is damaged: {reason}", storage.describe(META_FILE)))
        });
    }
    let has_data = names
        .iter()
        .any(|n| wal::format::parse_segment_name(n).is_some() || parse_snapshot_name(n).is_some());
    if has_data {
        return Err(OpenError::Corrupt(format!(
            "{} is missing, but the directory holds log segments or snapshots: \
             refusing to guess the engine config they were written with",
            storage.describe(META_FILE)
        )));
    }
    let tmp = format!("{META_FILE}.tmp");
    let write = || -> io::Result<()> {
        let mut f = storage.create(&tmp)?;
        f.append(encode_meta(config).as_bytes())?;
        f.sync_data()?;
        storage.rename(&tmp, META_FILE)?;
        storage.sync_dir()
    };
    write().map_err(io_err(format!("cannot create {}", storage.describe(META_FILE))))?;
    Ok(config.clone())
}

fn encode_meta(c: &EngineConfig) -> String {
    let body = format!(
        "promised data directory, format 1\nsku_shards = {}\nrequest_shards = {}\nretention_ms = {}\n\
         retained_records_max = {}\nrequest_hash_key = {:032x}\n",
        c.sku_shards, c.request_shards, c.retention_ms, c.retained_records_max, c.request_hash_key
    );
    format!("{body}crc32c = {:08x}\n", crc32c::crc32c(body.as_bytes()))
}

fn decode_meta(bytes: &[u8]) -> Result<EngineConfig, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let crc_at = text.rfind("crc32c = ").ok_or("no checksum line")?;
    let (body, crc_line) = text.split_at(crc_at);
    let crc = u32::from_str_radix(crc_line.trim_start_matches("crc32c = ").trim(), 16)
        .map_err(|_| "bad checksum line".to_string())?;
    if crc != crc32c::crc32c(body.as_bytes()) {
        return Err("checksum mismatch".into());
    }
    let mut lines = body.lines();
    if lines.next() != Some("promised data directory, format 1") {
        return Err("unknown format line".into());
    }
    let mut get = |key: &str| -> Result<String, String> {
        let line = lines.next().ok_or(format!("missing {key}"))?;
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(" = "))
            .map(str::to_string)
            .ok_or(format!("expected {key}, found {line:?}"))
    };
    let num = |s: String, key: &str| s.parse::<u64>().map_err(|_| format!("bad {key}"));
    let config = EngineConfig {
        sku_shards: num(get("sku_shards")?, "sku_shards")? as usize,
        request_shards: num(get("request_shards")?, "request_shards")? as usize,
        retention_ms: num(get("retention_ms")?, "retention_ms")?,
        retained_records_max: num(get("retained_records_max")?, "retained_records_max")? as usize,
        request_hash_key: u128::from_str_radix(&get("request_hash_key")?, 16)
            .map_err(|_| "bad request_hash_key".to_string())?,
    };
    let pow2 = |n: usize| n.is_power_of_two() && n <= 1 << 20;
    if !pow2(config.sku_shards)
        || !pow2(config.request_shards)
        || config.retained_records_max < config.request_shards
    {
        return Err(
            "shard counts must be powers of two and the retention cap at least the request shards".into(),
        );
    }
    Ok(config)
}

/// Loads the newest snapshot that checks out (falling back to older ones), then replays the log.
fn recover(
    storage: &dyn Storage,
    config: &EngineConfig,
) -> Result<(Engine, LogTail, RecoveryReport), OpenError> {
    let mut report = RecoveryReport::default();
    let names = storage
        .list()
        .map_err(io_err(format!("cannot list {}", storage.describe(""))))?;
    for tmp in names.iter().filter(|n| n.ends_with(".tmp")) {
        // A snapshot or meta file cut off by a crash before its rename, or the WAL's next
        // segment being prepared (`wal::PREPARED_SEGMENT`).
        storage
            .remove(tmp)
            .map_err(io_err(format!("cannot remove {}", storage.describe(tmp))))?;
    }
    let mut snaps: Vec<u64> = names.iter().filter_map(|n| parse_snapshot_name(n)).collect();
    snaps.sort_unstable_by(|a, b| b.cmp(a));
    let started = Instant::now();
    let mut loaded = None;
    for &lsn in &snaps {
        let name = snapshot_name(lsn);
        let bytes = storage.read(&name);
        if let Some(version) = bytes.as_deref().ok().and_then(snapshot::foreign_version) {
            return Err(OpenError::Corrupt(format!(
                "{} was written by another version of promised (snapshot format {version}; this \
                 build reads format {}): run the version that wrote it, or move the file away to \
                 recover from an older snapshot and the log",
                storage.describe(&name),
                snapshot::SNAPSHOT_VERSION
            )));
        }
        let result = bytes.map_err(|e| e.to_string()).and_then(|bytes| {
            let file = SnapshotFile::parse(&bytes).map_err(|e| e.to_string())?;
            if file.lsn != lsn {
                return Err(format!("header says LSN {}", file.lsn));
            }
            if file.config != *config {
                return Err(format!(
                    "engine config {:?} differs from {META_FILE}",
                    file.config
                ));
            }
            file.load(None).map_err(|e| e.to_string())
        });
        match result {
            Ok(engine) => {
                loaded = Some((lsn, engine));
                report.snapshot = Some((lsn, storage.describe(&name)));
                break;
            }
            Err(reason) => {
                // Set aside, so that pruning never counts it as one of the two snapshots kept
                // (the older good one and its log stay until two good snapshots exist).
                let aside = format!("{name}.damaged");
                storage
                    .rename(&name, &aside)
                    .and_then(|()| storage.sync_dir())
                    .map_err(io_err(format!("cannot set {} aside", storage.describe(&name))))?;
                report.warnings.push(format!(
                    "snapshot {} is unusable ({reason}); renamed to {} for inspection; trying an \
                     older one",
                    storage.describe(&name),
                    storage.describe(&aside)
                ));
            }
        }
    }
    report.snapshot_load = started.elapsed();
    let (from_lsn, engine) = match loaded {
        Some((lsn, engine)) => (lsn + 1, engine),
        None => (1, Engine::new(config.clone())),
    };
    let started = Instant::now();
    let (scan, replayed) = wal::replay(storage, from_lsn, &engine).map_err(OpenError::Damage)?;
    report.replayed = replayed;
    report.replay = started.elapsed();
    if scan.tail.next_lsn != engine.next_seq() {
        return Err(OpenError::Corrupt(format!(
            "the log ends before LSN {} but the state is at LSN {}: log segments are missing",
            scan.tail.next_lsn,
            engine.next_seq() - 1
        )));
    }
    if let Some(torn) = &scan.torn {
        report.warnings.push(format!(
            "cut a torn tail of {} bytes at byte {} of {} ({}): most likely a write in flight when \
             the server stopped, never acknowledged (were it media damage to records no later \
             record proves synced, the records from there on are lost)",
            torn.bytes,
            torn.offset,
            storage.describe(&torn.file),
            torn.reason
        ));
        let cut = if torn.offset == 0 {
            // A segment cut short at creation (the scan checked that it is the one the log
            // continues in): `Wal::open` writes a new segment of the same name over it
            // (removing it first would leave a window in which a crash loses the only segment
            // after a snapshot).
            debug_assert_eq!(torn.file, wal::segment_name(scan.tail.next_lsn));
            Ok(())
        } else {
            storage.truncate(&torn.file, torn.offset)
        };
        cut.map_err(io_err(format!("cannot cut {}", storage.describe(&torn.file))))?;
    }
    report.next_lsn = scan.tail.next_lsn;
    Ok((engine, scan.tail, report))
}
