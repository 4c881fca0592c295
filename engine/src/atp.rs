//! Available-to-promise arithmetic, as pure functions of one position's numbers.
//!
//! Let `net(d)` be what is left on day `d` after every claim due by then:
//!
//! ```text
//! net(d) = on_hand + inbound arriving by d - safety_stock - reserved - allocated
//!          + claims dated after d
//! ```
//!
//! where `reserved` and `allocated` count every hold and allocation, and "claims dated after d"
//! gives back those placed against future supply (a hold for day 15 does not consume stock on
//! day 12). A promise of `q` units on day `t` is valid only if `net(d) >= q` for every `d >= t`,
//! so `ATP(t) = min over d >= t of net(d)`: a promise on future supply never takes stock that an
//! earlier promise counts on. Dates before today are read as today, and inbound that was due in
//! the past but not yet received counts as arrived. With no future-dated claims this reduces to
//! DESIGN.md's `on_hand + inbound arrived by today - safety_stock - reserved - allocated`.

use crate::ids::Day;

/// An inbound lot on its way to a position.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InboundLot {
    pub reference: Box<str>,
    pub quantity: u32,
    pub arrival: Day,
}

/// The dated part of a position, stored out of line because most positions have none: inbound
/// lots (sorted by arrival, then reference) and claims placed against future supply (sorted by
/// day, one entry per day, never zero).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dated {
    pub lots: Vec<InboundLot>,
    pub future_claims: Vec<(Day, u32)>,
}

impl Dated {
    pub fn is_empty(&self) -> bool {
        self.lots.is_empty() && self.future_claims.is_empty()
    }

    /// Adds `quantity` to the claims dated `day`.
    pub fn add_claim(&mut self, day: Day, quantity: u32) {
        match self.future_claims.binary_search_by_key(&day, |c| c.0) {
            Ok(i) => self.future_claims[i].1 += quantity,
            Err(i) => self.future_claims.insert(i, (day, quantity)),
        }
    }

    /// Removes `quantity` from the claims dated `day`. The caller guarantees they are there.
    pub fn remove_claim(&mut self, day: Day, quantity: u32) {
        let i = self
            .future_claims
            .binary_search_by_key(&day, |c| c.0)
            .expect("a future claim being removed was recorded");
        let left = &mut self.future_claims[i].1;
        assert!(*left >= quantity, "future claim underflow");
        *left -= quantity;
        if *left == 0 {
            self.future_claims.remove(i);
        }
    }

    pub fn insert_lot(&mut self, lot: InboundLot) {
        let i = self
            .lots
            .partition_point(|l| (l.arrival, &l.reference) < (lot.arrival, &lot.reference));
        self.lots.insert(i, lot);
    }

    pub fn lot_index(&self, reference: &str) -> Option<usize> {
        self.lots.iter().position(|l| &*l.reference == reference)
    }
}

/// `on_hand - safety_stock - reserved - allocated`: ATP when nothing is dated.
pub fn base(on_hand: u32, safety_stock: u32, reserved: u32, allocated: u32) -> i64 {
    i64::from(on_hand) - i64::from(safety_stock) - i64::from(reserved) - i64::from(allocated)
}

/// ATP on day `t` (see the module comment). May be negative when stock was counted down below
/// what is already claimed.
pub fn atp_on(base: i64, dated: Option<&Dated>, today: Day, t: Day) -> i64 {
    let Some(dated) = dated else { return base };
    let mut min = i64::MAX;
    walk(base, dated, today.max(t), |_, net| min = min.min(net));
    min
}

/// One step of the availability timeline: from `day` on (until the next point), a promise of up
/// to `atp` units is valid.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TimelinePoint {
    pub day: Day,
    pub atp: i64,
}

/// The cumulative ATP with look-ahead from today on: one point for today and one for each later
/// day on which supply arrives or a future claim falls due.
pub fn timeline(base: i64, dated: Option<&Dated>, today: Day) -> Vec<TimelinePoint> {
    let Some(dated) = dated else {
        return vec![TimelinePoint {
            day: today,
            atp: base,
        }];
    };
    let mut points = Vec::new();
    walk(base, dated, today, |day, net| {
        points.push(TimelinePoint { day, atp: net })
    });
    let mut min = i64::MAX;
    for p in points.iter_mut().rev() {
        min = min.min(p.atp);
        p.atp = min;
    }
    points
}

