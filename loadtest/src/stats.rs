//! Latency and outcome counts per operation kind. Latencies are in microseconds, measured from
//! each request's intended send time (coordinated omission corrected in open loop).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::{OpKind, Reply};

/// Up to an hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Clone)]
pub struct OpStats {
    pub ok: u64,
    pub refused: u64,
    pub errors: BTreeMap<u16, u64>,
    pub first_error: Option<String>,
    pub latency: Histogram<u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        Self {
            ok: 0,
            refused: 0,
            errors: BTreeMap::new(),
            first_error: None,
            latency: histogram(),
        }
    }
}

impl OpStats {
    pub fn count(&self) -> u64 {
        self.ok + self.refused + self.errors.values().sum::<u64>()
    }

    fn merge(&mut self, o: &OpStats) {
        self.ok += o.ok;
        self.refused += o.refused;
        for (c, n) in &o.errors {
            *self.errors.entry(*c).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
        self.latency.add(&o.latency).expect("same bounds");
    }
}

/// Every operation kind's numbers.
#[derive(Clone, Default)]
pub struct Stats {
    pub ops: BTreeMap<OpKind, OpStats>,
}

impl Stats {
    pub fn record(&mut self, kind: OpKind, reply: &Reply, micros: u64) {
        let s = self.ops.entry(kind).or_default();
        match reply {
            Reply::Error(code, message) => {
                *s.errors.entry(*code).or_default() += 1;
                if s.first_error.is_none() {
                    s.first_error = Some(format!("{} (code {code})", message));
                }
            }
            Reply::Refused => s.refused += 1,
            _ => s.ok += 1,
        }
        s.latency.saturating_record(micros.max(1));
    }

    pub fn merge(&mut self, o: &Stats) {
        for (k, s) in &o.ops {
            self.ops.entry(*k).or_default().merge(s);
        }
    }

    /// All kinds together.
    pub fn total(&self) -> OpStats {
        let mut t = OpStats::default();
        for s in self.ops.values() {
            t.merge(s);
        }
        t
    }

    pub fn errors(&self) -> u64 {
        self.ops.values().map(|s| s.errors.values().sum::<u64>()).sum()
    }
}

/// One row of the final table and of the JSON results.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: String,
    pub count: u64,
    pub per_second: f64,
    pub refused: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Row {
    pub fn of(op: &str, s: &OpStats, seconds: f64) -> Self {
        let q = |x| s.latency.value_at_quantile(x);
        Self {
            op: op.to_string(),
            count: s.count(),
            per_second: s.count() as f64 / seconds.max(1e-9),
            refused: s.refused,
            errors: s.errors.values().sum(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: s.latency.max(),
        }
    }
}

/// The table's rows: each kind seen, then the total.
pub fn rows(stats: &Stats, seconds: f64) -> Vec<Row> {
    let mut rows: Vec<Row> = stats
        .ops
        .iter()
        .map(|(k, s)| Row::of(k.name(), s, seconds))
        .collect();
    rows.push(Row::of("all", &stats.total(), seconds));
    rows
}

/// Microseconds as a short human figure.
pub fn human_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} us"),
        1_000..1_000_000 => format!("{:.2} ms", us as f64 / 1e3),
        _ => format!("{:.2} s", us as f64 / 1e6),
    }
}

/// Operations per second, short.
pub fn human_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<13} {:>10} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "count", "per s", "refused", "errors", "p50", "p90", "p99", "p99.9", "max"
    );
    for r in rows {
        println!(
            "{:<13} {:>10} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            r.op,
            r.count,
            human_rate(r.per_second),
            r.refused,
            r.errors,
            human_us(r.p50_us),
            human_us(r.p90_us),
            human_us(r.p99_us),
            human_us(r.p999_us),
            human_us(r.max_us)
        );
    }
}

/// One second of the run, for the progress bar, the JSON and the plot.
#[derive(Clone, Debug, Serialize)]
pub struct Tick {
    /// Seconds since the run started (warm-up included).
    pub t: f64,
    pub per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub warmup: bool,
}
