//! Framing: a little-endian `u32` length, then that many bytes holding one FlatBuffers
//! `Message`. The length counts the message only. Zero-length and oversized frames are errors
//! (the peer is confused or hostile), and a message is verified before any field is read.

use crate::wire;

/// The default largest frame (1 MiB): about 10,000 hold lines in one batch.
pub const MAX_FRAME_BYTES_DEFAULT: u32 = 1 << 20;
/// Bytes of the length prefix.
pub const LENGTH_BYTES: usize = 4;

/// Why bytes on a connection are not a frame. After one, the connection cannot be read further
/// (the next frame's start is unknown): answer with the error and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame (length 0)")]
    Empty,
    #[error("frame of {len} bytes is larger than the limit of {max}")]
    TooLarge { len: u32, max: u32 },
}

/// Why a frame's bytes are not a valid `Message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message: {0}")]
pub struct MessageError(pub String);

/// Appends `message` to `out` as one frame.
///
/// # Panics
/// If `message` is longer than `u32::MAX` bytes (no caller builds such a message).
pub fn write_frame(message: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(message.len()).expect("a message fits a u32 length");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(message);
}

/// Finishes `body` in `b` as the `Message` answering or asking `request_id` and returns it as
/// one frame. Every sender of messages (server, clients, tools) builds frames this way.
pub fn finish_frame(
    b: &mut flatbuffers::FlatBufferBuilder<'_>,
    request_id: u64,
    body_type: wire::Body,
    body: flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let msg = wire::Message::create(
        b,
        &wire::MessageArgs {
            request_id,
            body_type,
            body: Some(body),
        },
    );
    wire::finish_message_buffer(b, msg);
    let mut out = Vec::with_capacity(b.finished_data().len() + LENGTH_BYTES);
    write_frame(b.finished_data(), &mut out);
    out
}

/// A framed `Hello` (request id 1) offering every version this build speaks.
pub fn hello_frame(client_name: &str, auth_token: Option<&str>) -> Vec<u8> {
    let mut b = flatbuffers::FlatBufferBuilder::new();
    let name = b.create_string(client_name);
    let token = auth_token.map(|t| b.create_string(t));
    let hello = wire::Hello::create(
        &mut b,
        &wire::HelloArgs {
            magic: crate::HELLO_MAGIC,
            min_version: crate::PROTOCOL_VERSION_MIN,
            max_version: crate::PROTOCOL_VERSION_MAX,
            client_name: Some(name),
            auth_token: token,
        },
    );
    finish_frame(&mut b, 1, wire::Body::Hello, hello.as_union_value())
}

/// The first frame in `buf`: `Ok(Some((message, consumed)))`, or `Ok(None)` if `buf` does not
/// hold a whole frame yet. Checks the length before the bytes arrive, so a peer cannot make the
/// reader buffer more than `max` bytes.
pub fn split_frame(buf: &[u8], max: u32) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(prefix) = buf.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes"));
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let end = LENGTH_BYTES + len as usize;
    Ok(buf.get(LENGTH_BYTES..end).map(|message| (message, end)))
}

