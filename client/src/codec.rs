//! The protocol's bytes as the client writes and reads them, for tools that drive a socket
//! themselves (the load generator `promised-load` must not measure a pool's tasks and locks):
//! the same encoding and decoding [`crate::Client`] uses, without its pool, timeouts and retries.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use promised_schemas::{frame, wire};

use crate::answer::{self, Answer};
use crate::error::ServerError;
use crate::ops::Op;

/// A reply: one answer, or one per operation of a batch.
#[derive(Debug)]
pub enum Decoded {
    One(Result<Answer, ServerError>),
    Many(Vec<Result<Answer, ServerError>>),
}

/// A message body: a plain `Request` for one operation, a `Batch` for several.
pub fn body<'a>(b: &mut FlatBufferBuilder<'a>, ops: &[Op]) -> (wire::Body, WIPOffset<UnionWIPOffset>) {
    if let [one] = ops {
        return (wire::Body::Request, one.encode(b).as_union_value());
    }
    batch_body(b, ops)
}

/// A `Batch` body, even for one operation (its reply is then a batch reply of one).
pub fn batch_body<'a>(b: &mut FlatBufferBuilder<'a>, ops: &[Op]) -> (wire::Body, WIPOffset<UnionWIPOffset>) {
    let requests: Vec<_> = ops.iter().map(|op| op.encode(b)).collect();
    let requests = b.create_vector(&requests);
    let batch = wire::Batch::create(
        b,
        &wire::BatchArgs {
            requests: Some(requests),
        },
    );
    (wire::Body::Batch, batch.as_union_value())
}

/// The framed message carrying `ops` under `request_id`; `b` is reset for the next one.
pub fn request_frame(b: &mut FlatBufferBuilder<'_>, request_id: u64, ops: &[Op]) -> Vec<u8> {
    let (body_type, built) = body(b, ops);
    let out = frame::finish_frame(b, request_id, body_type, built);
    b.reset();
    out
}

/// A reply message's request id and answers. `None`: the message is not a reply (an event, a
/// handshake reply).
pub fn decode_reply(message: &wire::Message<'_>) -> Option<(u64, Decoded)> {
    let id = message.request_id();
    if let Some(reply) = message.body_as_reply() {
        Some((id, Decoded::One(answer::decode(&reply))))
    } else {
        let batch = message.body_as_batch_reply()?;
        Some((
            id,
            Decoded::Many(batch.replies().iter().map(|r| answer::decode(&r)).collect()),
        ))
    }
}
