//! Engine errors: faults in a request, each with a stable code. Business refusals (not enough
//! stock, node closed) are not errors: they are values inside `Outcome`.
//!
//! Every error is returned before any state changes, so a failed command is a no-op.

use crate::ids::{Day, NodeId, RequestId, SkuId};

/// Stable numeric codes, shared with the wire protocol. Never renumber; only append.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    UnknownSku = 100,
    UnknownNode = 101,
    UnknownHold = 102,
    UnknownLot = 103,
    UnknownZone = 104,
    InvalidQuantity = 110,
    InvalidName = 111,
    InvalidTtl = 112,
    InvalidDate = 113,
    InvalidOption = 114,
    DuplicateLine = 120,
    DuplicateLot = 121,
    EmptyRequest = 122,
    TooManyLines = 123,
    TooManyLots = 124,
    CapacityExceeded = 125,
    TooManyOperations = 126,
    StaleFeedSequence = 130,
    RequestIdReused = 131,
    WrongHoldState = 140,
    ExceedsHeld = 141,
    ExceedsAllocated = 142,
    QuantityOverflow = 150,
    NegativeOnHand = 151,
    /// The write-ahead log cannot make writes durable (a failed write or fsync): writes are
    /// refused until an operator fixes the storage and restarts; reads go on.
    StorageFailed = 200,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("unknown SKU {0:?}")]
    UnknownSku(String),
    #[error("unknown SKU id {0:?}")]
    UnknownSkuId(SkuId),
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    #[error("unknown node id {0:?}")]
    UnknownNodeId(NodeId),
    #[error("no hold or allocation with id {0} (never placed, or forgotten after the retention window)")]
    UnknownHold(RequestId),
    #[error("no inbound lot {reference:?} on SKU {sku:?} at node {node:?}")]
    UnknownLot {
        sku: SkuId,
        node: NodeId,
        reference: String,
    },
    #[error("quantity {value} is out of range: it must be between 1 and 2^31")]
    InvalidQuantity { value: i64 },
    #[error("invalid name {name:?}: 1 to 64 printable ASCII characters, no spaces")]
    InvalidName { name: String },
    #[error("hold time-to-live of {ttl_ms} ms is out of range: it must be between 1 ms and 30 days")]
    InvalidTtl { ttl_ms: u64 },
    #[error("date {day:?} is out of range: it must be within {max_days} days from today")]
    InvalidDate { day: Day, max_days: u32 },
    #[error(
        "line {line_idx} repeats SKU {sku:?} at node {node:?}; each position may appear once per request"
    )]
    DuplicateLine {
        line_idx: usize,
        sku: SkuId,
        node: Option<NodeId>,
    },
    #[error("inbound lot {reference:?} already exists on SKU {sku:?} at node {node:?}")]
    DuplicateLot {
        sku: SkuId,
        node: NodeId,
        reference: String,
    },
    #[error("unknown destination zone {0:?}: it has no centre point (UpsertZone) and no explicit lane")]
    UnknownZone(crate::ids::ZoneId),
    #[error("invalid option: {what}")]
    InvalidOption { what: String },
    #[error("the request has no lines")]
    EmptyRequest,
    #[error("the request has {n_lines} lines; at most {max} are allowed")]
    TooManyLines { n_lines: usize, max: usize },
    #[error("SKU {sku:?} at node {node:?} already has {max} open inbound lots")]
    TooManyLots { sku: SkuId, node: NodeId, max: usize },
    #[error("hold {hold} already has {max} operations remembered; place a new hold instead")]
    TooManyOperations { hold: RequestId, max: usize },
    #[error("the engine is full: at most {max} {what}")]
    CapacityExceeded { what: &'static str, max: usize },
    #[error("feed sequence {got} for node {node:?} is stale: the last applied was {last}")]
    StaleFeedSequence { node: NodeId, last: u64, got: u64 },
    #[error("request id {request} was already used for a different request ({first})")]
    RequestIdReused { request: RequestId, first: &'static str },
    #[error("hold {hold} is {state}; cannot {action} it")]
    WrongHoldState {
        hold: RequestId,
        state: &'static str,
        action: &'static str,
    },
    #[error("hold {hold} has {held} units of SKU {sku:?} at node {node:?} held; cannot release {requested}")]
    ExceedsHeld {
        hold: RequestId,
        sku: SkuId,
        node: NodeId,
        held: u32,
        requested: u32,
    },
    #[error(
        "allocation {hold} has {allocated} units of SKU {sku:?} at node {node:?}; cannot ship or cancel {requested}"
    )]
    ExceedsAllocated {
        hold: RequestId,
        sku: SkuId,
        node: NodeId,
        allocated: u32,
        requested: u32,
    },
    #[error("SKU {sku:?} at node {node:?}: the result would exceed the largest storable quantity")]
    QuantityOverflow { sku: SkuId, node: NodeId },
    #[error("SKU {sku:?} at node {node:?}: on hand {on_hand} cannot go down by {by}")]
    NegativeOnHand {
        sku: SkuId,
        node: NodeId,
        on_hand: u32,
        by: u64,
    },
}

impl EngineError {
    pub fn code(&self) -> ErrorCode {
        use EngineError as E;
        match self {
            E::UnknownSku(_) | E::UnknownSkuId(_) => ErrorCode::UnknownSku,
            E::UnknownNode(_) | E::UnknownNodeId(_) => ErrorCode::UnknownNode,
            E::UnknownHold(_) => ErrorCode::UnknownHold,
            E::UnknownLot { .. } => ErrorCode::UnknownLot,
            E::InvalidQuantity { .. } => ErrorCode::InvalidQuantity,
            E::InvalidName { .. } => ErrorCode::InvalidName,
            E::InvalidTtl { .. } => ErrorCode::InvalidTtl,
            E::InvalidDate { .. } => ErrorCode::InvalidDate,
            E::DuplicateLine { .. } => ErrorCode::DuplicateLine,
            E::DuplicateLot { .. } => ErrorCode::DuplicateLot,
            E::UnknownZone(_) => ErrorCode::UnknownZone,
            E::InvalidOption { .. } => ErrorCode::InvalidOption,
            E::EmptyRequest => ErrorCode::EmptyRequest,
            E::TooManyLines { .. } => ErrorCode::TooManyLines,
            E::TooManyLots { .. } => ErrorCode::TooManyLots,
            E::CapacityExceeded { .. } => ErrorCode::CapacityExceeded,
            E::TooManyOperations { .. } => ErrorCode::TooManyOperations,
            E::StaleFeedSequence { .. } => ErrorCode::StaleFeedSequence,
            E::RequestIdReused { .. } => ErrorCode::RequestIdReused,
            E::WrongHoldState { .. } => ErrorCode::WrongHoldState,
            E::ExceedsHeld { .. } => ErrorCode::ExceedsHeld,
            E::ExceedsAllocated { .. } => ErrorCode::ExceedsAllocated,
            E::QuantityOverflow { .. } => ErrorCode::QuantityOverflow,
            E::NegativeOnHand { .. } => ErrorCode::NegativeOnHand,
        }
    }
}
