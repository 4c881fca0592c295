//! The engine: the sharded ledger, the request table, the network, and the lock protocol that
//! lets many threads apply commands at once without ever overselling.
//!
//! # Concurrency: ordered shard locks, sequenced under the locks
//!
//! State is split into lock classes, always taken in this order, each class in ascending index:
//!
//! 1. `catalog` (one mutex): SKU id assignment and the master network copy;
//! 2. request shards (by request-id hash): holds and done records;
//! 3. `feeds` (one mutex): the last feed sequence number per node;
//! 4. `capacity` (one reader-writer lock): node capacity used per ship day;
//! 5. SKU shards (by SKU id): positions and their dated supply and claims.
//!
//! A command locks every shard it reads or writes (two-phase locking), checks everything, mutates,
//! and, still holding the locks, takes the next sequence number and hands the command to the
//! `CommandLog`. Two commands that touch a common shard therefore get sequence numbers in the
//! order they really applied, and commands with no common shard commute: replaying the log in
//! sequence order rebuilds the same state. A multi-line hold holds all its SKU shards at once, so
//! it is atomic, and ATP is checked and consumed under the same lock: no interleaving oversells.
//! Rare global commands (`tick`, node upserts) take every lock of their classes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use smallvec::SmallVec;

use crate::atp::{self, InboundLot, TimelinePoint};
use crate::capacity::CapacityBook;
use crate::command::{Command, NodeChoice, Outcome};
use crate::error::EngineError;
use crate::hold::{Hold, HoldState, Record, RequestShard};
use crate::ids::{Day, NodeId, RequestId, SkuId, Timestamp};
use crate::limits;
use crate::network::{Network, NodeSpec, NodeStatus};
use crate::shard::{Shard, ShardMap, SkuEntry};

/// Engine settings that shape state; a snapshot and its log must be read with the same ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Number of SKU shards (locks); a power of two.
    pub sku_shards: usize,
    /// Number of request shards (locks); a power of two.
    pub request_shards: usize,
    /// How long finished requests are remembered for idempotent retries.
    pub retention_ms: u64,
    /// Upper bound on remembered finished requests, engine-wide.
    pub retained_records_max: usize,
    /// Secret key of the hash that spreads request ids over request shards. Ids are chosen by
    /// clients; with a public hash one client could pile every request onto one lock. The key is
    /// part of the state's shape (it decides which records share a retention queue), so a data
    /// directory keeps its key: the server draws one when it creates the directory.
    pub request_hash_key: u128,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            sku_shards: limits::SKU_SHARDS_DEFAULT,
            request_shards: limits::REQUEST_SHARDS_DEFAULT,
            retention_ms: limits::RETENTION_MS_DEFAULT,
            retained_records_max: limits::RETAINED_RECORDS_MAX_DEFAULT,
            request_hash_key: 0x005E_ED0F_9E37_79B9_7F4A_7C15_u128,
        }
    }
}

/// Receives every applied command, in an order that is a valid serial order of the execution.
///
/// `append` runs while the command's locks are held: keep it short (push to a queue), and never
/// call back into the engine.
pub trait CommandLog: Send + Sync {
    fn append(&self, seq: u64, now: Timestamp, command: &Command);
}

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub sku_names: Vec<Arc<str>>,
    pub network: Arc<Network>,
}

pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) map: ShardMap,
    request_bits: u32,
    pub(crate) catalog: Mutex<Catalog>,
    pub(crate) sku_ids: DashMap<Arc<str>, SkuId, ahash::RandomState>,
    pub(crate) network: ArcSwap<Network>,
    pub(crate) requests: Box<[CachePadded<Mutex<RequestShard>>]>,
    /// Last applied feed sequence number per node (index = node id).
    pub(crate) feeds: Mutex<Vec<u64>>,
    /// Written only by route orders, their cancellation and `tick`; promises read it for as long
    /// as they run (writer-preferring: a route order waits for at most the promises in flight).
    pub(crate) capacity: RwLock<CapacityBook>,
    /// Reader-writer locks: queries (the bulk of checkout traffic) share a shard, commands take it
    /// whole. With a mutex, two threads reading one hot SKU queued behind each other.
    pub(crate) shards: Box<[CachePadded<RwLock<Shard>>]>,
    /// On its own cache line: every command increments it, and it must not evict the read-mostly
    /// fields above from the other cores' caches (false sharing).
    next_seq: CachePadded<AtomicU64>,
    log: Option<Arc<dyn CommandLog>>,
    /// One snapshot at a time: a second barrier would overwrite the first one's capture marks.
    pub(crate) snapshot_lock: Mutex<()>,
}

