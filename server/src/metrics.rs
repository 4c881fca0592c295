//! What the server exposes on `/metrics` (Prometheus text format): requests and their latency
//! per operation, rejections per error code, connections, the write-ahead log (records, bytes,
//! fsync latency, group-commit batch sizes), open holds and allocations, snapshot age, and
//! whether storage has failed.
//!
//! Request metrics are counted as requests are served; the rest is read from the engine and the
//! WAL when Prometheus scrapes.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use promised_engine::durable::DurableEngine;
use promised_engine::wal::WalStats;
use promised_schemas::wire;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<OpLabel, Counter>,
    latency: Family<OpLabel, Histogram>,
    rejected: Family<CodeLabel, Counter>,
    connections: Gauge,
    wal_records: Counter,
    wal_bytes: Counter,
    wal_syncs: Counter,
    wal_segments_prepared: Counter,
    wal_batch_records: Histogram,
    wal_fsync_seconds: Histogram,
    durable_lsn: Gauge,
    holds_open: Gauge,
    allocations_open: Gauge,
    snapshot_lsn: Gauge,
    snapshot_age_seconds: Gauge,
    storage_failed: Gauge,
    holds_expired: Counter,
    events_sent: Counter,
    events_dropped: Counter,
    /// Every operation's counter and histogram, looked up without building a label.
    by_op: std::collections::HashMap<&'static str, (Counter, Histogram)>,
    /// The WAL counters at the last scrape: the next scrape adds the difference.
    last_wal: Mutex<WalStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("promised");
        let requests = Family::<OpLabel, Counter>::default();
        registry.register("requests", "Requests served, by operation", requests.clone());
        let latency = Family::<OpLabel, Histogram>::new_with_constructor(|| {
            // 1 us to about 8 s.
            Histogram::new(exponential_buckets(1e-6, 2.0, 24))
        });
        registry.register(
            "request_duration_seconds",
            "From a request's arrival to its reply (writes include their group commit)",
            latency.clone(),
        );
        let rejected = Family::<CodeLabel, Counter>::default();
        registry.register(
            "rejected",
            "Requests answered with an error, by error code",
            rejected.clone(),
        );
        let connections = Gauge::default();
        registry.register("connections", "Open client connections", connections.clone());
        let wal_records = Counter::default();
        registry.register(
            "wal_records",
            "Records written to the write-ahead log",
            wal_records.clone(),
        );
        let wal_bytes = Counter::default();
        registry.register(
            "wal_bytes",
            "Bytes written to the write-ahead log",
            wal_bytes.clone(),
        );
        let wal_syncs = Counter::default();
        registry.register(
            "wal_fsyncs",
            "fdatasync calls on the write-ahead log",
            wal_syncs.clone(),
        );
        let wal_segments_prepared = Counter::default();
        registry.register(
            "wal_segments_prepared",
            "Log segments started on a file zero-filled ahead (faster syncs)",
            wal_segments_prepared.clone(),
        );
        let wal_batch_records = Histogram::new(exponential_buckets(1.0, 2.0, 24));
        registry.register(
            "wal_batch_records",
            "Records per group-commit batch (one write, one fsync)",
            wal_batch_records.clone(),
        );
        let wal_fsync_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 24));
        registry.register(
            "wal_fsync_seconds",
            "fdatasync latency",
            wal_fsync_seconds.clone(),
        );
        let durable_lsn = Gauge::default();
        registry.register(
            "wal_durable_lsn",
            "Every record up to this LSN is durable",
            durable_lsn.clone(),
        );
        let holds_open = Gauge::default();
        registry.register(
            "holds_open",
            "Holds not yet committed, released or expired",
            holds_open.clone(),
        );
        let allocations_open = Gauge::default();
        registry.register(
            "allocations_open",
            "Committed holds not yet shipped or cancelled",
            allocations_open.clone(),
        );
        let snapshot_lsn = Gauge::default();
        registry.register(
            "snapshot_lsn",
            "LSN of the newest snapshot (0: none yet)",
            snapshot_lsn.clone(),
        );
        let snapshot_age_seconds = Gauge::default();
        registry.register(
            "snapshot_age_seconds",
            "Seconds since the newest snapshot (or since start)",
            snapshot_age_seconds.clone(),
        );
        let storage_failed = Gauge::default();
        registry.register(
            "storage_failed",
            "1 when the write-ahead log failed and writes are refused",
            storage_failed.clone(),
        );
        let holds_expired = Counter::default();
        registry.register(
            "holds_expired",
            "Holds expired by the expiry tick",
            holds_expired.clone(),
        );
        let events_sent = Counter::default();
        registry.register(
            "events_sent",
            "Low-stock events queued to subscribed connections",
            events_sent.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Low-stock events lost because a subscriber fell behind",
            events_dropped.clone(),
        );
        let ops = promised_schemas::wire::Operation::ENUM_VALUES
            .iter()
            .filter_map(|o| o.variant_name())
            .chain(["Batch", "unknown"]);
        let by_op = ops
            .map(|op| {
                let label = OpLabel { op: op.to_string() };
                let counter = requests.get_or_create(&label).clone();
                let histogram = latency.get_or_create(&label).clone();
                (op, (counter, histogram))
            })
            .collect();
        Self {
            by_op,
            registry,
            holds_expired,
            events_sent,
            events_dropped,
            requests,
            latency,
            rejected,
            connections,
            wal_records,
            wal_bytes,
            wal_syncs,
            wal_segments_prepared,
            wal_batch_records,
            wal_fsync_seconds,
            durable_lsn,
            holds_open,
            allocations_open,
            snapshot_lsn,
            snapshot_age_seconds,
            storage_failed,
            last_wal: Mutex::new(WalStats::default()),
        }
    }

    pub fn served(&self, op: &str, took: Duration) {
        if let Some((counter, histogram)) = self.by_op.get(op) {
            counter.inc();
            histogram.observe(took.as_secs_f64());
            return;
        }
        let label = OpLabel { op: op.to_string() };
        self.requests.get_or_create(&label).inc();
        self.latency.get_or_create(&label).observe(took.as_secs_f64());
    }

    pub fn rejected(&self, code: wire::ErrorCode) {
        let code = code
            .variant_name()
            .map_or_else(|| code.0.to_string(), str::to_string);
        self.rejected.get_or_create(&CodeLabel { code }).inc();
    }

    pub fn holds_expired(&self, n: u32) {
        self.holds_expired.inc_by(u64::from(n));
    }

    pub fn event_sent(&self) {
        self.events_sent.inc();
    }

    pub fn events_dropped(&self, n: u64) {
        self.events_dropped.inc_by(n);
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// Reads the engine and the WAL, then encodes everything in the Prometheus text format.
    pub fn render(&self, db: &DurableEngine) -> String {
        let stats = db.wal_stats();
        {
            let mut last = self.last_wal.lock().expect("metrics lock");
            let d = stats.since(&last);
            self.wal_records.inc_by(d.records);
            self.wal_bytes.inc_by(d.bytes);
            self.wal_syncs.inc_by(d.syncs);
            self.wal_segments_prepared.inc_by(d.segments_prepared);
            // Bucket i of the WAL's counts holds values in (2^(i-1), 2^i]: observe its top.
            for (i, &n) in d.batch_sizes.iter().enumerate() {
                (0..n).for_each(|_| self.wal_batch_records.observe((1u64 << i) as f64));
            }
            for (i, &n) in d.sync_micros.iter().enumerate() {
                (0..n).for_each(|_| self.wal_fsync_seconds.observe((1u64 << i) as f64 * 1e-6));
            }
            *last = stats;
        }
        self.durable_lsn.set(db.wal().durable_lsn() as i64);
        let engine = db.engine().stats();
        self.holds_open.set(engine.held as i64);
        self.allocations_open.set(engine.committed as i64);
        let (lsn, age) = db.last_snapshot();
        self.snapshot_lsn.set(lsn as i64);
        self.snapshot_age_seconds.set(age.as_secs() as i64);
        self.storage_failed.set(i64::from(db.wal().failure().is_some()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
