//! The frame and message decoder under libFuzzer: any bytes, split into frames at several
//! maximum sizes, each frame verified with `parse_message` and every field of a verified message
//! read. The verifier's promise is that a verified message can be read without a panic (a
//! required field is there, every offset is in bounds, every string is UTF-8), so any panic
//! here is a verifier gap or a framing bug.
//!
//! Run: `cargo +nightly fuzz run frame` (see `fuzz/README.md`).

#![no_main]

use std::fmt::Write as _;
use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use promised_schemas::frame::{self, FrameError, LENGTH_BYTES};
use promised_schemas::wire;

/// Limits to split at: tiny, the server's pre-handshake limit (4 KiB), the default, and none.
const MAXES: [u32; 5] = [1, 64, 4 << 10, frame::MAX_FRAME_BYTES_DEFAULT, u32::MAX];

fuzz_target!(|data: &[u8]| {
    // The bytes as one message, unframed: the verifier on its own.
    if let Ok(m) = frame::parse_message(data) {
        walk(&m);
    }
    // The bytes as a stream of frames with no limit: every frame verified and read.
    let (all, end) = split_all(data, u32::MAX);
    for &(at, len) in &all {
        if let Ok(m) = frame::parse_message(&data[at..at + len]) {
            walk(&m);
        }
    }
    // A smaller limit sees the same frames up to the first one above it, which it refuses as
    // too large before reading its bytes.
    for max in MAXES {
        let (some, stop) = split_all(data, max);
        assert!(some.len() <= all.len());
        assert_eq!(some[..], all[..some.len()], "max {max}");
        match all.get(some.len()) {
            Some(&(_, len)) => {
                assert!(len > max as usize, "frame of {len} cut at max {max}");
                assert_eq!(stop, Some(FrameError::TooLarge { len: len as u32, max }));
            }
            None => {
                // The same end, except that an incomplete last frame above `max` is refused
                // as soon as its length is read.
                let at = all.last().map_or(0, |&(at, len)| at + len);
                let expected = match data[at..].get(..LENGTH_BYTES) {
                    Some(prefix) if end.is_none() => {
                        let len = u32::from_le_bytes(prefix.try_into().unwrap());
                        (len > max).then_some(FrameError::TooLarge { len, max })
                    }
                    _ => end.clone(),
                };
                assert_eq!(stop, expected, "max {max}");
            }
        }
    }
});

/// Every frame `split_frame` finds in `data` at `max`, as (start, length) of its message, and
/// the error that ended the stream, if one did.
fn split_all(data: &[u8], max: u32) -> (Vec<(usize, usize)>, Option<FrameError>) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &data[at..];
        match frame::split_frame(rest, max) {
            Ok(None) => {
                // "Not yet" only while the frame is incomplete.
                if rest.len() >= LENGTH_BYTES {
                    let len = u32::from_le_bytes(rest[..LENGTH_BYTES].try_into().unwrap());
                    assert!(len >= 1 && len <= max && rest.len() < LENGTH_BYTES + len as usize);
                }
                return (frames, None);
            }
            Ok(Some((message, used))) => {
                assert_eq!(used, LENGTH_BYTES + message.len());
                assert!(used <= rest.len());
                assert!(!message.is_empty() && message.len() as u64 <= u64::from(max));
                assert_eq!(message, &rest[LENGTH_BYTES..used]);
                // One byte short is "not yet", never an error or a shorter frame.
                assert_eq!(frame::split_frame(&rest[..used - 1], max), Ok(None));
                frames.push((at + LENGTH_BYTES, message.len()));
                at += used;
            }
            Err(e) => {
                let len = u32::from_le_bytes(rest[..LENGTH_BYTES].try_into().unwrap());
                match e {
                    FrameError::Empty => assert_eq!(len, 0),
                    FrameError::TooLarge { len: l, max: m } => {
                        assert!(l == len && m == max && len > max)
                    }
                }
                return (frames, Some(e));
            }
        }
    }
}

/// Reads every field of a verified message: the bodies a client sends field by field, as the
/// server reads them (every operation of a `Request` or a `Batch`), then everything again
/// through the generated `Debug`, which also walks the server's bodies (replies, events).
fn walk(m: &wire::Message<'_>) {
    black_box(m.request_id());
    match m.body_type() {
        wire::Body::Hello => {
            let h = m.body_as_hello().expect("a verified Hello");
            black_box((h.magic(), h.min_version(), h.max_version()));
            black_box((h.client_name(), h.auth_token()));
        }
        wire::Body::Request => request(&m.body_as_request().expect("a verified Request")),
        wire::Body::Batch => {
            let batch = m.body_as_batch().expect("a verified Batch");
            for r in batch.requests() {
                request(&r);
            }
        }
        wire::Body::HelloReply => assert!(m.body_as_hello_reply().is_some()),
        wire::Body::Reply => assert!(m.body_as_reply().is_some()),
        wire::Body::BatchReply => assert!(m.body_as_batch_reply().is_some()),
        wire::Body::EventMessage => assert!(m.body_as_event_message().is_some()),
        // An unknown body: nothing to read (the server answers UnknownOperation).
        _ => {}
    }
    let _ = write!(Sink, "{m:?}");
}

