//! Commands (the only way state changes) and their outcomes.
//!
//! A command carries resolved dense ids and everything it needs except the time, which the caller
//! passes to `Engine::apply` beside it. Applying the same commands with the same times in the same
//! order always gives the same state, which is what the write-ahead log and replicas rely on.

use smallvec::SmallVec;

use crate::capacity::ShipSlot;
use crate::hold::HoldState;
use crate::ids::{Day, NodeId, Quantity, RequestId, SkuId, Timestamp, ZoneId};
use crate::network::{Capabilities, Lane, NodeSpec, ServiceLevel, ZoneSpec};
use crate::promise::Destination;

/// Which node a hold line should come from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeChoice {
    Node(NodeId),
    /// Any open, capable node: the engine picks the one with the most ATP (lowest id on ties).
    Any,
}

/// One line of a hold request.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct HoldLineRequest {
    pub sku: SkuId,
    pub node: NodeChoice,
    pub quantity: Quantity,
    /// The day the units are needed; `None` means today. A later day may draw on inbound supply.
    pub need_day: Option<Day>,
}

/// A quantity of one position inside a hold: used by partial release and partial ship.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LineQuantity {
    pub sku: SkuId,
    pub node: NodeId,
    pub quantity: Quantity,
}

/// Why an on-hand count was adjusted; kept for the audit trail in the log.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AdjustReason {
    CycleCount = 0,
    Damage = 1,
    Shrink = 2,
    Found = 3,
    Correction = 4,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Insert or replace a node (by name).
    UpsertNode(NodeSpec),
    /// Insert a SKU or replace its capability requirements (by name).
    UpsertSku { name: String, required: Capabilities },
    /// Absolute on-hand counts at one node from a feed message numbered `feed_seq`; a message whose
    /// number is not above the node's last applied one is stale and refused.
    SetOnHand {
        request: RequestId,
        node: NodeId,
        feed_seq: u64,
        counts: Vec<(SkuId, u32)>,
    },
    AdjustOnHand {
        request: RequestId,
        sku: SkuId,
        node: NodeId,
        delta: i64,
        reason: AdjustReason,
    },
    SetSafetyStock {
        request: RequestId,
        sku: SkuId,
        node: NodeId,
        quantity: u32,
    },
    AddInbound {
        request: RequestId,
        sku: SkuId,
        node: NodeId,
        reference: String,
        quantity: Quantity,
        arrival: Day,
    },
    /// The lot arrived: its quantity moves to on hand.
    ReceiveInbound {
        request: RequestId,
        sku: SkuId,
        node: NodeId,
        reference: String,
    },
    CancelInbound {
        request: RequestId,
        sku: SkuId,
        node: NodeId,
        reference: String,
    },
    /// A customer return or restock: units come back on hand.
    Return {
        request: RequestId,
        sku: SkuId,
        node: NodeId,
        quantity: Quantity,
    },
    /// Reserve stock for a cart. `hold` is both the request id and the hold's id.
    Hold {
        hold: RequestId,
        lines: Vec<HoldLineRequest>,
        ttl_ms: u64,
        /// Grant what is available line by line instead of all or nothing.
        partial: bool,
    },
    /// Turn a hold into an allocation (a committed order).
    Commit { request: RequestId, hold: RequestId },
    /// Give back held units: all of them when `lines` is empty, else the quantities listed.
    Release {
        request: RequestId,
        hold: RequestId,
        lines: Vec<LineQuantity>,
    },
    /// Cancel a committed order: its allocated units become available again.
    CancelAllocation { request: RequestId, hold: RequestId },
    /// Units of an allocation left the building: on hand and allocated both go down. All remaining
    /// units when `lines` is empty.
    Ship {
        request: RequestId,
        hold: RequestId,
        lines: Vec<LineQuantity>,
    },
    /// Expire due holds and forget finished requests older than the retention window.
    Tick,
    /// Insert or replace a destination zone's centre point (for default lanes).
    UpsertZone(ZoneSpec),
    /// Insert or replace an explicit lane (it overrides the distance default).
    UpsertLane(Lane),
    /// Route an order: allocate every line at its package's node (all or nothing) and take one
    /// order and the package's units from that node's capacity on the package's ship day.
    /// `order` is both the request id and the allocation's id; cancelling the allocation gives
    /// the capacity of packages not yet shipped back.
    RouteOrder {
        order: RequestId,
        /// Each names a node (`NodeChoice::Node`) that has a package.
        lines: Vec<HoldLineRequest>,
        /// One per shipping node.
        packages: Vec<ShipSlot>,
        /// Where the order goes, and the delivery day promised: kept with the allocation for
        /// re-routing.
        destination: Destination,
        promised: Day,
        /// The service level it was promised at (never `Pickup`: a pickup is not routed).
        level: ServiceLevel,
    },
    /// Moves routed orders to new plans (a batch re-route's apply): every move or none, or with
    /// `partial` the moves that still fit (orders no longer open and plans that no longer fit
    /// are skipped). `request` is its idempotency key.
    Reroute {
        request: RequestId,
        moves: Vec<crate::reroute::RerouteMove>,
        partial: bool,
    },
}

