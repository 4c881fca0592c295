//! When a node can ship: its cut-off (in its own time zone), its working calendar, its
//! processing days, the day the stock is there, and what is left of its daily capacity.
//!
//! Days are the engine's UTC day numbers; a node's local day is its local midnight-to-midnight
//! mapped onto the same numbering (the order's local date decides the cut-off).

use crate::ids::{Day, NodeId, Timestamp};
use crate::limits::LOOKAHEAD_DAYS_MAX;
use crate::network::{Calendar, NodeSpec};

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_MINUTE: i64 = 60_000;

/// What decided a ship (and so delivery) date. Ordered by how late in the reasoning it applies.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Binding {
    /// Nothing held the package back: the date is the earliest ship day plus transit.
    Transit = 0,
    /// The order came after the node's cut-off: it ships from the next day.
    Cutoff = 1,
    /// The node does not work that day (weekend, holiday).
    Calendar = 2,
    /// The node's capacity for the day is used up.
    Capacity = 3,
    /// The stock arrives later (inbound supply).
    Stock = 4,
}

impl Binding {
    pub fn name(self) -> &'static str {
        match self {
            Self::Transit => "transit",
            Self::Cutoff => "cutoff",
            Self::Calendar => "calendar",
            Self::Capacity => "capacity",
            Self::Stock => "stock",
        }
    }
}

/// Orders and units a node has already committed to ship on a day.
pub trait CapacityUse {
    fn used(&self, node: NodeId, day: Day) -> (u32, u32);
}

/// No capacity used anywhere.
pub struct NoCapacityUsed;

impl CapacityUse for NoCapacityUsed {
    fn used(&self, _: NodeId, _: Day) -> (u32, u32) {
        (0, 0)
    }
}

/// Monday = 0 (1970-01-01 was a Thursday).
pub fn weekday(day: Day) -> u32 {
    (day.0 + 3) % 7
}

pub fn is_working(calendar: &Calendar, day: Day) -> bool {
    calendar.weekdays & (1 << weekday(day)) != 0 && !calendar.holidays.contains(&day)
}

/// The first working day at or after `day`, within the look-ahead horizon from `today`.
fn first_working(calendar: &Calendar, day: Day, today: Day) -> Option<Day> {
    (day.0..=today.0 + LOOKAHEAD_DAYS_MAX)
        .map(Day)
        .find(|&d| is_working(calendar, d))
}

/// A day and what decided it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ShipDay {
    pub day: Day,
    pub binding: Binding,
}

