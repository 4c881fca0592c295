//! `promised serve` over a real socket: handshake, writes acknowledged after group commit,
//! queries, typed errors, pipelined requests answered out of order, bad frames, graceful
//! shutdown on SIGTERM, and a restart that finds every acknowledged write.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use flatbuffers::FlatBufferBuilder;
use promised_schemas::frame::parse_message;
use promised_schemas::wire;

mod common;
use common::{Body, Server, request, rid};

/// One framed message (build first, as the cases here read best).
fn message(build: impl for<'a> FnOnce(&mut FlatBufferBuilder<'a>) -> Body<'a>, request_id: u64) -> Vec<u8> {
    common::message(request_id, build)
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn greet(s: &mut TcpStream) {
    assert_eq!(greet_with(s, None), Some(wire::Role::Admin));
}

fn greet_with(s: &mut TcpStream, token: Option<&str>) -> Option<wire::Role> {
    let hello_msg = hello_frame(token);
    s.write_all(&hello_msg).unwrap();
    let reply = read_frame(s).unwrap();
    let m = parse_message(&reply).unwrap();
    m.body_as_hello_reply().map(|r| {
        assert_eq!(m.request_id(), 1);
        assert_eq!(r.version(), 1);
        r.role()
    })
}

fn hold_msg(request_id: u64, hold: u64, sku: &str, qty: u32) -> Vec<u8> {
    common::framed(&common::hold_unframed(request_id, hold, sku, qty))
}

fn get_hold_msg(request_id: u64, hold: u64) -> Vec<u8> {
    message(
        move |b| {
            let id = rid(hold);
            let g = wire::GetHold::create(b, &wire::GetHoldArgs { hold: Some(&id) });
            request(b, wire::Operation::GetHold, g.as_union_value())
        },
        request_id,
    )
}

/// Sends one frame and returns the reply's bytes.
fn call(s: &mut TcpStream, frame: &[u8]) -> Vec<u8> {
    s.write_all(frame).unwrap();
    read_frame(s).expect("a reply")
}

fn reply_of(bytes: &[u8]) -> wire::Reply<'_> {
    parse_message(bytes).unwrap().body_as_reply().expect("a Reply")
}

fn setup(s: &mut TcpStream) {
    let node = message(
        |b| {
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
        },
        2,
    );
    assert!(reply_of(&call(s, &node)).result_as_node_upserted().is_some());
    let sku = message(
        |b| {
            let name = b.create_string("SKU-1");
            let u = wire::UpsertSku::create(
                b,
                &wire::UpsertSkuArgs {
                    name: Some(name),
                    required_capabilities: 0,
                },
            );
            request(b, wire::Operation::UpsertSku, u.as_union_value())
        },
        3,
    );
    assert!(reply_of(&call(s, &sku)).result_as_sku_upserted().is_some());
    let feed = message(
        |b| {
            let (n, s) = (b.create_string("DC-1"), b.create_string("SKU-1"));
            let c = wire::SkuCount::create(
                b,
                &wire::SkuCountArgs {
                    sku: Some(s),
                    on_hand: 100,
                },
            );
            let counts = b.create_vector(&[c]);
            let id = rid(4);
            let f = wire::SetOnHand::create(
                b,
                &wire::SetOnHandArgs {
                    request: Some(&id),
                    node: Some(n),
                    feed_seq: 1,
                    counts: Some(counts),
                },
            );
            request(b, wire::Operation::SetOnHand, f.as_union_value())
        },
        4,
    );
    assert!(reply_of(&call(s, &feed)).result_as_fed().is_some());
}

