//! `promised`: the server and admin CLI, as a library so that benches and integration tests can
//! reuse its parts: allocator settings ([`alloc`]) and the wire-to-engine seam ([`wire`]). The
//! binary is `src/main.rs`.

pub mod alloc;
pub mod wire;
