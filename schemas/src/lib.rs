//! `promised-schemas`: the wire protocol of promised (FlatBuffers schemas, framing, client).
//!
//! Empty on purpose: the protocol arrives with the issue "Binary protocol, server and client".
//! This crate will be the only one that knows FlatBuffers; engine types are converted at its seam.
