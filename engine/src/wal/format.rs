//! The byte format of WAL segments and records (version 2, documented in `docs/design.md`).
//!
//! A segment is a 32-byte header followed by records. A record is a 32-byte header and the
//! command in codec v1. Each record's CRC32C covers its length, the previous record's CRC, its
//! sync distance, its LSN, its time and its command, so the records form a hash chain: a record
//! that is lost, repeated or moved breaks the chain even when each record is intact on its own.
//!
//! The sync distance says how far back the last record known synced to the media was when this
//! one was written. Recovery needs it to tell a power cut from damage: a cut may keep any subset
//! of the pages written since the last sync (a hole, then intact records), but an intact record
//! whose writer already knew the bad one synced proves that the bad one is damage.

/// Segment file magic. It has not changed since version 1; the header's version field follows it.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PROMWAL1";
pub const FORMAT_VERSION: u32 = 2;
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 32;
/// No command encodes to more than this; a larger length is damage.
pub const RECORD_BODY_MAX: usize = 16 << 20;

/// The chain value before the first record of a log.
pub const CHAIN_START: u32 = 0;

pub fn segment_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.log")
}

/// The first LSN of a segment file name, or `None` if the name is not a segment's.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_lsn: u64,
    /// The CRC of record `first_lsn - 1` (`CHAIN_START` for the first segment of a log).
    pub prev_crc: u32,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        b[24..28].copy_from_slice(&self.prev_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, HeaderFault> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderFault::Damaged(format!(
                "segment header needs {SEGMENT_HEADER_LEN} bytes, file has {}",
                b.len()
            )));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderFault::Damaged(
                "not a promised WAL segment (bad magic)".into(),
            ));
        }
        if crc32c::crc32c(&b[0..28]) != u32_at(b, 28) {
            return Err(HeaderFault::Damaged("segment header checksum mismatch".into()));
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderFault::OtherVersion(version));
        }
        Ok(Self {
            first_lsn: u64_at(b, 16),
            prev_crc: u32_at(b, 24),
        })
    }
}

/// Why a segment header does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderFault {
    /// Intact, but of another format version: the segment is not damaged, only unreadable by
    /// this build.
    OtherVersion(u32),
    /// Cut short, not a segment, or a failed checksum.
    Damaged(String),
}

/// A record as read back.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: u64,
    pub time: u64,
    pub prev_crc: u32,
    pub crc: u32,
    /// Every record up to this LSN was synced to the media when this one was written.
    pub synced_lsn: u64,
    pub body: &'a [u8],
}

impl RecordRef<'_> {
    /// Bytes the record takes in a segment.
    pub fn framed_len(&self) -> usize {
        RECORD_HEADER_LEN + self.body.len()
    }
}

/// Where a record sits in the log, and what was known synced when it was written.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RecordPlace {
    pub prev_crc: u32,
    pub lsn: u64,
    /// The last LSN synced to the media (below `lsn`).
    pub synced_lsn: u64,
}

/// Appends a framed record to `out` and returns its CRC (the next record's `prev_crc`).
pub fn frame_record(out: &mut Vec<u8>, place: RecordPlace, time: u64, body: &[u8]) -> u32 {
    let RecordPlace {
        prev_crc,
        lsn,
        synced_lsn,
    } = place;
    debug_assert!(synced_lsn < lsn);
    // Saturates: a distance past u32::MAX (fsync never, for billions of records) claims less
    // was synced than was, which only makes recovery more forgiving of a cut.
    let distance = u32::try_from(lsn - synced_lsn).unwrap_or(u32::MAX);
    let start = out.len();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&prev_crc.to_le_bytes());
    out.extend_from_slice(&distance.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&time.to_le_bytes());
    out.extend_from_slice(body);
    let crc = record_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    crc
}

/// The CRC of a framed record: its length field, then everything after the CRC field.
fn record_crc(framed: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&framed[0..4]), &framed[8..])
}

/// Why the bytes at an offset are not a record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RecordFault {
    /// Fewer bytes left than the header or the length field asks for.
    Short,
    /// The length field is larger than any record can be.
    BadLength,
    /// The checksum does not match the bytes.
    BadChecksum,
}

impl RecordFault {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Short => "record cut short",
            Self::BadLength => "impossible record length",
            Self::BadChecksum => "record checksum mismatch",
        }
    }
}

/// Reads the self-consistent record at the start of `b` (its chain link is the caller's check).
pub fn read_record(b: &[u8]) -> Result<RecordRef<'_>, RecordFault> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(RecordFault::Short);
    }
    let len = u32_at(b, 0) as usize;
    if len > RECORD_BODY_MAX {
        return Err(RecordFault::BadLength);
    }
    if b.len() < RECORD_HEADER_LEN + len {
        return Err(RecordFault::Short);
    }
    let framed = &b[..RECORD_HEADER_LEN + len];
    let crc = u32_at(b, 4);
    if record_crc(framed) != crc {
        return Err(RecordFault::BadChecksum);
    }
    let lsn = u64_at(b, 16);
    Ok(RecordRef {
        lsn,
        time: u64_at(b, 24),
        prev_crc: u32_at(b, 8),
        crc,
        synced_lsn: synced_lsn(lsn, u32_at(b, 12)),
        body: &framed[RECORD_HEADER_LEN..],
    })
}

/// The LSN a record's sync distance points at. The writer never frames a distance of 0 (a
/// record is not synced before it is written), so 0 proves nothing.
fn synced_lsn(lsn: u64, distance: u32) -> u64 {
    match distance {
        0 => 0,
        d => lsn.saturating_sub(u64::from(d)),
    }
}

/// Whether the record header at the start of `b` could prove `lsn` synced, read from its fields
/// alone (no checksum): an LSN after `lsn` but at most `max_lsn`, and a sync distance that reaches
/// back to `lsn`. Lets the search for such a record skip most offsets without hashing.
pub fn may_prove_synced(b: &[u8], lsn: u64, max_lsn: u64) -> bool {
    if b.len() < RECORD_HEADER_LEN {
        return false;
    }
    let later = u64_at(b, 16);
    later > lsn && later <= max_lsn && synced_lsn(later, u32_at(b, 12)) >= lsn
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_any_flipped_bit_is_caught() {
        let mut out = Vec::new();
        let place = RecordPlace {
            prev_crc: 7,
            lsn: 42,
            synced_lsn: 39,
        };
        let crc = frame_record(&mut out, place, 1_000, b"hello");
        let r = read_record(&out).unwrap();
        assert_eq!(
            (r.lsn, r.time, r.prev_crc, r.crc, r.synced_lsn, r.body),
            (42, 1_000, 7, crc, 39, &b"hello"[..])
        );
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    read_record(&bad).is_err(),
                    "flip of bit {bit} of byte {byte} went unseen"
                );
            }
        }
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(12_345)), Some(12_345));
        assert_eq!(parse_segment_name("wal-1.log"), None);
        assert_eq!(parse_segment_name("snap-00000000000000000001.snap"), None);
        let h = SegmentHeader {
            first_lsn: 9,
            prev_crc: 0xDEAD_BEEF,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
    }
}
