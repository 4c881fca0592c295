//! What idle connections cost `promised serve`: opens N connections, completes the handshake on
//! each, checks one still answers, and reports the server's resident memory before and after
//! (from /proc, so the server must run on this machine; give its pid).
//!
//! `cargo run --release -p promised-benches --bin idle_connections -- --pid PID
//! [--connections 10000] [--addr 127.0.0.1:7411] [--hold-seconds 5]`. Needs a file-descriptor
//! limit above N on both sides (`ulimit -n`), and the server's `--max-connections` above N.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use clap::Parser;
use promised_benches::wire_client;
use promised_schemas::frame::parse_message;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7411")]
    addr: String,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// The server's process id, to read its memory.
    #[arg(long)]
    pid: u32,
    #[arg(long)]
    token: Option<String>,
    /// How long to keep the connections open once all are up (the server must keep them).
    #[arg(long, default_value_t = 5)]
    hold_seconds: u64,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let before = rss_kib(args.pid)?;
    let hello = promised_schemas::frame::hello_frame("idle_connections", args.token.as_deref());
    let started = Instant::now();
    let mut open = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let mut s = TcpStream::connect(&args.addr)
            .map_err(|e| anyhow::anyhow!("connection {i}: {e} (is `ulimit -n` above N?)"))?;
        s.write_all(&hello)?;
        let reply = wire_client::read_frame(&mut s)?;
        let m = parse_message(&reply).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(
            m.body_as_hello_reply().is_some(),
            "connection {i}: the server refused the handshake (raise --max-connections?)"
        );
        open.push(s);
    }
    let opened = started.elapsed();
    std::thread::sleep(Duration::from_secs(args.hold_seconds));
    let during = rss_kib(args.pid)?;
    // Every connection is still there: none was closed by the server meanwhile.
    let mut closed = 0;
    for s in &mut open {
        s.set_nonblocking(true)?;
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => closed += 1,
            Ok(_) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
        }
    }
    println!(
        "{} idle connections opened in {:.1} s; {} closed by the server while idle; server RSS {:.1} MiB -> {:.1} MiB: {:.1} MiB extra, {:.1} KiB per connection",
        args.connections,
        opened.as_secs_f64(),
        closed,
        before as f64 / 1024.0,
        during as f64 / 1024.0,
        (during.saturating_sub(before)) as f64 / 1024.0,
        (during.saturating_sub(before)) as f64 / args.connections as f64
    );
    Ok(())
}
