//! Reading the log back: verification, recovery replay and the `wal dump` tool share this scan.
//!
//! The scan walks the segments in LSN order and checks every record's checksum, its LSN (one
//! more than the last) and its chain link (the last record's CRC). The one fault it forgives is a
//! torn tail: a bad record in the last segment that no intact record after it proves synced (by
//! its sync distance, see `format`). A power cut leaves exactly that: of the bytes written since
//! the last sync, any pages may survive, so a hole can sit before intact records that were never
//! acknowledged. Anything else is damage, reported with the file, the offset and the LSN, and the
//! scan stops there: nothing after damage is ever applied.
//!
//! A segment the writer prepared ahead is zero-filled to its full size before any record is
//! written into it, so its records end where the zeros begin. In a segment that is not the last,
//! the next segment's header still catches a record that went missing; at the end of the last
//! one, synced records that media damage turned to zeros read as the end of the log, as they
//! would in an appended file that lost its end. The snapshot LSN check in recovery catches a log
//! that ends before the snapshot.

use std::fmt;

use super::format::{
    CHAIN_START, HeaderFault, RECORD_HEADER_LEN, RecordRef, SEGMENT_HEADER_LEN, SegmentHeader,
    may_prove_synced, parse_segment_name, read_record, segment_name,
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
    /// Set when the segment is intact but written in another WAL format version: not damage,
    /// but this build cannot read it.
    pub version: Option<u32>,
}