/// Calls `visit(day, net(day))` for `start` and for every later day on which `net` changes.
fn walk(base: i64, dated: &Dated, start: Day, mut visit: impl FnMut(Day, i64)) {
    let lots = &dated.lots;
    let claims = &dated.future_claims;
    let mut li = lots.partition_point(|l| l.arrival <= start);
    let mut ci = claims.partition_point(|c| c.0 <= start);
    let arrived: i64 = lots[..li].iter().map(|l| i64::from(l.quantity)).sum();
    let later_claims: i64 = claims[ci..].iter().map(|c| i64::from(c.1)).sum();
    let mut net = base + arrived + later_claims;
    visit(start, net);
    while li < lots.len() || ci < claims.len() {
        let day = match (lots.get(li), claims.get(ci)) {
            (Some(l), Some(c)) => l.arrival.min(c.0),
            (Some(l), None) => l.arrival,
            (None, Some(c)) => c.0,
            (None, None) => unreachable!(),
        };
        while li < lots.len() && lots[li].arrival == day {
            net += i64::from(lots[li].quantity);
            li += 1;
        }
        while ci < claims.len() && claims[ci].0 == day {
            net -= i64::from(claims[ci].1);
            ci += 1;
        }
        visit(day, net);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(q: u32, day: u32) -> InboundLot {
        InboundLot {
            reference: format!("PO-{day}-{q}").into(),
            quantity: q,
            arrival: Day(day),
        }
    }

    /// The worked example: 50 on hand + 25 arriving (by today) - 10 committed = 65.
    #[test]
    fn worked_example_50_plus_25_minus_10() {
        let dated = Dated {
            lots: vec![lot(25, 100)],
            future_claims: vec![],
        };
        let b = base(50, 0, 0, 10);
        assert_eq!(atp_on(b, Some(&dated), Day(100), Day(100)), 65);
        // The day before the lot lands only the 40 on hand are promisable today, 65 from day 100.
        assert_eq!(atp_on(b, Some(&dated), Day(99), Day(99)), 40);
        assert_eq!(atp_on(b, Some(&dated), Day(99), Day(100)), 65);
    }

    #[test]
    fn safety_stock_and_holds_reduce_atp() {
        assert_eq!(atp_on(base(100, 10, 20, 30), None, Day(5), Day(5)), 40);
        assert_eq!(atp_on(base(10, 20, 0, 0), None, Day(5), Day(9)), -10);
    }

    #[test]
    fn past_dates_read_as_today_and_overdue_lots_count() {
        let dated = Dated {
            lots: vec![lot(7, 3)],
            future_claims: vec![],
        };
        assert_eq!(atp_on(0, Some(&dated), Day(10), Day(1)), 7);
    }

    /// A hold for day 15 on supply arriving day 15 leaves today's stock alone, but a later
    /// promise on that supply must not double-count it.
    #[test]
    fn look_ahead_protects_future_claims() {
        // 5 on hand, 10 arriving day 15, and 10 already claimed for day 15.
        let dated = Dated {
            lots: vec![lot(10, 15)],
            future_claims: vec![(Day(15), 10)],
        };
        let b = base(5, 0, 10, 0);
        assert_eq!(atp_on(b, Some(&dated), Day(12), Day(12)), 5);
        assert_eq!(atp_on(b, Some(&dated), Day(12), Day(15)), 5);
        assert_eq!(atp_on(b, Some(&dated), Day(12), Day(20)), 5);
        // Now claim the 5 on hand for day 20: nothing is left on any day from 12 on.
        let mut dated = dated;
        dated.add_claim(Day(20), 5);
        let b = base(5, 0, 15, 0);
        assert_eq!(atp_on(b, Some(&dated), Day(12), Day(12)), 0);
        assert_eq!(atp_on(b, Some(&dated), Day(12), Day(25)), 0);
    }

    /// Supply that arrives after a dip cannot cover a promise made before the dip.
    #[test]
    fn look_ahead_takes_the_minimum_of_later_days() {
        // 10 on hand; 8 claimed for day 14; 20 arrive day 16.
        let dated = Dated {
            lots: vec![lot(20, 16)],
            future_claims: vec![(Day(14), 8)],
        };
        let b = base(10, 0, 8, 0);
        assert_eq!(atp_on(b, Some(&dated), Day(10), Day(10)), 2);
        assert_eq!(atp_on(b, Some(&dated), Day(10), Day(14)), 2);
        assert_eq!(atp_on(b, Some(&dated), Day(10), Day(16)), 22);
        let tl = timeline(b, Some(&dated), Day(10));
        let got: Vec<(u32, i64)> = tl.iter().map(|p| (p.day.0, p.atp)).collect();
        assert_eq!(got, vec![(10, 2), (14, 2), (16, 22)]);
    }

    #[test]
    fn claims_bookkeeping() {
        let mut d = Dated::default();
        d.add_claim(Day(3), 4);
        d.add_claim(Day(1), 2);
        d.add_claim(Day(3), 1);
        assert_eq!(d.future_claims, vec![(Day(1), 2), (Day(3), 5)]);
        d.remove_claim(Day(3), 5);
        d.remove_claim(Day(1), 2);
        assert!(d.is_empty());
    }
}
