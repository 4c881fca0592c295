//! `check_invariants`: the ledger's internal consistency, checked from scratch.
//!
//! Tests, fuzzers and simulations call it after every step. It recomputes every derived number
//! (reserved, allocated, dated claims) from the hold records and compares, so a bookkeeping slip
//! anywhere shows up at the step that caused it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::capacity::Load;
use crate::hold::{HoldState, NO_NODE, Record};
use crate::ids::{Day, NodeId, RequestId, SkuId};
use crate::ledger::Engine;
use crate::limits;
use crate::shard::NO_DATED;

#[derive(Default)]
struct Expected {
    reserved: u64,
    allocated: u64,
    claims: BTreeMap<Day, u64>,
}

impl Engine {
    /// Checks every internal invariant; returns a description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let catalog = self.catalog.lock();
        let mut requests = self.lock_all_requests();
        let feeds = self.feeds.lock();
        let capacity = self.capacity.read();
        let mut shards = self.lock_all_skus();
        let n_nodes = catalog.network.n_nodes();
        let n_skus = catalog.sku_names.len();
        if !Arc::ptr_eq(&self.network.load_full(), &catalog.network) {
            return Err("the published network is not the catalog's".into());
        }
        if self.sku_ids.len() != n_skus {
            return Err(format!(
                "{} SKU names resolve, {} SKUs exist",
                self.sku_ids.len(),
                n_skus
            ));
        }
        for (i, name) in catalog.sku_names.iter().enumerate() {
            if self.sku_ids.get(&**name).map(|e| *e.value()) != Some(SkuId::from_raw(i as u32)) {
                return Err(format!("SKU name {name:?} does not resolve to id {i}"));
            }
        }
        if feeds.len() != n_nodes {
            return Err(format!(
                "{} feed sequence slots for {} nodes",
                feeds.len(),
                n_nodes
            ));
        }

        for ((node, day), load) in capacity.entries() {
            if node.index() >= n_nodes || day < capacity.floor() || load == Load::default() {
                return Err(format!(
                    "capacity entry {node:?} day {} ({load:?}) is unknown, forgotten or empty",
                    day.0
                ));
            }
        }
        // Capacity that live routed orders' unshipped packages took (shipped packages keep
        // theirs, and a finished order may be forgotten: the book may hold more, never less).
        let mut routed_load: HashMap<(NodeId, Day), Load> = HashMap::new();

        let mut expected: HashMap<(SkuId, NodeId), Expected> = HashMap::new();
        let cap = self.retained_per_shard();
        for rs_idx in 0..self.config.request_shards {
            let rs = requests.get(rs_idx);
            let in_heap: HashSet<(u64, RequestId)> = rs.expiry.iter().map(|(at, id)| (at.0, id)).collect();
            let mut retained: HashSet<RequestId> = HashSet::new();
            if rs.retention.len() > cap {
                return Err(format!(
                    "request shard {rs_idx} retains {} > {cap}",
                    rs.retention.len()
                ));
            }
            for &(_, id) in &rs.retention {
                if !retained.insert(id) {
                    return Err(format!("request {id} retained twice"));
                }
                let finished = match rs.records.get(&id) {
                    Some(Record::Hold(h)) => h.state.is_finished(),
                    Some(Record::Done(_)) => true,
                    None => false,
                };
                if !finished {
                    return Err(format!(
                        "retained request {id} is neither a finished hold nor done"
                    ));
                }
            }
            rs.records
                .check()
                .map_err(|e| format!("request shard {rs_idx}: {e}"))?;
            for (id, record) in rs.records.iter() {
                if self.request_shard_of(*id) != rs_idx {
                    return Err(format!("record {id} is in the wrong request shard"));
                }
                if matches!(record, Record::Done(_)) && !retained.contains(id) {
                    return Err(format!("done record {id} is not in the retention queue"));
                }
            }
            for (id, record) in rs.records.iter() {
                let Record::Hold(hold) = record else { continue };
                let ctx = |what: &str| format!("hold {id} ({}): {what}", hold.state.name());
                if hold.id != *id || self.request_shard_of(*id) != rs_idx {
                    return Err(ctx("filed under the wrong id or shard"));
                }
                if hold.state.is_finished() != retained.contains(id) {
                    return Err(ctx("finished holds and only they are in the retention queue"));
                }
                if hold.state == HoldState::Held && !in_heap.contains(&(hold.expires_at.0, *id)) {
                    return Err(ctx("held but missing from the expiry queue"));
                }
                if let Some(routed) = &hold.routed {
                    if hold.state == HoldState::Held {
                        return Err(ctx("a routed order is a hold"));
                    }
                    for slot in routed.packages.iter() {
                        let mut package = hold.lines.iter().filter(|l| l.node == slot.node).peekable();
                        if package.peek().is_none() {
                            return Err(ctx("a package has no line"));
                        }
                        let unshipped = package.clone().all(|l| l.remaining == l.granted);
                        if hold.state == HoldState::Committed && unshipped && slot.day >= capacity.floor() {
                            let load = routed_load.entry((slot.node, slot.day)).or_default();
                            load.orders += 1;
                            load.units += package.map(|l| l.granted).sum::<u32>();
                        }
                    }
                }
                let mut seen = HashSet::new();
                for l in &hold.lines {
                    if !(l.remaining <= l.granted && l.granted <= l.requested) {
                        return Err(ctx("line quantities out of order"));
                    }
                    if l.node == NO_NODE {
                        if l.granted != 0 {
                            return Err(ctx("a line with no node has units"));
                        }
                        continue;
                    }
                    if !seen.insert((l.sku, l.node)) {
                        return Err(ctx("a position appears twice"));
                    }
                    if l.remaining == 0 {
                        continue;
                    }
                    let e = expected.entry((l.sku, l.node)).or_default();
                    match hold.state {
                        HoldState::Held => e.reserved += u64::from(l.remaining),
                        HoldState::Committed => e.allocated += u64::from(l.remaining),
                        _ => return Err(ctx("a finished hold still has units")),
                    }
                    if l.future {
                        *e.claims.entry(l.need_day).or_default() += u64::from(l.remaining);
                    }
                }
            }
        }

