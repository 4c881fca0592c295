//! Bad input over real sockets against a real `promised serve`: broken frames, garbage, wrong
//! handshakes, unknown operations and bodies, corrupted offsets, oversized and empty batches, a
//! frame trickled in byte by byte. Each case gets exactly what `schemas/PROTOCOL.md` promises:
//! a typed `Error` (with the request's id where the server could read it), then the close where
//! the protocol says so, or the connection going on where it does not. Meanwhile a well-behaved
//! client on its own connection keeps placing holds and reading the ATP, and must get correct
//! answers throughout; at the end the server still takes new connections and its state is what
//! the good client's holds imply, with nothing from the bad input.
//!
//! Every case runs even when an earlier one fails; the test then fails listing all of them.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use promised_schemas::frame::parse_message;
use promised_schemas::{HELLO_MAGIC, wire};
use wire::ErrorCode as E;

mod common;
use common::{Server, framed, hold_unframed, message, request, rid, unframed};

const ADMIN: &str = "admin-secret";
const WRITER: &str = "writer-secret";
const READER: &str = "reader-secret";
/// The server runs with `--max-batch-ops` this small, so an oversized batch is small too.
const MAX_BATCH_OPS: usize = 4;
/// On hand of SKU-1 (the good client's) and SKU-2 (the slow client's) at DC-1.
const ON_HAND: i64 = 1_000_000;
/// Hold ids: the good client's count up from here.
const GOOD_HOLDS: u64 = 1_000_000;
/// The one hold bad input is allowed to place (trickled in byte by byte, on SKU-2).
const SLOW_HOLD: u64 = 5_000_000;
const SLOW_QTY: i64 = 5;
/// Hold ids that bad input carries: none of them may ever exist.
const BAD_HOLDS: std::ops::Range<u64> = 9_000_000..9_000_100;
/// How long a reply may take before the case fails as "no reply".
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

// ---- building frames --------------------------------------------------------------------------

fn hello_with(token: Option<&str>, magic: u32, min_version: u16, max_version: u16, name: &str) -> Vec<u8> {
    let (token, name) = (token.map(str::to_string), name.to_string());
    message(1, move |b| {
        let name = b.create_string(&name);
        let token = token.map(|t| b.create_string(&t));
        let h = wire::Hello::create(
            b,
            &wire::HelloArgs {
                magic,
                min_version,
                max_version,
                client_name: Some(name),
                auth_token: token,
            },
        );
        (wire::Body::Hello, h.as_union_value())
    })
}

fn hello(token: &str) -> Vec<u8> {
    hello_with(Some(token), HELLO_MAGIC, 1, 1, "bad-input-test")
}

fn hold_msg(request_id: u64, hold: u64, sku: &str, qty: u32) -> Vec<u8> {
    framed(&hold_unframed(request_id, hold, sku, qty))
}

fn atp_msg(request_id: u64, sku: &str) -> Vec<u8> {
    let sku = sku.to_string();
    message(request_id, move |b| {
        let (s, n) = (b.create_string(&sku), b.create_string("DC-1"));
        let q = wire::Atp::create(
            b,
            &wire::AtpArgs {
                sku: Some(s),
                node: Some(n),
                day: 0,
            },
        );
        request(b, wire::Operation::Atp, q.as_union_value())
    })
}

fn get_hold_msg(request_id: u64, hold: u64) -> Vec<u8> {
    message(request_id, move |b| {
        let g = wire::GetHold::create(
            b,
            &wire::GetHoldArgs {
                hold: Some(&rid(hold)),
            },
        );
        request(b, wire::Operation::GetHold, g.as_union_value())
    })
}

/// A batch of `n` one-unit holds on SKU-1, with hold ids from `first`.
fn hold_batch(request_id: u64, first: u64, n: usize) -> Vec<u8> {
    message(request_id, move |b| {
        let (s, node) = (b.create_string("SKU-1"), b.create_string("DC-1"));
        let mut reqs = Vec::new();
        for i in 0..n as u64 {
            let line = wire::HoldLine::create(
                b,
                &wire::HoldLineArgs {
                    sku: Some(s),
                    node: Some(node),
                    quantity: 1,
                    need_day: 0,
                },
            );
            let lines = b.create_vector(&[line]);
            let h = wire::Hold::create(
                b,
                &wire::HoldArgs {
                    hold: Some(&rid(first + i)),
                    lines: Some(lines),
                    ttl_ms: 3_600_000,
                    partial: false,
                },
            );
            reqs.push(wire::Request::create(
                b,
                &wire::RequestArgs {
                    op_type: wire::Operation::Hold,
                    op: Some(h.as_union_value()),
                },
            ));
        }
        let reqs = b.create_vector(&reqs);
        let batch = wire::Batch::create(b, &wire::BatchArgs { requests: Some(reqs) });
        (wire::Body::Batch, batch.as_union_value())
    })
}

/// A request whose operation type this server does not know (its table is a `GetHold`).
fn unknown_op_msg(request_id: u64) -> Vec<u8> {
    message(request_id, |b| {
        let g = wire::GetHold::create(b, &wire::GetHoldArgs { hold: Some(&rid(1)) });
        request(b, wire::Operation(200), g.as_union_value())
    })
}

// ---- reading replies --------------------------------------------------------------------------

