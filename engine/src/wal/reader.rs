//! Reading the log back: verification, recovery replay and the `wal dump` tool share this scan.
//!
//! The scan walks the segments in LSN order and checks every record's checksum, its LSN (one
//! more than the last) and its chain link (the last record's CRC). The one fault it forgives is a
//! torn tail: a bad record in the last segment after which no intact record follows, which is
//! what a crash in the middle of a write leaves. Anything else is damage, reported with the file,
//! the offset and the LSN, and the scan stops there: nothing after damage is ever applied.
//!
//! A segment the writer prepared ahead is zero-filled to its full size before any record is
//! written into it, so its records end where the zeros begin: a segment whose bytes from some
//! record boundary on are all zero has no record there (whichever segment it is: the chain
//! check at the next segment's header still catches a record that went missing).

use std::fmt;

use super::format::{
    CHAIN_START, RecordRef, SEGMENT_HEADER_LEN, SegmentHeader, parse_segment_name, read_record, segment_name,
};
use super::writer::LogTail;
use crate::storage::Storage;

/// A bad record the scan forgave: the end of the last segment, cut off by a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: String,
    /// Where the good records end; the file should be cut here.
    pub offset: u64,
    pub bytes: u64,
    pub reason: &'static str,
}

/// What a scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanReport {
    /// Where the log continues.
    pub tail: LogTail,
    /// Records checked (all of them, also those before `from_lsn`).
    pub records: u64,
    pub segments: Vec<String>,
    pub torn: Option<TornTail>,
}

/// Damage before the tail, or an unreadable directory: start-up must stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalDamage {
    pub file: String,
    pub offset: u64,
    /// The LSN the scan expected at `offset`.
    pub lsn: u64,
    pub reason: String,
}

impl fmt::Display for WalDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WAL damaged in {} at byte {} (expected LSN {}): {}. Records before it are intact. \
             Inspect with `promised wal verify --data-dir DIR` and `promised wal dump --data-dir DIR \
             --from-lsn {}`; restore the file from a backup or a replica",
            self.file,
            self.offset,
            self.lsn,
            self.reason,
            self.lsn.saturating_sub(3).max(1)
        )
    }
}

impl std::error::Error for WalDamage {}

