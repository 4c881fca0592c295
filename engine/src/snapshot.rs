//! Snapshots: the whole engine state at one LSN, written while the engine keeps serving.
//!
//! # Taking one without stopping the world
//!
//! `write_snapshot` takes every lock once (the barrier): it reads the LSN, copies the small parts
//! (network, feed sequence numbers, capacity book, SKU count) and marks every SKU and request shard with a
//! capture sink. Then it lets go. From there on the first command that writes a marked shard
//! copies that shard into the sink before changing it (copy-on-write at shard grain), and the
//! snapshot thread walks the shards in order, encoding each one nobody wrote yet and the copies.
//! Either way each shard is encoded exactly as it was at the barrier, so the file is a consistent
//! cut at the LSN while a request waits at most for one shard's copy.
//!
//! # Format (version 4, all integers little-endian; see `docs/design.md`)
//!
//! A 68-byte header (magic, version, LSN, engine config, CRC32C), then sections (the meta
//! section, one per request shard, one per SKU shard), each a `u64` length, a CRC32C and the
//! bytes, then a footer: magic, the section count and a CRC32C over the section CRCs, so a
//! truncated or spliced file is caught. Sections load in parallel.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use smallvec::SmallVec;

use crate::atp::{Dated, InboundLot};
use crate::capacity::{CapacityBook, Load, Routed, ShipSlot};
use crate::codec::{self, DecodeError, Reader, Writer};
use crate::command::Command;
use crate::hold::{
    DoneRecord, ExpiryQueue, Hold, HoldLine, HoldOp, HoldState, OpRecord, Record, RequestShard,
};
use crate::ids::{Day, NodeId, SkuId, Timestamp};
use crate::ledger::{CommandLog, Engine, EngineConfig};
use crate::network::{Capabilities, Network, NodeSpec};
use crate::shard::{NO_DATED, Position, Shard, SkuEntry};
use crate::storage::Storage;

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"PROMSNP1";
pub const FOOTER_MAGIC: [u8; 8] = *b"PROMSEND";
/// Version 1 (never released) put SKU shards before request shards; version 3 added zones and
/// explicit lanes to the meta section; version 4 added the capacity book to the meta section and
/// routed orders (record kind 2) to request shards. This build writes 4 and reads 2 to 4.
pub const SNAPSHOT_VERSION: u32 = 4;
/// The versions this build reads.
const READABLE: [u32; 3] = [2, 3, 4];
const HEADER_LEN: usize = 68;

pub fn snapshot_name(lsn: u64) -> String {
    format!("snap-{lsn:020}.snap")
}

pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// Where writers drop the shards they copied out for a snapshot in progress (copies, not
/// encodings: the snapshot thread encodes them, off the request path).
#[derive(Debug)]
pub struct SnapshotSink {
    sku: Box<[OnceLock<Shard>]>,
    requests: Box<[OnceLock<RequestShard>]>,
}

impl SnapshotSink {
    fn new(sku_shards: usize, request_shards: usize) -> Self {
        Self {
            sku: (0..sku_shards).map(|_| OnceLock::new()).collect(),
            requests: (0..request_shards).map(|_| OnceLock::new()).collect(),
        }
    }
    pub(crate) fn put_sku_shard(&self, shard: usize, copy: Shard) {
        assert!(self.sku[shard].set(copy).is_ok(), "a shard is captured once");
    }
    pub(crate) fn put_request_shard(&self, shard: usize, copy: RequestShard) {
        assert!(self.requests[shard].set(copy).is_ok(), "a shard is captured once");
    }
}

/// What writing a snapshot did and cost.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    pub lsn: u64,
    pub file: String,
    pub bytes: u64,
    /// How long every lock was held at the start: the longest any request waited on it.
    pub barrier: Duration,
    /// Shards that commands copied out before writing to them.
    pub copied_by_writers: usize,
    pub total: Duration,
}

