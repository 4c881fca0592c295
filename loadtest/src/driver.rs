//! The connections: each has a writer thread (keeps `--pipeline` frames in flight, or sends
//! frames at their intended times in open loop) and a reader thread (matches answers to frames,
//! advances sessions, records latency and what was acknowledged). The main thread samples a
//! one-second window for the progress bar and the timeline.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use promised_client::codec::{self, Decoded};
use promised_schemas::frame;

use crate::catalog::Catalog;
use crate::stats::{Stats, Tick, histogram};
use crate::target::{Decoder, Encoder, SENTINEL, Scripts, TargetKind};
use crate::verify::Journal;
use crate::workload::{Act, Mix, Workload};

/// Open loop: the most frames a connection has in flight (the server's limit if lower). Frames
/// due beyond it wait, and their wait counts in their latency.
const OPEN_LOOP_WINDOW: usize = 1_024;

/// How one run drives the target.
#[derive(Clone, Debug)]
pub struct Plan {
    pub addr: String,
    pub token: Option<String>,
    pub target: TargetKind,
    pub scripts: Option<Scripts>,
    pub connections: usize,
    /// Frames in flight per connection (closed loop; open loop allows up to the server's limit).
    pub pipeline: usize,
    /// Operations per frame.
    pub batch: usize,
    /// Open loop at this many operations per second in total.
    pub rate: Option<f64>,
    /// Open loop: a connection's writer wakes at most once a tick and sends every frame due.
    pub tick: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    /// How long the drain at the end may wait for answers.
    pub drain_timeout: Duration,
    /// Journal acknowledged writes (for `--verify`; otherwise it would only cost memory and time).
    pub journal: bool,
}

/// What a run measured.
pub struct Outcome {
    /// Operations sent during the measured window (after the warm-up).
    pub stats: Stats,
    pub timeline: Vec<Tick>,
    pub journal: Journal,
    /// Connections that broke, and why.
    pub broken: Vec<String>,
    pub midway: Option<anyhow::Result<crate::Midway>>,
}

struct Sent {
    at: Instant,
    acts: Vec<Act>,
}

struct Flow<'c> {
    workload: Workload<'c>,
    ready: VecDeque<Act>,
    in_flight: HashMap<u64, Sent>,
}

/// One connection's shared state.
struct Conn<'c> {
    flow: Mutex<Flow<'c>>,
    changed: Condvar,
    broken: AtomicBool,
    window: Mutex<(u64, Histogram<u64>)>,
}

/// Opens a connection; for promised, completes the handshake and returns its limits
/// (frames in flight, operations per batch).
pub fn connect(plan: &Plan) -> anyhow::Result<(TcpStream, Option<(u32, u32)>)> {
    let mut sock = TcpStream::connect(&plan.addr).with_context(|| format!("connecting to {}", plan.addr))?;
    sock.set_nodelay(true)?;
    if plan.target == TargetKind::Redis {
        return Ok((sock, None));
    }
    sock.write_all(&frame::hello_frame("promised-load", plan.token.as_deref()))?;
    let mut len = [0u8; frame::LENGTH_BYTES];
    sock.read_exact(&mut len)
        .context("the server closed the connection during the handshake")?;
    let mut buf = vec![0u8; u32::from_le_bytes(len).min(frame::MAX_FRAME_BYTES_DEFAULT) as usize];
    sock.read_exact(&mut buf)?;
    let message = frame::parse_message(&buf).map_err(|e| anyhow::anyhow!("handshake reply: {e}"))?;
    if let Some(h) = message.body_as_hello_reply() {
        return Ok((sock, Some((h.max_in_flight(), h.max_batch_ops()))));
    }
    match codec::decode_reply(&message) {
        Some((_, Decoded::One(Err(e)))) => anyhow::bail!("the server refused the handshake: {e}"),
        _ => anyhow::bail!(
            "the handshake reply is not a HelloReply: is {} a promised server?",
            plan.addr
        ),
    }
}