/// The first day `node` can ship a package of `units` units whose stock is there from `ready`,
/// for an order placed at `now`; `None` if no day within the look-ahead horizon works (no working
/// day, or a package larger than a whole day's capacity). A capacity of 0 means unlimited.
pub fn ship_day(
    id: NodeId,
    node: &NodeSpec,
    now: Timestamp,
    ready: Day,
    units: u32,
    capacity: &dyn CapacityUse,
) -> Option<ShipDay> {
    let today = now.day();
    let local = now.0 as i64 + i64::from(node.utc_offset_minutes) * MS_PER_MINUTE;
    let local_day = Day(local.div_euclid(MS_PER_DAY).max(0) as u32);
    let minute = local.rem_euclid(MS_PER_DAY) / MS_PER_MINUTE;
    let mut binding = Binding::Transit;
    let mut day = local_day;
    if minute >= i64::from(node.cutoff_minute) {
        day = day.plus(1);
        binding = Binding::Cutoff;
    }
    let calendar = &node.calendar;
    let start = first_working(calendar, day, today)?;
    if start != day {
        binding = Binding::Calendar;
    }
    day = start;
    for _ in 0..node.processing_days {
        let next = first_working(calendar, day.plus(1), today)?;
        if next != day.plus(1) {
            // Processing waits over a weekend or holiday.
            binding = Binding::Calendar;
        }
        day = next;
    }
    // Stock there today (UTC) is there on the node's local day too, even when that day is still
    // yesterday in UTC (a node west of UTC after UTC midnight): only later supply holds it back.
    if ready > today && ready > day {
        day = first_working(calendar, ready, today)?;
        binding = Binding::Stock;
    }
    let cap = node.capacity;
    let limit = |c: u32| if c == 0 { u64::MAX } else { u64::from(c) };
    if u64::from(units) > limit(cap.units) {
        return None;
    }
    loop {
        let (orders, used_units) = capacity.used(id, day);
        if u64::from(orders) < limit(cap.orders)
            && u64::from(used_units) + u64::from(units) <= limit(cap.units)
        {
            return Some(ShipDay { day, binding });
        }
        day = first_working(calendar, day.plus(1), today)?;
        binding = Binding::Capacity;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::DailyCapacity;
    use std::collections::HashMap;

    /// 2026-11-23 was a Monday.
    const MONDAY: Day = Day(20_780);

    fn at(day: Day, hour: i64, minute: i64) -> Timestamp {
        Timestamp((i64::from(day.0) * MS_PER_DAY + hour * 3_600_000 + minute * MS_PER_MINUTE) as u64)
    }

    fn dc() -> NodeSpec {
        let mut n = NodeSpec::open("DC");
        n.cutoff_minute = 14 * 60;
        n.calendar.weekdays = 0b1_1111;
        n
    }

    struct Used(HashMap<(NodeId, Day), (u32, u32)>);
    impl CapacityUse for Used {
        fn used(&self, node: NodeId, day: Day) -> (u32, u32) {
            self.0.get(&(node, day)).copied().unwrap_or_default()
        }
    }

    #[test]
    fn cutoff_calendar_processing_stock_and_capacity() {
        assert_eq!(weekday(MONDAY), 0);
        let id = NodeId::from_raw(0);
        let n = dc();
        let none = &NoCapacityUsed;
        let ship = |node: &NodeSpec, now, ready, units, cap: &dyn CapacityUse| {
            ship_day(id, node, now, ready, units, cap)
        };
        // Before the cut-off: today; after: tomorrow.
        let s = ship(&n, at(MONDAY, 9, 0), MONDAY, 1, none).unwrap();
        assert_eq!((s.day, s.binding), (MONDAY, Binding::Transit));
        let s = ship(&n, at(MONDAY, 14, 0), MONDAY, 1, none).unwrap();
        assert_eq!((s.day, s.binding), (MONDAY.plus(1), Binding::Cutoff));
        // Friday after the cut-off: Monday (the weekend does not work).
        let friday = MONDAY.plus(4);
        let s = ship(&n, at(friday, 15, 0), friday, 1, none).unwrap();
        assert_eq!((s.day, s.binding), (MONDAY.plus(7), Binding::Calendar));
        // A holiday on Tuesday: Monday evening's order ships Wednesday.
        let mut h = dc();
        h.calendar.holidays.push(MONDAY.plus(1));
        let s = ship(&h, at(MONDAY, 20, 0), MONDAY, 1, none).unwrap();
        assert_eq!((s.day, s.binding), (MONDAY.plus(2), Binding::Calendar));
        // Two processing days count working days: Thursday morning -> Monday.
        let mut p = dc();
        p.processing_days = 2;
        let s = ship(&p, at(MONDAY.plus(3), 8, 0), MONDAY.plus(3), 1, none).unwrap();
        assert_eq!((s.day, s.binding), (MONDAY.plus(7), Binding::Calendar));
        // Monday morning, two processing days within the week: Wednesday, no calendar wait.
        let s = ship(&p, at(MONDAY, 8, 0), MONDAY, 1, none).unwrap();
        assert_eq!((s.day, s.binding), (MONDAY.plus(2), Binding::Transit));
        // Stock arriving Wednesday.
        let s = ship(&n, at(MONDAY, 9, 0), MONDAY.plus(2), 1, none).unwrap();
        assert_eq!((s.day, s.binding), (MONDAY.plus(2), Binding::Stock));
        // Today's orders used up: tomorrow; a package above a day's units: never.
        let mut c = dc();
        c.capacity = DailyCapacity {
            orders: 10,
            units: 100,
        };
        let used = Used([((id, MONDAY), (10, 0))].into());
        let s = ship(&c, at(MONDAY, 9, 0), MONDAY, 1, &used).unwrap();
        assert_eq!((s.day, s.binding), (MONDAY.plus(1), Binding::Capacity));
        let used = Used([((id, MONDAY), (1, 95))].into());
        assert_eq!(ship(&c, at(MONDAY, 9, 0), MONDAY, 5, &used).unwrap().day, MONDAY);
        assert_eq!(
            ship(&c, at(MONDAY, 9, 0), MONDAY, 6, &used).unwrap().day,
            MONDAY.plus(1)
        );
        assert_eq!(ship(&c, at(MONDAY, 9, 0), MONDAY, 101, none), None);
        // The cut-off is the node's local time: 22:00 UTC is 14:00 in UTC-8.
        let mut west = dc();
        west.utc_offset_minutes = -8 * 60;
        assert_eq!(
            ship(&west, at(MONDAY, 21, 59), MONDAY, 1, none).unwrap().day,
            MONDAY
        );
        assert_eq!(
            ship(&west, at(MONDAY, 22, 0), MONDAY, 1, none).unwrap().day,
            MONDAY.plus(1)
        );
        // West of UTC after UTC midnight: 01:30 UTC Tuesday is 17:30 Monday at UTC-8, before an
        // 18:00 cut-off; stock there today ships on the local Monday.
        let mut late = dc();
        (late.utc_offset_minutes, late.cutoff_minute) = (-8 * 60, 18 * 60);
        let tuesday = MONDAY.plus(1);
        let s = ship(&late, at(tuesday, 1, 30), tuesday, 1, none).unwrap();
        assert_eq!((s.day, s.binding), (MONDAY, Binding::Transit));
        // A node that never works never ships.
        let mut idle = dc();
        idle.calendar.weekdays = 0;
        assert_eq!(ship(&idle, at(MONDAY, 9, 0), MONDAY, 1, none), None);
    }
}