#[test]
fn serve_holds_commits_answers_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut s = server.connect();
    greet(&mut s);
    setup(&mut s);

    // A hold, its commit, and the ATP they leave.
    let r = call(&mut s, &hold_msg(10, 500, "SKU-1", 10));
    assert!(
        reply_of(&r).result_as_hold_granted().is_some(),
        "{:?}",
        reply_of(&r).result_type()
    );
    let commit = message(
        |b| {
            let (req, hold) = (rid(501), rid(500));
            let c = wire::Commit::create(
                b,
                &wire::CommitArgs {
                    request: Some(&req),
                    hold: Some(&hold),
                },
            );
            request(b, wire::Operation::Commit, c.as_union_value())
        },
        11,
    );
    let r = call(&mut s, &commit);
    assert_eq!(
        reply_of(&r).result_as_hold_changed().expect("changed").state(),
        wire::HoldState::Committed
    );
    let atp = message(
        |b| {
            let (sku, node) = (b.create_string("SKU-1"), b.create_string("DC-1"));
            let q = wire::Atp::create(
                b,
                &wire::AtpArgs {
                    sku: Some(sku),
                    node: Some(node),
                    day: 0,
                },
            );
            request(b, wire::Operation::Atp, q.as_union_value())
        },
        12,
    );
    assert_eq!(
        reply_of(&call(&mut s, &atp)).result_as_atp_value().unwrap().atp(),
        90
    );

    // A typed error; the connection goes on.
    let r = call(&mut s, &hold_msg(13, 600, "NO-SUCH-SKU", 1));
    let e = reply_of(&r).result_as_error().expect("an error");
    assert_eq!(e.code(), wire::ErrorCode::UnknownSku);
    assert!(e.message().unwrap().contains("NO-SUCH-SKU"));

    // Pipelined: 50 holds sent at once; every reply comes back, matched by request id.
    let mut burst = Vec::new();
    for i in 0..50u64 {
        burst.extend(hold_msg(1000 + i, 2000 + i, "SKU-1", 1));
    }
    s.write_all(&burst).unwrap();
    let mut seen = HashMap::new();
    for _ in 0..50 {
        let f = read_frame(&mut s).unwrap();
        let m = parse_message(&f).unwrap();
        let granted = m.body_as_reply().unwrap().result_as_hold_granted().is_some();
        seen.insert(m.request_id(), granted);
    }
    assert_eq!(seen.len(), 50);
    assert!(
        seen.iter()
            .all(|(id, granted)| (1000..1050).contains(id) && *granted)
    );

    // A second client that skips the handshake is refused and closed; the first is unaffected.
    let mut rude = server.connect();
    let r = call(&mut rude, &get_hold_msg(1, 500));
    assert_eq!(
        reply_of(&r).result_as_error().unwrap().code(),
        wire::ErrorCode::HandshakeRequired
    );
    assert!(read_frame(&mut rude).is_none(), "the connection is closed");
    // Garbage before the handshake: HandshakeRequired, then the close.
    let mut garbage = server.connect();
    garbage.write_all(&[0, 0, 0, 0]).unwrap();
    let r = read_frame(&mut garbage).unwrap();
    assert_eq!(error_code(&r), Some(wire::ErrorCode::HandshakeRequired));
    assert!(read_frame(&mut garbage).is_none());
    // A frame too large for a Hello is refused before its bytes are read.
    let mut big = server.connect();
    big.write_all(&(1u32 << 20).to_le_bytes()).unwrap();
    let r = read_frame(&mut big).unwrap();
    assert_eq!(error_code(&r), Some(wire::ErrorCode::HandshakeRequired));
    // After the handshake: a message that is not valid gets MalformedMessage and the connection
    // goes on; an empty frame gets MalformedMessage and the close.
    let mut greeted = server.connect();
    greet(&mut greeted);
    let r = call(&mut greeted, &[3, 0, 0, 0, 1, 2, 3]);
    assert_eq!(error_code(&r), Some(wire::ErrorCode::MalformedMessage));
    let r = call(&mut greeted, &get_hold_msg(21, 500));
    assert!(reply_of(&r).result_as_hold_value().is_some());
    greeted.write_all(&[0, 0, 0, 0]).unwrap();
    let r = read_frame(&mut greeted).unwrap();
    assert_eq!(error_code(&r), Some(wire::ErrorCode::MalformedMessage));
    assert!(read_frame(&mut greeted).is_none());
    let r = call(&mut s, &get_hold_msg(20, 500));
    assert_eq!(
        reply_of(&r).result_as_hold_value().unwrap().state(),
        wire::HoldState::Committed
    );

    // SIGTERM with writes in flight: the server answers what it has read, exits 0, and a
    // restart finds every acknowledged write.
    let mut burst = Vec::new();
    for i in 0..40u64 {
        burst.extend(hold_msg(5000 + i, 3000 + i, "SKU-1", 1));
    }
    s.write_all(&burst).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let status = server.stop();
    assert!(status.success(), "promised serve exited with {status}");
    let mut acked = Vec::new();
    let mut told = false;
    while let Some(f) = read_frame(&mut s) {
        assert!(!told, "nothing after the shutdown notice");
        let m = parse_message(&f).unwrap();
        if m.request_id() == 0 {
            // Last: every owed reply went out before it.
            assert_eq!(error_code(&f), Some(wire::ErrorCode::ShuttingDown));
            told = true;
            continue;
        }
        assert!(m.body_as_reply().unwrap().result_as_hold_granted().is_some());
        acked.push(m.request_id() - 5000 + 3000);
    }
    assert!(told, "the client was told the server is shutting down");
    assert!(!acked.is_empty(), "no reply to writes sent before the SIGTERM");
    let server = Server::start(dir.path());
    let mut s = server.connect();
    greet(&mut s);
    let r = call(&mut s, &get_hold_msg(30, 500));
    assert_eq!(
        reply_of(&r).result_as_hold_value().unwrap().state(),
        wire::HoldState::Committed
    );
    for i in 0..50u64 {
        let r = call(&mut s, &get_hold_msg(31 + i, 2000 + i));
        assert_eq!(
            reply_of(&r).result_as_hold_value().unwrap().state(),
            wire::HoldState::Held
        );
    }
    for (i, &hold) in acked.iter().enumerate() {
        let r = call(&mut s, &get_hold_msg(100 + i as u64, hold));
        assert_eq!(
            reply_of(&r).result_as_hold_value().map(|h| h.state()),
            Some(wire::HoldState::Held),
            "acknowledged hold {hold} lost in the shutdown"
        );
    }
    let atp_now = reply_of(&call(&mut s, &atp)).result_as_atp_value().unwrap().atp();
    assert!(
        atp_now <= 40 - acked.len() as i64,
        "ATP {atp_now} after {} more holds",
        acked.len()
    );
}