impl fmt::Display for WalDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(version) = self.version {
            return write!(
                f,
                "{} was written in WAL format version {version}; this build reads version {}. The \
                 file is not damaged: start this data directory with the release that wrote it \
                 (a log is never converted in place)",
                self.file,
                super::format::FORMAT_VERSION
            );
        }
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
        version: None,
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
            Err(HeaderFault::OtherVersion(version)) => {
                return Err(WalDamage {
                    version: Some(version),
                    ..damage(&name, 8, first, format!("WAL format version {version}"))
                });
            }
            // A crash while creating the last segment leaves it empty or short, or (prepared
            // ahead) zeros after a header that never reached the disk: nothing in it was ever
            // acknowledged.
            Err(HeaderFault::Damaged(_)) if last && holds_no_record(&bytes) => {
                let next = expected.map_or(from_lsn.max(1), |(lsn, _)| lsn);
                if first != next {
                    return Err(damage(
                        &name,
                        0,
                        next,
                        format!("segment is cut short at its header but the log continues at LSN {next}"),
                    ));
                }
                report.torn = Some(TornTail {
                    file: name,
                    offset: 0,
                    bytes: bytes.len() as u64,
                    reason: "segment header cut short",
                });
                break;
            }
            Err(HeaderFault::Damaged(reason)) => return Err(damage(&name, 0, first, reason)),
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
                    if last && !synced_by_a_later_record(&bytes, at + 1, lsn) {
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

/// Whether an intact record anywhere from `from` on was written after record `lsn` was synced:
/// if one was, the bad bytes at `lsn` are damage to synced data, not a write cut by a crash.
/// Offsets whose header fields cannot make that claim are skipped before any checksum, so the
/// search stays linear in practice even over a large torn tail or a zero-filled segment.
fn synced_by_a_later_record(bytes: &[u8], from: usize, lsn: u64) -> bool {
    (from..bytes.len().saturating_sub(RECORD_HEADER_LEN - 1)).any(|at| {
        // Every record takes more than a header, so a record at `at` is at most this far on.
        let max_lsn = lsn.saturating_add(((at - from) / RECORD_HEADER_LEN) as u64);
        may_prove_synced(&bytes[at..], lsn, max_lsn)
            && read_record(&bytes[at..]).is_ok_and(|r| r.synced_lsn >= lsn)
    })
}

fn blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Whether a segment file has no room for a record: cut short at its header, or zeros after it.
fn holds_no_record(bytes: &[u8]) -> bool {
    bytes.len() <= SEGMENT_HEADER_LEN || blank(&bytes[SEGMENT_HEADER_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;
    use crate::wal::format::{RecordPlace, frame_record};

    /// A one-segment log written in batches: `batches[i]` records each, every batch written
    /// knowing the batches before it synced. Returns the bytes and each record's offset.
    fn log(batches: &[u64]) -> (Vec<u8>, Vec<usize>) {
        log_of(batches, b"a command body of some length")
    }

    fn log_of(batches: &[u64], body: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = SegmentHeader {
            first_lsn: 1,
            prev_crc: CHAIN_START,
        }
        .encode()
        .to_vec();
        let (mut lsn, mut chain, mut offsets) = (1, CHAIN_START, Vec::new());
        for &n in batches {
            let synced_lsn = lsn - 1;
            for _ in 0..n {
                offsets.push(bytes.len());
                let place = RecordPlace {
                    prev_crc: chain,
                    lsn,
                    synced_lsn,
                };
                chain = frame_record(&mut bytes, place, 1_000 + lsn, body);
                lsn += 1;
            }
        }
        (bytes, offsets)
    }

    fn scan_of(bytes: &[u8]) -> Result<ScanReport, WalDamage> {
        let sim = SimStorage::new();
        sim.create(&segment_name(1)).unwrap().append(bytes).unwrap();
        scan(&sim, 1, |_| Ok(()))
    }

    #[test]
    fn a_hole_in_the_last_batch_is_a_torn_tail_even_with_intact_records_after_it() {
        let (mut bytes, at) = log(&[2, 3]);
        // Record 4 lost a page (zeros, as in a prepared segment); record 5 made it.
        bytes[at[3] + 4..at[4] - 2].fill(0);
        let report = scan_of(&bytes).unwrap();
        assert_eq!(report.tail.next_lsn, 4);
        assert_eq!(report.torn.map(|t| t.offset), Some(at[3] as u64));
        // The first record of the batch too: records 4 and 5 after it were never synced.
        let (mut bytes, at) = log(&[2, 3]);
        bytes[at[2]..at[2] + 8].fill(0);
        let report = scan_of(&bytes).unwrap();
        assert_eq!(
            (report.tail.next_lsn, report.torn.map(|t| t.offset)),
            (3, Some(at[2] as u64))
        );
    }

    #[test]
    fn a_hole_that_a_later_batch_proves_synced_is_damage() {
        let (mut bytes, at) = log(&[2, 3, 1]);
        bytes[at[3] + 4..at[4] - 2].fill(0);
        let damage = scan_of(&bytes).unwrap_err();
        assert_eq!((damage.offset, damage.lsn), (at[3] as u64, 4));
        // Damage in an older segment is damage whatever follows it.
        let sim = SimStorage::new();
        let (mut first, at) = log(&[2, 3]);
        let cut = first.len() - 3;
        first[cut] ^= 0xFF;
        sim.create(&segment_name(1)).unwrap().append(&first).unwrap();
        sim.create(&segment_name(6)).unwrap();
        let damage = scan(&sim, 1, |_| Ok(())).unwrap_err();
        assert_eq!(
            (damage.file, damage.offset, damage.lsn),
            (format!("sim:{}", segment_name(1)), at[4] as u64, 5)
        );
    }

    /// The smallest records (a 1-byte command): the proof sits exactly one record length on,
    /// the tightest case of the search's bound on how far a later LSN can be.
    #[test]
    fn the_next_record_of_the_smallest_size_proves_a_bad_one_synced() {
        let (mut bytes, at) = log_of(&[1, 1, 1], b"x");
        assert_eq!(at[1] - at[0], RECORD_HEADER_LEN + 1);
        bytes[at[1] + RECORD_HEADER_LEN] ^= 1;
        let damage = scan_of(&bytes).unwrap_err();
        assert_eq!((damage.offset, damage.lsn), (at[1] as u64, 2));
        // The last record has nothing after it to prove it synced: a torn tail.
        let (mut bytes, at) = log_of(&[1, 1, 1], b"x");
        bytes[at[2] + RECORD_HEADER_LEN] ^= 1;
        let report = scan_of(&bytes).unwrap();
        assert_eq!(report.torn.map(|t| t.offset), Some(at[2] as u64));
    }

    #[test]
    fn records_zeroed_at_the_end_of_an_older_segment_are_caught_by_the_next_header() {
        let sim = SimStorage::new();
        let (mut first, at) = log(&[2, 3]);
        first[at[4]..].fill(0);
        let next = SegmentHeader {
            first_lsn: 6,
            prev_crc: 0,
        };
        sim.create(&segment_name(1)).unwrap().append(&first).unwrap();
        sim.create(&segment_name(6))
            .unwrap()
            .append(&next.encode())
            .unwrap();
        let damage = scan(&sim, 1, |_| Ok(())).unwrap_err();
        assert_eq!(
            (damage.file.as_str(), damage.lsn),
            ("sim:wal-00000000000000000006.log", 5)
        );
    }

    #[test]
    fn a_segment_cut_at_creation_must_be_the_one_the_log_continues_in() {
        let sim = SimStorage::new();
        let (bytes, _) = log(&[2, 3]);
        sim.create(&segment_name(1)).unwrap().append(&bytes).unwrap();
        sim.create(&segment_name(9)).unwrap();
        let damage = scan(&sim, 1, |_| Ok(())).unwrap_err();
        assert_eq!(damage.lsn, 6, "{damage}");
        sim.remove(&segment_name(9)).unwrap();
        sim.create(&segment_name(6)).unwrap();
        let report = scan(&sim, 1, |_| Ok(())).unwrap();
        assert_eq!(report.tail.next_lsn, 6);
        assert_eq!(report.torn.map(|t| t.file), Some(segment_name(6)));
    }

    /// A segment of another format version, intact, is named as such, never cut as torn.
    fn as_version(bytes: &mut [u8], version: u32) {
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn a_segment_of_another_format_version_is_named_not_cut() {
        let (mut bytes, _) = log(&[2, 3]);
        as_version(&mut bytes, 1);
        let refused = scan_of(&bytes).unwrap_err();
        assert_eq!(refused.version, Some(1));
        assert!(refused.to_string().contains("WAL format version 1"), "{refused}");
        assert!(refused.to_string().contains("not damaged"), "{refused}");
        // Header only: still not a segment cut at creation, which recovery would rewrite.
        let mut header = bytes[..SEGMENT_HEADER_LEN].to_vec();
        assert_eq!(scan_of(&header).unwrap_err().version, Some(1));
        header.resize(4096, 0);
        assert_eq!(scan_of(&header).unwrap_err().version, Some(1));
        // A header whose checksum fails is damage (or a cut), whatever its version field says.
        bytes[28] ^= 1;
        assert_eq!(scan_of(&bytes).unwrap_err().version, None);
    }
}
