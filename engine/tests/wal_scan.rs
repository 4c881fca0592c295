//! The WAL scan (`wal::scan`, shared by recovery, `wal verify` and `wal dump`) fed damaged bytes:
//! flips, zeroed ranges, cuts, inserted junk and junk files, in one or two segments, at LSNs
//! from 1 up to near `u64::MAX`. Whatever the bytes, the scan never panics, never reports a
//! record that was not written (each visited record is the one written at its LSN, in order),
//! reaches every record that lies wholly before the first changed byte, and cuts a torn tail
//! only where no intact record after it claims it synced (checked at every later offset). A zero tail after
//! the last record (a prepared segment not filled) is no damage at all.

use proptest::prelude::*;
use proptest::sample::Index;

use promised_engine::storage::{SimStorage, Storage};
use promised_engine::wal::format::{CHAIN_START, RecordPlace, SegmentHeader, frame_record, read_record};
use promised_engine::wal::{scan, segment_name};

/// One written record: where it ends in the concatenation of the segments, and what it holds.
struct Written {
    end: usize,
    time: u64,
    body: Vec<u8>,
}

/// A log of `batches` (records per batch, each batch framed knowing the ones before it synced)
/// from LSN `base`, split into two segments after record `split` (none if `split` is 0 or the
/// last). Returns the segments' first LSNs and bytes, and the records.
fn build(base: u64, batches: &[usize], body_len: usize, split: usize) -> (Vec<(u64, Vec<u8>)>, Vec<Written>) {
    let n: usize = batches.iter().sum();
    let mut segments = vec![(
        base,
        SegmentHeader {
            first_lsn: base,
            prev_crc: CHAIN_START,
        }
        .encode()
        .to_vec(),
    )];
    let (mut written, mut chain, mut offset) = (Vec::new(), CHAIN_START, 0);
    let mut lsn = base;
    for &k in batches {
        let synced = lsn - 1;
        for _ in 0..k {
            let i = (lsn - base) as usize;
            if i == split && i > 0 && i < n {
                offset += segments.last().unwrap().1.len();
                let header = SegmentHeader {
                    first_lsn: lsn,
                    prev_crc: chain,
                };
                segments.push((lsn, header.encode().to_vec()));
            }
            let body: Vec<u8> = (0..body_len)
                .map(|j| (lsn.wrapping_mul(31) as usize + j * 7) as u8 | 1)
                .collect();
            let time = lsn.wrapping_add(1_000);
            let out = &mut segments.last_mut().unwrap().1;
            let place = RecordPlace {
                prev_crc: chain,
                lsn,
                synced_lsn: synced,
            };
            chain = frame_record(out, place, time, &body);
            written.push(Written {
                end: offset + out.len(),
                time,
                body,
            });
            lsn += 1;
        }
    }
    (segments, written)
}

#[derive(Clone, Debug)]
enum Edit {
    Flip(Index, u8),
    Zero(Index, usize),
    Cut(Index),
    Insert(Index, Vec<u8>),
    /// Replaces a segment's bytes from some offset on with junk.
    Junk(Index, Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Edit::Flip(i, x)),
        (any::<Index>(), 1usize..200).prop_map(|(i, n)| Edit::Zero(i, n)),
        any::<Index>().prop_map(Edit::Cut),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..80)).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(i, b)| Edit::Junk(i, b)),
    ]
}

