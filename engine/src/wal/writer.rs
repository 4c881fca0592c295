//! The group commit: committer threads turn the commands of many requests into one write and
//! one `fdatasync`, then release every request whose record that sync made durable.
//!
//! Request threads encode their command into a shared queue while they still hold the engine's
//! locks (`CommandLog::append`), which is what makes the log order the apply order. A committer
//! takes the writer (one at a time), swaps the queue out, puts the records in LSN order (a
//! thread may be preempted between taking its number and queueing), frames them into the hash
//! chain and writes them; then it lets go of the writer and syncs. While it syncs, a second
//! committer can write the next batch and start its own sync, so a record that arrives during a
//! sync waits for one sync, not for the rest of that one and then its own. Syncs may finish in
//! any order; a batch is acknowledged only once its sync and every earlier batch's have
//! returned `Ok` (`Commits`), so one failed sync fails every later batch too, even one whose own
//! sync returned first. The slower the disk, the larger the batches: throughput follows the
//! requests, not the fsync rate.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::format::{
    RecordPlace, SEGMENT_HEADER_LEN, SegmentHeader, frame_record, parse_segment_name, segment_name,
};
use crate::codec;
use crate::command::Command;
use crate::ids::Timestamp;
use crate::ledger::CommandLog;
use crate::storage::{FileSync, Storage, StorageFile};

/// When the writer syncs, and so when a write is acknowledged.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Sync every batch; acknowledge only synced records. The default.
    Always,
    /// Acknowledge once written; sync at most this often. A power loss loses up to this much of
    /// acknowledged writes.
    Interval(Duration),
    /// Never sync. For benchmarks only: a power loss loses whatever the OS had not written.
    Never,
}

#[derive(Clone, Debug)]
pub struct WalOptions {
    pub fsync: FsyncPolicy,
    /// A new segment starts once the current one reaches this size.
    pub segment_bytes: u64,
    /// Write into segments zero-filled ahead of time (where the storage offers it), so that a
    /// sync has no new file size to record: one more file of `segment_bytes` on disk.
    pub preallocate: bool,
    /// Syncs that may be in flight at once under `FsyncPolicy::Always` (at least 1): with 2, one
    /// batch is written and synced while the last one's sync runs.
    pub concurrent_syncs: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            preallocate: true,
            concurrent_syncs: 2,
        }
    }
}

/// The next segment, zero-filled by a helper thread while the current one fills; renamed to its
/// segment name when the log moves on. A leftover is removed at recovery with the other `.tmp`.
pub const PREPARED_SEGMENT: &str = "wal-next.tmp";

/// The WAL can no longer make writes durable. Sticky: every later write fails too.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the write-ahead log failed and accepts no more writes: {0}")]
pub struct WalFailed(pub String);

/// Where the log ends: the writer continues from here.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LogTail {
    /// The LSN the next record gets.
    pub next_lsn: u64,
    /// The CRC of the last record (the chain value).
    pub prev_crc: u32,
}

/// Group-commit counters since start.
#[derive(Clone, Debug, Default)]
pub struct WalStats {
    pub records: u64,
    pub bytes: u64,
    pub syncs: u64,
    pub batches: u64,
    /// `batch_sizes[i]`: batches of `2^(i-1) < records <= 2^i` records (the last slot: more).
    pub batch_sizes: [u64; 24],
    pub sync_nanos: u64,
    /// `sync_micros[i]`: syncs that took `2^(i-1) < us <= 2^i` microseconds (the last: more).
    pub sync_micros: [u64; 24],
    /// Segments started on a file zero-filled ahead (`WalOptions::preallocate`).
    pub segments_prepared: u64,
}

impl WalStats {
    fn record_sync(&mut self, took: Duration) {
        self.syncs += 1;
        self.sync_nanos += took.as_nanos() as u64;
        let micros = took.as_micros().max(1) as u64;
        self.sync_micros[((64 - (micros - 1).leading_zeros()) as usize).min(23)] += 1;
    }

    /// The counts between `earlier` and `self`.
    pub fn since(&self, earlier: &WalStats) -> WalStats {
        let mut batch_sizes = self.batch_sizes;
        for (b, e) in batch_sizes.iter_mut().zip(&earlier.batch_sizes) {
            *b -= e;
        }
        WalStats {
            records: self.records - earlier.records,
            bytes: self.bytes - earlier.bytes,
            syncs: self.syncs - earlier.syncs,
            batches: self.batches - earlier.batches,
            batch_sizes,
            sync_nanos: self.sync_nanos - earlier.sync_nanos,
            sync_micros: std::array::from_fn(|i| self.sync_micros[i] - earlier.sync_micros[i]),
            segments_prepared: self.segments_prepared - earlier.segments_prepared,
        }
    }

    pub fn mean_batch(&self) -> f64 {
        self.records as f64 / self.batches.max(1) as f64
    }
}

#[derive(Copy, Clone)]
struct Entry {
    lsn: u64,
    time: u64,
    start: usize,
    len: u32,
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    bytes: Vec<u8>,
    /// The committer holding the writer waits for records.
    writer_waiting: bool,
    /// While that committer gathers a batch: wake it once this many records are queued.
    gather_until: usize,
    /// Someone waits for a sync (a snapshot under a relaxed fsync policy).
    sync_wanted: bool,
    stop: bool,
}