        for ((node, day), want) in routed_load {
            let have = capacity.load(node, day);
            if have.orders < want.orders || have.units < want.units {
                return Err(format!(
                    "capacity of {node:?} on day {} is {have:?}, below the {want:?} its routed orders take",
                    day.0
                ));
            }
        }

        let mut n_skus_seen = 0;
        for shard_idx in 0..self.config.sku_shards {
            let shard = shards.get(shard_idx);
            if !Arc::ptr_eq(&shard.network, &catalog.network) {
                return Err(format!("shard {shard_idx} has a stale network"));
            }
            let mut referenced = HashSet::new();
            for (slot, entry) in shard.skus.iter().enumerate() {
                n_skus_seen += 1;
                let sku = SkuId::from_raw(((slot as u32) << self.map.bits) | shard_idx as u32);
                if *catalog.sku_names[sku.index()] != *entry.name {
                    return Err(format!("SKU {sku:?} name differs between catalog and shard"));
                }
                if entry.nodes.len() != entry.positions.len() {
                    return Err(format!(
                        "SKU {sku:?}: {} nodes but {} positions",
                        entry.nodes.len(),
                        entry.positions.len()
                    ));
                }
                for w in entry.nodes.windows(2) {
                    if w[0] >= w[1] {
                        return Err(format!("SKU {sku:?} positions not strictly sorted by node"));
                    }
                }
                for (&node, p) in entry.nodes.iter().zip(&entry.positions) {
                    let ctx = |what: &str| format!("position {sku:?}@{node:?}: {what}");
                    if node.index() >= n_nodes {
                        return Err(ctx("unknown node"));
                    }
                    let e = expected.remove(&(sku, node)).unwrap_or_default();
                    if u64::from(p.reserved) != e.reserved {
                        return Err(ctx(&format!(
                            "reserved {} but holds say {}",
                            p.reserved, e.reserved
                        )));
                    }
                    if u64::from(p.allocated) != e.allocated {
                        return Err(ctx(&format!(
                            "allocated {} but allocations say {}",
                            p.allocated, e.allocated
                        )));
                    }
                    let claims: BTreeMap<Day, u64> = match p.dated {
                        NO_DATED => BTreeMap::new(),
                        i => {
                            let Some(d) = shard.dated.get(i as usize) else {
                                return Err(ctx("dated index out of range"));
                            };
                            if !referenced.insert(i) {
                                return Err(ctx("dated record shared"));
                            }
                            if d.is_empty() {
                                return Err(ctx("empty dated record kept"));
                            }
                            if d.lots.len() > limits::LOTS_PER_POSITION_MAX {
                                return Err(ctx("too many lots"));
                            }
                            for w in d.lots.windows(2) {
                                if (w[0].arrival, &w[0].reference) >= (w[1].arrival, &w[1].reference) {
                                    return Err(ctx("lots not sorted or duplicated"));
                                }
                            }
                            for w in d.future_claims.windows(2) {
                                if w[0].0 >= w[1].0 {
                                    return Err(ctx("claims not sorted"));
                                }
                            }
                            d.future_claims
                                .iter()
                                .map(|&(day, q)| (day, u64::from(q)))
                                .collect()
                        }
                    };
                    if claims.values().any(|&q| q == 0) || claims != e.claims {
                        return Err(ctx(&format!(
                            "dated claims {claims:?} but holds say {:?}",
                            e.claims
                        )));
                    }
                }
            }
            let free: HashSet<u32> = shard.free.iter().copied().collect();
            if free.len() != shard.free.len() || free.iter().any(|i| referenced.contains(i)) {
                return Err(format!("shard {shard_idx}: dated free list is corrupt"));
            }
            if free.len() + referenced.len() != shard.dated.len() {
                return Err(format!("shard {shard_idx}: leaked dated records"));
            }
        }
        if n_skus_seen != n_skus {
            return Err(format!("{n_skus_seen} SKUs in shards, {n_skus} in the catalog"));
        }
        if let Some(((sku, node), _)) = expected.into_iter().next() {
            return Err(format!(
                "holds reference position {sku:?}@{node:?}, which does not exist"
            ));
        }
        Ok(())
    }
}
