//! One connection: the handshake, then a writer task that coalesces queued frames into few
//! writes and a reader task that decodes replies and hands each to the caller waiting on its
//! request id. Many requests ride one connection at once (pipelining); replies may come back in
//! any order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use promised_schemas::frame;
use promised_schemas::wire;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::answer::{self, LowStock};
use crate::codec;
use crate::error::{ClientError, ServerError};
use crate::tls::TlsConfig;

pub(crate) use crate::codec::Decoded;

/// What the server granted this connection in its `HelloReply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub version: u16,
    pub server_name: String,
    pub role: wire::Role,
    pub max_frame_bytes: u32,
    pub max_batch_ops: u32,
    pub max_in_flight: u32,
}

/// How to open one connection.
#[derive(Clone, Debug)]
pub(crate) struct Dial {
    pub addr: String,
    pub token: Option<String>,
    pub client_name: String,
    pub connect_timeout: Duration,
    pub tls: Option<TlsConfig>,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Events queued for a subscriber before the oldest are dropped.
const EVENT_QUEUE: usize = 4096;
/// Frames queued for the writer task.
const WRITE_QUEUE: usize = 1024;
/// The most bytes the writer gathers into one write.
const WRITE_GATHER: usize = 256 << 10;

#[derive(Default)]
struct Waiting {
    replies: HashMap<u64, oneshot::Sender<Result<Decoded, ClientError>>>,
    /// Set once, when the connection ends; no reply can arrive after.
    closed: Option<String>,
}

struct State {
    addr: String,
    waiting: std::sync::Mutex<Waiting>,
    events_dropped: AtomicU64,
}

impl State {
    /// Ends the connection: every caller still waiting gets `reason`.
    fn close(&self, reason: &str) {
        let waiting = {
            let mut w = self.waiting.lock().expect("not poisoned");
            if w.closed.is_none() {
                w.closed = Some(reason.to_string());
            }
            std::mem::take(&mut w.replies)
        };
        for (_, tx) in waiting {
            let _ = tx.send(Err(self.broken(reason)));
        }
    }