struct Shared {
    storage: Arc<dyn Storage>,
    queue: Mutex<Queue>,
    work: Condvar,
    /// Syncs in flight, in the order their batches were written.
    commits: Mutex<Commits>,
    /// Signalled when a sync in flight returns.
    commit_returned: Condvar,
    /// Committer threads still running: the log closes when the last one stops.
    live_committers: AtomicUsize,
    /// Moving average of `fdatasync` time (capped at 2 ms per sample), for the gathering delay.
    sync_ewma_nanos: AtomicU64,
    /// Every record up to here is acknowledged (durable under the policy).
    durable: AtomicU64,
    /// Every record up to here is synced to the media (equals `durable` under `Always`).
    synced: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    /// The last committer has stopped (closed, failed or crashed): nothing queued now is ever
    /// written.
    closed: AtomicBool,
    waiters: Mutex<Vec<(u64, Waker)>>,
    blocked: Condvar,
    blocked_lock: Mutex<()>,
    stats: Mutex<WalStats>,
    /// Segments on disk by first LSN, oldest first; the last is being written.
    segments: Mutex<Vec<u64>>,
}

/// Batches written and not yet acknowledged under `FsyncPolicy::Always`, oldest first: each is
/// the last LSN of its batch and whether its sync returned `Ok` yet. Batches are acknowledged
/// in this order only, so the durable LSN stays a prefix of the log and no batch is
/// acknowledged before every earlier batch's sync has answered: one failed sync fails every
/// batch after it, whichever sync returns first. (Each committer syncs through a file
/// description of its own, see `StorageFile::syncer`, so that an error is not reported to one
/// sync and hidden from another.)
#[derive(Default)]
struct Commits {
    /// The ticket of `in_flight[0]`.
    first_ticket: u64,
    in_flight: VecDeque<(u64, bool)>,
    /// A sync failed: nothing is acknowledged any more.
    failed: bool,
}

impl Commits {
    /// Registers a written batch ending at `last_lsn`; returns its ticket.
    fn issue(&mut self, last_lsn: u64) -> u64 {
        self.in_flight.push_back((last_lsn, false));
        self.first_ticket + self.in_flight.len() as u64 - 1
    }

    /// Records that the sync of `ticket` returned. Returns the LSN every record up to which is
    /// now durable, if that moved, or the error that stops the log (then no batch in flight is
    /// ever acknowledged, earlier ones included).
    fn finish(&mut self, ticket: u64, result: io::Result<()>) -> io::Result<Option<u64>> {
        if self.failed {
            return Ok(None);
        }
        if let Err(e) = result {
            // At once, even with earlier syncs in flight: nothing is written after it.
            self.failed = true;
            self.in_flight.clear();
            return Err(e);
        }
        let at = (ticket - self.first_ticket) as usize;
        self.in_flight[at].1 = true;
        let mut durable = None;
        while let Some(&(lsn, true)) = self.in_flight.front() {
            self.in_flight.pop_front();
            self.first_ticket += 1;
            durable = Some(lsn);
        }
        Ok(durable)
    }
}

/// The write-ahead log, open for appending. Hand it to the engine as its `CommandLog`.
pub struct Wal {
    shared: Arc<Shared>,
    committers: Mutex<Vec<JoinHandle<()>>>,
}

impl Wal {
    /// Starts a new segment at `tail` and the committer threads. Older segments (from recovery)
    /// are kept and listed for removal after snapshots.
    pub fn open(storage: Arc<dyn Storage>, tail: LogTail, options: WalOptions) -> io::Result<Self> {
        let mut segments: Vec<u64> = storage
            .list()?
            .iter()
            .filter_map(|n| parse_segment_name(n))
            .filter(|&first| first < tail.next_lsn)
            .collect();
        segments.sort_unstable();
        // Records recovered from the page cache (after a kill, not a power cut) may not be on
        // the media yet; the records written next claim them synced (see `RecordPlace`).
        if let Some(&last) = segments.last() {
            storage.open_append(&segment_name(last))?.sync_data()?;
        }
        let file = start_segment(&*storage, tail, false)?;
        segments.push(tail.next_lsn);
        let committers = match options.fsync {
            FsyncPolicy::Always => options.concurrent_syncs.max(1),
            // A relaxed policy syncs inline, rarely: one committer.
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => 1,
        };
        let shared = Arc::new(Shared {
            storage: storage.clone(),
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            commits: Mutex::new(Commits::default()),
            commit_returned: Condvar::new(),
            live_committers: AtomicUsize::new(committers),
            sync_ewma_nanos: AtomicU64::new(0),
            durable: AtomicU64::new(tail.next_lsn - 1),
            synced: AtomicU64::new(tail.next_lsn - 1),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            blocked: Condvar::new(),
            blocked_lock: Mutex::new(()),
            stats: Mutex::new(WalStats::default()),
            segments: Mutex::new(segments),
        });
        let mut writer = Writer {
            shared: shared.clone(),
            syncers: syncers(&*file, options.fsync, committers)?,
            options,
            file,
            segment_len: SEGMENT_HEADER_LEN as u64,
            preallocated: false,
            prepared: None,
            ready: false,
            prepare_tried: false,
            tail,
            held: Vec::new(),
            held_bytes: Vec::new(),
            out: Vec::with_capacity(1 << 20),
            last_sync: Instant::now(),
            unsynced: false,
            last_batch: 0,
        };
        writer.prepare_next();
        // A std mutex, not parking_lot's: a committer holds the writer while it waits for
        // records, so the other one would spin on it with `sched_yield` (19k calls/s at 50k
        // holds/s, three quarters of the server's) before parking anyway.
        let writer = Arc::new(std::sync::Mutex::new(writer));
        let wal = Self {
            shared: shared.clone(),
            committers: Mutex::new(Vec::new()),
        };
        for i in 0..committers {
            let (writer, shared) = (writer.clone(), shared.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("wal-commit-{i}"))
                .spawn(move || commit_loop(writer, shared, i));
            match spawned {
                Ok(handle) => wal.committers.lock().push(handle),
                Err(e) => {
                    // The ones that run stop once `wal` is dropped; those never started count
                    // as stopped.
                    wal.shared
                        .live_committers
                        .fetch_sub(committers - i, Ordering::AcqRel);
                    return Err(e);
                }
            }
        }
        Ok(wal)
    }