/// The folded multiply of foldhash and ahash: the 128-bit product of two words, halves xored.
/// Keyed (the caller mixes the secret into both inputs), portable and about five instructions:
/// a SipHash per request id cost more than the rest of a commit's bookkeeping.
fn keyed_fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b | 1);
    (product as u64) ^ ((product >> 64) as u64)
}

/// A set of SKU shards locked in ascending order.
/// Most commands touch one SKU shard, so that case carries no collection at all.
pub(crate) enum LockedShards<'a> {
    One(usize, RwLockWriteGuard<'a, Shard>),
    /// Sorted by shard index; for `lock_all_skus`, position == shard index.
    Many(SmallVec<[(usize, RwLockWriteGuard<'a, Shard>); 4]>),
}

impl<'a> LockedShards<'a> {
    /// The shard, for writing. A shard a snapshot still waits for is copied out first.
    pub fn get(&mut self, shard: usize) -> &mut Shard {
        let s: &mut Shard = match self {
            Self::One(i, guard) => {
                assert_eq!(*i, shard, "shard was locked");
                guard
            }
            Self::Many(guards) => {
                let i = if guards.get(shard).is_some_and(|g| g.0 == shard) {
                    shard
                } else {
                    guards
                        .binary_search_by_key(&shard, |g| g.0)
                        .expect("shard was locked")
                };
                &mut guards[i].1
            }
        };
        if let Some(sink) = s.capture.take() {
            sink.put_sku_shard(shard, s.snapshot_copy());
        }
        s
    }
    pub fn any(&self) -> &Shard {
        match self {
            Self::One(_, guard) => guard,
            Self::Many(guards) => &guards[0].1,
        }
    }
    /// Gives every locked shard the new network. The network is not shard state (a snapshot
    /// takes it whole), so this copies nothing out for a snapshot.
    pub fn set_network(&mut self, network: &Arc<Network>) {
        match self {
            Self::One(_, guard) => guard.network = network.clone(),
            Self::Many(guards) => guards.iter_mut().for_each(|g| g.1.network = network.clone()),
        }
    }
}

/// Request shards locked in ascending order: one or two for a command (no allocation, no
/// search), or all of them for `tick` and the checks.
pub(crate) enum LockedRequests<'a> {
    Few([Option<(usize, MutexGuard<'a, RequestShard>)>; 2]),
    All(Vec<MutexGuard<'a, RequestShard>>),
}

impl<'a> LockedRequests<'a> {
    /// The shard, for writing. A shard a snapshot still waits for is copied out first.
    pub fn get(&mut self, shard: usize) -> &mut RequestShard {
        let rs: &mut RequestShard = match self {
            Self::Few(guards) => guards
                .iter_mut()
                .flatten()
                .find(|g| g.0 == shard)
                .map(|g| &mut *g.1)
                .expect("request shard was locked"),
            Self::All(guards) => &mut guards[shard],
        };
        if let Some(sink) = rs.capture.take() {
            sink.put_request_shard(shard, rs.snapshot_copy());
        }
        rs
    }

    /// The shard, for reading only.
    pub fn peek(&self, shard: usize) -> &RequestShard {
        match self {
            Self::Few(guards) => guards
                .iter()
                .flatten()
                .find(|g| g.0 == shard)
                .map(|g| &*g.1)
                .expect("request shard was locked"),
            Self::All(guards) => &guards[shard],
        }
    }
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self::with_log(config, None)
    }

    /// An engine that hands every applied command to `log` (the write-ahead log, or a test).
    pub fn with_log(config: EngineConfig, log: Option<Arc<dyn CommandLog>>) -> Self {
        assert!(config.sku_shards.is_power_of_two());
        assert!(config.request_shards.is_power_of_two());
        assert!(config.retained_records_max >= config.request_shards);
        let network = Arc::new(Network::default());
        let shards = (0..config.sku_shards)
            .map(|_| CachePadded::new(RwLock::new(Shard::new(network.clone()))))
            .collect();
        let requests = (0..config.request_shards)
            .map(|_| CachePadded::new(Mutex::new(RequestShard::default())))
            .collect();
        Self {
            map: ShardMap {
                bits: config.sku_shards.trailing_zeros(),
            },
            request_bits: config.request_shards.trailing_zeros(),
            catalog: Mutex::new(Catalog {
                sku_names: Vec::new(),
                network: network.clone(),
            }),
            sku_ids: DashMap::with_hasher(ahash::RandomState::new()),
            network: ArcSwap::new(network),
            requests,
            feeds: Mutex::new(Vec::new()),
            capacity: RwLock::new(CapacityBook::default()),
            shards,
            next_seq: CachePadded::new(AtomicU64::new(1)),
            log,
            snapshot_lock: Mutex::new(()),
            config,
        }
    }

    /// An engine from decoded snapshot parts (see `snapshot`); checks that they fit together.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        config: EngineConfig,
        network: Arc<Network>,
        feeds: Vec<u64>,
        capacity: CapacityBook,
        shards: Vec<Shard>,
        requests: Vec<RequestShard>,
        next_seq: u64,
        log: Option<Arc<dyn CommandLog>>,
    ) -> Result<Self, String> {
        let mut engine = Self::with_log(config, log);
        if shards.len() != engine.shards.len() || requests.len() != engine.requests.len() {
            return Err("shard counts differ from the header".into());
        }
        if feeds.len() != network.n_nodes() {
            return Err(format!(
                "{} feed sequence numbers for {} nodes",
                feeds.len(),
                network.n_nodes()
            ));
        }
        let n_skus: usize = shards.iter().map(|s| s.skus.len()).sum();
        let mut sku_names: Vec<Option<Arc<str>>> = vec![None; n_skus];
        for (i, shard) in shards.iter().enumerate() {
            for (slot, entry) in shard.skus.iter().enumerate() {
                let id = (slot << engine.map.bits) | i;
                let name = sku_names
                    .get_mut(id)
                    .ok_or_else(|| format!("SKU {:?} has id {id}, past the SKU count", entry.name))?;
                *name = Some(entry.name.clone());
                if entry.nodes.iter().any(|n| n.index() >= network.n_nodes()) {
                    return Err(format!("SKU {:?} is stocked at an unknown node", entry.name));
                }
            }
        }
        let sku_names: Vec<Arc<str>> = sku_names
            .into_iter()
            .enumerate()
            .map(|(id, n)| n.ok_or_else(|| format!("SKU id {id} is missing (ids must be dense)")))
            .collect::<Result<_, _>>()?;
        for (id, name) in sku_names.iter().enumerate() {
            if engine
                .sku_ids
                .insert(name.clone(), SkuId::from_raw(id as u32))
                .is_some()
            {
                return Err(format!("SKU name {name:?} appears twice"));
            }
        }
        for (slot, shard) in engine.shards.iter_mut().zip(shards) {
            *slot.get_mut() = shard;
        }
        for (slot, rs) in engine.requests.iter_mut().zip(requests) {
            *slot.get_mut() = rs;
        }
        *engine.feeds.get_mut() = feeds;
        *engine.capacity.get_mut() = capacity;
        engine.catalog.get_mut().sku_names = sku_names;
        engine.catalog.get_mut().network = network.clone();
        engine.network.store(network);
        *engine.next_seq.get_mut() = next_seq;
        Ok(engine)
    }

    /// Starts handing applied commands to `log` (after recovery replayed the old log without it).
    pub fn attach_log(&mut self, log: Arc<dyn CommandLog>) {
        self.log = Some(log);
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Applies one command at time `now`. On `Err`, nothing changed.
    pub fn apply(&self, now: Timestamp, command: &Command) -> Result<Outcome, EngineError> {
        match command {
            Command::UpsertNode(spec) => self.upsert_node(now, command, spec),
            Command::UpsertSku { name, required } => self.upsert_sku(now, command, name, *required),
            Command::Hold { .. } => self.apply_hold(now, command),
            Command::Commit { .. }
            | Command::Release { .. }
            | Command::CancelAllocation { .. }
            | Command::Ship { .. } => self.apply_hold_change(now, command),
            Command::Tick => Ok(self.tick(now, command)),
            Command::UpsertZone(zone) => self.upsert_zone(now, command, zone),
            Command::UpsertLane(lane) => self.upsert_lane(now, command, lane),
            Command::RouteOrder { .. } => self.apply_route(now, command),
            Command::Reroute { .. } => self.apply_reroute(now, command),
            _ => self.apply_feed(now, command),
        }
    }

    /// The sequence number the next applied command will get. Starts at 1.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    /// Records an applied command. Must be called with all of the command's locks held.
    pub(crate) fn sequence(&self, now: Timestamp, command: &Command) {
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        if let Some(log) = &self.log {
            log.append(seq, now, command);
        }
    }

    // ---- locking ----------------------------------------------------------------------------

    pub(crate) fn request_shard_of(&self, id: RequestId) -> usize {
        let key = self.config.request_hash_key;
        // Digits of pi, so that no key makes a factor small; the last fold spreads every input bit
        // into the high bits that pick the shard.
        let lo = id.0 as u64 ^ key as u64 ^ 0x243F_6A88_85A3_08D3;
        let hi = (id.0 >> 64) as u64 ^ (key >> 64) as u64 ^ 0x1319_8A2E_0370_7344;
        let h = keyed_fold(keyed_fold(lo, hi), 0xA409_3822_299F_31D0);
        (h >> (64 - self.request_bits.max(1))) as usize & (self.config.request_shards - 1)
    }

    /// Locks request shards by index (from `request_shard_of`, computed once by the caller: the
    /// keyed hash is the dearest step of a lookup).
    pub(crate) fn lock_requests(&self, shards: &[usize]) -> LockedRequests<'_> {
        match *shards {
            [a] => LockedRequests::Few([Some((a, self.requests[a].lock())), None]),
            [a, b] if a == b => LockedRequests::Few([Some((a, self.requests[a].lock())), None]),
            [a, b] => {
                let (lo, hi) = (a.min(b), a.max(b));
                let first = (lo, self.requests[lo].lock());
                LockedRequests::Few([Some(first), Some((hi, self.requests[hi].lock()))])
            }
            _ => unreachable!("a command locks one or two request shards"),
        }
    }

    pub(crate) fn lock_all_requests(&self) -> LockedRequests<'_> {
        LockedRequests::All(self.requests.iter().map(|s| s.lock()).collect())
    }

    /// Starts fetching the lock lines of the shards of `skus`, to be locked soon.
    pub(crate) fn prefetch_sku_locks(&self, skus: impl Iterator<Item = SkuId>) {
        for sku in skus {
            prefetch(&*self.shards[self.map.shard_of(sku)]);
        }
    }

    /// Recovery's look-ahead (`wal::replay`): starts fetching the SKU data a logged hold will
    /// read, in three steps taken some commands apart before it is applied, each reading only
    /// what the step before fetched: `0` the SKU's entry, `1` its node ids, `2` the position.
    /// A hold's lookups are otherwise three cache misses in a row, each waiting for the last.
    /// Read-locks each shard for the moment (skipped if a writer holds it). A commit's
    /// positions are known only once its hold is looked up, a cache miss that looking ahead
    /// only moves (tried: no faster), so other commands are left alone.
    pub(crate) fn prefetch_hold(&self, command: &Command, step: u8) {
        let Command::Hold { lines, .. } = command else {
            return;
        };
        for line in lines.iter().take(4) {
            let node = match line.node {
                NodeChoice::Node(node) => Some(node),
                NodeChoice::Any => None,
            };
            self.prefetch_position(line.sku, node, step);
        }
    }

    /// One step of `prefetch_hold` for one position.
    fn prefetch_position(&self, sku: SkuId, node: Option<NodeId>, step: u8) {
        let Some(shard) = self.shards[self.map.shard_of(sku)].try_read() else {
            return;
        };
        let Some(entry) = shard.skus.get(self.map.slot_of(sku)) else {
            return;
        };
        match (step, node) {
            (0, _) => prefetch(entry),
            (1, _) => {
                if let Some(mid) = entry.nodes.get(entry.nodes.len() / 2) {
                    prefetch(mid);
                }
            }
            (_, Some(node)) => {
                if let Ok(i) = entry.nodes.binary_search(&node) {
                    prefetch(&entry.positions[i]);
                }
            }
            (_, None) => {}
        }
    }

    /// Locks the shards of `skus` (any order, repeats allowed) in ascending shard order.
    pub(crate) fn lock_skus(&self, skus: impl Iterator<Item = SkuId>) -> LockedShards<'_> {
        let mut shards = skus.map(|s| self.map.shard_of(s));
        let first = shards.next().expect("a command names at least one SKU");
        let mut others: SmallVec<[usize; 8]> = SmallVec::new();
        for i in shards {
            if i != first {
                others.push(i);
            }
        }
        if others.is_empty() {
            return LockedShards::One(first, self.shards[first].write());
        }
        others.push(first);
        others.sort_unstable();
        others.dedup();
        // Ask for every lock's cache line at once before taking the first: the locks are taken
        // one after the other, each held while the next one's line arrives otherwise.
        for &i in &others {
            prefetch(&*self.shards[i]);
        }
        let mut guards = SmallVec::new();
        for i in others {
            guards.push((i, self.shards[i].write()));
        }
        LockedShards::Many(guards)
    }

    pub(crate) fn lock_all_skus(&self) -> LockedShards<'_> {
        LockedShards::Many(
            self.shards
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.write()))
                .collect(),
        )
    }

    /// Fails unless `sku` exists in its (locked) shard.
    pub(crate) fn check_sku(&self, shards: &mut LockedShards<'_>, sku: SkuId) -> Result<(), EngineError> {
        let slot = self.map.slot_of(sku);
        if slot < shards.get(self.map.shard_of(sku)).skus.len() {
            Ok(())
        } else {
            Err(EngineError::UnknownSkuId(sku))
        }
    }

    // ---- catalog ----------------------------------------------------------------------------

    fn upsert_node(
        &self,
        now: Timestamp,
        command: &Command,
        spec: &NodeSpec,
    ) -> Result<Outcome, EngineError> {
        crate::ids::check_name(&spec.name)?;
        crate::network::check_node(spec)?;
        let mut catalog = self.catalog.lock();
        if catalog.network.node_id(&spec.name).is_none() && catalog.network.n_nodes() >= limits::NODES_MAX {
            return Err(EngineError::CapacityExceeded {
                what: "nodes",
                max: limits::NODES_MAX,
            });
        }
        let (network, id) = catalog.network.with_node(spec.clone());
        let mut feeds = self.feeds.lock();
        let mut shards = self.lock_all_skus();
        if feeds.len() < network.n_nodes() {
            feeds.resize(network.n_nodes(), 0);
        }
        shards.set_network(&network);
        catalog.network = network.clone();
        self.network.store(network);
        self.sequence(now, command);
        Ok(Outcome::NodeUpserted(id))
    }

    fn upsert_zone(
        &self,
        now: Timestamp,
        command: &Command,
        zone: &crate::network::ZoneSpec,
    ) -> Result<Outcome, EngineError> {
        crate::network::check_point(zone.lat, zone.lon)?;
        let mut catalog = self.catalog.lock();
        if catalog.network.zone(zone.zone).is_none() && catalog.network.zones().count() >= limits::ZONES_MAX {
            return Err(EngineError::CapacityExceeded {
                what: "zones",
                max: limits::ZONES_MAX,
            });
        }
        let network = catalog.network.with_zone(*zone);
        self.install_network(&mut catalog, network, now, command);
        Ok(Outcome::ZoneUpserted(zone.zone))
    }

    fn upsert_lane(
        &self,
        now: Timestamp,
        command: &Command,
        lane: &crate::network::Lane,
    ) -> Result<Outcome, EngineError> {
        let mut catalog = self.catalog.lock();
        if catalog.network.node(lane.node).is_none() {
            return Err(EngineError::UnknownNodeId(lane.node));
        }
        if lane.level == crate::network::ServiceLevel::Pickup {
            return Err(EngineError::InvalidOption {
                what: "a pickup has no lane: it is collected at the store".into(),
            });
        }
        if catalog.network.lane(lane.node, lane.zone, lane.level).is_none()
            && catalog.network.lanes().count() >= limits::LANES_MAX
        {
            return Err(EngineError::CapacityExceeded {
                what: "explicit lanes",
                max: limits::LANES_MAX,
            });
        }
        let network = catalog.network.with_lane(*lane);
        self.install_network(&mut catalog, network, now, command);
        Ok(Outcome::LaneUpserted)
    }

    /// Publishes a new network value to every shard, ordered with the commands around it.
    fn install_network(
        &self,
        catalog: &mut Catalog,
        network: Arc<Network>,
        now: Timestamp,
        command: &Command,
    ) {
        let mut shards = self.lock_all_skus();
        shards.set_network(&network);
        catalog.network = network.clone();
        self.network.store(network);
        self.sequence(now, command);
    }

    fn upsert_sku(
        &self,
        now: Timestamp,
        command: &Command,
        name: &str,
        required: crate::network::Capabilities,
    ) -> Result<Outcome, EngineError> {
        crate::ids::check_name(name)?;
        let mut catalog = self.catalog.lock();
        if let Some(id) = self.sku_ids.get(name).map(|e| *e.value()) {
            let mut shards = self.lock_skus(std::iter::once(id));
            shards.get(self.map.shard_of(id)).skus[self.map.slot_of(id)].required = required;
            self.sequence(now, command);
            return Ok(Outcome::SkuUpserted(id));
        }
        if catalog.sku_names.len() >= limits::SKUS_MAX {
            return Err(EngineError::CapacityExceeded {
                what: "SKUs",
                max: limits::SKUS_MAX,
            });
        }
        let id = SkuId::from_raw(catalog.sku_names.len() as u32);
        let name: Arc<str> = Arc::from(name);
        let mut shards = self.lock_skus(std::iter::once(id));
        let shard = shards.get(self.map.shard_of(id));
        assert_eq!(shard.skus.len(), self.map.slot_of(id), "SKU slots are dense");
        shard.skus.push(SkuEntry {
            name: name.clone(),
            required,
            nodes: Vec::new(),
            positions: Vec::new(),
        });
        catalog.sku_names.push(name.clone());
        self.sku_ids.insert(name, id);
        self.sequence(now, command);
        Ok(Outcome::SkuUpserted(id))
    }

    // ---- queries ----------------------------------------------------------------------------

    pub fn sku_id(&self, name: &str) -> Result<SkuId, EngineError> {
        self.sku_ids
            .get(name)
            .map(|e| *e.value())
            .ok_or_else(|| EngineError::UnknownSku(name.into()))
    }

    pub fn node_id(&self, name: &str) -> Result<NodeId, EngineError> {
        self.network
            .load()
            .node_id(name)
            .ok_or_else(|| EngineError::UnknownNode(name.into()))
    }

    pub fn sku_name(&self, sku: SkuId) -> Result<Arc<str>, EngineError> {
        let shard = self.shards[self.map.shard_of(sku)].read();
        shard
            .skus
            .get(self.map.slot_of(sku))
            .map(|e| e.name.clone())
            .ok_or(EngineError::UnknownSkuId(sku))
    }

    /// The current network (nodes and their attributes).
    pub fn network(&self) -> Arc<Network> {
        self.network.load_full()
    }

    pub fn n_skus(&self) -> usize {
        self.catalog.lock().sku_names.len()
    }

    fn read_position<T>(
        &self,
        sku: SkuId,
        node: NodeId,
        read: impl FnOnce(&Shard, Option<&crate::shard::Position>) -> T,
    ) -> Result<T, EngineError> {
        let shard = self.shards[self.map.shard_of(sku)].read();
        let slot = self.map.slot_of(sku);
        if slot >= shard.skus.len() {
            return Err(EngineError::UnknownSkuId(sku));
        }
        if node.index() >= shard.network.n_nodes() {
            return Err(EngineError::UnknownNodeId(node));
        }
        Ok(read(&shard, shard.position(slot, node)))
    }

    /// ATP of one position on day `on` (today when `None`), as seen at `now`. A node that never
    /// stocked the SKU has ATP 0.
    pub fn atp(&self, sku: SkuId, node: NodeId, now: Timestamp, on: Option<Day>) -> Result<i64, EngineError> {
        let today = now.day();
        self.read_position(sku, node, |shard, p| {
            p.map_or(0, |p| shard.atp(p, today, on.unwrap_or(today)))
        })
    }

    /// ATP of many positions, in order: what `atp` answers for each. A position's lookup is
    /// three or four cache misses in a row (shard lock, SKU entry, node ids, position) when the
    /// ledger is larger than the cache; here each query starts fetching the positions a few
    /// queries ahead, one step per query, so that their misses overlap instead of queueing.
    pub fn atp_many(
        &self,
        queries: &[(SkuId, NodeId)],
        now: Timestamp,
        on: Option<Day>,
    ) -> Vec<Result<i64, EngineError>> {
        /// How far ahead the shard's lock line, then `prefetch_position`'s three steps, run.
        const AHEAD: [usize; 4] = [16, 12, 8, 3];
        let mut out = Vec::with_capacity(queries.len());
        for (i, &(sku, node)) in queries.iter().enumerate() {
            if let Some(&(s, _)) = queries.get(i + AHEAD[0]) {
                prefetch(&*self.shards[self.map.shard_of(s)]);
            }
            for (step, ahead) in AHEAD[1..].iter().enumerate() {
                if let Some(&(s, n)) = queries.get(i + ahead) {
                    self.prefetch_position(s, Some(n), step as u8);
                }
            }
            out.push(self.atp(sku, node, now, on));
        }
        out
    }

    /// Today's ATP of one position with the sequence number it reflects: read under the
    /// position's shard lock, so every command numbered below it that touched the position is in
    /// the value and none above it is. Orders readings of one position taken on many threads.
    pub fn atp_stamped(&self, sku: SkuId, node: NodeId, now: Timestamp) -> Result<(i64, u64), EngineError> {
        let today = now.day();
        self.read_position(sku, node, |shard, p| {
            (p.map_or(0, |p| shard.atp(p, today, today)), self.next_seq())
        })
    }

    /// Network ATP: the sum over eligible nodes (open, with the capabilities the SKU requires) of
    /// each position's ATP on day `on`. Negative positions count as zero: one oversold node does
    /// not take stock from the others.
    pub fn network_atp(&self, sku: SkuId, now: Timestamp, on: Option<Day>) -> Result<i64, EngineError> {
        let today = now.day();
        let t = on.unwrap_or(today);
        let shard = self.shards[self.map.shard_of(sku)].read();
        let entry = shard
            .skus
            .get(self.map.slot_of(sku))
            .ok_or(EngineError::UnknownSkuId(sku))?;
        let network = &shard.network;
        Ok(entry
            .nodes
            .iter()
            .zip(&entry.positions)
            .filter(|(node, _)| {
                network
                    .node(**node)
                    .is_some_and(|n| n.status == NodeStatus::Open && n.capabilities.contains(entry.required))
            })
            .map(|(_, p)| shard.atp(p, today, t).max(0))
            .sum())
    }

    /// The availability timeline of a position: from each listed day on, up to `atp` units can be
    /// promised (cumulative ATP with look-ahead).
    pub fn timeline(
        &self,
        sku: SkuId,
        node: NodeId,
        now: Timestamp,
    ) -> Result<Vec<TimelinePoint>, EngineError> {
        let today = now.day();
        self.read_position(sku, node, |shard, p| match p {
            Some(p) => atp::timeline(p.base(), shard.dated_of(p), today),
            None => vec![TimelinePoint { day: today, atp: 0 }],
        })
    }

    /// A copy of one position's numbers and lots; `None` if the node never stocked the SKU.
    pub fn position(&self, sku: SkuId, node: NodeId) -> Result<Option<PositionView>, EngineError> {
        self.read_position(sku, node, |shard, p| {
            p.map(|p| PositionView {
                on_hand: p.on_hand,
                safety_stock: p.safety_stock,
                reserved: p.reserved,
                allocated: p.allocated,
                lots: shard.dated_of(p).map(|d| d.lots.clone()).unwrap_or_default(),
                future_claims: shard
                    .dated_of(p)
                    .map(|d| d.future_claims.clone())
                    .unwrap_or_default(),
            })
        })
    }

    /// A copy of a hold or allocation, if it is still remembered.
    pub fn hold(&self, id: RequestId) -> Option<Hold> {
        self.requests[self.request_shard_of(id)].lock().hold(&id).cloned()
    }

    /// Returns spare vector capacity to the allocator (after a bulk load). Changes no state.
    pub fn shrink_to_fit(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            for entry in shard.skus.iter_mut() {
                entry.nodes.shrink_to_fit();
                entry.positions.shrink_to_fit();
            }
            shard.skus.shrink_to_fit();
        }
        for rs in self.requests.iter() {
            let mut rs = rs.lock();
            rs.records.shrink_to_fit();
            rs.retention.shrink_to_fit();
            rs.expiry.shrink_to_fit();
        }
    }

    /// The orders and units routed orders have committed `node` to ship on `day`.
    pub fn capacity_used(&self, node: NodeId, day: Day) -> crate::capacity::Load {
        self.capacity.read().load(node, day)
    }

    /// The last applied feed sequence number of a node (0 before any).
    pub fn feed_seq(&self, node: NodeId) -> u64 {
        self.feeds.lock().get(node.index()).copied().unwrap_or(0)
    }

    /// Counts for a status line: SKUs, nodes, stocked positions, dated positions, holds by state.
    pub fn stats(&self) -> EngineStats {
        let mut stats = EngineStats {
            skus: self.n_skus(),
            nodes: self.network().n_nodes(),
            ..EngineStats::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.read();
            for e in &shard.skus {
                stats.positions += e.positions.len();
            }
            stats.dated_positions += shard.dated.len() - shard.free.len();
        }
        for rs in self.requests.iter() {
            let rs = rs.lock();
            stats.expiry_entries += rs.expiry.len();
            for (_, record) in rs.records.iter() {
                match record {
                    Record::Hold(h) if h.state == HoldState::Held => stats.held += 1,
                    Record::Hold(h) if h.state == HoldState::Committed => stats.committed += 1,
                    Record::Hold(_) | Record::Done(_) => stats.finished_retained += 1,
                }
            }
        }
        stats
    }
}