fn snapshot_msg(request_id: u64) -> Vec<u8> {
    message(
        |b| {
            let t = wire::TakeSnapshot::create(b, &wire::TakeSnapshotArgs {});
            request(b, wire::Operation::TakeSnapshot, t.as_union_value())
        },
        request_id,
    )
}

fn error_code(bytes: &[u8]) -> Option<wire::ErrorCode> {
    reply_of(bytes).result_as_error().map(|e| e.code())
}

#[test]
fn tokens_roles_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[
            "--token",
            "admin:admin-secret",
            "--token",
            "write:writer-secret,read:reader-secret",
            "--max-in-flight",
            "2",
            "--max-batch-ops",
            "3",
        ],
    );
    // No token, or a wrong one: refused and closed.
    let mut s = server.connect();
    assert_eq!(greet_with(&mut s, None), None);
    assert!(read_frame(&mut s).is_none());
    let mut s = server.connect();
    assert_eq!(greet_with(&mut s, Some("guess-guess")), None);
    assert!(read_frame(&mut s).is_none());

    let mut admin = server.connect();
    assert_eq!(
        greet_with(&mut admin, Some("admin-secret")),
        Some(wire::Role::Admin)
    );
    setup(&mut admin);
    let mut reader = server.connect();
    assert_eq!(
        greet_with(&mut reader, Some("reader-secret")),
        Some(wire::Role::Read)
    );
    let mut writer = server.connect();
    assert_eq!(
        greet_with(&mut writer, Some("writer-secret")),
        Some(wire::Role::Write)
    );

    // Roles: a reader may read, not write; a writer may write, not take snapshots.
    assert_eq!(
        error_code(&call(&mut reader, &hold_msg(2, 70, "SKU-1", 1))),
        Some(wire::ErrorCode::PermissionDenied)
    );
    assert!(
        reply_of(&call(&mut reader, &get_hold_msg(3, 70)))
            .result_as_not_found()
            .is_some()
    );
    assert!(
        reply_of(&call(&mut writer, &hold_msg(4, 71, "SKU-1", 1)))
            .result_as_hold_granted()
            .is_some()
    );
    assert_eq!(
        error_code(&call(&mut writer, &snapshot_msg(5))),
        Some(wire::ErrorCode::PermissionDenied)
    );
    assert!(
        reply_of(&call(&mut admin, &snapshot_msg(6)))
            .result_as_snapshot_taken()
            .is_some()
    );

    // A batch over the limit.
    let batch = message(
        |b| {
            let mut reqs = Vec::new();
            for h in 0..4u64 {
                let id = rid(800 + h);
                let g = wire::GetHold::create(b, &wire::GetHoldArgs { hold: Some(&id) });
                reqs.push(wire::Request::create(
                    b,
                    &wire::RequestArgs {
                        op_type: wire::Operation::GetHold,
                        op: Some(g.as_union_value()),
                    },
                ));
            }
            let reqs = b.create_vector(&reqs);
            let batch = wire::Batch::create(b, &wire::BatchArgs { requests: Some(reqs) });
            (wire::Body::Batch, batch.as_union_value())
        },
        7,
    );
    assert_eq!(
        error_code(&call(&mut admin, &batch)),
        Some(wire::ErrorCode::BatchTooLarge)
    );

    // In flight: with at most 2 per connection, a burst of writes (each waiting for its group
    // commit) gets some `Busy` answers at once, and every other write is granted.
    let mut burst = Vec::new();
    for i in 0..30u64 {
        burst.extend(hold_msg(100 + i, 900 + i, "SKU-1", 1));
    }
    writer.write_all(&burst).unwrap();
    let (mut busy, mut granted) = (0, 0);
    for _ in 0..30 {
        let f = read_frame(&mut writer).unwrap();
        match error_code(&f) {
            Some(wire::ErrorCode::Busy) => busy += 1,
            None => granted += 1,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(busy > 0 && granted > 0, "busy {busy}, granted {granted}");
}

#[test]
fn a_config_file_sets_tokens_and_limits_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("promised.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_batch_ops = 50\n[[auth.tokens]]\nrole = \"read\"\ntoken = \"from-the-file\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        &["--config", config.to_str().unwrap(), "--max-batch-ops", "7"],
    );
    let mut s = server.connect();
    assert_eq!(greet_with(&mut s, Some("from-the-file")), Some(wire::Role::Read));
    // The HelloReply announced the flag's limit, not the file's: read it again to check.
    let mut s2 = server.connect();
    let hello = hello_frame(Some("from-the-file"));
    s2.write_all(&hello).unwrap();
    let f = read_frame(&mut s2).unwrap();
    let reply = parse_message(&f).unwrap().body_as_hello_reply().unwrap();
    assert_eq!(reply.max_batch_ops(), 7);
    assert_eq!(reply.max_in_flight(), 1024);
}

