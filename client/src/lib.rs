//! `promised-client`: the async Rust client of promised.
//!
//! - [`Client`]: a pool of connections (opened lazily, replaced when they break), each carrying
//!   many requests at once (pipelining; replies matched by request id, in any order).
//! - Typed calls ([`Client::hold`], [`Client::commit`], [`Client::atp`], ...) over [`Op`] values;
//!   [`Client::batch`] and [`Client::atp_many`] send many operations per frame.
//! - Timeouts per request; retries with backoff only where they are safe: reads, upserts, and
//!   writes whose request id the server deduplicates (a retried hold is the same hold).
//! - Typed errors: [`ClientError::Server`] carries the server's stable [`ErrorCode`]; the rest
//!   are connection, timeout and protocol failures ([`ClientError::is_retryable`]).
//! - TLS through rustls ([`TlsConfig`]); low-stock events through [`Client::subscribe`].
//!
//! ```no_run
//! # async fn example() -> Result<(), promised_client::ClientError> {
//! use std::time::Duration;
//! use promised_client::{Client, ClientConfig, Hold, HoldLine, HoldOutcome};
//!
//! let client = Client::connect(ClientConfig::new("127.0.0.1:7411").token("write-token")).await?;
//! let hold = Hold::new(vec![HoldLine::at("SKU-1", "DC-1", 2)], Duration::from_secs(600));
//! let id = hold.id;
//! if let HoldOutcome::Granted(_) = client.hold(hold).await? {
//!     client.commit(id).await?;
//! }
//! println!("ATP now {}", client.atp("SKU-1", "DC-1", None).await?);
//! # Ok(()) }
//! ```

mod answer;
mod client;
pub mod codec;
mod connection;
mod error;
mod ops;
mod tls;

pub use answer::{
    Answer, Binding, GrantedLine, HoldChange, HoldGranted, HoldLineView, HoldOutcome, HoldState, HoldView,
    InboundLot, LevelAnswer, LineRefusal, ListedDelivery, LowStock, Position, PromisedPackage, PromisedPlan,
    RefusalReason, RerouteAnswer, RerouteMove, ServiceLevel, Shortfall,
};
pub use client::{BatchResult, Client, ClientConfig, Subscription};
pub use connection::Session;
pub use error::{ClientError, ErrorCode, ServerError};
pub use ops::{
    AdjustReason, Hold, HoldLine, LineQuantity, NodeKind, NodeSpec, NodeStatus, Op, PromiseCart, RequestId,
    Reroute,
};
pub use promised_schemas::wire::Role;
pub use tls::TlsConfig;
