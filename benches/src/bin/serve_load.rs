//! A first measurement of `promised serve` over loopback, until `promised-load` exists: each
//! connection keeps D requests in flight, placing 1-line holds on the data set's well-stocked
//! positions and releasing each once it is granted (every request is a durable write).
//!
//! `cargo run --release -p promised -- serve --data-dir DIR --demo small` in one shell, then
//! `cargo run --release -p promised-benches --bin serve_load -- [--addr A] [--connections C]
//! [--pipeline D] [--seconds S]`. Client and server share the machine's cores.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use flatbuffers::FlatBufferBuilder;
use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_schemas::frame::{parse_message, write_frame};
use promised_schemas::wire;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7411")]
    addr: String,
    #[arg(long, default_value = "small")]
    set: String,
    #[arg(long, default_value_t = 2)]
    connections: usize,
    #[arg(long, default_value_t = 256)]
    pipeline: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long)]
    token: Option<String>,
}

fn frame(
    b: &mut FlatBufferBuilder<'_>,
    id: u64,
    op_type: wire::Operation,
    op: flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) -> Vec<u8> {
    let r = wire::Request::create(
        b,
        &wire::RequestArgs {
            op_type,
            op: Some(op),
        },
    );
    let m = wire::Message::create(
        b,
        &wire::MessageArgs {
            request_id: id,
            body_type: wire::Body::Request,
            body: Some(r.as_union_value()),
        },
    );
    wire::finish_message_buffer(b, m);
    let mut out = Vec::new();
    write_frame(b.finished_data(), &mut out);
    out
}

fn hold(id: u64, hold: u64, sku: &str, node: &str) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let (s, n) = (b.create_string(sku), b.create_string(node));
    let line = wire::HoldLine::create(
        &mut b,
        &wire::HoldLineArgs {
            sku: Some(s),
            node: Some(n),
            quantity: 1,
            need_day: 0,
        },
    );
    let lines = b.create_vector(&[line]);
    let hid = wire::RequestId::new(1, hold);
    let h = wire::Hold::create(
        &mut b,
        &wire::HoldArgs {
            hold: Some(&hid),
            lines: Some(lines),
            ttl_ms: 600_000,
            partial: false,
        },
    );
    frame(&mut b, id, wire::Operation::Hold, h.as_union_value())
}

fn release(id: u64, hold: u64) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let (req, h) = (wire::RequestId::new(2, hold), wire::RequestId::new(1, hold));
    let r = wire::Release::create(
        &mut b,
        &wire::ReleaseArgs {
            request: Some(&req),
            hold: Some(&h),
            lines: None,
        },
    );
    frame(&mut b, id, wire::Operation::Release, r.as_union_value())
}

fn read_frame(s: &mut impl Read) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("a reply");
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut buf).expect("a reply");
    buf
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec =
        DataSetSpec::by_name(&args.set).ok_or_else(|| anyhow::anyhow!("--set: small, retail or peak"))?;
    let ds = DataSet::generate(&spec);
    // Positions with plenty of stock, at open nodes.
    let mut picks = Vec::new();
    for (i, sku) in ds.skus.iter().enumerate() {
        for p in ds.positions_of(i as u32) {
            let node = &ds.nodes[p.node.index()];
            if p.on_hand >= p.safety_stock + 50 && node.status == promised_engine::NodeStatus::Open {
                picks.push((sku.name.clone(), node.name.clone()));
            }
        }
        if picks.len() >= 4_096 {
            break;
        }
    }
    anyhow::ensure!(!picks.is_empty(), "no well-stocked position in the data set");
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in 0..args.connections {
            let (picks, stop, writes, args) = (&picks, &stop, &writes, &args);
            s.spawn(move || {
                let mut sock = TcpStream::connect(&args.addr).expect("connect");
                sock.set_nodelay(true).unwrap();
                let mut b = FlatBufferBuilder::new();
                let name = b.create_string("serve_load");
                let token = args.token.as_deref().map(|t| b.create_string(t));
                let hello = wire::Hello::create(
                    &mut b,
                    &wire::HelloArgs {
                        magic: promised_schemas::HELLO_MAGIC,
                        min_version: 1,
                        max_version: 1,
                        client_name: Some(name),
                        auth_token: token,
                    },
                );
                let m = wire::Message::create(
                    &mut b,
                    &wire::MessageArgs {
                        request_id: 1,
                        body_type: wire::Body::Hello,
                        body: Some(hello.as_union_value()),
                    },
                );
                wire::finish_message_buffer(&mut b, m);
                let mut out = Vec::new();
                write_frame(b.finished_data(), &mut out);
                sock.write_all(&out).unwrap();
                read_frame(&mut sock);
                let mut reader = std::io::BufReader::with_capacity(1 << 16, sock.try_clone().unwrap());
                let base = (c as u64) << 40 | started.elapsed().as_nanos() as u64 & 0xFF_FFFF_FFFF;
                let mut next = 0u64;
                // Request id -> the hold to release once granted (0: a release).
                let mut pending: VecDeque<u64> = VecDeque::new();
                let mut batch = Vec::new();
                let mut in_flight = 0usize;
                while !stop.load(Ordering::Relaxed) || in_flight > 0 {
                    while in_flight < args.pipeline && !stop.load(Ordering::Relaxed) {
                        next += 1;
                        let h = base + next;
                        let (sku, node) = &picks[(h as usize) % picks.len()];
                        batch.extend(hold(h, h, sku, node));
                        pending.push_back(h);
                        in_flight += 1;
                    }
                    if !batch.is_empty() {
                        sock.write_all(&batch).unwrap();
                        batch.clear();
                    }
                    let f = read_frame(&mut reader);
                    let m = parse_message(&f).unwrap();
                    in_flight -= 1;
                    writes.fetch_add(1, Ordering::Relaxed);
                    let id = m.request_id();
                    let reply = m.body_as_reply().unwrap();
                    if reply.result_as_hold_granted().is_some() && !stop.load(Ordering::Relaxed) {
                        batch.extend(release(id | 1 << 63, id));
                        in_flight += 1;
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let n = writes.load(Ordering::Relaxed);
    println!(
        "{} connections x {} in flight: {:.0} durable writes/s (1-line holds and their releases)",
        args.connections,
        args.pipeline,
        n as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}