fn connect(server: &Server) -> TcpStream {
    let s = server.connect();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::UnexpectedEof => "the server closed the connection".to_string(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("nothing within {} s (the server hangs)", REPLY_TIMEOUT.as_secs())
        }
        _ => format!("{e} ({:?})", e.kind()),
    }
}

fn read_frame(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut len = [0u8; 4];
    if let Err(e) = s.read_exact(&mut len) {
        panic!("{what}: expected a reply: {}", describe(&e));
    }
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    if let Err(e) = s.read_exact(&mut buf) {
        panic!("{what}: a reply cut short: {}", describe(&e));
    }
    buf
}

/// A short account of a frame the server sent, for failure messages.
fn summary(frame: &[u8]) -> String {
    match parse_message(frame) {
        Err(e) => format!("an unreadable frame ({e})"),
        Ok(m) => match m.body_as_reply() {
            Some(r) => match r.result_as_error() {
                Some(e) => format!(
                    "Error {:?} {:?} (request id {})",
                    e.code(),
                    e.message(),
                    m.request_id()
                ),
                None => format!("Reply {:?} (request id {})", r.result_type(), m.request_id()),
            },
            None => format!("{:?} (request id {})", m.body_type(), m.request_id()),
        },
    }
}

/// Reads a reply that must be an `Error` with `code` for request `request_id`; its message.
fn expect_error(s: &mut TcpStream, what: &str, code: E, request_id: u64) -> String {
    let f = read_frame(s, what);
    let m = parse_message(&f).unwrap_or_else(|e| panic!("{what}: the reply does not verify: {e}"));
    let e = m
        .body_as_reply()
        .and_then(|r| r.result_as_error())
        .unwrap_or_else(|| panic!("{what}: expected Error {code:?}, got {}", summary(&f)));
    assert_eq!(
        (e.code(), m.request_id()),
        (code, request_id),
        "{what}: expected Error {code:?} for request {request_id}, got {}",
        summary(&f)
    );
    e.message().unwrap_or_default().to_string()
}

/// The server closes the connection cleanly (FIN, nothing more sent).
fn expect_closed(s: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => {
            let more = if n >= 4 {
                summary(&buf[4..n])
            } else {
                format!("{n} bytes")
            };
            panic!("{what}: expected the close, got more: {more}")
        }
        Err(e) => panic!("{what}: expected a clean close, got {}", describe(&e)),
    }
}

/// Sends one frame and reads the reply, which must carry `request_id`.
fn call(s: &mut TcpStream, what: &str, frame: &[u8], request_id: u64) -> Vec<u8> {
    if let Err(e) = s.write_all(frame) {
        panic!("{what}: cannot send: {}", describe(&e));
    }
    let f = read_frame(s, what);
    let id = parse_message(&f).map(|m| m.request_id());
    assert_eq!(
        id,
        Ok(request_id),
        "{what}: a reply to another request: {}",
        summary(&f)
    );
    f
}

fn reply_of(bytes: &[u8]) -> wire::Reply<'_> {
    parse_message(bytes).unwrap().body_as_reply().expect("a Reply")
}

/// The connection still serves: a query gets its answer.
fn expect_open(s: &mut TcpStream, what: &str, request_id: u64) {
    let what = format!("{what}, then a query on the same connection");
    let f = call(s, &what, &get_hold_msg(request_id, 1), request_id);
    assert!(
        reply_of(&f).result_as_not_found().is_some(),
        "{what}: expected NotFound, got {}",
        summary(&f)
    );
}

fn greet(s: &mut TcpStream, token: &str) -> wire::Role {
    let f = call(s, "hello", &hello(token), 1);
    let m = parse_message(&f).unwrap();
    let r = m
        .body_as_hello_reply()
        .unwrap_or_else(|| panic!("hello: expected a HelloReply, got {}", summary(&f)));
    assert_eq!(r.version(), 1);
    r.role()
}

fn greeted(server: &Server, token: &str) -> TcpStream {
    let mut s = connect(server);
    greet(&mut s, token);
    s
}

fn atp(s: &mut TcpStream, what: &str, request_id: u64, sku: &str) -> i64 {
    let f = call(s, what, &atp_msg(request_id, sku), request_id);
    reply_of(&f)
        .result_as_atp_value()
        .unwrap_or_else(|| panic!("{what}: expected an AtpValue, got {}", summary(&f)))
        .atp()
}

// ---- byte surgery on a valid message ----------------------------------------------------------

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Where field `voffset` of the table at `table` lies.
fn field_at(b: &[u8], table: usize, voffset: u16) -> usize {
    let vtable = (table as i64 - i64::from(u32_at(b, table) as i32)) as usize;
    let off = u16::from_le_bytes(b[vtable + voffset as usize..][..2].try_into().unwrap());
    assert_ne!(off, 0, "field {voffset} is absent");
    table + off as usize
}

/// What the offset at `at` points to.
fn deref(b: &[u8], at: usize) -> usize {
    at + u32_at(b, at) as usize
}

/// The places in a one-line Hold message that hold offsets and lengths.
struct HoldLayout {
    /// The root table (the `Message`).
    root: usize,
    /// The offset from the `Message` to its body.
    body_offset: usize,
    /// The offset from the `Hold` to its lines vector.
    lines_offset: usize,
    /// The first line's `sku` string (its length, then its bytes).
    sku_string: usize,
}

