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
    }
}
