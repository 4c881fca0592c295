//! Identifiers and units: dense ids for SKUs and nodes, request ids, quantities and time.
//!
//! Callers name SKUs and nodes with strings; the engine interns them once (on upsert) into dense
//! integers so that a position lookup is an array index and a binary search, never a string hash.
//! Every type here is a newtype with a checked constructor, so an out-of-range value cannot reach
//! the ledger.

use std::fmt;

use crate::error::EngineError;
use crate::limits::{NAME_BYTES_MAX, QUANTITY_MAX};

/// Dense id of a SKU, assigned in upsert order starting at 0.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkuId(u32);

impl SkuId {
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }
    pub const fn raw(self) -> u32 {
        self.0
    }
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Dense id of a node (DC, store, 3PL, drop-ship vendor), assigned in upsert order from 0.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }
    pub const fn raw(self) -> u32 {
        self.0
    }
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A destination zone (a postcode group). Zones are numbered by the network's owner.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneId(pub u32);

/// The idempotency key a caller attaches to every state-changing request. A hold's request id is
/// also the hold's id. 128 bits so that independent clients can draw them at random (UUIDs).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u128);

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A positive number of units in a request line: 1 ..= 2^31.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(u32);

impl Quantity {
    /// Checks a caller-supplied quantity: zero, negative and absurd values are typed errors.
    pub fn new(value: i64) -> Result<Self, EngineError> {
        if value <= 0 || value > i64::from(QUANTITY_MAX) {
            return Err(EngineError::InvalidQuantity { value });
        }
        Ok(Self(value as u32))
    }
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// Milliseconds since the Unix epoch, UTC. The engine never reads a clock: every command carries
/// the time the server assigned to it, so replay sees exactly the same times.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(pub u64);

pub const MS_PER_DAY: u64 = 86_400_000;

impl Timestamp {
    /// The UTC calendar day this instant falls on.
    pub const fn day(self) -> Day {
        Day((self.0 / MS_PER_DAY) as u32)
    }
    pub const fn saturating_add_ms(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

/// A calendar day, counted from 1970-01-01 (day 0). Inbound arrivals and promise dates are days.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Day(pub u32);

impl Day {
    pub const fn start(self) -> Timestamp {
        Timestamp(self.0 as u64 * MS_PER_DAY)
    }
    pub const fn plus(self, days: u32) -> Day {
        Day(self.0 + days)
    }
}

impl fmt::Display for Day {
    /// Formats as an ISO date (proleptic Gregorian), e.g. `2026-11-23`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(i64::from(self.0));
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 -> (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Howard Hinnant's `days_from_civil`: (year, month, day) -> days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Checks a caller-chosen name (SKU code, node code, lot reference): non-empty, at most
/// `NAME_BYTES_MAX` bytes, printable ASCII without spaces, so ids survive logs and CSV unquoted.
pub fn check_name(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty() && name.len() <= NAME_BYTES_MAX && name.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidName {
            name: name.chars().take(NAME_BYTES_MAX).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-5).is_err());
        assert_eq!(Quantity::new(1).unwrap().get(), 1);
        assert_eq!(Quantity::new(1 << 31).unwrap().get(), 1 << 31);
        assert!(Quantity::new((1 << 31) + 1).is_err());
    }

    #[test]
    fn calendar_round_trip() {
        for z in [-1000, 0, 1, 59, 60, 365, 10_957, 20_415, 100_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(Day(20_415).to_string(), "2025-11-23");
        assert_eq!(days_from_civil(2026, 11, 23), 20_780);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("SKU-000001").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name(&"x".repeat(NAME_BYTES_MAX + 1)).is_err());
    }
}
