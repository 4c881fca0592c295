//! A measurement of `promised serve` over loopback, until `promised-load` exists: each
//! connection keeps D frames in flight, each frame one operation or a batch of `--batch` N.
//! `--op hold`: 1-line holds on the data set's well-stocked positions, each released once
//! granted (every operation a durable write). `--op atp`: ATP queries on the same positions.
//!
//! `cargo run --release -p promised -- serve --data-dir DIR --demo small` in one shell, then
//! `cargo run --release -p promised-benches --bin serve_load -- [--addr A] [--connections C]
//! [--pipeline D] [--batch N] [--op hold|atp] [--seconds S]`. Client and server share the
//! machine's cores. Prints operations per second and the frame round-trip percentiles.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use flatbuffers::FlatBufferBuilder;
use promised_benches::wire_client;
use promised_engine::dataset::{DataSet, DataSetSpec};
use promised_schemas::frame::{finish_frame, parse_message};
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
    /// Operations per frame (1: a plain Request; more: a Batch).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Open loop at this many operations per second in total (frames of one operation),
    /// instead of keeping `--pipeline` frames in flight.
    #[arg(long)]
    rate: Option<f64>,
    /// hold (durable holds and releases), atp (queries) or promise (one-line carts, 3 levels).
    #[arg(long, default_value = "hold")]
    op: String,
}

/// Wraps `ops` as one frame: a Request for one, a Batch for more.
fn frame(
    b: &mut FlatBufferBuilder<'_>,
    id: u64,
    ops: &[(
        wire::Operation,
        flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
    )],
) -> Vec<u8> {
    let requests: Vec<_> = ops
        .iter()
        .map(|&(op_type, op)| {
            wire::Request::create(
                b,
                &wire::RequestArgs {
                    op_type,
                    op: Some(op),
                },
            )
        })
        .collect();
    let (body_type, body) = if let [one] = requests[..] {
        (wire::Body::Request, one.as_union_value())
    } else {
        let requests = b.create_vector(&requests);
        let batch = wire::Batch::create(
            b,
            &wire::BatchArgs {
                requests: Some(requests),
            },
        );
        (wire::Body::Batch, batch.as_union_value())
    };
    let out = finish_frame(b, id, body_type, body);
    b.reset();
    out
}

/// The operation `--op` asks for, on `pick`.
fn item_for<'p>(op: &str, h: u64, pick: &'p (String, String), zones: u32) -> Item<'p> {
    match op {
        "atp" => Item::Atp(pick),
        "promise" => Item::Promise(pick, (h % u64::from(zones.max(1))) as u32),
        _ => Item::Hold(h, pick),
    }
}

