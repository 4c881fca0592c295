//! What the server's integration tests share: a real `promised serve` child process on
//! loopback ports it chose itself, stopped by its pid.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use promised_schemas::frame::write_frame;
use promised_schemas::wire;

/// A message body under construction: its type and offset.
pub type Body<'a> = (wire::Body, WIPOffset<UnionWIPOffset>);

/// The message's bytes, without the length prefix.
pub fn unframed(
    request_id: u64,
    build: impl for<'a> FnOnce(&mut FlatBufferBuilder<'a>) -> Body<'a>,
) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let (body_type, body) = build(&mut b);
    let msg = wire::Message::create(
        &mut b,
        &wire::MessageArgs {
            request_id,
            body_type,
            body: Some(body),
        },
    );
    wire::finish_message_buffer(&mut b, msg);
    b.finished_data().to_vec()
}

/// `bytes` with their length prefix.
pub fn framed(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(bytes, &mut out);
    out
}

/// One framed message.
pub fn message(
    request_id: u64,
    build: impl for<'a> FnOnce(&mut FlatBufferBuilder<'a>) -> Body<'a>,
) -> Vec<u8> {
    framed(&unframed(request_id, build))
}

/// A `Request` body around one operation.
pub fn request(
    b: &mut FlatBufferBuilder<'_>,
    op_type: wire::Operation,
    op: WIPOffset<UnionWIPOffset>,
) -> Body<'static> {
    let r = wire::Request::create(
        b,
        &wire::RequestArgs {
            op_type,
            op: Some(op),
        },
    );
    (wire::Body::Request, r.as_union_value())
}

/// A wire request id from a small number.
pub fn rid(n: u64) -> wire::RequestId {
    wire::RequestId::new(0, n)
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub admin: String,
}

impl Server {
    pub fn start(dir: &std::path::Path) -> Server {
        Self::start_with(dir, &[])
    }

    pub fn start_with(dir: &std::path::Path, extra: &[&str]) -> Server {
        Self::start_at(dir, "127.0.0.1:0", extra)
    }

    /// On a given protocol address (a restart on the port a client already knows).
    pub fn start_at(dir: &std::path::Path, listen: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_promised"))
            .args([
                "serve",
                "--listen",
                listen,
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .env_remove("PROMISED_TOKENS")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start promised serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut admin = String::new();
        let addr = loop {
            let line = lines.next().expect("the server said where it listens").unwrap();
            // Text or JSON log lines: the address is what follows the words.
            let addr_after = |words: &str| {
                line.split_once(words).map(|(_, rest)| {
                    rest.chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect::<String>()
                })
            };
            if let Some(a) = addr_after("admin HTTP on ") {
                admin = a;
            }
            if let Some(addr) = addr_after("serving on ") {
                break addr;
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr, admin }
    }

    /// GET on the admin port: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.admin).expect("connect to the admin port");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    pub fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).expect("connect")
    }

    /// The exit status, once the server stops by itself.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling a child process this test started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-line hold of `qty` of `sku` at DC-1 (hold id `hold`, an hour), without its length prefix.
pub fn hold_unframed(request_id: u64, hold: u64, sku: &str, qty: u32) -> Vec<u8> {
    let sku = sku.to_string();
    unframed(request_id, move |b| {
        let (s, n) = (b.create_string(&sku), b.create_string("DC-1"));
        let line = wire::HoldLine::create(
            b,
            &wire::HoldLineArgs {
                sku: Some(s),
                node: Some(n),
                quantity: qty,
                need_day: 0,
            },
        );
        let lines = b.create_vector(&[line]);
        let h = wire::Hold::create(
            b,
            &wire::HoldArgs {
                hold: Some(&rid(hold)),
                lines: Some(lines),
                ttl_ms: 3_600_000,
                partial: false,
            },
        );
        request(b, wire::Operation::Hold, h.as_union_value())
    })
}