fn hold_layout(b: &[u8]) -> HoldLayout {
    let root = u32_at(b, 0) as usize;
    let body_offset = field_at(b, root, wire::Message::VT_BODY);
    let request = deref(b, body_offset);
    let hold = deref(b, field_at(b, request, wire::Request::VT_OP));
    let lines_offset = field_at(b, hold, wire::Hold::VT_LINES);
    let lines = deref(b, lines_offset);
    assert_eq!(u32_at(b, lines), 1, "one line");
    let line = deref(b, lines + 4);
    let sku_string = deref(b, field_at(b, line, wire::HoldLine::VT_SKU));
    HoldLayout {
        root,
        body_offset,
        lines_offset,
        sku_string,
    }
}

// ---- the cases --------------------------------------------------------------------------------

fn connect_then_close_at_once(server: &Server) {
    let mut s = connect(server);
    s.shutdown(Shutdown::Write).unwrap();
    expect_closed(&mut s, "connected and closed at once");
}

fn truncated_frame_then_eof(server: &Server) {
    // Nothing to answer: the client left in the middle of a frame. The server closes too.
    let mut bytes = 100u32.to_le_bytes().to_vec();
    bytes.extend([0xAB; 10]);
    let mut s = connect(server);
    s.write_all(&bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    expect_closed(
        &mut s,
        "before the handshake, a 100-byte frame cut after 10 bytes, then EOF",
    );

    let mut s = greeted(server, WRITER);
    s.write_all(&bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    expect_closed(
        &mut s,
        "after the handshake, a 100-byte frame cut after 10 bytes, then EOF",
    );

    // A real hold cut in half never takes effect; the query before it is answered (the server
    // sends the replies it owes), then the close.
    let what = "after the handshake, a query and half a Hold frame, then EOF";
    let hold = hold_msg(5, BAD_HOLDS.start, "SKU-1", 1);
    let mut bytes = atp_msg(6, "SKU-2");
    bytes.extend(&hold[..hold.len() / 2]);
    let mut s = greeted(server, WRITER);
    s.write_all(&bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let f = read_frame(&mut s, what);
    assert!(
        parse_message(&f).is_ok_and(|m| m.request_id() == 6) && reply_of(&f).result_as_atp_value().is_some(),
        "{what}: expected the query's AtpValue, got {}",
        summary(&f)
    );
    expect_closed(&mut s, what);
}

fn pipelined_with_the_hello(server: &Server) {
    // The Hello and what follows it in one write: the 4 KiB limit holds for the Hello only, so
    // an 8 KiB frame right behind it is read as a frame (garbage: MalformedMessage, and the
    // connection goes on), and a query behind that is answered.
    let what = "a Hello, an 8 KiB frame of garbage and a query in one write";
    let mut bytes = hello(WRITER);
    bytes.extend(framed(&[0xAB; 8 << 10]));
    bytes.extend(atp_msg(7, "SKU-2"));
    let mut s = connect(server);
    s.write_all(&bytes).unwrap();
    let f = read_frame(&mut s, what);
    assert!(
        parse_message(&f).is_ok_and(|m| m.body_as_hello_reply().is_some()),
        "{what}: expected a HelloReply, got {}",
        summary(&f)
    );
    expect_error(&mut s, what, E::MalformedMessage, 0);
    let f = read_frame(&mut s, what);
    assert!(
        parse_message(&f).is_ok_and(|m| m.request_id() == 7) && reply_of(&f).result_as_atp_value().is_some(),
        "{what}: expected the query's AtpValue, got {}",
        summary(&f)
    );
}

fn zero_length(server: &Server) {
    let mut s = connect(server);
    s.write_all(&[0, 0, 0, 0]).unwrap();
    expect_error(
        &mut s,
        "a zero-length frame before the handshake",
        E::HandshakeRequired,
        0,
    );
    expect_closed(&mut s, "a zero-length frame before the handshake");

    let mut s = greeted(server, WRITER);
    s.write_all(&[0, 0, 0, 0]).unwrap();
    expect_error(
        &mut s,
        "a zero-length frame after the handshake",
        E::MalformedMessage,
        0,
    );
    expect_closed(&mut s, "a zero-length frame after the handshake");
}

fn huge_length(server: &Server) {
    for len in [u32::MAX, (4 << 10) + 1] {
        let what = format!("a length of {len} before the handshake (above 4 KiB)");
        let mut s = connect(server);
        s.write_all(&len.to_le_bytes()).unwrap();
        expect_error(&mut s, &what, E::HandshakeRequired, 0);
        expect_closed(&mut s, &what);
    }
    for len in [u32::MAX, (1 << 20) + 1] {
        let what = format!("a length of {len} after the handshake (above 1 MiB)");
        let mut s = greeted(server, WRITER);
        s.write_all(&len.to_le_bytes()).unwrap();
        expect_error(&mut s, &what, E::FrameTooLarge, 0);
        expect_closed(&mut s, &what);
    }
    // A real Hello, too large for a handshake (a 5000-byte client name).
    let what = "a Hello above 4 KiB";
    let mut s = connect(server);
    s.write_all(&hello_with(Some(WRITER), HELLO_MAGIC, 1, 1, &"x".repeat(5000)))
        .unwrap();
    expect_error(&mut s, what, E::HandshakeRequired, 0);
    expect_closed(&mut s, what);
}

const HTTP_REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn garbage_bytes(server: &Server) {
    // "GET " read as a length is about 540 MB: above every limit.
    let what = "an HTTP request before the handshake";
    let mut s = connect(server);
    s.write_all(HTTP_REQUEST).unwrap();
    expect_error(&mut s, what, E::HandshakeRequired, 0);
    expect_closed(&mut s, what);

    let what = "an HTTP request after the handshake";
    let mut s = greeted(server, WRITER);
    s.write_all(HTTP_REQUEST).unwrap();
    expect_error(&mut s, what, E::FrameTooLarge, 0);
    expect_closed(&mut s, what);
}

fn frame_of_garbage(server: &Server) {
    let garbage = framed(&[0xAB; 16]);
    let what = "a 16-byte frame of garbage before the handshake";
    let mut s = connect(server);
    s.write_all(&garbage).unwrap();
    expect_error(&mut s, what, E::HandshakeRequired, 0);
    expect_closed(&mut s, what);

    // After the handshake the frame boundary is still known: the connection goes on.
    let mut s = greeted(server, WRITER);
    for (n, bytes) in [
        (16, vec![0xAB; 16]),
        (1, vec![7]),
        (12, b"PRMDPRMDPRMD".to_vec()),
        (1 << 20, vec![0xAB; 1 << 20]),
    ] {
        let what = format!("a {n}-byte frame of garbage after the handshake");
        s.write_all(&framed(&bytes)).unwrap();
        expect_error(&mut s, &what, E::MalformedMessage, 0);
        expect_open(&mut s, &what, 10);
    }
    // Pipelined: a query, garbage, a query, in one write; both queries are answered.
    let mut burst = atp_msg(11, "SKU-2");
    burst.extend(framed(&[0xAB; 16]));
    burst.extend(atp_msg(12, "SKU-2"));
    s.write_all(&burst).unwrap();
    let mut got: Vec<(u64, Option<E>)> = (0..3)
        .map(|_| {
            let f = read_frame(&mut s, "a query, garbage, a query, pipelined");
            let m = parse_message(&f).unwrap();
            let code = m
                .body_as_reply()
                .and_then(|r| r.result_as_error())
                .map(|e| e.code());
            (m.request_id(), code)
        })
        .collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        [(0, Some(E::MalformedMessage)), (11, None), (12, None)],
        "a query, garbage, a query, pipelined"
    );
}

fn wrong_magic(server: &Server) {
    // PROTOCOL.md: the first frame must be a Hello with magic PRMD; "any other message before a
    // successful handshake, an invalid one ... gets HandshakeRequired and the connection is
    // closed". (MalformedMessage is for frames that are not a valid Message; this one is.)
    for magic in [0, u32::from_le_bytes(*b"HTTP"), HELLO_MAGIC.swap_bytes()] {
        let what = format!("a Hello with magic {magic:#x}");
        let mut s = connect(server);
        s.write_all(&hello_with(Some(WRITER), magic, 1, 1, "t")).unwrap();
        expect_error(&mut s, &what, E::HandshakeRequired, 1);
        expect_closed(&mut s, &what);
    }
}

fn wrong_versions(server: &Server) {
    for (min, max) in [(2, 3), (0, 0), (2, u16::MAX), (1, 0), (3, 2)] {
        let what = format!("a Hello speaking versions {min}..={max}");
        let mut s = connect(server);
        s.write_all(&hello_with(Some(WRITER), HELLO_MAGIC, min, max, "t"))
            .unwrap();
        let text = expect_error(&mut s, &what, E::UnsupportedVersion, 1);
        assert!(
            text.contains('1'),
            "{what}: the message names the versions: {text:?}"
        );
        expect_closed(&mut s, &what);
    }
    // Any range that includes 1 is fine, and version 1 is chosen.
    for (min, max) in [(0, u16::MAX), (1, 9), (0, 1)] {
        let what = format!("a Hello speaking versions {min}..={max}");
        let mut s = connect(server);
        let f = call(
            &mut s,
            &what,
            &hello_with(Some(WRITER), HELLO_MAGIC, min, max, "t"),
            1,
        );
        let m = parse_message(&f).unwrap();
        let r = m
            .body_as_hello_reply()
            .unwrap_or_else(|| panic!("{what}: expected a HelloReply, got {}", summary(&f)));
        assert_eq!(r.version(), 1, "{what}");
    }
}

fn bad_tokens(server: &Server) {
    for token in [Some("guess-guess"), Some(""), None] {
        let what = format!("a Hello with token {token:?}");
        let mut s = connect(server);
        s.write_all(&hello_with(token, HELLO_MAGIC, 1, 1, "t")).unwrap();
        expect_error(&mut s, &what, E::AuthenticationFailed, 1);
        expect_closed(&mut s, &what);
    }
    // A refused Hello with a hold right behind it: the hold is never read.
    let what = "a Hello with a bad token and a Hold behind it";
    let mut s = connect(server);
    let mut bytes = hello_with(Some("guess-guess"), HELLO_MAGIC, 1, 1, "t");
    bytes.extend(hold_msg(2, BAD_HOLDS.start + 1, "SKU-1", 1));
    s.write_all(&bytes).unwrap();
    expect_error(&mut s, what, E::AuthenticationFailed, 1);
    expect_closed(&mut s, what);
}

fn request_before_handshake(server: &Server) {
    let what = "a Hold before the handshake";
    let mut s = connect(server);
    s.write_all(&hold_msg(77, BAD_HOLDS.start + 2, "SKU-1", 1))
        .unwrap();
    expect_error(&mut s, what, E::HandshakeRequired, 77);
    expect_closed(&mut s, what);

    let what = "a Batch before the handshake";
    let mut s = connect(server);
    s.write_all(&hold_batch(78, BAD_HOLDS.start + 3, 2)).unwrap();
    expect_error(&mut s, what, E::HandshakeRequired, 78);
    expect_closed(&mut s, what);

    // A Hello behind a request is too late: the request already closed the connection.
    let what = "a Hold, then a Hello, before the handshake";
    let mut s = connect(server);
    let mut bytes = hold_msg(79, BAD_HOLDS.start + 5, "SKU-1", 1);
    bytes.extend(hello(WRITER));
    s.write_all(&bytes).unwrap();
    expect_error(&mut s, what, E::HandshakeRequired, 79);
    expect_closed(&mut s, what);
}

fn unknown_operation(server: &Server) {
    for token in [WRITER, ADMIN, READER] {
        let what = format!("an unknown operation (type 200) on a {token} connection");
        let mut s = greeted(server, token);
        s.write_all(&unknown_op_msg(31)).unwrap();
        expect_error(&mut s, &what, E::UnknownOperation, 31);
        expect_open(&mut s, &what, 32);
    }
}

fn body_not_a_request(server: &Server) {
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "a HelloReply",
            message(41, |b| {
                let r = wire::HelloReply::create(b, &wire::HelloReplyArgs::default());
                (wire::Body::HelloReply, r.as_union_value())
            }),
        ),
        (
            "a Reply",
            message(42, |b| {
                let a = wire::Ack::create(b, &wire::AckArgs {});
                let r = wire::Reply::create(
                    b,
                    &wire::ReplyArgs {
                        result_type: wire::ReplyBody::Ack,
                        result: Some(a.as_union_value()),
                    },
                );
                (wire::Body::Reply, r.as_union_value())
            }),
        ),
        (
            "a BatchReply",
            message(43, |b| {
                let replies = b.create_vector::<WIPOffset<wire::Reply>>(&[]);
                let r = wire::BatchReply::create(
                    b,
                    &wire::BatchReplyArgs {
                        replies: Some(replies),
                    },
                );
                (wire::Body::BatchReply, r.as_union_value())
            }),
        ),
        (
            "an EventMessage",
            message(44, |b| {
                let l = wire::LowStock::create(b, &wire::LowStockArgs::default());
                let e = wire::EventMessage::create(
                    b,
                    &wire::EventMessageArgs {
                        event_type: wire::Event::LowStock,
                        event: Some(l.as_union_value()),
                    },
                );
                (wire::Body::EventMessage, e.as_union_value())
            }),
        ),
        (
            "a body of unknown type 42",
            message(45, |b| {
                let g = wire::GetHold::create(b, &wire::GetHoldArgs { hold: Some(&rid(1)) });
                (wire::Body(42), g.as_union_value())
            }),
        ),
    ];
    let mut s = greeted(server, WRITER);
    for (name, bytes) in bodies {
        let what = format!("{name} from the client after the handshake");
        let id = parse_message(&bytes[4..]).unwrap().request_id();
        s.write_all(&bytes).unwrap();
        expect_error(&mut s, &what, E::UnknownOperation, id);
        expect_open(&mut s, &what, 46);
    }
}