    /// Every record up to this LSN is acknowledged.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// The failure that stopped the log, if it stopped.
    pub fn failure(&self) -> Option<WalFailed> {
        if self.shared.failed.load(Ordering::Acquire) {
            Some(WalFailed(self.shared.failure.lock().clone().unwrap_or_default()))
        } else {
            None
        }
    }

    /// Why the log takes no more writes, if it does not: it failed, or it was closed.
    pub fn refusal(&self) -> Option<WalFailed> {
        self.failure().or_else(|| {
            self.shared
                .closed
                .load(Ordering::Acquire)
                .then(|| WalFailed("the log is closed (the server is shutting down)".into()))
        })
    }

    /// Blocks until record `lsn` is acknowledged, or the log failed or closed first.
    pub fn wait_durable(&self, lsn: u64) -> Result<(), WalFailed> {
        if self.durable_lsn() >= lsn {
            return Ok(());
        }
        let mut guard = self.shared.blocked_lock.lock();
        loop {
            if self.durable_lsn() >= lsn {
                return Ok(());
            }
            if let Some(f) = self.refusal() {
                return Err(f);
            }
            self.shared.blocked.wait(&mut guard);
        }
    }

    /// Blocks until every record up to `lsn` is synced to the media, asking the writer for a sync
    /// if its policy would not do one soon. Snapshots call this before they count, so that a
    /// snapshot is never ahead of the log.
    pub fn sync_to(&self, lsn: u64) -> Result<(), WalFailed> {
        let mut guard = self.shared.blocked_lock.lock();
        loop {
            if self.shared.synced.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            if let Some(f) = self.refusal() {
                return Err(f);
            }
            {
                let mut q = self.shared.queue.lock();
                q.sync_wanted = true;
                q.writer_waiting = false;
            }
            self.shared.work.notify_one();
            self.shared
                .blocked
                .wait_for(&mut guard, Duration::from_millis(10));
        }
    }

    /// A future that resolves when record `lsn` is acknowledged (for async servers).
    pub fn durable(&self, lsn: u64) -> DurableAck {
        DurableAck {
            shared: self.shared.clone(),
            lsn,
        }
    }

    pub fn stats(&self) -> WalStats {
        self.shared.stats.lock().clone()
    }