/// A `fmt::Write` that drops what it is given: Debug reads every field, nothing is kept.
struct Sink;

impl std::fmt::Write for Sink {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        black_box(s);
        Ok(())
    }
}

fn id(r: &wire::RequestId) {
    black_box((r.hi(), r.lo()));
}

fn lines(v: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<wire::LineQuantity<'_>>>>) {
    for l in v.iter().flatten() {
        black_box((l.sku(), l.node(), l.quantity()));
    }
}

/// Every field of one operation, as `promised::wire::decode` reads it.
fn request(r: &wire::Request<'_>) {
    use wire::Operation as Op;
    let op = r.op_type();
    // `Some` exactly when the type is this one; a known type must have its table.
    let known = |present: bool| assert!(present, "{op:?} verified without its table");
    match op {
        Op::Hold => {
            let h = r.op_as_hold();
            known(h.is_some());
            let h = h.unwrap();
            id(h.hold());
            for l in h.lines() {
                black_box((l.sku(), l.node(), l.quantity(), l.need_day()));
            }
            black_box((h.ttl_ms(), h.partial()));
        }
        Op::Commit => {
            let c = r.op_as_commit();
            known(c.is_some());
            let c = c.unwrap();
            id(c.request());
            id(c.hold());
        }
        Op::Release => {
            let x = r.op_as_release();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            id(x.hold());
            lines(x.lines());
        }
        Op::CancelAllocation => {
            let x = r.op_as_cancel_allocation();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            id(x.hold());
        }
        Op::Ship => {
            let x = r.op_as_ship();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            id(x.hold());
            lines(x.lines());
        }
        Op::SetOnHand => {
            let x = r.op_as_set_on_hand();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            black_box((x.node(), x.feed_seq()));
            for c in x.counts() {
                black_box((c.sku(), c.on_hand()));
            }
        }
        Op::AdjustOnHand => {
            let x = r.op_as_adjust_on_hand();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            black_box((x.sku(), x.node(), x.delta(), x.reason()));
        }
        Op::SetSafetyStock => {
            let x = r.op_as_set_safety_stock();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            black_box((x.sku(), x.node(), x.quantity()));
        }
        Op::AddInbound => {
            let x = r.op_as_add_inbound();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            black_box((x.sku(), x.node(), x.reference(), x.quantity(), x.arrival_day()));
        }
        Op::ReceiveInbound => {
            let x = r.op_as_receive_inbound();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            black_box((x.sku(), x.node(), x.reference()));
        }
        Op::CancelInbound => {
            let x = r.op_as_cancel_inbound();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            black_box((x.sku(), x.node(), x.reference()));
        }
        Op::Return => {
            let x = r.op_as_return();
            known(x.is_some());
            let x = x.unwrap();
            id(x.request());
            black_box((x.sku(), x.node(), x.quantity()));
        }
        Op::UpsertNode => {
            let n = r.op_as_upsert_node();
            known(n.is_some());
            let n = n.unwrap();
            black_box((n.name(), n.kind(), n.status(), n.lat(), n.lon(), n.zone()));
            black_box((n.capabilities(), n.capacity_orders(), n.capacity_units()));
            black_box((n.processing_days(), n.cutoff_minute(), n.utc_offset_minutes()));
            black_box((n.weekdays(), n.cost_factor_milli()));
            for d in n.holidays().iter().flatten() {
                black_box(d);
            }
        }
        Op::UpsertSku => {
            let x = r.op_as_upsert_sku();
            known(x.is_some());
            let x = x.unwrap();
            black_box((x.name(), x.required_capabilities()));
        }
        Op::Atp => {
            let x = r.op_as_atp();
            known(x.is_some());
            let x = x.unwrap();
            black_box((x.sku(), x.node(), x.day()));
        }
        Op::NetworkAtp => {
            let x = r.op_as_network_atp();
            known(x.is_some());
            let x = x.unwrap();
            black_box((x.sku(), x.day()));
        }
        Op::Timeline => {
            let x = r.op_as_timeline();
            known(x.is_some());
            let x = x.unwrap();
            black_box((x.sku(), x.node()));
        }
        Op::GetPosition => {
            let x = r.op_as_get_position();
            known(x.is_some());
            let x = x.unwrap();
            black_box((x.sku(), x.node()));
        }
        Op::GetHold => {
            let x = r.op_as_get_hold();
            known(x.is_some());
            id(x.unwrap().hold());
        }
        Op::Subscribe => {
            let x = r.op_as_subscribe();
            known(x.is_some());
            let x = x.unwrap();
            for s in x.skus().iter().flatten().chain(x.nodes().iter().flatten()) {
                black_box(s);
            }
            black_box(x.threshold());
        }
        Op::Unsubscribe => known(r.op_as_unsubscribe().is_some()),
        Op::TakeSnapshot => known(r.op_as_take_snapshot().is_some()),
        Op::StateDigest => known(r.op_as_state_digest().is_some()),
        Op::Shutdown => known(r.op_as_shutdown().is_some()),
        // An unknown operation (the server answers UnknownOperation): its table is not
        // verified, so it must not be read.
        _ => {}
    }
}