/// Scans the whole log, calling `visit` for every record with LSN `>= from_lsn`, in order.
/// `visit` may refuse a record (a command that does not decode or apply): that stops the scan
/// as damage at that record.
pub fn scan(
    storage: &dyn Storage,
    from_lsn: u64,
    mut visit: impl FnMut(&RecordRef<'_>) -> Result<(), String>,
) -> Result<ScanReport, WalDamage> {
    let damage = |file: &str, offset: u64, lsn: u64, reason: String| WalDamage {
        file: storage.describe(file),
        offset,
        lsn,
        reason,
    };
    let mut firsts: Vec<u64> = storage
        .list()
        .map_err(|e| damage("", 0, from_lsn, format!("cannot list the data directory: {e}")))?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    firsts.sort_unstable();
    let mut report = ScanReport {
        tail: LogTail {
            next_lsn: from_lsn.max(1),
            prev_crc: CHAIN_START,
        },
        records: 0,
        segments: Vec::new(),
        torn: None,
    };
    if firsts.is_empty() && from_lsn > 1 {
        // `Wal::open` always leaves a segment holding the next LSN, and pruning never removes
        // the newest: with a snapshot and no segment at all, the log after it was lost.
        return Err(damage(
            &segment_name(from_lsn),
            0,
            from_lsn,
            "no log segment at all: the records after the snapshot are missing".into(),
        ));
    }
    // Start at the segment holding `from_lsn`; older ones are covered by the snapshot.
    let mut start = firsts.iter().rposition(|&f| f <= from_lsn.max(1)).unwrap_or(0);
    // A last segment cut short before its header was written carries no chain value; start one
    // segment earlier so that the tail continues the chain from the record before it (else the
    // next segment would start a new chain that older snapshots and `wal verify` cannot follow).
    if start > 0
        && start + 1 == firsts.len()
        && storage
            .read(&segment_name(firsts[start]))
            .is_ok_and(|b| holds_no_record(&b))
    {
        start -= 1;
    }
    let mut expected: Option<(u64, u32)> = None;
    for (i, &first) in firsts.iter().enumerate().skip(start) {
        let name = segment_name(first);
        let last = i + 1 == firsts.len();
        let bytes = storage
            .read(&name)
            .map_err(|e| damage(&name, 0, first, format!("cannot read: {e}")))?;
        let header = match SegmentHeader::decode(&bytes) {
            Ok(h) => h,
            // A crash while creating the last segment leaves it empty or short, or (prepared
            // ahead) zeros after a header that never reached the disk: nothing in it was ever
            // acknowledged.
            Err(reason) if last && holds_no_record(&bytes) => {
                report.torn = Some(TornTail {
                    file: name,
                    offset: 0,
                    bytes: bytes.len() as u64,
                    reason: "segment header cut short",
                });
                let _ = reason;
                break;
            }
            Err(reason) => return Err(damage(&name, 0, first, reason)),
        };
        if header.first_lsn != first {
            return Err(damage(
                &name,
                16,
                first,
                format!("header says first LSN {}", header.first_lsn),
            ));
        }
        let (mut lsn, mut chain) = match expected {
            None => {
                if first > from_lsn.max(1) {
                    return Err(damage(
                        &name,
                        0,
                        from_lsn.max(1),
                        format!(
                            "records {} to {} are missing (no segment holds them)",
                            from_lsn.max(1),
                            first - 1
                        ),
                    ));
                }
                (first, header.prev_crc)
            }
            Some((lsn, chain)) => {
                if first != lsn {
                    return Err(damage(&name, 0, lsn, format!("segment starts at LSN {first}")));
                }
                if header.prev_crc != chain {
                    return Err(damage(
                        &name,
                        24,
                        lsn,
                        "segment does not continue the hash chain".into(),
                    ));
                }
                (lsn, chain)
            }
        };
        report.segments.push(name.clone());
        let mut at = SEGMENT_HEADER_LEN;
        while at < bytes.len() {
            let record = match read_record(&bytes[at..]) {
                Ok(r) => r,
                Err(fault) => {
                    if blank(&bytes[at..]) {
                        // The zero-filled rest of a preallocated segment.
                        break;
                    }
                    if last && !intact_record_after(&bytes, at + 1, lsn) {
                        report.torn = Some(TornTail {
                            file: name.clone(),
                            offset: at as u64,
                            bytes: (bytes.len() - at) as u64,
                            reason: fault.describe(),
                        });
                        break;
                    }
                    return Err(damage(&name, at as u64, lsn, fault.describe().into()));
                }
            };
            if record.lsn != lsn {
                return Err(damage(
                    &name,
                    at as u64,
                    lsn,
                    format!("found LSN {} out of order", record.lsn),
                ));
            }
            if record.prev_crc != chain {
                return Err(damage(
                    &name,
                    at as u64,
                    lsn,
                    "record breaks the hash chain".into(),
                ));
            }
            if lsn >= from_lsn {
                visit(&record).map_err(|reason| damage(&name, at as u64, lsn, reason))?;
            }
            report.records += 1;
            lsn += 1;
            chain = record.crc;
            at += record.framed_len();
        }
        expected = Some((lsn, chain));
    }
    if let Some((lsn, chain)) = expected {
        report.tail = LogTail {
            next_lsn: lsn,
            prev_crc: chain,
        };
    }
    Ok(report)
}

/// Whether an intact record with an LSN at or after `lsn` starts anywhere from `from` on: if one
/// does, the bad bytes before it are damage, not a torn tail. A record's length is never zero
/// (every command encodes to some bytes), which skips the zeros of a preallocated segment fast.
fn intact_record_after(bytes: &[u8], from: usize, lsn: u64) -> bool {
    (from..bytes.len().saturating_sub(3))
        .any(|at| bytes[at..at + 4] != [0; 4] && read_record(&bytes[at..]).is_ok_and(|r| r.lsn >= lsn))
}

fn blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Whether a segment file has no room for a record: cut short at its header, or zeros after it.
fn holds_no_record(bytes: &[u8]) -> bool {
    bytes.len() <= SEGMENT_HEADER_LEN || blank(&bytes[SEGMENT_HEADER_LEN..])
}