    /// Removes segments whose records all precede `lsn` (they are covered by a snapshot).
    /// Returns how many went.
    pub fn remove_segments_before(&self, lsn: u64) -> io::Result<usize> {
        let mut segments = self.shared.segments.lock();
        // Segment i holds LSNs [first_i, first_{i+1}); it can go if first_{i+1} <= lsn.
        let due = segments.windows(2).take_while(|w| w[1] <= lsn).count();
        let mut removed = 0;
        while removed < due {
            match self.shared.storage.remove(&segment_name(segments[0])) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // What went stays gone from the list; the rest is tried again next time.
                    if removed > 0 {
                        let _ = self.shared.storage.sync_dir();
                    }
                    return Err(e);
                }
            }
            segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            self.shared.storage.sync_dir()?;
        }
        Ok(removed)
    }

    /// Writes and syncs everything queued, then stops the committers. Idempotent.
    pub fn close(&self) -> Result<(), WalFailed> {
        self.shared.queue.lock().stop = true;
        self.shared.work.notify_all();
        let committers = std::mem::take(&mut *self.committers.lock());
        for h in committers {
            // A committer that panicked has already marked the log failed (`ExitGuard`).
            let _ = h.join();
        }
        match self.failure() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl CommandLog for Wal {
    fn append(&self, seq: u64, now: Timestamp, command: &Command) {
        let mut q = self.shared.queue.lock();
        let start = q.bytes.len();
        codec::encode(command, &mut q.bytes);
        let len = q.bytes.len() - start;
        q.entries.push(Entry {
            lsn: seq,
            time: now.0,
            start,
            len: len as u32,
        });
        if q.writer_waiting && q.entries.len() >= q.gather_until {
            q.writer_waiting = false;
            self.shared.work.notify_one();
        }
    }
}

/// Resolves when its record is acknowledged; to `Err` if the log fails first.
pub struct DurableAck {
    shared: Arc<Shared>,
    lsn: u64,
}

impl Future for DurableAck {
    type Output = Result<(), WalFailed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let check = |s: &Shared| {
            if s.durable.load(Ordering::Acquire) >= self.lsn {
                Some(Ok(()))
            } else if s.failed.load(Ordering::Acquire) {
                Some(Err(WalFailed(s.failure.lock().clone().unwrap_or_default())))
            } else if s.closed.load(Ordering::Acquire) {
                Some(Err(WalFailed(
                    "the log is closed (the server is shutting down)".into(),
                )))
            } else {
                None
            }
        };
        if let Some(r) = check(&self.shared) {
            return Poll::Ready(r);
        }
        self.shared.waiters.lock().push((self.lsn, cx.waker().clone()));
        // The writer may have published between the check and the registration.
        match check(&self.shared) {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

/// Starts the segment whose first record is `tail.next_lsn`: the prepared, zero-filled file if
/// `prepared`, else a new empty one. Its header is synced, and its name, before any record.
fn start_segment(storage: &dyn Storage, tail: LogTail, prepared: bool) -> io::Result<Box<dyn StorageFile>> {
    let name = segment_name(tail.next_lsn);
    let mut file = if prepared {
        storage.rename(PREPARED_SEGMENT, &name)?;
        storage.open_overwrite(&name)?
    } else {
        storage.create(&name)?
    };
    let header = SegmentHeader {
        first_lsn: tail.next_lsn,
        prev_crc: tail.prev_crc,
    };
    file.append(&header.encode())?;
    file.sync_data()?;
    storage.sync_dir()?;
    Ok(file)
}

/// The sync handles of a new segment, one per committer under `FsyncPolicy::Always` (each its
/// own file description, see `StorageFile::syncer`), opened before any record is written to it.
fn syncers(
    file: &dyn StorageFile,
    fsync: FsyncPolicy,
    committers: usize,
) -> io::Result<Vec<Arc<dyn FileSync>>> {
    match fsync {
        FsyncPolicy::Always => (0..committers).map(|_| file.syncer()).collect(),
        FsyncPolicy::Interval(_) | FsyncPolicy::Never => Ok(Vec::new()),
    }
}

/// Marks the log closed when the last committer stops, however it stops, and failed when one
/// panics; then wakes every waiter, so that no request waits for a committer that is gone.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let panicked = std::thread::panicking();
        if panicked {
            tracing::error!(target: "promised::wal", "a WAL committer crashed; writes are refused from now on");
            self.0.fail_with("a WAL committer crashed".into());
        }
        if self.0.live_committers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.store(true, Ordering::Release);
            self.0.wake_all(|_| true);
        }
    }
}

/// What a committer does once it has written a batch and let go of the writer.
enum Step {
    /// Sync the batch's file, then finish its ticket.
    Sync {
        file: Arc<dyn FileSync>,
        ticket: u64,
    },
    /// Nothing to sync: look for the next batch.
    Again,
    Stop,
}

/// Committer `me`: write a batch holding the writer, sync it without (on its own handle), repeat.
fn commit_loop(writer: Arc<std::sync::Mutex<Writer>>, shared: Arc<Shared>, me: usize) {
    let _exit = ExitGuard(shared.clone());
    let mut entries = Vec::new();
    let mut bytes = Vec::new();
    loop {
        let step = {
            let Ok(mut w) = writer.lock() else {
                // Another committer panicked while writing: its batch may be half framed.
                shared.fail(io::Error::other("a log committer panicked"));
                return;
            };
            if shared.failed.load(Ordering::Acquire) {
                return;
            }
            w.next_batch(&mut entries, &mut bytes, me)
        };
        match step {
            Ok(Step::Sync { file, ticket }) => {
                let started = Instant::now();
                let result = file.sync_data();
                shared.sync_returned(ticket, result, started.elapsed());
            }
            Ok(Step::Again) => {}
            Ok(Step::Stop) => return,
            Err(e) => {
                shared.fail(e);
                return;
            }
        }
    }
}

impl Shared {
    /// The sync of batch `ticket` returned after `took`: acknowledges what is now durable.
    fn sync_returned(&self, ticket: u64, result: io::Result<()>, took: Duration) {
        self.stats.lock().record_sync(took);
        let took = took.as_nanos().min(2_000_000) as u64;
        let ewma = self.sync_ewma_nanos.load(Ordering::Relaxed);
        self.sync_ewma_nanos
            .store((ewma * 7 + took) / 8, Ordering::Relaxed);
        let finished = self.commits.lock().finish(ticket, result);
        self.commit_returned.notify_all();
        match finished {
            Ok(Some(lsn)) => {
                self.synced.fetch_max(lsn, Ordering::AcqRel);
                self.publish(lsn);
            }
            Ok(None) => {}
            Err(e) => self.fail(e),
        }
    }

    /// Waits until no sync is in flight (each batch before now is synced or failed).
    fn drain_commits(&self) -> io::Result<()> {
        let mut commits = self.commits.lock();
        while !commits.in_flight.is_empty() && !commits.failed {
            self.commit_returned.wait(&mut commits);
        }
        if commits.failed {
            return Err(io::Error::other("an earlier sync of the log failed"));
        }
        Ok(())
    }

    fn publish(&self, lsn: u64) {
        self.durable.fetch_max(lsn, Ordering::AcqRel);
        self.wake_all(|w| w.0 <= lsn);
    }

    fn wake_all(&self, due: impl Fn(&(u64, Waker)) -> bool) {
        let ready: Vec<_> = {
            let mut waiters = self.waiters.lock();
            let (ready, pending): (Vec<_>, Vec<_>) = waiters.drain(..).partition(|w| due(w));
            *waiters = pending;
            ready
        };
        ready.into_iter().for_each(|(_, w)| w.wake());
        let _guard = self.blocked_lock.lock();
        self.blocked.notify_all();
    }

