//! The schema is the contract: a Python client built only from `flatc --python` output and the
//! `flatbuffers` PyPI runtime (`examples/python`) talks to a real `promised serve`. Its smoke
//! script holds, commits, releases, queries ATP, retries and provokes errors, checking every
//! number; then this test reads the state the script left behind through the Rust types, so a
//! script that checked nothing, or a server that answered without changing anything, fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;
use promised_schemas::frame::{parse_message, write_frame};
use promised_schemas::wire;

mod common;
use common::Server;

const SMOKE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/python/smoke.py");
const TOKEN: &str = "python-smoke-token";
/// The script names its node and SKU after this tag.
const TAG: &str = "rust-test";

/// Fails, saying how to install it, unless `python3` can import the FlatBuffers runtime.
fn require_python_flatbuffers() {
    let pip = "`python3 -m pip install flatbuffers==25.12.19` (.ci/run does this in CI)";
    let out = Command::new("python3")
        .args(["-c", "import flatbuffers; print(flatbuffers.__version__)"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 is needed to run the Python client's test ({e}): install Python 3, \
                 then the FlatBuffers runtime with {pip}"
            )
        });
    assert!(
        out.status.success(),
        "python3 cannot import the FlatBuffers runtime: install it with {pip}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn frame(
    build: impl for<'a> FnOnce(&mut FlatBufferBuilder<'a>) -> flatbuffers::WIPOffset<wire::Message<'a>>,
) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let msg = build(&mut b);
    wire::finish_message_buffer(&mut b, msg);
    let mut out = Vec::new();
    write_frame(b.finished_data(), &mut out);
    out
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("a reply's length");
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut buf).expect("a reply");
    buf
}

/// A Rust connection with the Write token, independent of the Python client.
fn connect(server: &Server) -> TcpStream {
    let mut s = server.connect();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = frame(|b| {
        let name = b.create_string("python-client-test");
        let token = b.create_string(TOKEN);
        let h = wire::Hello::create(
            b,
            &wire::HelloArgs {
                magic: promised_schemas::HELLO_MAGIC,
                min_version: 1,
                max_version: 1,
                client_name: Some(name),
                auth_token: Some(token),
            },
        );
        wire::Message::create(
            b,
            &wire::MessageArgs {
                request_id: 1,
                body_type: wire::Body::Hello,
                body: Some(h.as_union_value()),
            },
        )
    });
    s.write_all(&hello).unwrap();
    let reply = read_frame(&mut s);
    let m = parse_message(&reply).unwrap();
    assert_eq!(m.body_as_hello_reply().map(|r| r.role()), Some(wire::Role::Write));
    s
}

/// GetPosition of `sku` at `node`: (on hand, reserved, allocated).
fn position(s: &mut TcpStream, sku: &str, node: &str) -> (u32, u32, u32) {
    let request = frame(|b| {
        let (sku, node) = (b.create_string(sku), b.create_string(node));
        let g = wire::GetPosition::create(
            b,
            &wire::GetPositionArgs {
                sku: Some(sku),
                node: Some(node),
            },
        );
        let r = wire::Request::create(
            b,
            &wire::RequestArgs {
                op_type: wire::Operation::GetPosition,
                op: Some(g.as_union_value()),
            },
        );
        wire::Message::create(
            b,
            &wire::MessageArgs {
                request_id: 2,
                body_type: wire::Body::Request,
                body: Some(r.as_union_value()),
            },
        )
    });
    s.write_all(&request).unwrap();
    let bytes = read_frame(s);
    let m = parse_message(&bytes).unwrap();
    assert_eq!(m.request_id(), 2);
    let reply = m.body_as_reply().expect("a Reply");
    let p = reply.result_as_position_value().unwrap_or_else(|| {
        panic!(
            "GetPosition {sku} at {node}: expected a PositionValue, got {:?} {:?}",
            reply.result_type(),
            reply.result_as_error().map(|e| e.message())
        )
    });
    (p.on_hand(), p.reserved(), p.allocated())
}

#[test]
fn python_client_holds_commits_and_queries_a_real_server() {
    require_python_flatbuffers();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--token", &format!("write:{TOKEN}")]);

    let out = Command::new("python3")
        .arg(SMOKE)
        .args(["--addr", &server.addr, "--token", TOKEN, "--tag", TAG])
        // Leave no __pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 examples/python/smoke.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "examples/python/smoke.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // The script reached its end, and showed the error case with the schema's code.
    assert!(
        stdout.contains(&format!("all checks passed: SKU-{TAG} at DC-{TAG} has ATP 97")),
        "the script exited 0 without finishing:\n{stdout}"
    );
    assert!(
        stdout.contains("(100, 'UnknownSku')"),
        "the script did not show the UnknownSku error:\n{stdout}"
    );

    // What the Python client did is on the server: 100 on hand, the committed hold's 3 units
    // allocated, the released hold's 5 back, nothing left reserved.
    let mut s = connect(&server);
    assert_eq!(
        position(&mut s, &format!("SKU-{TAG}"), &format!("DC-{TAG}")),
        (100, 0, 3),
        "(on hand, reserved, allocated) after the Python client's run"
    );
    assert!(server.stop().success());
}