#[test]
fn silent_connections_time_out_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &["--handshake-timeout-ms", "200", "--idle-timeout-ms", "300"],
    );
    // Connected, never says hello.
    let mut s = server.connect();
    let f = read_frame(&mut s).expect("a Timeout error before the close");
    assert_eq!(error_code(&f), Some(wire::ErrorCode::Timeout));
    assert!(read_frame(&mut s).is_none());
    // Greeted, then silent.
    let mut s = server.connect();
    greet(&mut s);
    let started = std::time::Instant::now();
    let f = read_frame(&mut s).expect("a Timeout error before the close");
    assert_eq!(error_code(&f), Some(wire::ErrorCode::Timeout));
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
    // Trickling bytes does not stretch the handshake deadline.
    let mut trickle = server.connect();
    trickle.write_all(&100u32.to_le_bytes()).unwrap();
    let feeder = {
        let mut t = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..40 {
                if t.write_all(&[7]).is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
        })
    };
    let f = read_frame(&mut trickle).expect("a Timeout error before the close");
    assert_eq!(error_code(&f), Some(wire::ErrorCode::Timeout));
    assert!(!feeder.is_finished(), "the deadline moved with the trickle");
    feeder.join().unwrap();
    // Meanwhile an active client is served.
    let mut ok = server.connect();
    greet(&mut ok);
    assert!(
        reply_of(&call(&mut ok, &get_hold_msg(2, 1)))
            .result_as_not_found()
            .is_some()
    );
}