    fn fail(&self, error: io::Error) {
        let message = format!(
            "{} while writing {} (records after LSN {} are not acknowledged; restart to recover \
             from what is on disk)",
            error,
            self.storage
                .describe(&segment_name(*self.segments.lock().last().expect("a segment"))),
            self.durable.load(Ordering::Acquire)
        );
        tracing::error!(
            target: "promised::wal",
            "STORAGE FAILURE: {message}; writes are refused from now on, reads go on"
        );
        self.fail_with(message);
    }

    /// Stops the log; the first failure's message is the one kept.
    fn fail_with(&self, message: String) {
        {
            let mut failure = self.failure.lock();
            if failure.is_none() {
                *failure = Some(message);
            }
        }
        self.failed.store(true, Ordering::Release);
        self.commits.lock().failed = true;
        self.commit_returned.notify_all();
        // The committer waiting for records stops instead of writing more.
        drop(self.queue.lock());
        self.work.notify_all();
        self.wake_all(|_| true);
    }
}

struct Writer {
    shared: Arc<Shared>,
    options: WalOptions,
    file: Box<dyn StorageFile>,
    /// Sync `file` outside the writer's lock: committer `i` uses `syncers[i]` (`Always` only).
    syncers: Vec<Arc<dyn FileSync>>,
    segment_len: u64,
    tail: LogTail,
    /// Records that arrived ahead of a missing lower LSN, waiting for it.
    held: Vec<Entry>,
    held_bytes: Vec<u8>,
    out: Vec<u8>,
    last_sync: Instant,
    unsynced: bool,
    /// Records in the last batch written.
    last_batch: usize,
    /// Whether the current segment was zero-filled ahead (see `PREPARED_SEGMENT`).
    preallocated: bool,
    /// The helper thread zero-filling the next segment, until its result is read.
    prepared: Option<JoinHandle<io::Result<()>>>,
    /// A prepared segment is ready to be renamed into place.
    ready: bool,
    /// Preparing was tried for the segment in use (once per segment, so that a failing helper
    /// is not started again after every batch).
    prepare_tried: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // No thread of the log outlives it.
        if let Some(helper) = self.prepared.take() {
            let _ = helper.join();
        }
    }
}

impl Writer {
    /// Waits for records (or a stop, or a wanted sync), then writes them as one batch. `entries`
    /// and `bytes` are buffers swapped with the queue's, returned empty.
    fn next_batch(&mut self, entries: &mut Vec<Entry>, bytes: &mut Vec<u8>, me: usize) -> io::Result<Step> {
        let shared = self.shared.clone();
        let failed = || shared.failed.load(Ordering::Acquire);
        let (stop, sync_wanted) = {
            let mut q = shared.queue.lock();
            while q.entries.is_empty() && !q.stop && !q.sync_wanted && !failed() {
                q.writer_waiting = true;
                match self.options.fsync {
                    FsyncPolicy::Interval(d) if self.unsynced => {
                        let left = d.saturating_sub(self.last_sync.elapsed());
                        if self.shared.work.wait_for(&mut q, left).timed_out() {
                            break;
                        }
                    }
                    _ => self.shared.work.wait(&mut q),
                }
            }
            q.writer_waiting = false;
            if failed() {
                // Another committer's sync failed: nothing more is written.
                return Ok(Step::Stop);
            }
            self.gather(&mut q);
            let sync_wanted = std::mem::take(&mut q.sync_wanted);
            std::mem::swap(&mut q.entries, entries);
            std::mem::swap(&mut q.bytes, bytes);
            (q.stop && entries.is_empty(), sync_wanted)
        };
        let written = self.write_batch(entries, bytes);
        entries.clear();
        bytes.clear();
        let ticket = written?;
        // Only a relaxed policy leaves records unsynced; under `Always` the ticket is synced.
        if (sync_wanted || stop) && self.unsynced {
            self.sync()?;
        }
        Ok(match ticket {
            Some(ticket) => Step::Sync {
                file: self.syncers[me].clone(),
                ticket,
            },
            None if stop => Step::Stop,
            None => Step::Again,
        })
    }

    /// Group-commit delay: when fewer records wait than the last batch carried, the writers the
    /// last sync released are still on their way back (each must be scheduled and apply its
    /// next command). Waiting for them a fraction of an fsync lets one sync carry them all,
    /// instead of one sync for the first few and another for the rest. With one writer the last
    /// batch was one record, so nobody ever waits.
    fn gather(&self, q: &mut parking_lot::MutexGuard<'_, Queue>) {
        if self.options.fsync != FsyncPolicy::Always || q.stop || q.entries.len() >= self.last_batch {
            return;
        }
        let ewma = self.shared.sync_ewma_nanos.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_nanos(ewma / 2);
        q.gather_until = self.last_batch;
        while q.entries.len() < q.gather_until && !q.stop && !self.shared.failed.load(Ordering::Acquire) {
            q.writer_waiting = true;
            if self.shared.work.wait_until(q, deadline).timed_out() {
                break;
            }
        }
        q.writer_waiting = false;
        q.gather_until = 0;
    }

