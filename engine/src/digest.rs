//! The state digest: one 128-bit hash of the whole engine state, in a canonical order.
//!
//! Two engines that applied the same commands with the same times have the same digest, however
//! their threads interleaved and whether they got there live, by replay or from a snapshot. Derived
//! data that does not change behaviour (slab slot numbers, lazily deleted expiry entries) is left
//! out; everything a later command or query can observe is in.

use std::fmt;
use std::hash::Hash;

use xxhash_rust::xxh3::Xxh3;

use crate::ledger::Engine;

#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct StateDigest(pub u128);

impl fmt::Debug for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for StateDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Engine {
    /// Hashes the whole state. Takes every lock, so it is a consistent cut; it costs a full scan.
    pub fn state_digest(&self) -> StateDigest {
        let catalog = self.catalog.lock();
        let mut requests = self.lock_all_requests();
        let feeds = self.feeds.lock();
        let capacity = self.capacity.read();
        let mut shards = self.lock_all_skus();
        let mut h = Xxh3::new();
        for (id, spec) in catalog.network.nodes() {
            id.hash(&mut h);
            format!("{spec:?}").hash(&mut h);
        }
        // Zones and lanes in a stable order (their maps iterate in random order).
        let mut zones: Vec<String> = catalog.network.zones().map(|z| format!("{z:?}")).collect();
        zones.sort_unstable();
        zones.hash(&mut h);
        let mut lanes: Vec<_> = catalog.network.lanes().copied().collect();
        lanes.sort_unstable_by_key(|l| (l.node, l.zone.0, l.level));
        lanes.hash(&mut h);
        catalog.sku_names.len().hash(&mut h);
        feeds.hash(&mut h);
        (capacity.floor(), capacity.entries()).hash(&mut h);
        for shard_idx in 0..self.config.sku_shards {
            let shard = shards.get(shard_idx);
            for entry in &shard.skus {
                entry.name.hash(&mut h);
                entry.required.hash(&mut h);
                entry.positions.len().hash(&mut h);
                for (node, p) in entry.nodes.iter().zip(&entry.positions) {
                    (node, p.on_hand, p.safety_stock, p.reserved, p.allocated).hash(&mut h);
                    shard.dated_of(p).hash(&mut h);
                }
            }
        }
        for rs_idx in 0..self.config.request_shards {
            let rs = requests.get(rs_idx);
            let mut records: Vec<_> = rs.records.iter().collect();
            records.sort_unstable_by_key(|r| *r.0);
            for (id, record) in records {
                (id, record).hash(&mut h);
            }
            rs.retention.hash(&mut h);
        }
        StateDigest(h.digest128())
    }
}
