//! One connection's replies: a queue bounded in frames and bytes (the backpressure on a client
//! that does not read), and the writer task that sends them.
//!
//! A write's reply may only leave once its log record is durable. Instead of a task per write
//! waiting on the log, the writer keeps the connection's undurable replies in LSN order and
//! waits on the log for the first one only:
//! one wake-up per connection per group commit, whatever the number of writes in it. Replies
//! that need nothing (reads, errors, writes already durable) go out at once, overtaking writes
//! still waiting: replies are matched by request id, not order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use promised_engine::wal::Wal;
use promised_schemas::{frame, wire};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Shared;

/// Frames and bytes a connection may have queued for its writer.
const QUEUE_FRAMES: usize = 1024;
const QUEUE_BYTES: usize = 16 << 20;
/// The most reply bytes gathered into one write.
const WRITE_GATHER: usize = 256 << 10;

/// A request being answered: what to count once its reply is written.
pub(super) struct Served {
    pub op: &'static str,
    pub started: Instant,
    /// Its in-flight slot, given back with the reply.
    pub permit: OwnedSemaphorePermit,
}

impl Served {
    fn done(self, shared: &Shared) {
        shared.metrics.served(self.op, self.started.elapsed());
        drop(self.permit);
    }
}

/// A reply on its way to the writer, holding its share of the byte budget.
pub(super) struct Queued {
    frame: Vec<u8>,
    /// The LSN that must be durable first (writes).
    durable_at: Option<u64>,
    served: Option<Served>,
    _bytes: OwnedSemaphorePermit,
}

/// The sending side of a connection's reply queue.
#[derive(Clone)]
pub(super) struct Replies {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
}

impl Replies {
    pub fn new() -> (Self, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        let bytes = Arc::new(Semaphore::new(QUEUE_BYTES));
        (Self { tx, bytes }, rx)
    }

    fn cost(frame: &[u8]) -> u32 {
        frame.len().min(QUEUE_BYTES) as u32
    }

    /// Queues a frame that needs nothing, waiting for room; an error once the writer is gone.
    pub async fn send(&self, frame: Vec<u8>) -> Result<(), ()> {
        self.send_reply(frame, None, None).await
    }

    async fn send_reply(
        &self,
        frame: Vec<u8>,
        durable_at: Option<u64>,
        served: Option<Served>,
    ) -> Result<(), ()> {
        let permit = self.bytes.clone().acquire_many_owned(Self::cost(&frame)).await;
        let queued = Queued {
            _bytes: permit.map_err(|_| ())?,
            frame,
            durable_at,
            served,
        };
        self.tx.send(queued).await.map_err(|_| ())
    }

    /// Queues the reply to a request: at once if there is room, else from a task that waits
    /// for room, so the reader never stalls on it. `durable_at`: the LSN a write waits for.
    pub fn reply(&self, shared: &Arc<Shared>, frame: Vec<u8>, durable_at: Option<u64>, served: Served) {
        let Ok(permit) = self.bytes.clone().try_acquire_many_owned(Self::cost(&frame)) else {
            return self.reply_later(shared, frame, durable_at, served);
        };
        let queued = Queued {
            frame,
            durable_at,
            served: Some(served),
            _bytes: permit,
        };
        if let Err(e) = self.tx.try_send(queued) {
            let Queued {
                frame,
                durable_at,
                served,
                ..
            } = e.into_inner();
            let served = served.expect("queued with its request");
            self.reply_later(shared, frame, durable_at, served);
        }
    }

    fn reply_later(&self, shared: &Arc<Shared>, frame: Vec<u8>, durable_at: Option<u64>, served: Served) {
        let (tx, shared) = (self.clone(), shared.clone());
        tokio::spawn(async move {
            // An error means the connection is gone: nobody to answer.
            let _ = tx.send_reply(frame, durable_at, Some(served)).await;
            drop(shared);
        });
    }

    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// Replies ready to be written, and the requests they finish.
#[derive(Default)]
struct Batch {
    out: Vec<u8>,
    served: Vec<Served>,
}

impl Batch {
    fn push(&mut self, q: Queued) {
        self.out.extend_from_slice(&q.frame);
        self.served.extend(q.served);
    }
}

/// The writer task: sends each reply when it may leave, many per write. Returns true when the
/// queue closed and every reply went out (then FIN was sent); false when the client stopped
/// taking replies within `write_timeout`.
pub(super) async fn write_replies<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut wr: W,
    mut rx: mpsc::Receiver<Queued>,
    write_timeout: Duration,
) -> bool {
    let wal: &Wal = shared.db.wal();
    let mut waiting: VecDeque<Queued> = VecDeque::new();
    let mut ready = Batch::default();
    let mut open = true;
    loop {
        // Wait for a new reply, or for the log to make the first waiting one durable.
        let mut first = None;
        // Set when the log can no longer make the waiting writes durable.
        let mut lost = None;
        match (waiting.front().and_then(|q| q.durable_at), open) {
            (None, false) => break,
            (None, true) => match rx.recv().await {
                Some(q) => first = Some(q),
                None => open = false,
            },
            (Some(lsn), true) => tokio::select! {
                q = rx.recv() => match q {
                    Some(q) => first = Some(q),
                    None => open = false,
                },
                r = wal.durable(lsn) => lost = r.err(),
            },
            (Some(lsn), false) => lost = wal.durable(lsn).await.err(),
        }
        let durable = wal.durable_lsn();
        // Kept in LSN order: a reply that waited for room in the queue (`reply_later`) can
        // arrive after a later one, and the writer waits on the first.
        let sort = |q: Queued, ready: &mut Batch, waiting: &mut VecDeque<Queued>| match q.durable_at {
            Some(lsn) if lsn > durable => {
                let at = waiting.partition_point(|w| w.durable_at <= Some(lsn));
                waiting.insert(at, q);
            }
            _ => ready.push(q),
        };
        if let Some(q) = first {
            sort(q, &mut ready, &mut waiting);
        }
        // Everything else already queued goes out in the same write.
        while open && ready.out.len() < WRITE_GATHER {
            match rx.try_recv() {
                Ok(q) => sort(q, &mut ready, &mut waiting),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        while waiting
            .front()
            .is_some_and(|q| q.durable_at.is_some_and(|l| l <= durable))
        {
            ready.push(waiting.pop_front().expect("a front"));
        }
        if let Some(failed) = lost.or_else(|| wal.failure()) {
            // Never acknowledged: each waiting write is told its change may not have survived.
            for q in waiting.drain(..) {
                let id = request_id_of(&q.frame);
                let text = failed.to_string();
                let error = super::error_frame(id, wire::ErrorCode::StorageFailed, &text);
                ready.out.extend_from_slice(&error);
                ready.served.extend(q.served);
            }
        }
        // Counted as served before the write, so a client that reads its reply and then looks
        // at /metrics finds it counted.
        for s in ready.served.drain(..) {
            s.done(&shared);
        }
        if !ready.out.is_empty() {
            // A client that stops reading fills its socket; past the timeout it is cut off
            // rather than holding the replies (and their memory) forever.
            match tokio::time::timeout(write_timeout, wr.write_all(&ready.out)).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
            ready.out.clear();
        }
    }
    // Every reply is out: send FIN so the client reads them all before the end.
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
    true
}

fn request_id_of(frame: &[u8]) -> u64 {
    frame::parse_message(&frame[frame::LENGTH_BYTES..]).map_or(0, |m| m.request_id())
}
