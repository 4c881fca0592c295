//! `promised`: the server and admin CLI, as a library so that benches and integration tests can
//! reuse its parts. Today: allocator settings ([`alloc`]). The binary is `src/main.rs`.

pub mod alloc;