    fn broken(&self, reason: &str) -> ClientError {
        ClientError::Connection {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }
}

/// One open, authenticated connection. Cheap to share (`Arc`); dropping the last handle closes
/// it.
pub struct Connection {
    state: Arc<State>,
    session: Session,
    writer: mpsc::Sender<Vec<u8>>,
    /// One permit per request the server lets this connection have in flight, so the client
    /// waits instead of being told `Busy`.
    in_flight: Arc<Semaphore>,
    next_id: AtomicU64,
    events: std::sync::Mutex<Option<mpsc::Receiver<LowStock>>>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

type Body<'a> = (wire::Body, WIPOffset<UnionWIPOffset>);

impl Connection {
    /// Connects, speaks TLS if configured, and completes the handshake.
    pub(crate) async fn open(dial: &Dial) -> Result<Self, ClientError> {
        let broken = |reason: String| ClientError::Connection {
            addr: dial.addr.clone(),
            reason,
        };
        let connect = async {
            let tcp = TcpStream::connect(&dial.addr)
                .await
                .map_err(|e| broken(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn Stream> = match &dial.tls {
                None => Box::new(tcp),
                Some(tls) => Box::new(tls.connect(tcp).await.map_err(|e| broken(format!("TLS: {e}")))?),
            };
            let mut stream = stream;
            let session = handshake(&mut stream, dial).await.map_err(|e| match e {
                HandshakeError::Io(e) => broken(e),
                HandshakeError::Refused(e) => ClientError::Server(e),
            })?;
            Ok::<_, ClientError>((stream, session))
        };
        let (stream, session) = tokio::time::timeout(dial.connect_timeout, connect)
            .await
            .map_err(|_| broken(format!("no handshake within {:?}", dial.connect_timeout)))??;
        let state = Arc::new(State {
            addr: dial.addr.clone(),
            waiting: std::sync::Mutex::new(Waiting::default()),
            events_dropped: AtomicU64::new(0),
        });
        let (rd, wr) = tokio::io::split(stream);
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let max_frame = session.max_frame_bytes.max(frame::MAX_FRAME_BYTES_DEFAULT);
        let tasks = [
            tokio::spawn(write_loop(state.clone(), wr, queue)),
            tokio::spawn(read_loop(state.clone(), rd, max_frame, events_tx)),
        ];
        Ok(Self {
            state,
            in_flight: Arc::new(Semaphore::new(session.max_in_flight.max(1) as usize)),
            session,
            writer,
            next_id: AtomicU64::new(2),
            events: std::sync::Mutex::new(Some(events_rx)),
            tasks,
        })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Why the connection ended, once it has.
    pub fn closed(&self) -> Option<String> {
        self.state.waiting.lock().expect("not poisoned").closed.clone()
    }

    /// Events lost because nobody read them fast enough.
    pub fn events_dropped(&self) -> u64 {
        self.state.events_dropped.load(Ordering::Relaxed)
    }

    /// The receiver of this connection's low-stock events; `None` once taken.
    pub(crate) fn take_events(&self) -> Option<mpsc::Receiver<LowStock>> {
        self.events.lock().expect("not poisoned").take()
    }

    /// Sends one message built by `body` and waits for its reply.
    pub(crate) async fn call<F>(&self, body: F) -> Result<Decoded, ClientError>
    where
        F: for<'a> FnOnce(&mut FlatBufferBuilder<'a>) -> Body<'a>,
    {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| self.state.broken("closed"))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut b = FlatBufferBuilder::new();
        let (body_type, built) = body(&mut b);
        let frame = frame::finish_frame(&mut b, id, body_type, built);
        if frame.len() - frame::LENGTH_BYTES > self.session.max_frame_bytes as usize {
            return Err(ClientError::Invalid(format!(
                "the request is {} bytes; the server takes frames of at most {}: send fewer \
                 operations per batch",
                frame.len() - frame::LENGTH_BYTES,
                self.session.max_frame_bytes
            )));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.state.waiting.lock().expect("not poisoned");
            if let Some(reason) = &w.closed {
                return Err(self.state.broken(reason));
            }
            w.replies.insert(id, tx);
        }
        // Forget the request if the caller stops waiting (a timeout drops this future).
        let forget = Forget {
            state: &self.state,
            id,
        };
        if self.writer.send(frame).await.is_err() {
            return Err(self.state.broken("the connection's writer stopped"));
        }
        let reply = rx.await.unwrap_or_else(|_| Err(self.state.broken("closed")));
        std::mem::forget(forget);
        reply
    }
}

/// Removes a request's slot when its caller gives up before the reply.
struct Forget<'a> {
    state: &'a State,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.state
            .waiting
            .lock()
            .expect("not poisoned")
            .replies
            .remove(&self.id);
    }
}

enum HandshakeError {
    Io(String),
    Refused(ServerError),
}

async fn handshake(stream: &mut Box<dyn Stream>, dial: &Dial) -> Result<Session, HandshakeError> {
    let io = |e: std::io::Error| HandshakeError::Io(e.to_string());
    let frame = frame::hello_frame(&dial.client_name, dial.token.as_deref());
    stream.write_all(&frame).await.map_err(io)?;
    let mut len = [0u8; frame::LENGTH_BYTES];
    stream.read_exact(&mut len).await.map_err(|e| {
        HandshakeError::Io(format!(
            "the server closed the connection during the handshake ({e})"
        ))
    })?;
    let len = u32::from_le_bytes(len);
    if len == 0 || len > frame::MAX_FRAME_BYTES_DEFAULT {
        return Err(HandshakeError::Io(format!(
            "a {len}-byte handshake reply: is this a promised server?"
        )));
    }
    let mut bytes = vec![0u8; len as usize];
    stream.read_exact(&mut bytes).await.map_err(io)?;
    let message =
        frame::parse_message(&bytes).map_err(|e| HandshakeError::Io(format!("handshake reply: {e}")))?;
    if let Some(r) = message.body_as_hello_reply() {
        return Ok(Session {
            version: r.version(),
            server_name: r.server_name().unwrap_or_default().to_string(),
            role: r.role(),
            max_frame_bytes: r.max_frame_bytes(),
            max_batch_ops: r.max_batch_ops(),
            max_in_flight: r.max_in_flight(),
        });
    }
    match message.body_as_reply().map(|r| answer::decode(&r)) {
        Some(Err(e)) => Err(HandshakeError::Refused(e)),
        _ => Err(HandshakeError::Io(
            "the handshake reply is not a HelloReply".into(),
        )),
    }
}

async fn write_loop(
    state: Arc<State>,
    mut wr: tokio::io::WriteHalf<Box<dyn Stream>>,
    mut queue: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(mut buf) = queue.recv().await {
        // Everything already queued goes out in the same write.
        while buf.len() < WRITE_GATHER {
            match queue.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            state.close(&format!("write failed: {e}"));
            return;
        }
    }
}

async fn read_loop(
    state: Arc<State>,
    mut rd: tokio::io::ReadHalf<Box<dyn Stream>>,
    max_frame: u32,
    events: mpsc::Sender<LowStock>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let reason = 'read: loop {
        let mut at = 0;
        loop {
            let (bytes, used) = match frame::split_frame(&buf[at..], max_frame) {
                Ok(Some(split)) => split,
                Ok(None) => break,
                Err(e) => break 'read format!("bad frame from the server: {e}"),
            };
            at += used;
            if let Err(reason) = dispatch(&state, bytes, &events) {
                break 'read reason;
            }
        }
        buf.drain(..at);
        buf.reserve(64 << 10);
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "closed by the server".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    state.close(&reason);
}

/// Hands one message to whoever waits for it; an error ends the connection.
fn dispatch(state: &State, bytes: &[u8], events: &mpsc::Sender<LowStock>) -> Result<(), String> {
    let message =
        frame::parse_message(bytes).map_err(|e| format!("unreadable message from the server: {e}"))?;
    let id = message.request_id();
    let decoded = if let Some((_, decoded)) = codec::decode_reply(&message) {
        if id == 0 {
            // Not an answer to anything: the server is closing this connection and says why.
            return Err(match decoded {
                Decoded::One(Err(e)) => format!("server: {e}"),
                other => format!("unexpected reply without a request id: {other:?}"),
            });
        }
        decoded
    } else if let Some(event) = message.body_as_event_message() {
        if let Some(e) = answer::decode_event(&event)
            && events.try_send(e).is_err()
        {
            state.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(());
    } else {
        return Err(format!(
            "unexpected {:?} message from the server",
            message.body_type()
        ));
    };
    let waiter = state.waiting.lock().expect("not poisoned").replies.remove(&id);
    // Nobody waits when the caller timed out: the late reply is dropped.
    if let Some(tx) = waiter {
        let _ = tx.send(Ok(decoded));
    }
    Ok(())
}
