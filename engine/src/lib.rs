//! `promised-engine`: the deterministic core of promised.
//!
//! The engine is a state machine. Commands ([`Command`]) are the only way state changes; each is
//! applied with the time passed in ([`Engine::apply`]), reads no clock, does no I/O and draws no
//! random numbers, so the same commands give the same state, bit for bit ([`Engine::state_digest`]).
//!
//! ```
//! use promised_engine::*;
//! # fn main() -> Result<(), EngineError> {
//! let engine = Engine::new(EngineConfig::default());
//! let now = Timestamp(1_795_000_000_000); // every command carries its time: the engine reads no clock
//! engine.apply(now, &Command::UpsertNode(NodeSpec::open("DC-1")))?;
//! engine.apply(now, &Command::UpsertSku { name: "SKU-1".into(), required: Capabilities::default() })?;
//! let (sku, node) = (engine.sku_id("SKU-1")?, engine.node_id("DC-1")?);
//! engine.apply(now, &Command::SetOnHand { request: RequestId(1), node, feed_seq: 1, counts: vec![(sku, 50)] })?;
//! let hold = RequestId(2); // the hold's id is its idempotency key
//! let line = HoldLineRequest { sku, node: NodeChoice::Node(node), quantity: Quantity::new(10)?, need_day: None };
//! engine.apply(now, &Command::Hold { hold, lines: vec![line], ttl_ms: 15 * 60_000, partial: false })?;
//! engine.apply(now, &Command::Commit { request: RequestId(3), hold })?;
//! assert_eq!(engine.atp(sku, node, now, None)?, 40);
//! # Ok(())
//! # }
//! ```
//!
//! Layers, one per module:
//! - [`ids`], [`limits`], [`error`]: identifiers and units, every limit, typed errors;
//! - [`network`]: nodes and their attributes;
//! - [`atp`]: the available-to-promise arithmetic with look-ahead, as pure functions;
//! - `shard`: positions (SKU x node) of the SKUs of one shard, compact and behind one lock;
//! - [`hold`]: holds, allocations and the request table that makes commands idempotent;
//! - [`ledger`]: the [`Engine`]: the lock protocol, catalog commands and queries;
//! - [`capacity`]: node capacity used per ship day by routed orders;
//! - `feed`, `hold_ops`, `route_ops`: applying feed, hold and route-order commands;
//! - `invariants`, [`digest`]: self-checks and the canonical state hash;
//! - [`optimise`]: the assignment optimiser of the explicit form (one capacity per option);
//! - [`reroute`]: batch re-routing of open allocations (plans under stock and capacity limits);
//! - [`codec`]: the stable binary encoding of commands, for the write-ahead log and replicas;
//! - [`dataset`]: deterministic synthetic data sets (`small`, `retail`, `peak`).

pub mod atp;
pub mod capacity;
pub mod codec;
pub mod command;
pub mod dataset;
pub mod digest;
pub mod durable;
pub mod error;
mod feed;
pub mod hold;
mod hold_ops;
pub mod ids;
mod invariants;
pub mod ledger;
pub mod limits;
pub mod network;
pub mod optimise;
pub mod promise;
pub mod reroute;
mod route_ops;
mod shard;
pub mod snapshot;
pub mod storage;
pub mod wal;

pub use atp::{InboundLot, TimelinePoint};
pub use capacity::{CapacityBook, Load, ShipSlot};
pub use command::{
    AdjustReason, Command, GrantedLine, HoldLineRequest, HoldOutcome, LineQuantity, LineRefusal, NodeChoice,
    Outcome, RefusalReason,
};
pub use digest::StateDigest;
pub use error::{EngineError, ErrorCode};
pub use hold::{Hold, HoldLine, HoldState};
pub use ids::{Day, NodeId, Quantity, RequestId, SkuId, Timestamp, ZoneId};
pub use ledger::{CommandLog, Engine, EngineConfig, EngineStats, PositionView};
pub use network::{Capabilities, NodeKind, NodeSpec, NodeStatus};