/// Writes a snapshot of `engine` into `storage` and returns once it is durable. Concurrent calls
/// on one engine run one after the other.
pub fn write_snapshot(engine: &Engine, storage: &dyn Storage) -> io::Result<SnapshotInfo> {
    write_snapshot_with(engine, storage, |_| Ok(()))
}

/// `write_snapshot`, calling `before_publish(lsn)` before the file gets its final name: the
/// durable engine makes the log durable up to `lsn` there, so that a snapshot is never ahead
/// of the log it continues.
pub fn write_snapshot_with(
    engine: &Engine,
    storage: &dyn Storage,
    before_publish: impl FnOnce(u64) -> io::Result<()>,
) -> io::Result<SnapshotInfo> {
    let _one_at_a_time = engine.snapshot_lock.lock();
    let started = Instant::now();
    let config = engine.config().clone();
    let sink = Arc::new(SnapshotSink::new(config.sku_shards, config.request_shards));
    let (lsn, meta) = {
        let catalog = engine.catalog.lock();
        let mut requests: Vec<_> = engine.requests.iter().map(|r| r.lock()).collect();
        let feeds = engine.feeds.lock();
        let mut shards: Vec<_> = engine.shards.iter().map(|s| s.write()).collect();
        let lsn = engine.next_seq() - 1;
        let capacity = engine.capacity.read();
        let meta = encode_meta(&catalog.network, catalog.sku_names.len(), &feeds, &capacity);
        for rs in requests.iter_mut() {
            rs.capture = Some(sink.clone());
        }
        for shard in shards.iter_mut() {
            shard.capture = Some(sink.clone());
        }
        (lsn, meta)
    };
    let barrier = started.elapsed();

    let tmp = format!("snap-{lsn:020}.tmp");
    let result = write_file(engine, storage, &sink, &tmp, lsn, &config, &meta);
    if result.is_err() {
        // Unmark what an early failure left marked, so no command copies a shard for nothing.
        engine.shards.iter().for_each(|s| s.write().capture = None);
        engine.requests.iter().for_each(|r| r.lock().capture = None);
        // Best effort: a leftover is removed at the next start anyway.
        let _ = storage.remove(&tmp);
    }
    let (bytes, copied_by_writers) = result?;
    before_publish(lsn)?;
    let name = snapshot_name(lsn);
    storage.rename(&tmp, &name)?;
    storage.sync_dir()?;
    Ok(SnapshotInfo {
        lsn,
        file: storage.describe(&name),
        bytes,
        barrier,
        copied_by_writers,
        total: started.elapsed(),
    })
}

