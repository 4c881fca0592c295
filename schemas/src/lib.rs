//! `promised-schemas`: the wire protocol of promised.
//!
//! - `promised.fbs` (next to this crate's `Cargo.toml`) is the contract; `wire` is the Rust code
//!   `flatc` generates from it, committed, and `tests/drift.rs` fails when the two disagree
//!   (regenerate with `schemas/generate.sh`).
//! - [`frame`]: a frame is a little-endian `u32` length and one FlatBuffers `Message`; splitting
//!   a byte stream into frames and verifying a message never trusts a length or an offset.
//!
//! This is the only crate that knows FlatBuffers; the server converts to engine types at its
//! seam. Wire format and error codes: `schemas/PROTOCOL.md`.

pub mod frame;

#[allow(
    clippy::all,
    clippy::pedantic,
    unused_imports,
    dead_code,
    non_camel_case_types,
    unsafe_op_in_unsafe_fn,
    mismatched_lifetime_syntaxes
)]
#[rustfmt::skip]
mod generated {
    include!("generated/promised_generated.rs");
}

/// The generated FlatBuffers types (`promised.wire` in the schema).
pub use generated::promised::wire;

/// The protocol versions this build speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;
pub const PROTOCOL_VERSION_MAX: u16 = 1;
/// `Hello.magic`: "PRMD" read as a little-endian u32.
pub const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"PRMD");