/// Runs `plan` with the sessions of `mix`; `midway` runs on its own thread halfway through
/// the measured window (the re-route scenario's batch re-route).
pub fn run(
    cat: &Catalog,
    mix: &Mix,
    plan: &Plan,
    nonce: u64,
    midway: Option<&(dyn Fn() -> anyhow::Result<crate::Midway> + Sync)>,
    mut on_tick: impl FnMut(&Tick),
) -> anyhow::Result<Outcome> {
    let mut socks = Vec::with_capacity(plan.connections);
    // Closed loop keeps `--pipeline` frames in flight. Open loop sends on schedule whatever the
    // answers do (as wrk2 does), up to what the server lets a connection have in flight.
    let mut window = if plan.rate.is_some() {
        OPEN_LOOP_WINDOW
    } else {
        plan.pipeline
    };
    for _ in 0..plan.connections {
        let (sock, limits) = connect(plan)?;
        if let Some((in_flight, batch)) = limits {
            if plan.rate.is_some() {
                window = window.min(in_flight as usize);
            }
            anyhow::ensure!(
                plan.pipeline <= in_flight as usize,
                "--pipeline {} is more than the {in_flight} frames in flight the server allows a connection",
                plan.pipeline
            );
            anyhow::ensure!(
                plan.batch <= batch as usize,
                "--batch {} is more than the {batch} operations per batch the server allows",
                plan.batch
            );
        }
        socks.push(sock);
    }
    let feed_seq = AtomicU64::new(now_micros());
    let conns: Vec<Conn<'_>> = (0..plan.connections)
        .map(|c| Conn {
            flow: Mutex::new(Flow {
                workload: Workload::new(cat, mix, nonce, c as u64, &feed_seq),
                ready: VecDeque::new(),
                in_flight: HashMap::new(),
            }),
            changed: Condvar::new(),
            broken: AtomicBool::new(false),
            window: Mutex::new((0, histogram())),
        })
        .collect();
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let measure = (start + plan.warmup, start + plan.warmup + plan.duration);
    std::thread::scope(|s| {
        let mut readers = Vec::new();
        for (c, (conn, sock)) in conns.iter().zip(socks).enumerate() {
            let (rsock, stop) = (sock.try_clone()?, &stop);
            rsock.set_read_timeout(Some(plan.drain_timeout))?;
            s.spawn(move || {
                if let Err(e) = write_loop(
                    conn,
                    sock,
                    Encoder::new(cat, plan.scripts.clone()),
                    plan,
                    (c, window),
                    start,
                    stop,
                ) {
                    conn.broken.store(true, Ordering::Relaxed);
                    warn(&format!("connection {c}: write failed: {e}"));
                }
            });
            readers.push(s.spawn(move || {
                let redis = plan.target == TargetKind::Redis;
                let r = read_loop(conn, rsock, Decoder::new(cat, redis), measure, plan.journal);
                if r.is_err() {
                    conn.broken.store(true, Ordering::Relaxed);
                    conn.changed.notify_all();
                }
                r
            }));
        }
        let mut midway_handle = None;
        let mut timeline = Vec::new();
        let end = measure.1;
        let mut next = start + Duration::from_secs(1);
        while Instant::now() < end && !conns.iter().all(|c| c.broken.load(Ordering::Relaxed)) {
            if midway_handle.is_none()
                && let Some(m) = midway
                && Instant::now() >= measure.0 + plan.duration / 2
            {
                midway_handle = Some(s.spawn(m));
            }
            std::thread::sleep(
                next.min(end)
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            );
            if Instant::now() >= next {
                let tick = sample(&conns, start, next, measure.0);
                on_tick(&tick);
                timeline.push(tick);
                next += Duration::from_secs(1);
            }
        }
        stop.store(true, Ordering::Relaxed);
        conns.iter().for_each(|c| c.changed.notify_all());
        let mut stats = Stats::default();
        let mut journal = Journal::default();
        let mut broken = Vec::new();
        for (c, r) in readers.into_iter().enumerate() {
            match r.join().expect("reader thread panicked") {
                Ok((st, j)) => {
                    stats.merge(&st);
                    journal.merge(j);
                }
                Err(e) => broken.push(format!("connection {c}: {e:#}")),
            }
        }
        Ok(Outcome {
            stats,
            timeline,
            journal,
            broken,
            midway: midway_handle.map(|h| h.join().expect("midway thread panicked")),
        })
    })
}