impl Command {
    /// A stable name for logs, metrics and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UpsertNode(_) => "upsert_node",
            Self::UpsertSku { .. } => "upsert_sku",
            Self::SetOnHand { .. } => "set_on_hand",
            Self::AdjustOnHand { .. } => "adjust_on_hand",
            Self::SetSafetyStock { .. } => "set_safety_stock",
            Self::AddInbound { .. } => "add_inbound",
            Self::ReceiveInbound { .. } => "receive_inbound",
            Self::CancelInbound { .. } => "cancel_inbound",
            Self::Return { .. } => "return",
            Self::Hold { .. } => "hold",
            Self::Commit { .. } => "commit",
            Self::Release { .. } => "release",
            Self::CancelAllocation { .. } => "cancel_allocation",
            Self::Ship { .. } => "ship",
            Self::Tick => "tick",
            Self::UpsertZone(_) => "upsert_zone",
            Self::UpsertLane(_) => "upsert_lane",
            Self::RouteOrder { .. } => "route_order",
            Self::Reroute { .. } => "reroute",
        }
    }
}

/// Why a line (or a whole request) was refused. Refusals are answers, not faults.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RefusalReason {
    /// Not enough ATP on the day asked for.
    InsufficientAtp = 0,
    /// The node is paused or closed.
    NodeNotOpen = 1,
    /// The node has never stocked this SKU.
    NotStocked = 2,
    /// The SKU needs a capability the node lacks.
    MissingCapability = 3,
    /// The hold expired before it was committed.
    HoldExpired = 4,
    /// The node's capacity on the package's ship day is used up (route order).
    CapacityFull = 5,
}

/// One line's part in a granted hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrantedLine {
    pub sku: SkuId,
    /// The node the units are held at. For an `Any` line of a partial hold that got nothing, the
    /// node with the most ATP, if any eligible node stocks the SKU at all.
    pub node: Option<NodeId>,
    pub requested: u32,
    pub granted: u32,
    pub need_day: Day,
}

/// A line that could not be granted in full.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LineRefusal {
    pub line_idx: u16,
    pub sku: SkuId,
    pub node: Option<NodeId>,
    pub requested: u32,
    /// What was promisable on the day asked (the best node's, for `Any`).
    pub available: i64,
    pub reason: RefusalReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    Granted {
        hold: RequestId,
        expires_at: Timestamp,
        lines: SmallVec<[GrantedLine; 2]>,
        /// True when this answers a retry of a hold already placed.
        repeated: bool,
    },
    /// Nothing was held and nothing changed; a retry with the same id is evaluated afresh.
    Refused { lines: Vec<LineRefusal> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    NodeUpserted(NodeId),
    SkuUpserted(SkuId),
    /// A feed command took effect (or, with `repeated`, had already taken effect).
    Fed {
        repeated: bool,
    },
    Hold(HoldOutcome),
    /// A routed order: granted as a committed allocation (its `expires_at` is when it was
    /// routed: an allocation does not expire), or refused with nothing changed.
    Route(HoldOutcome),
    /// A commit, release, cancel or ship took effect; `state` is the hold's state after it.
    HoldChanged {
        hold: RequestId,
        state: HoldState,
        repeated: bool,
    },
    /// A commit or release was refused for a business reason (the hold expired first).
    HoldRefused {
        hold: RequestId,
        reason: RefusalReason,
        repeated: bool,
    },
    Ticked {
        expired: u32,
        forgotten: u32,
    },
    ZoneUpserted(ZoneId),
    LaneUpserted,
    Reroute(crate::reroute::RerouteOutcome),
}