    /// Frames and writes a batch. Under `FsyncPolicy::Always` returns its ticket: the caller
    /// syncs it; a relaxed policy acknowledges it here.
    fn write_batch(&mut self, entries: &[Entry], bytes: &[u8]) -> io::Result<Option<u64>> {
        // Order: usually already sorted and contiguous; otherwise merge with held records.
        let in_order = self.held.is_empty()
            && entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.lsn == self.tail.next_lsn + i as u64);
        let first = self.tail.next_lsn;
        let synced = self.shared.synced.load(Ordering::Acquire);
        self.out.clear();
        if in_order {
            for e in entries {
                self.frame(e.lsn, e.time, synced, &bytes[e.start..][..e.len as usize]);
            }
        } else {
            self.frame_out_of_order(entries, bytes, synced);
        }
        let n = self.tail.next_lsn - first;
        if n == 0 {
            self.maybe_interval_sync()?;
            return Ok(None);
        }
        self.last_batch = n as usize;
        // A segment that was not prepared (the first after a start) gives way to a prepared
        // one as soon as it is ready and holds a record (an empty one would share its name).
        if self.segment_len >= self.options.segment_bytes
            || (!self.preallocated && self.segment_len > SEGMENT_HEADER_LEN as u64 && self.poll_prepared())
        {
            self.rotate(first)?;
        }
        self.file.append(&self.out)?;
        self.segment_len += self.out.len() as u64;
        // The next segment is zero-filled once this one is half full, not at rotation: its
        // pages are still in the page cache when the log writes over them (a page that left it
        // must be read back from the disk before a partial write), and a quiet log does not keep
        // a second segment's worth of zeros for hours.
        if self.segment_len >= self.options.segment_bytes / 2 {
            self.prepare_next();
        }
        {
            let mut s = self.shared.stats.lock();
            s.records += n;
            s.bytes += self.out.len() as u64;
            s.batches += 1;
            s.batch_sizes[((64 - (n - 1).leading_zeros()) as usize).min(23)] += 1;
        }
        let last = self.tail.next_lsn - 1;
        if self.options.fsync == FsyncPolicy::Always {
            return Ok(Some(self.shared.commits.lock().issue(last)));
        }
        self.unsynced = true;
        self.maybe_interval_sync()?;
        self.shared.publish(last);
        Ok(None)
    }

    fn frame(&mut self, lsn: u64, time: u64, synced_lsn: u64, body: &[u8]) {
        let place = RecordPlace {
            prev_crc: self.tail.prev_crc,
            lsn,
            synced_lsn,
        };
        self.tail.prev_crc = frame_record(&mut self.out, place, time, body);
        self.tail.next_lsn = lsn + 1;
    }

    fn frame_out_of_order(&mut self, entries: &[Entry], bytes: &[u8], synced: u64) {
        let mut all: Vec<(Entry, bool)> = self.held.drain(..).map(|e| (e, true)).collect();
        all.extend(entries.iter().map(|&e| (e, false)));
        all.sort_unstable_by_key(|(e, _)| e.lsn);
        let held_bytes = std::mem::take(&mut self.held_bytes);
        for (e, was_held) in all {
            let src = if was_held { &held_bytes[..] } else { bytes };
            let body = &src[e.start..][..e.len as usize];
            if e.lsn == self.tail.next_lsn {
                self.frame(e.lsn, e.time, synced, body);
            } else {
                let start = self.held_bytes.len();
                self.held_bytes.extend_from_slice(body);
                self.held.push(Entry { start, ..e });
            }
        }
    }

    fn maybe_interval_sync(&mut self) -> io::Result<()> {
        if let FsyncPolicy::Interval(d) = self.options.fsync
            && self.unsynced
            && self.last_sync.elapsed() >= d
        {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let t = Instant::now();
        self.file.sync_data()?;
        self.last_sync = Instant::now();
        self.unsynced = false;
        {
            let mut s = self.shared.stats.lock();
            s.record_sync(t.elapsed());
        }
        self.shared
            .synced
            .store(self.tail.next_lsn - 1, Ordering::Release);
        self.shared.wake_all(|_| false);
        Ok(())
    }

    fn rotate(&mut self, first_lsn: u64) -> io::Result<()> {
        if self.options.fsync == FsyncPolicy::Always {
            // A segment is whole on the media before the next one holds a record: recovery
            // cuts a torn tail in the last segment only.
            self.shared.drain_commits()?;
        } else {
            self.file.sync_data()?;
            // Everything before this batch is in the old segment, now synced; the batch itself
            // was framed before this sync and claims no more.
            self.shared.synced.fetch_max(first_lsn - 1, Ordering::Release);
            self.shared.wake_all(|_| false);
        }
        let tail = LogTail {
            next_lsn: first_lsn,
            prev_crc: self.chain_before(first_lsn),
        };
        let prepared = self.poll_prepared();
        self.ready = false;
        self.file = start_segment(&*self.shared.storage, tail, prepared)?;
        self.syncers = syncers(&*self.file, self.options.fsync, self.syncers.len())?;
        self.preallocated = prepared;
        if prepared {
            self.shared.stats.lock().segments_prepared += 1;
        }
        self.segment_len = SEGMENT_HEADER_LEN as u64;
        self.shared.segments.lock().push(first_lsn);
        self.prepare_tried = false;
        Ok(())
    }

    /// Starts zero-filling the next segment on a helper thread, unless one is at work already, a
    /// prepared file waits, or it was tried for this segment already.
    fn prepare_next(&mut self) {
        if !self.options.preallocate || self.prepared.is_some() || self.ready || self.prepare_tried {
            return;
        }
        self.prepare_tried = true;
        let storage = self.shared.storage.clone();
        let len = self.options.segment_bytes;
        let helper = std::thread::Builder::new()
            .name("wal-prepare".into())
            .spawn(move || storage.create_zeroed(PREPARED_SEGMENT, len));
        match helper {
            Ok(helper) => self.prepared = Some(helper),
            Err(e) => tracing::warn!(target: "promised::wal", "cannot start the segment preparer: {e}"),
        }
    }

    /// Whether a prepared segment is ready to be renamed into place (never waits for one).
    fn poll_prepared(&mut self) -> bool {
        if self.ready || !self.prepared.as_ref().is_some_and(|h| h.is_finished()) {
            return self.ready;
        }
        self.ready = match self.prepared.take().expect("checked").join() {
            Ok(Ok(())) => true,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Unsupported => {
                self.options.preallocate = false;
                false
            }
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                ) =>
            {
                // Another full segment's worth of zeros would take the room the log needs.
                tracing::warn!(
                    target: "promised::wal",
                    "cannot prepare the next segment ({e}); appending to new segments from now on"
                );
                self.options.preallocate = false;
                false
            }
            Ok(Err(e)) => {
                // Appended segments work as well, only with slower syncs; preparing is tried
                // again once the next segment is half full.
                tracing::warn!(
                    target: "promised::wal",
                    "cannot prepare the next segment ({e}); appending to a new one instead"
                );
                false
            }
            Err(_) => {
                tracing::warn!(target: "promised::wal", "the segment preparer panicked; appending to a new one instead");
                false
            }
        };
        self.ready
    }

    /// The chain value before the first record in `out` (the batch being written).
    fn chain_before(&self, first_lsn: u64) -> u32 {
        debug_assert!(first_lsn < self.tail.next_lsn);
        u32::from_le_bytes(self.out[8..12].try_into().expect("a framed record"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    #[test]
    fn a_batch_is_acknowledged_once_every_earlier_sync_returned() {
        let mut c = Commits::default();
        let (a, b, d) = (c.issue(10), c.issue(20), c.issue(30));
        assert_eq!(
            c.finish(b, Ok(())).unwrap(),
            None,
            "the batch before it is not synced yet"
        );
        assert_eq!(c.finish(a, Ok(())).unwrap(), Some(20), "both, at once");
        let e = c.issue(40);
        assert_eq!(c.finish(e, Ok(())).unwrap(), None);
        assert_eq!(c.finish(d, Ok(())).unwrap(), Some(40));
        assert!(c.in_flight.is_empty());
    }

    #[test]
    fn a_failed_sync_fails_the_later_batches_whose_sync_returned_first() {
        let mut c = Commits::default();
        let first = c.issue(5);
        assert_eq!(c.finish(first, Ok(())).unwrap(), Some(5));
        let (a, b) = (c.issue(10), c.issue(20));
        assert_eq!(c.finish(b, Ok(())).unwrap(), None);
        assert!(c.finish(a, Err(io::Error::other("EIO"))).is_err());
        let late = c.issue(30);
        assert_eq!(
            c.finish(late, Ok(())).unwrap(),
            None,
            "nothing is acknowledged after a failure"
        );
    }

    #[test]
    fn a_failed_later_sync_stops_the_log_before_the_earlier_one_returns() {
        let mut c = Commits::default();
        let (a, b) = (c.issue(10), c.issue(20));
        assert!(c.finish(b, Err(io::Error::other("EIO"))).is_err());
        assert_eq!(
            c.finish(a, Ok(())).unwrap(),
            None,
            "not acknowledged once the log failed"
        );
    }

    /// Syncs that block until the test says how each one ends (once `armed`), numbered in the
    /// order they were called.
    #[derive(Default)]
    struct Gate {
        state: std::sync::Mutex<GateState>,
        changed: std::sync::Condvar,
    }

    #[derive(Default)]
    struct GateState {
        armed: bool,
        called: usize,
        outcomes: std::collections::HashMap<usize, Option<io::ErrorKind>>,
        returned: usize,
    }

    impl Gate {
        fn wait_until(&self, done: impl Fn(&GateState) -> bool) {
            let mut st = self.state.lock().unwrap();
            while !done(&st) {
                st = self.changed.wait(st).unwrap();
            }
        }
        fn end(&self, call: usize, error: Option<io::ErrorKind>) {
            self.state.lock().unwrap().outcomes.insert(call, error);
            self.changed.notify_all();
        }
    }

    struct GatedSync {
        inner: Arc<dyn FileSync>,
        gate: Arc<Gate>,
    }

    impl FileSync for GatedSync {
        fn sync_data(&self) -> io::Result<()> {
            let mut st = self.gate.state.lock().unwrap();
            if !st.armed {
                return self.inner.sync_data();
            }
            let call = st.called;
            st.called += 1;
            self.gate.changed.notify_all();
            while !st.outcomes.contains_key(&call) {
                st = self.gate.changed.wait(st).unwrap();
            }
            let result = match st.outcomes[&call] {
                None => self.inner.sync_data(),
                Some(kind) => Err(kind.into()),
            };
            st.returned += 1;
            self.gate.changed.notify_all();
            result
        }
    }

    struct GatedFile {
        inner: Box<dyn StorageFile>,
        gate: Arc<Gate>,
    }

    impl StorageFile for GatedFile {
        fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.inner.append(bytes)
        }
        fn sync_data(&mut self) -> io::Result<()> {
            self.syncer()?.sync_data()
        }
        fn syncer(&self) -> io::Result<Arc<dyn FileSync>> {
            Ok(Arc::new(GatedSync {
                inner: self.inner.syncer()?,
                gate: self.gate.clone(),
            }))
        }
    }

    struct GatedStorage {
        inner: SimStorage,
        gate: Arc<Gate>,
    }

    impl Storage for GatedStorage {
        fn list(&self) -> io::Result<Vec<String>> {
            self.inner.list()
        }
        fn read(&self, name: &str) -> io::Result<Vec<u8>> {
            self.inner.read(name)
        }
        fn create(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
            let inner = self.inner.create(name)?;
            Ok(Box::new(GatedFile {
                inner,
                gate: self.gate.clone(),
            }))
        }
        fn open_append(&self, name: &str) -> io::Result<Box<dyn StorageFile>> {
            self.inner.open_append(name)
        }
        fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
            self.inner.truncate(name, len)
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove(&self, name: &str) -> io::Result<()> {
            self.inner.remove(name)
        }
        fn sync_dir(&self) -> io::Result<()> {
            self.inner.sync_dir()
        }
        fn describe(&self, name: &str) -> String {
            self.inner.describe(name)
        }
    }

    /// A new log with two committers over gated storage (not armed yet), and the storage.
    fn gated_log() -> (Wal, Arc<Gate>, SimStorage) {
        let gate = Arc::new(Gate::default());
        let sim = SimStorage::new();
        let storage = Arc::new(GatedStorage {
            inner: sim.clone(),
            gate: gate.clone(),
        });
        let tail = LogTail {
            next_lsn: 1,
            prev_crc: 0,
        };
        let options = WalOptions {
            preallocate: false,
            concurrent_syncs: 2,
            ..WalOptions::default()
        };
        (Wal::open(storage, tail, options).unwrap(), gate, sim)
    }

    /// Two records, each written and synced by its own committer; the second sync returns
    /// first, with `second`, then the first with `first`.
    fn syncs_return_out_of_order(first: Option<io::ErrorKind>, second: Option<io::ErrorKind>) -> Wal {
        let (wal, gate, _) = gated_log();
        gate.state.lock().unwrap().armed = true;
        wal.append(1, Timestamp(1), &Command::Tick);
        gate.wait_until(|st| st.called == 1);
        // The first committer is in its sync: the second writes record 2 and syncs it.
        wal.append(2, Timestamp(1), &Command::Tick);
        gate.wait_until(|st| st.called == 2);
        gate.end(1, second);
        gate.wait_until(|st| st.returned == 1);
        if second.is_none() {
            // The returned sync is booked, behind the one still in flight.
            let booked = || {
                let commits = wal.shared.commits.lock();
                commits.in_flight.len() == 2 && commits.in_flight[1].1
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while !booked() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let booked = booked();
            if !booked {
                gate.end(0, first);
            }
            assert!(booked, "the later sync is booked behind the earlier one");
        }
        std::thread::sleep(Duration::from_millis(20));
        let early = wal.durable_lsn();
        gate.end(0, first);
        assert_eq!(early, 0, "record 2's sync returned, record 1's had not");
        wal
    }

    #[test]
    fn a_sync_that_returns_early_waits_for_the_earlier_one() {
        let wal = syncs_return_out_of_order(None, None);
        wal.wait_durable(2).unwrap();
        assert_eq!(wal.stats().syncs, 2);
        wal.close().unwrap();
    }

    #[test]
    fn a_failed_earlier_sync_takes_the_later_batch_with_it() {
        let wal = syncs_return_out_of_order(Some(io::ErrorKind::Other), None);
        let e = wal.wait_durable(2).unwrap_err();
        assert!(e.0.contains("while writing"), "{e}");
        assert_eq!(wal.durable_lsn(), 0, "neither record is acknowledged");
        assert!(wal.wait_durable(1).is_err());
    }

    #[test]
    fn after_a_failed_sync_nothing_more_is_written_and_the_log_closes() {
        let (wal, gate, sim) = gated_log();
        let segment = segment_name(1);
        let header_only = sim.read(&segment).unwrap().len();
        gate.state.lock().unwrap().armed = true;
        wal.append(1, Timestamp(1), &Command::Tick);
        gate.wait_until(|st| st.called == 1);
        // The other committer now waits for records, holding the writer.
        gate.end(0, Some(io::ErrorKind::Other));
        assert!(wal.wait_durable(1).is_err());
        let with_record_1 = sim.read(&segment).unwrap().len();
        assert!(with_record_1 > header_only);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !wal.shared.closed.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            wal.shared.closed.load(Ordering::Acquire),
            "both committers stopped"
        );
        // A record queued by a request that passed its check just before the failure.
        gate.state.lock().unwrap().armed = false;
        wal.append(2, Timestamp(1), &Command::Tick);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            sim.read(&segment).unwrap().len(),
            with_record_1,
            "record 2 was not written"
        );
        assert_eq!(wal.durable_lsn(), 0);
        assert!(wal.close().is_err());
    }
}