fn warn(s: &str) {
    eprintln!("promised-load: {s}");
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// The last second's throughput and latency, all connections together.
fn sample(conns: &[Conn<'_>], start: Instant, now: Instant, warm: Instant) -> Tick {
    let mut all = histogram();
    let mut ops = 0;
    for c in conns {
        let mut w = c.window.lock().expect("not poisoned");
        ops += w.0;
        all.add(&w.1).expect("same bounds");
        w.0 = 0;
        w.1.reset();
    }
    Tick {
        t: now.duration_since(start).as_secs_f64(),
        per_second: ops as f64,
        p50_us: all.value_at_quantile(0.5),
        p99_us: all.value_at_quantile(0.99),
        warmup: now <= warm,
    }
}

fn write_loop(
    conn: &Conn<'_>,
    mut sock: TcpStream,
    mut enc: Encoder<'_>,
    plan: &Plan,
    (c, window): (usize, usize),
    start: Instant,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    // Open loop: frame k of this connection is due at start + offset + k * interval.
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(plan.connections as f64 * plan.batch as f64 / r.max(1e-9)));
    let offset = interval.map_or(Duration::ZERO, |i| i.mul_f64(c as f64 / plan.connections as f64));
    let mut due = start + offset;
    let mut id = 0u64;
    let mut out = Vec::with_capacity(64 << 10);
    let mut acts = Vec::with_capacity(plan.batch);
    'run: loop {
        let mut flow = conn.flow.lock().expect("not poisoned");
        loop {
            if conn.broken.load(Ordering::Relaxed) {
                return Ok(());
            }
            let stopping = stop.load(Ordering::Relaxed);
            let work = !flow.ready.is_empty() || !stopping;
            if !work && flow.in_flight.is_empty() {
                break 'run;
            }
            let room = flow.in_flight.len() < window;
            let on_time = interval.is_none() || stopping || Instant::now() >= due;
            if work && room && on_time {
                break;
            }
            if work && room {
                // Open loop, early: wait for the next frame's time without the lock.
                drop(flow);
                // At least a tick: the frames that fall due meanwhile go out in one write, and
                // each is late by its wait, which its latency counts.
                std::thread::sleep(
                    due.saturating_duration_since(Instant::now())
                        .max(plan.tick)
                        .min(Duration::from_millis(1).max(plan.tick)),
                );
                flow = conn.flow.lock().expect("not poisoned");
                continue;
            }
            flow = conn
                .changed
                .wait_timeout(flow, Duration::from_millis(20))
                .expect("not poisoned")
                .0;
        }
        let stopping = stop.load(Ordering::Relaxed);
        let now = Instant::now();
        while flow.in_flight.len() < window {
            let at = match interval {
                Some(i) if !stopping => {
                    if now < due {
                        break;
                    }
                    let at = due;
                    due += i;
                    at
                }
                _ => now,
            };
            while acts.len() < plan.batch {
                match flow.ready.pop_front() {
                    Some(a) => acts.push(a),
                    None if !stopping => {
                        let a = flow.workload.fresh();
                        acts.push(a);
                    }
                    None => break,
                }
            }
            if acts.is_empty() {
                break;
            }
            id += 1;
            enc.frame(id, &acts, &mut out);
            flow.in_flight.insert(
                id,
                Sent {
                    at,
                    acts: std::mem::take(&mut acts),
                },
            );
        }
        drop(flow);
        if !out.is_empty() {
            send(&mut sock, &out)?;
            out.clear();
        }
    }
    enc.sentinel(&mut out);
    send(&mut sock, &out)
}

/// Writes `bytes`; on failure also shuts the socket, so that the reader stops waiting at once.
fn send(sock: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    sock.write_all(bytes).inspect_err(|_| {
        let _ = sock.shutdown(Shutdown::Both);
    })
}

type ReadResult = anyhow::Result<(Stats, Journal)>;

fn read_loop(
    conn: &Conn<'_>,
    sock: TcpStream,
    mut dec: Decoder<'_>,
    measure: (Instant, Instant),
    journaling: bool,
) -> ReadResult {
    let mut r = BufReader::with_capacity(1 << 16, sock.try_clone()?);
    let mut stats = Stats::default();
    let mut journal = Journal::default();
    let mut sentinel = false;
    loop {
        if sentinel && conn.flow.lock().expect("not poisoned").in_flight.is_empty() {
            break;
        }
        let answered = match dec.next(&mut r, |id| {
            conn.flow
                .lock()
                .expect("not poisoned")
                .in_flight
                .get(&id)
                .map(|s| s.acts.len())
        }) {
            Ok(a) => a,
            Err(e) => {
                let _ = sock.shutdown(Shutdown::Both);
                let waiting = conn.flow.lock().expect("not poisoned").in_flight.len();
                anyhow::bail!("reading answers failed with {waiting} frames unanswered: {e}");
            }
        };
        let now = Instant::now();
        let id = answered.id();
        if id == SENTINEL {
            sentinel = true;
            continue;
        }
        let mut flow = conn.flow.lock().expect("not poisoned");
        let Some(sent) = flow.in_flight.remove(&id) else {
            anyhow::bail!("an answer to frame {id}, which was never sent or was answered already");
        };
        let replies = dec.replies(&sent.acts, answered);
        for (act, reply) in sent.acts.iter().zip(&replies) {
            if let Some(next) = flow.workload.advance(act, reply) {
                flow.ready.push_back(next);
            }
        }
        drop(flow);
        conn.changed.notify_one();
        let micros = now.saturating_duration_since(sent.at).as_micros() as u64;
        let measured = sent.at >= measure.0 && sent.at < measure.1;
        for (act, reply) in sent.acts.iter().zip(&replies) {
            if measured {
                stats.record(act.kind(), reply, micros);
            }
            if journaling {
                journal.record(act, reply);
            }
        }
        let mut w = conn.window.lock().expect("not poisoned");
        w.0 += sent.acts.len() as u64;
        w.1.saturating_record(micros.max(1));
    }
    Ok((stats, journal))
}