#[test]
fn metrics_health_and_ready_on_the_admin_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert_eq!(server.http_get("/health"), (200, "ok\n".to_string()));
    assert_eq!(server.http_get("/ready").0, 200);
    let mut s = server.connect();
    greet(&mut s);
    setup(&mut s);
    assert!(
        reply_of(&call(&mut s, &hold_msg(10, 500, "SKU-1", 3)))
            .result_as_hold_granted()
            .is_some()
    );
    assert!(error_code(&call(&mut s, &hold_msg(11, 501, "NO-SUCH-SKU", 1))).is_some());
    let (status, text) = server.http_get("/metrics");
    assert_eq!(status, 200);
    for needle in [
        "promised_requests_total{op=\"Hold\"} 2",
        "promised_rejected_total{code=\"UnknownSku\"} 1",
        "promised_connections 1",
        "promised_holds_open 1",
        "promised_request_duration_seconds_bucket{le=",
        "promised_wal_fsyncs_total",
        "promised_wal_batch_records_count",
        "promised_wal_fsync_seconds_bucket",
        "promised_snapshot_age_seconds",
        "promised_storage_failed 0",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle:?}:\n{text}");
    }
    assert_eq!(server.http_get("/nope").0, 404);
}

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.starts_with('{') && first.ends_with('}'), "{first}");
    assert!(first.contains("\"level\":\"INFO\""), "{first}");
    assert!(first.contains("\"message\":"), "{first}");
}

#[test]
fn connections_past_the_limit_are_told_busy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--max-connections", "1"]);
    let mut first = server.connect();
    greet(&mut first);
    let mut second = server.connect();
    let f = read_frame(&mut second).expect("a Busy error before the close");
    assert_eq!(error_code(&f), Some(wire::ErrorCode::Busy));
    assert!(read_frame(&mut second).is_none());
    // The first is unaffected; once it leaves, a newcomer gets in.
    assert!(
        reply_of(&call(&mut first, &get_hold_msg(2, 1)))
            .result_as_not_found()
            .is_some()
    );
    drop(first);
    // The server notices the close on its own time: retry until the slot is free.
    let mut third = loop {
        let mut s = server.connect();
        let greeted = s.write_all(&hello_frame(None)).is_ok()
            && read_frame(&mut s)
                .and_then(|f| parse_message(&f).ok().map(|m| m.body_as_hello_reply().is_some()))
                .unwrap_or(false);
        if greeted {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        reply_of(&call(&mut third, &get_hold_msg(3, 1)))
            .result_as_not_found()
            .is_some()
    );
}

/// A `Hello` speaking version 1, with `token` if given.
fn hello_frame(token: Option<&str>) -> Vec<u8> {
    promised_schemas::frame::hello_frame("test", token)
}

#[test]
fn an_admin_shutdown_is_acknowledged_then_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut s = server.connect();
    greet(&mut s);
    setup(&mut s);
    let shutdown = message(
        |b| {
            let op = wire::Shutdown::create(b, &wire::ShutdownArgs {});
            request(b, wire::Operation::Shutdown, op.as_union_value())
        },
        9,
    );
    assert!(reply_of(&call(&mut s, &shutdown)).result_as_ack().is_some());
    assert!(server.wait().success());
    // Everything acknowledged before it is there after a restart.
    let server = Server::start(dir.path());
    let mut s = server.connect();
    greet(&mut s);
    assert!(
        reply_of(&call(&mut s, &hold_msg(2, 1, "SKU-1", 1)))
            .result_as_hold_granted()
            .is_some()
    );
}