/// What one operation of a frame is.
#[derive(Clone, Copy)]
enum Item<'p> {
    Hold(u64, &'p (String, String)),
    Release(u64),
    Atp(&'p (String, String)),
    /// A one-line promise of the SKU to a zone, at ground, two-day and next-day.
    Promise(&'p (String, String), u32),
}

fn encode<'a>(
    b: &mut FlatBufferBuilder<'a>,
    item: Item<'_>,
) -> (
    wire::Operation,
    flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
) {
    match item {
        Item::Hold(hold, (sku, node)) => {
            let (s, n) = (b.create_string(sku), b.create_string(node));
            let line = wire::HoldLine::create(
                b,
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
                b,
                &wire::HoldArgs {
                    hold: Some(&hid),
                    lines: Some(lines),
                    ttl_ms: 600_000,
                    partial: false,
                },
            );
            (wire::Operation::Hold, h.as_union_value())
        }
        Item::Release(hold) => {
            let (req, h) = (wire::RequestId::new(2, hold), wire::RequestId::new(1, hold));
            let r = wire::Release::create(
                b,
                &wire::ReleaseArgs {
                    request: Some(&req),
                    hold: Some(&h),
                    lines: None,
                },
            );
            (wire::Operation::Release, r.as_union_value())
        }
        Item::Promise((sku, _), zone) => {
            let s = b.create_string(sku);
            let line = wire::CartLine::create(
                b,
                &wire::CartLineArgs {
                    sku: Some(s),
                    quantity: 1,
                },
            );
            let lines = b.create_vector(&[line]);
            let levels = b.create_vector(&[
                wire::ServiceLevel::Ground,
                wire::ServiceLevel::TwoDay,
                wire::ServiceLevel::NextDay,
            ]);
            let p = wire::Promise::create(
                b,
                &wire::PromiseArgs {
                    lines: Some(lines),
                    zone,
                    levels: Some(levels),
                    max_packages: 3,
                    ship_from_store: true,
                    ..Default::default()
                },
            );
            (wire::Operation::Promise, p.as_union_value())
        }
        Item::Atp((sku, node)) => {
            let (s, n) = (b.create_string(sku), b.create_string(node));
            let a = wire::Atp::create(
                b,
                &wire::AtpArgs {
                    sku: Some(s),
                    node: Some(n),
                    day: 0,
                },
            );
            (wire::Operation::Atp, a.as_union_value())
        }
    }
}

fn read_frame(s: &mut impl Read) -> Vec<u8> {
    wire_client::read_frame(s).expect("a reply")
}

/// A connection past its handshake.
fn connect(args: &Args) -> TcpStream {
    wire_client::connect(&args.addr, "serve_load", args.token.as_deref())
        .expect("connect and handshake")
        .0
}

/// Replies that were errors (a measurement of errors is not a measurement).
static ERRORS: AtomicU64 = AtomicU64::new(0);

/// The request id of the open loop's last frame.
const SENTINEL: u64 = u64::MAX;

/// Open loop: frames of one operation sent at a fixed rate whatever the replies do, each
/// latency measured from the frame's intended send time (so a stall counts for every request
/// it delayed, as wrk2 does). Returns the latencies and the operations answered.
fn open_loop(
    args: &Args,
    picks: &[(String, String)],
    zones: u32,
    c: usize,
    stop: &AtomicBool,
    started: Instant,
) -> (hdrhistogram::Histogram<u64>, u64) {
    let sock = connect(args);
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate.unwrap_or(1.0));
    let base = (c as u64) << 40 | started.elapsed().as_nanos() as u64 & 0xFF_FFFF_FFFF;
    let (granted_tx, granted_rx) = std::sync::mpsc::channel::<u64>();
    let begin = Instant::now();
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        let mut writer = sock.try_clone().unwrap();
        let sent = &sent;
        let sender = s.spawn(move || {
            let sock = &mut writer;
            let mut b = FlatBufferBuilder::new();
            let mut out = Vec::new();
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Every frame whose time has come goes out in one write.
                while begin + interval.mul_f64((id + 1) as f64) <= Instant::now() {
                    id += 1;
                    let item = match granted_rx.try_recv() {
                        Ok(h) => Item::Release(h),
                        Err(_) => {
                            let h = base + id;
                            let pick = &picks[(h as usize) % picks.len()];
                            item_for(&args.op, h, pick, zones)
                        }
                    };
                    let op = encode(&mut b, item);
                    out.extend(frame(&mut b, id, &[op]));
                }
                if !out.is_empty() {
                    sock.write_all(&out).unwrap();
                    out.clear();
                    sent.store(id, Ordering::Release);
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            // The last frame says "that was all": its reply tells the reader to stop once every
            // reply before it is in (replies may overtake each other).
            let op = encode(&mut b, Item::Atp(&picks[0]));
            sock.write_all(&frame(&mut b, SENTINEL, &[op])).unwrap();
        });
        let mut reader = std::io::BufReader::with_capacity(1 << 16, sock);
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        let mut answered = 0u64;
        let mut last_seen = false;
        while !(last_seen && answered >= sent.load(Ordering::Acquire)) {
            let f = read_frame(&mut reader);
            let m = parse_message(&f).unwrap();
            if m.request_id() == SENTINEL {
                last_seen = true;
                continue;
            }
            let intended = begin + interval.mul_f64(m.request_id() as f64);
            hist.record(intended.elapsed().as_micros() as u64).unwrap();
            answered += 1;
            if let Some(g) = m.body_as_reply().and_then(|r| r.result_as_hold_granted()) {
                let _ = granted_tx.send(g.hold().unwrap().lo());
            }
        }
        sender.join().unwrap();
        (hist, answered)
    })
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
    let zones = ds.zones.len() as u32;
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let started = Instant::now();
    let hist = std::thread::scope(|s| {
        let handles = (0..args.connections)
            .map(|c| {
                let (picks, stop, writes, args) = (&picks, &stop, &writes, &args);
                s.spawn(move || {
                    if args.rate.is_some() {
                        let (hist, ops) = open_loop(args, picks, zones, c, stop, started);
                        writes.fetch_add(ops, Ordering::Relaxed);
                        return hist;
                    }
                    let mut sock = connect(args);
                    let mut b = FlatBufferBuilder::new();
                    let mut reader = std::io::BufReader::with_capacity(1 << 16, sock.try_clone().unwrap());
                    let base = (c as u64) << 40 | started.elapsed().as_nanos() as u64 & 0xFF_FFFF_FFFF;
                    let mut next = 0u64;
                    let mut frame_id = 0u64;
                    let mut out = Vec::new();
                    let mut sent: VecDeque<(u64, Instant)> = VecDeque::new();
                    let mut releases: Vec<u64> = Vec::new();
                    let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
                    let mut ops_done = 0u64;
                    let mut ops: Vec<(
                        wire::Operation,
                        flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>,
                    )> = Vec::new();
                    while !stop.load(Ordering::Relaxed) || !sent.is_empty() {
                        while sent.len() < args.pipeline && !stop.load(Ordering::Relaxed) {
                            ops.clear();
                            for _ in 0..args.batch {
                                let item = if let Some(h) = releases.pop() {
                                    Item::Release(h)
                                } else {
                                    next += 1;
                                    let h = base + next;
                                    let pick = &picks[(h as usize) % picks.len()];
                                    item_for(&args.op, h, pick, zones)
                                };
                                ops.push(encode(&mut b, item));
                            }
                            frame_id += 1;
                            out.extend(frame(&mut b, frame_id, &ops));
                            sent.push_back((frame_id, Instant::now()));
                        }
                        if !out.is_empty() {
                            sock.write_all(&out).unwrap();
                            out.clear();
                        }
                        let f = read_frame(&mut reader);
                        let m = parse_message(&f).unwrap();
                        let id = m.request_id();
                        let at = sent
                            .iter()
                            .position(|(i, _)| *i == id)
                            .expect("a reply to a frame sent");
                        let (_, t) = sent.remove(at).unwrap();
                        hist.record(t.elapsed().as_micros() as u64).unwrap();
                        let mut granted = |r: wire::Reply<'_>| {
                            ops_done += 1;
                            if let Some(e) = r.result_as_error() {
                                ERRORS.fetch_add(1, Ordering::Relaxed);
                                if ERRORS.load(Ordering::Relaxed) == 1 {
                                    eprintln!("first error reply: {:?} {:?}", e.code(), e.message());
                                }
                            }
                            if let Some(g) = r.result_as_hold_granted() {
                                releases.push(g.hold().unwrap().lo());
                            }
                        };
                        if let Some(r) = m.body_as_reply() {
                            granted(r);
                        } else if let Some(br) = m.body_as_batch_reply() {
                            br.replies().iter().for_each(granted);
                        }
                    }
                    writes.fetch_add(ops_done, Ordering::Relaxed);
                    hist
                })
            })
            .collect::<Vec<_>>();
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        stop.store(true, Ordering::Relaxed);
        let mut all = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for h in handles {
            all.add(h.join().unwrap()).unwrap();
        }
        all
    });
    let n = writes.load(Ordering::Relaxed);
    let what = match args.op.as_str() {
        "atp" => "ATP queries",
        "promise" => "promises (1-line carts, 3 levels)",
        _ => "durable writes (1-line holds and their releases)",
    };
    let shape = match args.rate {
        Some(rate) => format!(
            "{} connections, open loop at {rate:.0} frames/s",
            args.connections
        ),
        None => format!(
            "{} connections x {} frames in flight",
            args.connections, args.pipeline
        ),
    };
    println!(
        "{shape} x {} ops: {:.0} {what}/s; frame round trip p50 {} us, p99 {} us, p99.9 {} us, max {} us; {} error replies",
        args.batch,
        n as f64 / started.elapsed().as_secs_f64(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        ERRORS.load(Ordering::Relaxed)
    );
    Ok(())
}