/// A copy of one position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositionView {
    pub on_hand: u32,
    pub safety_stock: u32,
    pub reserved: u32,
    pub allocated: u32,
    pub lots: Vec<InboundLot>,
    pub future_claims: Vec<(Day, u32)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub skus: usize,
    pub nodes: usize,
    pub positions: usize,
    pub dated_positions: usize,
    pub held: usize,
    pub committed: usize,
    pub finished_retained: usize,
    /// Entries in the expiry queues, live or stale (bounded by `tick`'s compaction).
    pub expiry_entries: usize,
}

/// Starts fetching the cache line at `x` (`prefetcht0`); a hint, no effect elsewhere.
/// Measured on `retail`, 5-line hold + release on 2 threads: 0.69-0.78M -> 0.92-1.33M ops/s.
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of x86_64; a prefetch is a hint that never faults, and `x` is a
        // live reference besides.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request ids from counters (the worst realistic pattern) still spread evenly over shards,
    /// and another key spreads them differently.
    #[test]
    fn request_ids_spread_evenly_over_shards() {
        let engine = Engine::new(EngineConfig::default());
        let n_shards = engine.config.request_shards;
        let mean = 256u32;
        let ids = u128::from(mean) * n_shards as u128;
        // Counters in the low half, in the high half, and spaced out in the high bits.
        for shift in [0, 64, 100] {
            let mut counts = vec![0u32; n_shards];
            for i in 0..ids {
                counts[engine.request_shard_of(RequestId(i << shift))] += 1;
            }
            let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
            // Within 6 standard deviations of the mean (sqrt(256) = 16) over thousands of
            // shards: a uniform hash passes, a biased one does not.
            assert!(
                min >= mean - 6 * 16 && max <= mean + 6 * 16,
                "shift {shift}: min {min} max {max} for a mean of {mean}"
            );
        }

        let other = Engine::new(EngineConfig {
            request_hash_key: 12_345,
            ..EngineConfig::default()
        });
        let moved = (0..1_000u128)
            .filter(|&i| other.request_shard_of(RequestId(i)) != engine.request_shard_of(RequestId(i)))
            .count();
        assert!(moved > 900, "only {moved} of 1000 ids moved with another key");
    }
}