fn second_hello(server: &Server) {
    // A second Hello is not a Request or a Batch: UnknownOperation, and the session stays as
    // it was, with its role (an admin token cannot lift a read connection).
    let what = "a second Hello, with the admin token, on a read connection";
    let mut s = greeted(server, READER);
    s.write_all(&hello(ADMIN)).unwrap();
    expect_error(&mut s, what, E::UnknownOperation, 1);
    let f = call(&mut s, what, &hold_msg(51, BAD_HOLDS.start + 6, "SKU-1", 1), 51);
    assert_eq!(
        reply_of(&f).result_as_error().map(|e| e.code()),
        Some(E::PermissionDenied),
        "{what}: a Hold afterwards got {}",
        summary(&f)
    );
    let what = "a second Hello with a bad token";
    let mut s = greeted(server, WRITER);
    s.write_all(&hello_with(Some("guess-guess"), HELLO_MAGIC, 1, 1, "t"))
        .unwrap();
    expect_error(&mut s, what, E::UnknownOperation, 1);
    expect_open(&mut s, what, 52);
}

fn byte_by_byte(server: &Server) {
    // Every byte its own TCP segment, a few milliseconds apart: the frames still work.
    fn trickle(s: &mut TcpStream, bytes: &[u8]) {
        for &byte in bytes {
            s.write_all(&[byte]).unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    let what = "frames sent byte by byte";
    let mut s = connect(server);
    trickle(&mut s, &hello(WRITER));
    let f = read_frame(&mut s, what);
    assert!(
        parse_message(&f).unwrap().body_as_hello_reply().is_some(),
        "{what}: expected a HelloReply, got {}",
        summary(&f)
    );
    trickle(&mut s, &hold_msg(61, SLOW_HOLD, "SKU-2", SLOW_QTY as u32));
    let f = read_frame(&mut s, what);
    assert!(
        reply_of(&f).result_as_hold_granted().is_some(),
        "{what}: expected HoldGranted, got {}",
        summary(&f)
    );
    trickle(&mut s, &atp_msg(62, "SKU-2"));
    let f = read_frame(&mut s, what);
    assert_eq!(
        reply_of(&f).result_as_atp_value().map(|a| a.atp()),
        Some(ON_HAND - SLOW_QTY),
        "{what}: {}",
        summary(&f)
    );
}

fn batches(server: &Server) {
    let mut s = greeted(server, WRITER);
    let what = "a batch over max_batch_ops";
    s.write_all(&hold_batch(71, BAD_HOLDS.start + 10, MAX_BATCH_OPS + 1))
        .unwrap();
    expect_error(&mut s, what, E::BatchTooLarge, 71);
    expect_open(&mut s, what, 72);

    let what = "an empty batch";
    let empty = message(73, |b| {
        let reqs = b.create_vector::<WIPOffset<wire::Request>>(&[]);
        let batch = wire::Batch::create(b, &wire::BatchArgs { requests: Some(reqs) });
        (wire::Body::Batch, batch.as_union_value())
    });
    s.write_all(&empty).unwrap();
    expect_error(&mut s, what, E::EmptyRequest, 73);
    expect_open(&mut s, what, 74);

    // Bad operations inside a batch get their own errors, in their places; the others are
    // answered.
    let what = "a batch of a query, an unknown operation and a lookup";
    let mixed = message(75, |b| {
        let (sku, node) = (b.create_string("SKU-2"), b.create_string("DC-1"));
        let q = wire::Atp::create(
            b,
            &wire::AtpArgs {
                sku: Some(sku),
                node: Some(node),
                day: 0,
            },
        );
        let g = wire::GetHold::create(b, &wire::GetHoldArgs { hold: Some(&rid(1)) });
        let reqs = [
            (wire::Operation::Atp, q.as_union_value()),
            (wire::Operation(200), g.as_union_value()),
            (wire::Operation::GetHold, g.as_union_value()),
        ]
        .map(|(op_type, op)| {
            wire::Request::create(
                b,
                &wire::RequestArgs {
                    op_type,
                    op: Some(op),
                },
            )
        });
        let reqs = b.create_vector(&reqs);
        let batch = wire::Batch::create(b, &wire::BatchArgs { requests: Some(reqs) });
        (wire::Body::Batch, batch.as_union_value())
    });
    let f = call(&mut s, what, &mixed, 75);
    let m = parse_message(&f).unwrap();
    let replies = m
        .body_as_batch_reply()
        .unwrap_or_else(|| panic!("{what}: expected a BatchReply, got {}", summary(&f)))
        .replies();
    let kinds: Vec<_> = replies
        .iter()
        .map(|r| (r.result_type(), r.result_as_error().map(|e| e.code())))
        .collect();
    assert_eq!(
        kinds,
        [
            (wire::ReplyBody::AtpValue, None),
            (wire::ReplyBody::Error, Some(E::UnknownOperation)),
            (wire::ReplyBody::NotFound, None),
        ],
        "{what}"
    );
}

fn corrupted_offsets(server: &Server) {
    let hold = BAD_HOLDS.start + 20;
    let valid = hold_unframed(81, hold, "SKU-1", 1);
    let at = hold_layout(&valid);
    let n = valid.len() as u32;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut corrupt = |what, f: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = valid.clone();
        f(&mut bytes);
        assert_ne!(bytes, valid);
        cases.push((what, bytes));
    };
    corrupt("the root offset past the end", &|b| put_u32(b, 0, n + 100));
    corrupt("the root offset at the last byte", &|b| put_u32(b, 0, n - 1));
    corrupt("the root's vtable offset out of the buffer", &|b| {
        put_u32(b, at.root, 0x7FFF_0000)
    });
    corrupt("the body offset past the end", &|b| {
        put_u32(b, at.body_offset, n * 4)
    });
    corrupt("the body offset wrapping around", &|b| {
        put_u32(b, at.body_offset, u32::MAX - 3)
    });
    corrupt("the lines offset past the end", &|b| {
        put_u32(b, at.lines_offset, 0x4000_0000)
    });
    corrupt("the lines offset misaligned", &|b| {
        let v = u32_at(b, at.lines_offset);
        put_u32(b, at.lines_offset, v + 1)
    });
    corrupt("a string length past the end", &|b| {
        put_u32(b, at.sku_string, 1 << 20)
    });
    corrupt("a string of invalid UTF-8", &|b| b[at.sku_string + 4] = 0xFF);
    corrupt("the message cut short", &|b| b.truncate(b.len() - 8));
    // Required fields missing (built by hand: the generated builders refuse).
    cases.push((
        "a Hold without its required lines",
        unframed(82, |b| {
            let start = b.start_table();
            b.push_slot_always::<&wire::RequestId>(wire::Hold::VT_HOLD, &rid(hold));
            let h = b.end_table(start);
            request(b, wire::Operation::Hold, h.as_union_value())
        }),
    ));
    cases.push(("a Message without its required body", {
        let mut b = FlatBufferBuilder::new();
        let start = b.start_table();
        b.push_slot::<u64>(wire::Message::VT_REQUEST_ID, 83, 0);
        let msg = b.end_table(start);
        b.finish(msg, Some(wire::MESSAGE_IDENTIFIER));
        b.finished_data().to_vec()
    }));
    cases.push((
        "a union type without its value",
        unframed(84, |b| {
            let start = b.start_table();
            b.push_slot::<wire::Operation>(
                wire::Request::VT_OP_TYPE,
                wire::Operation::Hold,
                wire::Operation::NONE,
            );
            let r = b.end_table(start);
            (wire::Body::Request, r.as_union_value())
        }),
    ));

    let mut s = greeted(server, WRITER);
    for (name, bytes) in cases {
        let what = format!("a Hold with {name}");
        assert!(
            parse_message(&bytes).is_err(),
            "{what}: the test's corruption verifies"
        );
        s.write_all(&framed(&bytes)).unwrap();
        expect_error(&mut s, &what, E::MalformedMessage, 0);
        expect_open(&mut s, &what, 85);
    }
    // The same frame before the handshake: HandshakeRequired and the close.
    let mut bytes = valid.clone();
    put_u32(&mut bytes, at.body_offset, n * 4);
    let what = "a message with a corrupted offset before the handshake";
    let mut s = connect(server);
    s.write_all(&framed(&bytes)).unwrap();
    expect_error(&mut s, what, E::HandshakeRequired, 0);
    expect_closed(&mut s, what);
}

/// Many connections at once, each sending seeded random bytes (half of them after a good
/// handshake), then closing its side: every reply is a typed error, then the server closes.
fn random_garbage_storm(server: &Server) {
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let mut s = connect(server);
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let after_hello = t % 2 == 1;
                if after_hello {
                    greet(&mut s, WRITER);
                }
                let mut bytes: Vec<u8> = (0..64 + next() % 448).map(|_| next() as u8).collect();
                if t % 4 < 2 {
                    // A plausible length, so the garbage is read as a frame.
                    let len = (bytes.len() - 4) as u32;
                    bytes[..4].copy_from_slice(&len.to_le_bytes());
                }
                s.write_all(&bytes).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let allowed: &[E] = if after_hello {
                    &[E::MalformedMessage, E::FrameTooLarge, E::UnknownOperation]
                } else {
                    &[E::HandshakeRequired]
                };
                let what = format!("random bytes on connection {t} (after a Hello: {after_hello})");
                let mut all = Vec::new();
                s.read_to_end(&mut all)
                    .unwrap_or_else(|e| panic!("{what}: {}", describe(&e)));
                let mut rest = &all[..];
                while !rest.is_empty() {
                    assert!(rest.len() >= 4, "{what}: a reply cut short");
                    let len = u32_at(rest, 0) as usize;
                    let f = &rest[4..4 + len];
                    let code = parse_message(f)
                        .ok()
                        .and_then(|m| m.body_as_reply())
                        .and_then(|r| r.result_as_error())
                        .map(|e| e.code());
                    assert!(
                        code.is_some_and(|c| allowed.contains(&c)),
                        "{what}: got {}",
                        summary(f)
                    );
                    rest = &rest[4 + len..];
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for t in threads {
        if let Err(p) = t.join() {
            failed.push(panic_text(&*p));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

// ---- the good client and the test -------------------------------------------------------------

/// Places one-unit holds on SKU-1 and checks the ATP after each until told to stop; returns how
/// many it placed.
fn good_client(mut s: TcpStream, stop: Arc<AtomicBool>) -> u64 {
    let mut held = 0;
    let mut request_id = 100;
    while !stop.load(Ordering::Relaxed) {
        let hold = GOOD_HOLDS + held;
        request_id += 1;
        let what = format!("the good client's hold {hold}");
        let f = call(&mut s, &what, &hold_msg(request_id, hold, "SKU-1", 1), request_id);
        assert!(
            reply_of(&f).result_as_hold_granted().is_some(),
            "{what}: {}",
            summary(&f)
        );
        held += 1;
        request_id += 1;
        let what = format!("the good client's ATP after {held} holds");
        assert_eq!(
            atp(&mut s, &what, request_id, "SKU-1"),
            ON_HAND - held as i64,
            "{what}"
        );
        if held % 8 == 1 {
            request_id += 1;
            let f = call(&mut s, &what, &get_hold_msg(request_id, hold), request_id);
            assert_eq!(
                reply_of(&f).result_as_hold_value().map(|h| h.state()),
                Some(wire::HoldState::Held),
                "the good client's hold {hold}: {}",
                summary(&f)
            );
        }
    }
    held
}

fn setup(s: &mut TcpStream) {
    let node = message(2, |b| {
        let name = b.create_string("DC-1");
        let n = wire::UpsertNode::create(
            b,
            &wire::UpsertNodeArgs {
                name: Some(name),
                weekdays: 31,
                cost_factor_milli: 1000,
                ..Default::default()
            },
        );
        request(b, wire::Operation::UpsertNode, n.as_union_value())
    });
    let f = call(s, "setup", &node, 2);
    assert!(
        reply_of(&f).result_as_node_upserted().is_some(),
        "{}",
        summary(&f)
    );
    for (i, sku) in ["SKU-1", "SKU-2"].into_iter().enumerate() {
        let id = 3 + i as u64;
        let m = message(id, |b| {
            let name = b.create_string(sku);
            let u = wire::UpsertSku::create(
                b,
                &wire::UpsertSkuArgs {
                    name: Some(name),
                    required_capabilities: 0,
                },
            );
            request(b, wire::Operation::UpsertSku, u.as_union_value())
        });
        let f = call(s, "setup", &m, id);
        assert!(reply_of(&f).result_as_sku_upserted().is_some(), "{}", summary(&f));
    }
    let feed = message(5, |b| {
        let node = b.create_string("DC-1");
        let counts: Vec<_> = ["SKU-1", "SKU-2"]
            .map(|sku| {
                let sku = b.create_string(sku);
                wire::SkuCount::create(
                    b,
                    &wire::SkuCountArgs {
                        sku: Some(sku),
                        on_hand: ON_HAND as u32,
                    },
                )
            })
            .into();
        let counts = b.create_vector(&counts);
        let f = wire::SetOnHand::create(
            b,
            &wire::SetOnHandArgs {
                request: Some(&rid(5)),
                node: Some(node),
                feed_seq: 1,
                counts: Some(counts),
            },
        );
        request(b, wire::Operation::SetOnHand, f.as_union_value())
    });
    let f = call(s, "setup", &feed, 5);
    assert!(reply_of(&f).result_as_fed().is_some(), "{}", summary(&f));
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".to_string())
}

/// The state after the bad input: exactly the good client's holds and the slow hold.
fn final_state(server: &Server, held: u64) {
    let mut s = connect(server);
    assert_eq!(
        greet(&mut s, READER),
        wire::Role::Read,
        "a new connection after the bad input"
    );
    assert_eq!(
        atp(&mut s, "SKU-1 at the end", 2, "SKU-1"),
        ON_HAND - held as i64,
        "SKU-1's ATP after {held} good holds"
    );
    assert_eq!(
        atp(&mut s, "SKU-2 at the end", 3, "SKU-2"),
        ON_HAND - SLOW_QTY,
        "SKU-2's ATP after the slow hold"
    );
    let position = message(4, |b| {
        let (sku, node) = (b.create_string("SKU-1"), b.create_string("DC-1"));
        let q = wire::GetPosition::create(
            b,
            &wire::GetPositionArgs {
                sku: Some(sku),
                node: Some(node),
            },
        );
        request(b, wire::Operation::GetPosition, q.as_union_value())
    });
    let f = call(&mut s, "SKU-1's position at the end", &position, 4);
    let p = reply_of(&f).result_as_position_value().expect("a PositionValue");
    assert_eq!(
        (p.on_hand(), p.reserved(), p.allocated()),
        (ON_HAND as u32, held as u32, 0),
        "SKU-1's position after {held} good holds"
    );
    for (i, hold) in BAD_HOLDS.enumerate() {
        let id = 10 + i as u64;
        let f = call(&mut s, "a hold from bad input", &get_hold_msg(id, hold), id);
        assert!(
            reply_of(&f).result_as_not_found().is_some(),
            "hold {hold}, carried by bad input, exists: {}",
            summary(&f)
        );
    }
    for (hold, state) in [
        (GOOD_HOLDS, Some(wire::HoldState::Held)),
        (GOOD_HOLDS + held - 1, Some(wire::HoldState::Held)),
        (GOOD_HOLDS + held, None),
        (SLOW_HOLD, Some(wire::HoldState::Held)),
    ] {
        let f = call(&mut s, "a hold at the end", &get_hold_msg(500, hold), 500);
        assert_eq!(
            reply_of(&f).result_as_hold_value().map(|h| h.state()),
            state,
            "hold {hold} at the end: {}",
            summary(&f)
        );
    }
}

#[test]
fn bad_input_gets_typed_errors_and_harms_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = format!("admin:{ADMIN},write:{WRITER},read:{READER}");
    let max_batch = MAX_BATCH_OPS.to_string();
    let mut server = Server::start_with(dir.path(), &["--token", &tokens, "--max-batch-ops", &max_batch]);
    let mut admin = greeted(&server, ADMIN);
    setup(&mut admin);

    let stop = Arc::new(AtomicBool::new(false));
    let good = {
        let mut s = connect(&server);
        assert_eq!(greet(&mut s, WRITER), wire::Role::Write);
        let stop = stop.clone();
        std::thread::spawn(move || good_client(s, stop))
    };

    type Case = fn(&Server);
    let cases: [(&str, Case); 18] = [
        ("connect_then_close_at_once", connect_then_close_at_once),
        ("truncated_frame_then_eof", truncated_frame_then_eof),
        ("pipelined_with_the_hello", pipelined_with_the_hello),
        ("zero_length", zero_length),
        ("huge_length", huge_length),
        ("garbage_bytes", garbage_bytes),
        ("frame_of_garbage", frame_of_garbage),
        ("wrong_magic", wrong_magic),
        ("wrong_versions", wrong_versions),
        ("bad_tokens", bad_tokens),
        ("request_before_handshake", request_before_handshake),
        ("unknown_operation", unknown_operation),
        ("body_not_a_request", body_not_a_request),
        ("second_hello", second_hello),
        ("byte_by_byte", byte_by_byte),
        ("batches", batches),
        ("corrupted_offsets", corrupted_offsets),
        ("random_garbage_storm", random_garbage_storm),
    ];
    let mut failures = Vec::new();
    for (name, case) in cases {
        if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| case(&server))) {
            failures.push(format!("{name}: {}", panic_text(&*p)));
        }
    }

    stop.store(true, Ordering::Relaxed);
    match good.join() {
        Ok(held) if held > 0 => {
            eprintln!("the good client placed {held} holds during the bad input");
            if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| final_state(&server, held))) {
                failures.push(format!("final state: {}", panic_text(&*p)));
            }
        }
        Ok(_) => failures.push("the good client placed no hold at all".to_string()),
        Err(p) => failures.push(format!("the good client: {}", panic_text(&*p))),
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited during the bad input"
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(server.stop().success());
}