/// Applies `edit` at an offset of the segments' concatenated bytes; returns that offset, the
/// first it may have changed.
fn apply(segments: &mut [(u64, Vec<u8>)], edit: &Edit) -> usize {
    let total: usize = segments.iter().map(|s| s.1.len()).sum();
    let pick = |i: &Index| i.index(total.max(1));
    let global = match edit {
        Edit::Flip(i, _) | Edit::Zero(i, _) | Edit::Cut(i) | Edit::Insert(i, _) | Edit::Junk(i, _) => pick(i),
    };
    let (mut seg, mut at) = (0, global);
    while seg + 1 < segments.len() && at >= segments[seg].1.len() {
        at -= segments[seg].1.len();
        seg += 1;
    }
    let bytes = &mut segments[seg].1;
    let at = at.min(bytes.len());
    match edit {
        Edit::Flip(_, x) => {
            if at < bytes.len() {
                bytes[at] ^= x;
            }
        }
        Edit::Zero(_, n) => {
            let end = (at + n).min(bytes.len());
            bytes[at..end].fill(0);
        }
        Edit::Cut(_) => bytes.truncate(at),
        Edit::Insert(_, junk) => {
            bytes.splice(at..at, junk.iter().copied());
        }
        Edit::Junk(_, junk) => {
            bytes.truncate(at);
            bytes.extend_from_slice(junk);
        }
    }
    global
}

fn store(segments: &[(u64, Vec<u8>)]) -> SimStorage {
    let sim = SimStorage::new();
    for (first, bytes) in segments {
        sim.create(&segment_name(*first)).unwrap().append(bytes).unwrap();
    }
    sim
}

/// A log's shape for `build`: base LSN (from 1 up to near `u64::MAX`), records per batch, command
/// size, and where the second segment starts.
fn shape() -> impl Strategy<Value = (u64, Vec<usize>, usize, usize)> {
    (
        prop_oneof![Just(1u64), 2u64..1_000, Just(u64::MAX - 200)],
        prop::collection::vec(1usize..6, 1..8),
        1usize..48,
        0usize..30,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_log_never_panics_never_invents_a_record_and_keeps_what_precedes_the_damage(
        (base, batches, body_len, split) in shape(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let (mut segments, written) = build(base, &batches, body_len, split);
        let first_change = edits.iter().map(|e| apply(&mut segments, e)).min().unwrap();
        let sim = store(&segments);
        let mut visited = 0usize;
        let result = scan(&sim, base, |r| {
            let i = visited;
            let w = written.get(i).ok_or("a record past the end of what was written")?;
            if r.lsn != base + i as u64 || r.body != w.body.as_slice() || r.time != w.time {
                return Err(format!("record {} is not the one written at LSN {}", r.lsn, base + i as u64));
            }
            visited += 1;
            Ok(())
        });
        if let Err(d) = &result {
            prop_assert!(!d.reason.contains("not the one written") && !d.reason.contains("past the end"), "{d}");
        }
        let intact = written.iter().take_while(|w| w.end <= first_change).count();
        prop_assert!(
            visited >= intact,
            "{visited} records reached, {intact} lie before the first change at {first_change}: {result:?}"
        );
        if let Ok(report) = result {
            prop_assert_eq!(report.tail.next_lsn, base + visited as u64);
            // A torn tail only where no intact record after it claims its LSN synced: checked
            // against every later offset, without the scan's shortcuts.
            if let Some(torn) = report.torn.filter(|t| t.offset > 0) {
                let bytes = sim.read(&torn.file).unwrap();
                let lsn = report.tail.next_lsn;
                for at in torn.offset as usize + 1..bytes.len() {
                    if let Ok(r) = read_record(&bytes[at..]) {
                        prop_assert!(
                            r.synced_lsn < lsn,
                            "cut as torn at {} (LSN {lsn}), but the record at {at} (LSN {}) was \
                             framed with it synced",
                            torn.offset,
                            r.lsn
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn zeros_after_the_last_record_are_no_damage(
        (base, batches, body_len, split) in shape(),
        zeros in 1usize..5_000,
    ) {
        let (mut segments, written) = build(base, &batches, body_len, split);
        let last = &mut segments.last_mut().unwrap().1;
        last.resize(last.len() + zeros, 0);
        let report = scan(&store(&segments), base, |_| Ok(()));
        let report = report.map_err(|d| TestCaseError::fail(d.to_string()))?;
        prop_assert_eq!(report.tail.next_lsn, base + written.len() as u64);
        prop_assert!(report.torn.is_none(), "{:?}", report.torn);
    }
}