/// Verifies `bytes` as a `Message` (bounds, offsets, UTF-8, required fields, nesting) and returns
/// it. Never panics, whatever the bytes.
pub fn parse_message(bytes: &[u8]) -> Result<wire::Message<'_>, MessageError> {
    let options = flatbuffers::VerifierOptions {
        max_depth: 16,
        max_tables: 100_000,
        max_apparent_size: 1 << 24,
        ..Default::default()
    };
    wire::root_as_message_with_opts(&options, bytes).map_err(|e| MessageError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    fn hello_bytes() -> Vec<u8> {
        let mut b = flatbuffers::FlatBufferBuilder::new();
        let client_name = b.create_string("test");
        let token = b.create_string("secret");
        let hello = Hello::create(
            &mut b,
            &HelloArgs {
                magic: crate::HELLO_MAGIC,
                min_version: 1,
                max_version: 1,
                client_name: Some(client_name),
                auth_token: Some(token),
            },
        );
        let msg = Message::create(
            &mut b,
            &MessageArgs {
                request_id: 7,
                body_type: Body::Hello,
                body: Some(hello.as_union_value()),
            },
        );
        finish_message_buffer(&mut b, msg);
        b.finished_data().to_vec()
    }

    #[test]
    fn a_framed_message_round_trips() {
        let bytes = hello_bytes();
        let mut stream = Vec::new();
        write_frame(&bytes, &mut stream);
        write_frame(&bytes, &mut stream);
        let (first, used) = split_frame(&stream, MAX_FRAME_BYTES_DEFAULT).unwrap().unwrap();
        assert_eq!(first, &bytes[..]);
        let msg = parse_message(first).unwrap();
        assert_eq!(msg.request_id(), 7);
        let hello = msg.body_as_hello().expect("a hello");
        assert_eq!(hello.magic(), crate::HELLO_MAGIC);
        assert_eq!(hello.client_name(), Some("test"));
        let (second, used2) = split_frame(&stream[used..], MAX_FRAME_BYTES_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(second, &bytes[..]);
        assert_eq!(used + used2, stream.len());
        // Every strict prefix is "not yet", never an error or a wrong frame.
        for cut in 0..used {
            assert_eq!(
                split_frame(&stream[..cut], MAX_FRAME_BYTES_DEFAULT),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn empty_and_oversized_frames_are_refused_before_their_bytes_arrive() {
        assert_eq!(split_frame(&[0, 0, 0, 0], 100), Err(FrameError::Empty));
        assert_eq!(
            split_frame(&101u32.to_le_bytes(), 100),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(
            split_frame(&u32::MAX.to_le_bytes(), MAX_FRAME_BYTES_DEFAULT),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: MAX_FRAME_BYTES_DEFAULT
            })
        );
    }

    #[test]
    fn a_message_missing_a_required_field_is_malformed() {
        let mut b = flatbuffers::FlatBufferBuilder::new();
        // A Message without its required body (built by hand: the generated builder refuses).
        let start = b.start_table();
        b.push_slot::<u64>(Message::VT_REQUEST_ID, 1, 0);
        let msg = b.end_table(start);
        b.finish(msg, Some(MESSAGE_IDENTIFIER));
        let err = parse_message(b.finished_data()).expect_err("a message without a body");
        assert!(err.to_string().contains("body"), "{err}");
        assert!(parse_message(&[]).is_err());
        assert!(parse_message(b"PRMDPRMDPRMD").is_err());
    }

    proptest::proptest! {
        /// The decoder's fuzz test that runs in CI: any bytes, and any single-byte corruption
        /// of a valid frame stream, give an error, "not yet", or a verified message; never a
        /// panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(Some((message, used))) = split_frame(&bytes, 1 << 16) {
                proptest::prop_assert!(used <= bytes.len());
                let _ = parse_message(message);
            }
            let _ = parse_message(&bytes);
        }

        #[test]
        fn corrupted_valid_messages_never_panic(at in 0usize..1000, xor in 1u8..=255) {
            let mut bytes = hello_bytes();
            let at = at % bytes.len();
            bytes[at] ^= xor;
            if let Ok(msg) = parse_message(&bytes) {
                // Whatever verified can be read without panicking.
                let _ = (msg.request_id(), msg.body_type());
                if let Some(h) = msg.body_as_hello() {
                    let _ = (h.magic(), h.client_name(), h.auth_token(), h.min_version());
                }
            }
        }

        /// The same for the bodies a client sends after the handshake: a `Request` and a
        /// `Batch` whose operations carry strings, vectors of tables, vectors of scalars and
        /// structs, with up to three bytes changed. A message that verifies is read whole: the
        /// generated `Debug` follows every field, union and vector, and a required field's
        /// accessor panics if the verifier let it be absent.
        #[test]
        fn corrupted_requests_and_batches_never_panic(
            batch in proptest::bool::ANY,
            edits in proptest::collection::vec((0usize..4096, 1u8..=255), 1..=3),
        ) {
            let mut bytes = if batch { batch_bytes() } else { request_bytes() };
            for (at, xor) in edits {
                let at = at % bytes.len();
                bytes[at] ^= xor;
            }
            if let Ok(msg) = parse_message(&bytes) {
                let _ = format!("{msg:?}");
            }
        }
    }

    /// Operations of each shape the schema has, as requests in `b`.
    fn operations<'a>(
        b: &mut flatbuffers::FlatBufferBuilder<'a>,
    ) -> Vec<flatbuffers::WIPOffset<Request<'a>>> {
        let id = |n| RequestId::new(7, n);
        let (sku, node) = (b.create_string("SKU-1"), b.create_string("DC-1"));
        let line = HoldLine::create(
            b,
            &HoldLineArgs {
                sku: Some(sku),
                node: Some(node),
                quantity: 2,
                need_day: 0,
            },
        );
        let any = HoldLine::create(
            b,
            &HoldLineArgs {
                sku: Some(sku),
                node: None,
                quantity: 1,
                need_day: 20_000,
            },
        );
        let lines = b.create_vector(&[line, any]);
        let hold = Hold::create(
            b,
            &HoldArgs {
                hold: Some(&id(1)),
                lines: Some(lines),
                ttl_ms: 60_000,
                partial: true,
            },
        );
        let lq = LineQuantity::create(
            b,
            &LineQuantityArgs {
                sku: Some(sku),
                node: Some(node),
                quantity: 1,
            },
        );
        let lqs = b.create_vector(&[lq]);
        let release = Release::create(
            b,
            &ReleaseArgs {
                request: Some(&id(2)),
                hold: Some(&id(1)),
                lines: Some(lqs),
            },
        );
        let count = SkuCount::create(
            b,
            &SkuCountArgs {
                sku: Some(sku),
                on_hand: 10,
            },
        );
        let counts = b.create_vector(&[count]);
        let feed = SetOnHand::create(
            b,
            &SetOnHandArgs {
                request: Some(&id(3)),
                node: Some(node),
                feed_seq: 1,
                counts: Some(counts),
            },
        );
        let holidays = b.create_vector(&[20_001u32, 20_002]);
        let upsert = UpsertNode::create(
            b,
            &UpsertNodeArgs {
                name: Some(node),
                holidays: Some(holidays),
                weekdays: 31,
                cost_factor_milli: 1000,
                ..Default::default()
            },
        );
        let reference = b.create_string("PO-1");
        let inbound = AddInbound::create(
            b,
            &AddInboundArgs {
                request: Some(&id(4)),
                sku: Some(sku),
                node: Some(node),
                reference: Some(reference),
                quantity: 5,
                arrival_day: 20_003,
            },
        );
        let skus = b.create_vector(&[sku]);
        let subscribe = Subscribe::create(
            b,
            &SubscribeArgs {
                skus: Some(skus),
                nodes: None,
                threshold: 3,
            },
        );
        let get = GetHold::create(b, &GetHoldArgs { hold: Some(&id(1)) });
        [
            (Operation::Hold, hold.as_union_value()),
            (Operation::Release, release.as_union_value()),
            (Operation::SetOnHand, feed.as_union_value()),
            (Operation::UpsertNode, upsert.as_union_value()),
            (Operation::AddInbound, inbound.as_union_value()),
            (Operation::Subscribe, subscribe.as_union_value()),
            (Operation::GetHold, get.as_union_value()),
        ]
        .into_iter()
        .map(|(op_type, op)| {
            Request::create(
                b,
                &RequestArgs {
                    op_type,
                    op: Some(op),
                },
            )
        })
        .collect()
    }

    fn message_bytes(
        build: impl for<'a> FnOnce(
            &mut flatbuffers::FlatBufferBuilder<'a>,
        ) -> (Body, flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>),
    ) -> Vec<u8> {
        let mut b = flatbuffers::FlatBufferBuilder::new();
        let (body_type, body) = build(&mut b);
        let msg = Message::create(
            &mut b,
            &MessageArgs {
                request_id: 9,
                body_type,
                body: Some(body),
            },
        );
        finish_message_buffer(&mut b, msg);
        b.finished_data().to_vec()
    }

    /// One `Request` (a two-line hold).
    fn request_bytes() -> Vec<u8> {
        message_bytes(|b| {
            let request = operations(b)[0];
            (Body::Request, request.as_union_value())
        })
    }

    /// A `Batch` of every operation `operations` builds.
    fn batch_bytes() -> Vec<u8> {
        message_bytes(|b| {
            let requests = operations(b);
            let requests = b.create_vector(&requests);
            let batch = Batch::create(
                b,
                &BatchArgs {
                    requests: Some(requests),
                },
            );
            (Body::Batch, batch.as_union_value())
        })
    }

    #[test]
    fn the_request_and_batch_seeds_verify() {
        let m = request_bytes();
        let m = parse_message(&m).unwrap();
        assert_eq!(
            m.body_as_request().unwrap().op_as_hold().unwrap().lines().len(),
            2
        );
        let b = batch_bytes();
        let b = parse_message(&b).unwrap();
        assert_eq!(b.body_as_batch().unwrap().requests().len(), 7);
    }
}
