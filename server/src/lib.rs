//! `promised`: the server and admin CLI, as a library so that benches and integration tests can
//! reuse its parts: allocator settings ([`alloc`]) and the seam between the wire and the engine
//! (requests in [`wire`], replies in [`reply`]). The
//! binary is `src/main.rs`.

pub mod alloc;
pub mod config;
pub mod events;
pub mod metrics;
pub mod reply;
pub mod tls;
pub mod wire;