/// Writes the snapshot file: header, meta, every shard (from the sink where a command copied it
/// out first), footer; synced. Returns its size and how many shards commands copied out.
fn write_file(
    engine: &Engine,
    storage: &dyn Storage,
    sink: &SnapshotSink,
    tmp: &str,
    lsn: u64,
    config: &EngineConfig,
    meta: &[u8],
) -> io::Result<(u64, usize)> {
    let mut file = SectionWriter::new(storage.create(tmp)?);
    let mut header = Vec::with_capacity(HEADER_LEN);
    encode_header(&mut header, lsn, config);
    file.raw(&header)?;
    file.section(meta)?;
    let mut copied_by_writers = 0;
    // Every shard is visited even after a write error, so none stays marked.
    let mut failed: Option<io::Error> = None;
    // Request shards first: nearly every write touches one, so the sooner they are encoded
    // here, the fewer a request has to copy out itself.
    for (i, rs) in engine.requests.iter().enumerate() {
        let mut guard = rs.lock();
        let bytes = match guard.capture.take() {
            Some(_) => encode_request_shard(&guard),
            None => {
                copied_by_writers += 1;
                encode_request_shard(sink.requests[i].get().expect("a writer captured the shard"))
            }
        };
        drop(guard);
        if failed.is_none() {
            failed = file.section(&bytes).err();
        }
    }
    for (i, shard) in engine.shards.iter().enumerate() {
        let mut guard = shard.write();
        let bytes = match guard.capture.take() {
            Some(_) => encode_sku_shard(&guard),
            None => {
                copied_by_writers += 1;
                encode_sku_shard(sink.sku[i].get().expect("a writer captured the shard"))
            }
        };
        drop(guard);
        if failed.is_none() {
            failed = file.section(&bytes).err();
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok((file.finish()?, copied_by_writers))
}

/// Appends sections, buffering about a megabyte per write.
struct SectionWriter {
    file: Box<dyn crate::storage::StorageFile>,
    buf: Vec<u8>,
    crcs: Vec<u8>,
    sections: u32,
    written: u64,
}

impl SectionWriter {
    fn new(file: Box<dyn crate::storage::StorageFile>) -> Self {
        Self {
            file,
            buf: Vec::with_capacity(2 << 20),
            crcs: Vec::new(),
            sections: 0,
            written: 0,
        }
    }
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.append(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
    fn section(&mut self, bytes: &[u8]) -> io::Result<()> {
        let crc = crc32c::crc32c(bytes);
        self.crcs.extend_from_slice(&crc.to_le_bytes());
        self.sections += 1;
        let mut head = [0u8; 12];
        head[0..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        head[8..12].copy_from_slice(&crc.to_le_bytes());
        self.raw(&head)?;
        self.raw(bytes)
    }
    fn finish(mut self) -> io::Result<u64> {
        let mut footer = Vec::with_capacity(16);
        footer.extend_from_slice(&FOOTER_MAGIC);
        footer.extend_from_slice(&self.sections.to_le_bytes());
        footer.extend_from_slice(&crc32c::crc32c(&self.crcs).to_le_bytes());
        self.raw(&footer)?;
        self.flush()?;
        self.file.sync_data()?;
        Ok(self.written)
    }
}

fn encode_header(out: &mut Vec<u8>, lsn: u64, config: &EngineConfig) {
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&(config.sku_shards as u32).to_le_bytes());
    out.extend_from_slice(&(config.request_shards as u32).to_le_bytes());
    out.extend_from_slice(&config.retention_ms.to_le_bytes());
    out.extend_from_slice(&(config.retained_records_max as u64).to_le_bytes());
    out.extend_from_slice(&config.request_hash_key.to_le_bytes());
    let crc = crc32c::crc32c(out);
    out.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
}

fn encode_meta(network: &Network, n_skus: usize, feeds: &[u64], capacity: &CapacityBook) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer(&mut out);
    w.u32(n_skus as u32);
    w.len(feeds.len());
    for &f in feeds {
        w.u64(f);
    }
    w.len(network.n_nodes());
    for (_, spec) in network.nodes() {
        let mut node = Vec::new();
        codec::encode(&Command::UpsertNode(spec.clone()), &mut node);
        let mut w = Writer(&mut out);
        w.len(node.len());
        out.extend_from_slice(&node);
    }
    // Zones and explicit lanes, as the commands that set them, in a stable order.
    let mut routing: Vec<Command> = network.zones().map(|z| Command::UpsertZone(*z)).collect();
    routing.sort_by_key(|c| match c {
        Command::UpsertZone(z) => z.zone.0,
        _ => 0,
    });
    let mut lanes: Vec<_> = network.lanes().copied().collect();
    lanes.sort_by_key(|l| (l.node, l.zone.0, l.level));
    routing.extend(lanes.into_iter().map(Command::UpsertLane));
    Writer(&mut out).len(routing.len());
    for c in &routing {
        let mut entry = Vec::new();
        codec::encode(c, &mut entry);
        Writer(&mut out).len(entry.len());
        out.extend_from_slice(&entry);
    }
    let mut w = Writer(&mut out);
    w.u32(capacity.floor().0);
    let entries = capacity.entries();
    w.len(entries.len());
    for ((node, day), load) in entries {
        w.u32(node.raw());
        w.u32(day.0);
        w.u32(load.orders);
        w.u32(load.units);
    }
    out
}

/// Encodes one SKU shard's SKUs, positions and dated supply.
pub(crate) fn encode_sku_shard(shard: &Shard) -> Vec<u8> {
    let positions: usize = shard.skus.iter().map(|e| e.positions.len()).sum();
    let mut out = Vec::with_capacity(shard.skus.len() * 32 + positions * 21);
    let mut w = Writer(&mut out);
    w.len(shard.skus.len());
    for entry in &shard.skus {
        w.str(&entry.name);
        w.u32(entry.required.0);
        w.len(entry.positions.len());
        for (node, p) in entry.nodes.iter().zip(&entry.positions) {
            w.u32(node.raw());
            w.u32(p.on_hand);
            w.u32(p.safety_stock);
            w.u32(p.reserved);
            w.u32(p.allocated);
            match shard.dated_of(p) {
                None => w.u8(0),
                Some(d) => {
                    w.u8(1);
                    w.len(d.lots.len());
                    for lot in &d.lots {
                        w.str(&lot.reference);
                        w.u32(lot.quantity);
                        w.u32(lot.arrival.0);
                    }
                    w.len(d.future_claims.len());
                    for &(day, q) in &d.future_claims {
                        w.u32(day.0);
                        w.u32(q);
                    }
                }
            }
        }
    }
    out
}

/// Encodes one request shard: its records and its retention queue, in order.
pub(crate) fn encode_request_shard(rs: &RequestShard) -> Vec<u8> {
    let mut out = Vec::with_capacity(rs.records.len() * 96 + rs.retention.len() * 24);
    let mut w = Writer(&mut out);
    w.len(rs.records.len());
    for (id, record) in rs.records.iter() {
        w.request(*id);
        match record {
            Record::Done(d) => {
                w.u8(0);
                w.str(d.kind);
            }
            Record::Hold(h) => {
                // Kind 2 (version 4): a routed order, with its packages' capacity after the hold.
                w.u8(if h.routed.is_some() { 2 } else { 1 });
                w.u64(h.placed_at.0);
                w.u64(h.expires_at.0);
                w.u8(h.state as u8);
                w.u8(u8::from(h.partial));
                w.len(h.lines.len());
                for l in &h.lines {
                    w.u32(l.sku.raw());
                    w.u32(l.node.raw());
                    w.u32(l.need_day.0);
                    w.u8(u8::from(l.future));
                    w.u32(l.requested);
                    w.u32(l.granted);
                    w.u32(l.remaining);
                }
                w.len(h.ops.len());
                for op in &h.ops {
                    w.request(op.request);
                    w.u8(op.op as u8);
                    w.u8(op.state_after as u8);
                }
                if let Some(routed) = &h.routed {
                    w.len(routed.packages.len());
                    for slot in routed.packages.iter() {
                        w.u32(slot.node.raw());
                        w.u32(slot.day.0);
                    }
                    w.u32(routed.zone.0);
                    match routed.point_bits {
                        Some((lat, lon)) => {
                            w.u8(1);
                            w.u32(lat);
                            w.u32(lon);
                        }
                        None => w.u8(0),
                    }
                    w.u32(routed.promised.0);
                    w.u8(routed.level as u8);
                }
            }
        }
    }
    w.len(rs.retention.len());
    for &(at, id) in &rs.retention {
        w.u64(at.0);
        w.request(id);
    }
    out
}

/// Why a snapshot file cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotError {
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for SnapshotError {}

fn bad(offset: usize, reason: impl Into<String>) -> SnapshotError {
    SnapshotError {
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// A checked, not yet loaded snapshot: its header and where its sections are.
pub struct SnapshotFile<'a> {
    pub lsn: u64,
    pub version: u32,
    pub config: EngineConfig,
    meta: (usize, &'a [u8]),
    sku: Vec<(usize, &'a [u8])>,
    requests: Vec<(usize, &'a [u8])>,
}

/// Summary for `promised snapshot inspect`.
#[derive(Clone, Debug)]
pub struct SnapshotSummary {
    pub lsn: u64,
    pub config: EngineConfig,
    pub bytes: u64,
    pub skus: usize,
    pub nodes: usize,
    pub positions: usize,
    pub holds: usize,
    pub done_records: usize,
    /// The state digest of the loaded snapshot: compare with a live server's.
    pub digest: crate::digest::StateDigest,
    /// `check_invariants` on the loaded state: the checksums prove the bytes are the ones
    /// written, this that they describe a consistent ledger.
    pub invariants: Result<(), String>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The format version of an intact snapshot header written by another version of promised, if
/// that is what `b` starts with. Such a file is not damage: recovery refuses to start rather than
/// set it aside and fall back.
pub fn foreign_version(b: &[u8]) -> Option<u32> {
    let intact = b.len() >= HEADER_LEN
        && b[0..8] == SNAPSHOT_MAGIC
        && crc32c::crc32c(&b[..HEADER_LEN - 4]) == u32_at(b, HEADER_LEN - 4);
    let version = if intact { u32_at(b, 8) } else { SNAPSHOT_VERSION };
    (!READABLE.contains(&version)).then_some(version)
}

impl<'a> SnapshotFile<'a> {
    /// Checks the header, every section's checksum and the footer.
    pub fn parse(b: &'a [u8]) -> Result<Self, SnapshotError> {
        if b.len() < HEADER_LEN {
            return Err(bad(
                0,
                format!("file has {} bytes, shorter than a header", b.len()),
            ));
        }
        if b[0..8] != SNAPSHOT_MAGIC {
            return Err(bad(0, "not a promised snapshot (bad magic)"));
        }
        if crc32c::crc32c(&b[..HEADER_LEN - 4]) != u32_at(b, HEADER_LEN - 4) {
            return Err(bad(0, "header checksum mismatch"));
        }
        let version = u32_at(b, 8);
        if !READABLE.contains(&version) {
            return Err(bad(
                8,
                format!("snapshot version {version}; this build reads {READABLE:?}"),
            ));
        }
        let config = EngineConfig {
            sku_shards: u32_at(b, 24) as usize,
            request_shards: u32_at(b, 28) as usize,
            retention_ms: u64_at(b, 32),
            retained_records_max: u64_at(b, 40) as usize,
            request_hash_key: u128::from_le_bytes(b[48..64].try_into().expect("16 bytes")),
        };
        let shards_ok = |n: usize| n.is_power_of_two() && n <= 1 << 20;
        if !shards_ok(config.sku_shards) || !shards_ok(config.request_shards) {
            return Err(bad(24, "shard counts must be powers of two up to 2^20"));
        }
        if config.retained_records_max < config.request_shards {
            return Err(bad(40, "retained records cap below the request shard count"));
        }
        let mut at = HEADER_LEN;
        let expected = 1 + config.sku_shards + config.request_shards;
        let mut sections = Vec::with_capacity(expected);
        let mut crcs = Vec::with_capacity(expected * 4);
        for _ in 0..expected {
            if b.len() - at < 12 {
                return Err(bad(at, "file ends inside a section header (truncated)"));
            }
            let len = u64_at(b, at);
            let crc = u32_at(b, at + 8);
            if len > (b.len() - at - 12) as u64 {
                return Err(bad(
                    at,
                    format!("section of {len} bytes runs past the end (truncated)"),
                ));
            }
            let body = &b[at + 12..at + 12 + len as usize];
            if crc32c::crc32c(body) != crc {
                return Err(bad(at, "section checksum mismatch"));
            }
            crcs.extend_from_slice(&crc.to_le_bytes());
            sections.push((at + 12, body));
            at += 12 + len as usize;
        }
        if b.len() - at != 16 || b[at..at + 8] != FOOTER_MAGIC {
            return Err(bad(at, "missing or misplaced footer"));
        }
        if u32_at(b, at + 8) as usize != expected || u32_at(b, at + 12) != crc32c::crc32c(&crcs) {
            return Err(bad(at, "footer does not match the sections"));
        }
        let sku = sections.split_off(1 + config.request_shards);
        let requests = sections.split_off(1);
        Ok(Self {
            lsn: u64_at(b, 16),
            version,
            config,
            meta: sections[0],
            sku,
            requests,
        })
    }

    /// Builds the engine this snapshot describes; its next command gets LSN `lsn + 1`.
    pub fn load(&self, log: Option<Arc<dyn CommandLog>>) -> Result<Engine, SnapshotError> {
        let (meta_at, meta) = self.meta;
        let (n_skus, feeds, network, capacity) =
            decode_meta(meta, self.version).map_err(|e| decode_bad(meta_at, e))?;
        let network = Arc::new(network);
        let shards: Vec<Shard> = self
            .sku
            .par_iter()
            .map(|&(at, bytes)| decode_sku_shard(bytes, network.clone()).map_err(|e| decode_bad(at, e)))
            .collect::<Result<_, _>>()?;
        let requests: Vec<RequestShard> = self
            .requests
            .par_iter()
            .map(|&(at, bytes)| decode_request_shard(bytes).map_err(|e| decode_bad(at, e)))
            .collect::<Result<_, _>>()?;
        let counted: usize = shards.iter().map(|s| s.skus.len()).sum();
        if counted != n_skus {
            return Err(bad(
                meta_at,
                format!("meta says {n_skus} SKUs, the shards hold {counted}"),
            ));
        }
        let engine = Engine::from_parts(
            self.config.clone(),
            network,
            feeds,
            capacity,
            shards,
            requests,
            self.lsn + 1,
            log,
        )
        .map_err(|reason| bad(meta_at, reason))?;
        Ok(engine)
    }

    pub fn summary(&self, bytes: u64) -> Result<SnapshotSummary, SnapshotError> {
        let engine = self.load(None)?;
        let stats = engine.stats();
        let done = engine
            .requests
            .iter()
            .map(|r| r.lock().records.len())
            .sum::<usize>();
        Ok(SnapshotSummary {
            lsn: self.lsn,
            config: self.config.clone(),
            bytes,
            skus: stats.skus,
            nodes: stats.nodes,
            positions: stats.positions,
            holds: stats.held + stats.committed,
            done_records: done - stats.held - stats.committed,
            digest: engine.state_digest(),
            invariants: engine.check_invariants(),
        })
    }
}

fn decode_bad(section_at: usize, e: DecodeError) -> SnapshotError {
    bad(section_at, format!("section does not decode: {e}"))
}

/// The meta section's parts: SKU count, feed sequence numbers, network, capacity book.
type Meta = (usize, Vec<u64>, Network, CapacityBook);

fn decode_meta(bytes: &[u8], version: u32) -> Result<Meta, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let n_skus = r.u32("SKU count")? as usize;
    let n_feeds = r.len("feeds", crate::limits::NODES_MAX, 8)?;
    let mut feeds = Vec::with_capacity(n_feeds);
    for _ in 0..n_feeds {
        feeds.push(r.u64("feed sequence")?);
    }
    let n_nodes = r.len("nodes", crate::limits::NODES_MAX, 4)?;
    let mut specs: Vec<NodeSpec> = Vec::with_capacity(n_nodes);
    for _ in 0..n_nodes {
        let len = r.len("node", 1 << 16, 1)?;
        let at = r.at;
        match codec::decode(r.take(len, "node")?) {
            Ok(Command::UpsertNode(spec)) => specs.push(spec),
            _ => return Err(DecodeError::InvalidValue { at, field: "node" }),
        }
    }
    let (mut zones, mut lanes) = (Vec::new(), Vec::new());
    if version >= 3 {
        let n = r.len("routing", crate::limits::ZONES_MAX + crate::limits::LANES_MAX, 4)?;
        for _ in 0..n {
            let len = r.len("routing entry", 1 << 10, 1)?;
            let at = r.at;
            match codec::decode(r.take(len, "routing entry")?) {
                Ok(Command::UpsertZone(z)) => zones.push(z),
                Ok(Command::UpsertLane(l)) => lanes.push(l),
                _ => {
                    return Err(DecodeError::InvalidValue {
                        at,
                        field: "zone or lane",
                    });
                }
            }
        }
    }
    let capacity = if version >= 4 {
        let floor = Day(r.u32("capacity floor")?);
        let n = r.len("capacity entries", usize::MAX, 16)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let key = (
                NodeId::from_raw(r.u32("capacity node")?),
                Day(r.u32("capacity day")?),
            );
            let load = Load {
                orders: r.u32("capacity orders")?,
                units: r.u32("capacity units")?,
            };
            entries.push((key, load));
        }
        CapacityBook::from_parts(floor, entries)
    } else {
        CapacityBook::default()
    };
    end(&r)?;
    let network = Network::from_nodes(specs)
        .ok_or(DecodeError::InvalidValue {
            at: 0,
            field: "node names (repeated)",
        })?
        .with_routing(zones, lanes);
    Ok((n_skus, feeds, network, capacity))
}

fn end(r: &Reader<'_>) -> Result<(), DecodeError> {
    if r.at != r.bytes.len() {
        return Err(DecodeError::TrailingBytes {
            at: r.at,
            extra: r.bytes.len() - r.at,
        });
    }
    Ok(())
}

fn decode_sku_shard(bytes: &[u8], network: Arc<Network>) -> Result<Shard, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let mut shard = Shard::new(network);
    let n = r.len("SKUs", crate::limits::SKUS_MAX, 7)?;
    shard.skus.reserve_exact(n);
    for _ in 0..n {
        let name: Arc<str> = Arc::from(r.str("SKU name")?);
        let required = Capabilities(r.u32("required capabilities")?);
        let n_pos = r.len("positions", crate::limits::NODES_MAX, 21)?;
        let mut nodes = Vec::with_capacity(n_pos);
        let mut positions = Vec::with_capacity(n_pos);
        for _ in 0..n_pos {
            let at = r.at;
            let node = NodeId::from_raw(r.u32("node id")?);
            if nodes.last().is_some_and(|&last| last >= node) {
                return Err(DecodeError::InvalidValue {
                    at,
                    field: "node ids (must ascend)",
                });
            }
            nodes.push(node);
            let mut p = Position::new();
            p.on_hand = r.u32("on hand")?;
            p.safety_stock = r.u32("safety stock")?;
            p.reserved = r.u32("reserved")?;
            p.allocated = r.u32("allocated")?;
            if r.bool("dated flag")? {
                let mut d = Dated::default();
                let n_lots = r.len("lots", 1 << 20, 10)?;
                for _ in 0..n_lots {
                    d.lots.push(InboundLot {
                        reference: r.str("lot reference")?.into_boxed_str(),
                        quantity: r.u32("lot quantity")?,
                        arrival: Day(r.u32("lot arrival")?),
                    });
                }
                let n_claims = r.len("future claims", 1 << 20, 8)?;
                for _ in 0..n_claims {
                    d.future_claims
                        .push((Day(r.u32("claim day")?), r.u32("claim quantity")?));
                }
                p.dated = shard.dated.len() as u32;
                shard.dated.push(d);
            }
            positions.push(p);
        }
        shard.skus.push(SkuEntry {
            name,
            required,
            nodes,
            positions,
        });
    }
    end(&r)?;
    debug_assert!(
        shard
            .skus
            .iter()
            .flat_map(|e| &e.positions)
            .all(|p| p.dated == NO_DATED || (p.dated as usize) < shard.dated.len())
    );
    Ok(shard)
}

/// The `&'static str` kind of a remembered feed command, from its stored name.
fn static_kind(name: &str) -> Option<&'static str> {
    const KINDS: [&str; 8] = [
        "set_on_hand",
        "adjust_on_hand",
        "set_safety_stock",
        "add_inbound",
        "receive_inbound",
        "cancel_inbound",
        "return",
        "reroute",
    ];
    KINDS.iter().find(|k| **k == name).copied()
}

fn hold_state(raw: u8) -> Option<HoldState> {
    use HoldState::*;
    [Held, Committed, Released, Expired, Shipped, Cancelled]
        .get(usize::from(raw))
        .copied()
}

fn hold_op(raw: u8) -> Option<HoldOp> {
    use HoldOp::*;
    [Commit, Release, Cancel, Ship].get(usize::from(raw)).copied()
}

fn decode_request_shard(bytes: &[u8]) -> Result<RequestShard, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let mut rs = RequestShard::default();
    let n = r.len("records", usize::MAX, 17)?;
    let mut live = Vec::new();
    for _ in 0..n {
        let at = r.at;
        let id = r.request()?;
        if rs.records.get(&id).is_some() {
            return Err(DecodeError::InvalidValue {
                at,
                field: "request id (repeated)",
            });
        }
        let record = match r.u8("record kind")? {
            0 => {
                let at = r.at;
                let name = r.str("done kind")?;
                let kind = static_kind(&name).ok_or(DecodeError::InvalidValue {
                    at,
                    field: "done kind",
                })?;
                Record::Done(DoneRecord { kind })
            }
            kind @ (1 | 2) => {
                let placed_at = Timestamp(r.u64("placed at")?);
                let expires_at = Timestamp(r.u64("expires at")?);
                let state = r.enum_u8("hold state", hold_state)?;
                let partial = r.bool("partial")?;
                let n_lines = r.len("hold lines", crate::limits::HOLD_LINES_MAX, 25)?;
                let mut lines = SmallVec::with_capacity(n_lines);
                for _ in 0..n_lines {
                    lines.push(HoldLine {
                        sku: SkuId::from_raw(r.u32("SKU id")?),
                        node: NodeId::from_raw(r.u32("node id")?),
                        need_day: Day(r.u32("need day")?),
                        future: r.bool("future")?,
                        requested: r.u32("requested")?,
                        granted: r.u32("granted")?,
                        remaining: r.u32("remaining")?,
                    });
                }
                let n_ops = r.len("hold operations", crate::limits::OPS_PER_HOLD_MAX, 18)?;
                let mut ops = SmallVec::with_capacity(n_ops);
                for _ in 0..n_ops {
                    ops.push(OpRecord {
                        request: r.request()?,
                        op: r.enum_u8("operation", hold_op)?,
                        state_after: r.enum_u8("state after", hold_state)?,
                    });
                }
                let routed = if kind == 2 {
                    let n = r.len("packages", crate::limits::HOLD_LINES_MAX, 8)?;
                    let mut slots = Vec::with_capacity(n);
                    for _ in 0..n {
                        slots.push(ShipSlot {
                            node: NodeId::from_raw(r.u32("package node")?),
                            day: Day(r.u32("package ship day")?),
                        });
                    }
                    let zone = crate::ids::ZoneId(r.u32("destination zone")?);
                    let point_bits = if r.bool("destination point flag")? {
                        Some((r.u32("latitude")?, r.u32("longitude")?))
                    } else {
                        None
                    };
                    Some(Box::new(Routed {
                        packages: slots.into_boxed_slice(),
                        zone,
                        point_bits,
                        promised: Day(r.u32("promised day")?),
                        level: r.level()?,
                    }))
                } else {
                    None
                };
                if state == HoldState::Held {
                    live.push((expires_at, id));
                }
                Record::Hold(Hold {
                    id,
                    lines,
                    placed_at,
                    expires_at,
                    state,
                    partial,
                    ops,
                    routed,
                })
            }
            _ => {
                return Err(DecodeError::InvalidValue {
                    at,
                    field: "record kind",
                });
            }
        };
        rs.records.insert(id, record);
    }
    let n_ret = r.len("retention", usize::MAX, 24)?;
    let mut retention = VecDeque::with_capacity(n_ret);
    for _ in 0..n_ret {
        let at = r.at;
        let entry = (Timestamp(r.u64("finished at")?), r.request()?);
        if rs.records.get(&entry.1).is_none() {
            return Err(DecodeError::InvalidValue {
                at,
                field: "retained request id (no record)",
            });
        }
        retention.push_back(entry);
    }
    end(&r)?;
    rs.retention = retention;
    rs.expiry = ExpiryQueue::from_entries(live);
    Ok(rs)
}
