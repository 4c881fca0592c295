//! Every limit of the engine, in one place, each with the reason it exists.
//!
//! "Put a limit on everything" (TigerBeetle): a request that could make the engine do unbounded
//! work or hold unbounded memory is refused with a typed error before it touches state.

/// Largest quantity in one request line. 2^31 keeps every sum of two quantities inside `u32`
/// storage and every ATP computation (done in `i64`) far from overflow.
pub const QUANTITY_MAX: u32 = 1 << 31;

/// Lines in one hold. A cart or a B2B order fits easily; more is a bulk job, not a hold.
pub const HOLD_LINES_MAX: usize = 1_000;

/// Longest hold time-to-live. Carts live minutes; 30 days covers pre-orders and B2B quotes.
pub const HOLD_TTL_MS_MAX: u64 = 30 * 86_400_000;

/// Counts in one absolute on-hand feed message; bigger feeds are split by the sender, each part
/// with its own feed sequence number.
pub const FEED_LINES_MAX: usize = 10_000;

/// Lines in one partial release or partial ship (at most one per hold line).
pub const CHANGE_LINES_MAX: usize = HOLD_LINES_MAX;

/// Operations (commit, partial releases and ships, cancel) remembered on one hold. Each is kept
/// for idempotent retries and searched on every retry; a B2B order shipped line by line fits.
pub const OPS_PER_HOLD_MAX: usize = 1_000;

/// Inbound lots open at once on one position. Purchase orders arrive weekly at most; the ATP
/// look-ahead walks these lots on every promise, so the walk stays short.
pub const LOTS_PER_POSITION_MAX: usize = 64;

/// Bytes in a SKU code, node code or lot reference.
pub const NAME_BYTES_MAX: usize = 64;

/// Nodes in one network. Node ids must fit the per-position `u32` and the per-shard network copy
/// stays small; 65,536 is 65x the `peak` data set.
pub const NODES_MAX: usize = 65_536;

/// Most destination zones with a centre point.
pub const ZONES_MAX: usize = 65_536;

/// Most explicit lanes (overrides of the distance default): the network value is copied whole
/// on each change, so this stays far below nodes x zones x levels.
pub const LANES_MAX: usize = 1 << 20;

/// Most lines in a cart that is promised (the search is exact up to this size).
pub const PROMISE_LINES_MAX: usize = 10;

/// Most (SKU, destination) pairs in one listing-page promise.
pub const LISTING_PAIRS_MAX: usize = 1000;

/// SKUs in one engine (one partition): 16x the `peak` data set.
pub const SKUS_MAX: usize = 1 << 24;

/// How far ahead an inbound arrival or a future-dated hold may be, in days. The look-ahead walks
/// dated events, so dates are bounded to keep day arithmetic in `u32` trivially safe.
pub const LOOKAHEAD_DAYS_MAX: u32 = 730;

/// Moves in one re-route command: its log record (about 50 bytes a move) stays well under the
/// 16 MiB record limit. A larger plan is applied by narrower filters.
pub const REROUTE_MOVES_MAX: usize = 200_000;

/// Default time a finished request (a feed, a released or shipped hold) is remembered so that a
/// retry with the same request id returns the first result: one day.
pub const RETENTION_MS_DEFAULT: u64 = 86_400_000;

/// Default upper bound on remembered finished requests, engine-wide; oldest are forgotten first.
/// About 100 bytes each: 8M records cost under 1 GiB.
pub const RETAINED_RECORDS_MAX_DEFAULT: usize = 8 << 20;

/// Default number of SKU shards (locks). A power of two far above the core count, so that two
/// requests on different SKUs almost never meet on one lock.
pub const SKU_SHARDS_DEFAULT: usize = 1024;

/// Default number of request shards (hold table and dedupe records). Many and small: a snapshot
/// in progress copies a request shard on its first write, in that write's path, so the copy (and
/// the stall) is 1/4096 of the dedupe records instead of 1/256 (about 0.5 MB, not 8 MB, with the
/// default 8M records retained).
pub const REQUEST_SHARDS_DEFAULT: usize = 4096;

const _: () = assert!(SKU_SHARDS_DEFAULT.is_power_of_two());
const _: () = assert!(REQUEST_SHARDS_DEFAULT.is_power_of_two());
const _: () = assert!(QUANTITY_MAX as u64 * 2 <= u32::MAX as u64 + 1);
const _: () = assert!(HOLD_LINES_MAX <= u16::MAX as usize);
const _: () = assert!(NODES_MAX <= u32::MAX as usize);
const _: () = assert!(SKUS_MAX <= u32::MAX as usize);
