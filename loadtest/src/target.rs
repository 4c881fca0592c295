//! The two targets' bytes. promised: FlatBuffers frames through `promised_client::codec`, many
//! in flight, answered in any order by request id. Redis: RESP commands calling Lua scripts
//! (one atomic script per hold, commit and release, as teams write them), answered in order.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;
use promised_client::codec::{self, Decoded};
use promised_client::{
    Answer, ErrorCode, Hold, HoldChange, HoldLine, HoldOutcome, Op, PromiseCart, ServiceLevel,
};
use promised_schemas::frame;

use crate::catalog::Catalog;
use crate::workload::{Act, Line, Reply};

/// The request id of the frame that says "nothing follows".
pub const SENTINEL: u64 = u64::MAX;

/// How long a hold lives unless committed or released: far beyond any run, so that no hold of
/// a run expires under the verifier.
pub const HOLD_TTL: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Promised,
    Redis,
}

/// The SHA1s of the loaded Lua scripts.
#[derive(Clone, Debug)]
pub struct Scripts {
    pub hold: String,
    pub commit: String,
    pub release: String,
}

/// Builds a connection's frames.
pub struct Encoder<'c> {
    cat: &'c Catalog,
    fbb: FlatBufferBuilder<'static>,
    scripts: Option<Scripts>,
    ops: Vec<Op>,
}

/// Reads a connection's answered frames.
pub struct Decoder<'c> {
    cat: &'c Catalog,
    redis: bool,
    /// Redis answers in order: the id of the next frame to be answered.
    next_id: u64,
    buf: Vec<u8>,
}

/// One answered frame.
pub enum Answered {
    Promised(u64, Decoded),
    Redis(u64, Vec<Resp>),
}

impl Answered {
    pub fn id(&self) -> u64 {
        match self {
            Self::Promised(id, _) | Self::Redis(id, _) => *id,
        }
    }
}

fn sku(cat: &Catalog, i: u32) -> String {
    cat.skus[i as usize].clone()
}

fn node(cat: &Catalog, i: u32) -> String {
    cat.nodes[i as usize].clone()
}

/// A position's Redis key, `s:{sku}:{node}` (formatted straight into frames on the hot path).
struct PositionKey(u32, u32);

impl std::fmt::Display for PositionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s:{}:{}", self.0, self.1)
    }
}

/// A hold's Redis key (`h:`) or its allocation's (`a:`), by the hold id.
struct HoldKey(char, promised_client::RequestId);

impl std::fmt::Display for HoldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{:x}", self.0, self.1.0)
    }
}

impl<'c> Encoder<'c> {
    pub fn new(cat: &'c Catalog, scripts: Option<Scripts>) -> Self {
        Self {
            cat,
            fbb: FlatBufferBuilder::with_capacity(64 << 10),
            scripts,
            ops: Vec::new(),
        }
    }

    fn cart(&self, cart: &[(u32, u32)], zone: u32) -> PromiseCart {
        let mut c = PromiseCart::new(&[], zone);
        c.lines = cart.iter().map(|&(s, q)| (sku(self.cat, s), q)).collect();
        c.levels = vec![ServiceLevel::Ground];
        c
    }

    fn op(&self, act: &Act) -> Op {
        let cat = self.cat;
        match act {
            Act::Promise { cart, zone, .. } => Op::Promise(self.cart(cart, *zone)),
            Act::Hold { id, lines } => Op::Hold(Hold {
                id: *id,
                lines: lines
                    .iter()
                    .map(|l| HoldLine::at(sku(cat, l.sku), node(cat, l.node), l.quantity))
                    .collect(),
                ttl: HOLD_TTL,
                partial: false,
            }),
            Act::Commit { request, hold } => Op::Commit {
                request: *request,
                hold: *hold,
            },
            Act::Release { request, hold } => Op::Release {
                request: *request,
                hold: *hold,
                lines: Vec::new(),
            },
            Act::RouteOrder { order, cart, zone } => Op::RouteOrder {
                cart: self.cart(cart, *zone),
                order: *order,
            },
            Act::CancelOrder { request, order } => Op::CancelAllocation {
                request: *request,
                hold: *order,
            },
            Act::Atp { sku: s, node: n } => Op::Atp {
                sku: sku(cat, *s),
                node: node(cat, *n),
                day: None,
            },
            Act::Feed {
                request,
                node: n,
                seq,
                counts,
            } => Op::SetOnHand {
                request: *request,
                node: node(cat, *n),
                feed_seq: *seq,
                counts: counts.iter().map(|&(s, q)| (sku(cat, s), q)).collect(),
            },
        }
    }

    /// Appends the frame carrying `acts` under `id`.
    pub fn frame(&mut self, id: u64, acts: &[Act], out: &mut Vec<u8>) {
        if let Some(scripts) = &self.scripts {
            acts.iter().for_each(|a| resp_act(scripts, a, out));
            return;
        }
        self.ops.clear();
        for a in acts {
            let op = self.op(a);
            self.ops.push(op);
        }
        out.extend(codec::request_frame(&mut self.fbb, id, &self.ops));
    }

    /// Appends the frame whose answer tells the reader that nothing follows.
    pub fn sentinel(&mut self, out: &mut Vec<u8>) {
        if self.scripts.is_some() {
            resp_command(&[b"PING"], out);
            return;
        }
        let (s, n) = (0..self.cat.checkout_skus())
            .find_map(|s| self.cat.stocked[s as usize].first().map(|&(n, _)| (s, n)))
            .unwrap_or((0, 0));
        let op = self.op(&Act::Atp { sku: s, node: n });
        out.extend(codec::request_frame(&mut self.fbb, SENTINEL, &[op]));
    }
}

fn resp_act(scripts: &Scripts, act: &Act, out: &mut Vec<u8>) {
    // Keys and numbers are written straight into the frame: this runs for every operation.
    let position =
        |out: &mut Vec<u8>, sku: u32, node: u32| bulk(out, format_args!("{}", PositionKey(sku, node)));
    match act {
        Act::Hold { id, lines } => {
            array(out, 2 * lines.len() + 5);
            bulk(out, format_args!("EVALSHA"));
            bulk(out, format_args!("{}", scripts.hold));
            bulk(out, format_args!("{}", lines.len()));
            lines.iter().for_each(|l| position(out, l.sku, l.node));
            bulk(out, format_args!("{}", HoldKey('h', *id)));
            bulk(out, format_args!("{}", HOLD_TTL.as_millis()));
            lines
                .iter()
                .for_each(|l| bulk(out, format_args!("{}", l.quantity)));
        }
        Act::Commit { hold, .. } => {
            array(out, 5);
            bulk(out, format_args!("EVALSHA"));
            bulk(out, format_args!("{}", scripts.commit));
            bulk(out, format_args!("2"));
            bulk(out, format_args!("{}", HoldKey('h', *hold)));
            bulk(out, format_args!("{}", HoldKey('a', *hold)));
        }
        Act::Release { hold, .. } => {
            array(out, 4);
            bulk(out, format_args!("EVALSHA"));
            bulk(out, format_args!("{}", scripts.release));
            bulk(out, format_args!("1"));
            bulk(out, format_args!("{}", HoldKey('h', *hold)));
        }
        Act::Atp { sku, node } => {
            array(out, 2);
            bulk(out, format_args!("GET"));
            position(out, *sku, *node);
        }
        other => unreachable!("a Redis run generates no {:?}", other.kind()),
    }
}

/// A RESP array header of `n` elements.
fn array(out: &mut Vec<u8>, n: usize) {
    let _ = write!(out, "*{n}\r\n");
}

/// One RESP bulk string, formatted in place: the text goes first, then its length header
/// (formatted on the stack) is put in front of it.
fn bulk(out: &mut Vec<u8>, text: std::fmt::Arguments<'_>) {
    let start = out.len();
    let _ = out.write_fmt(text);
    let mut header = [0u8; 24];
    let mut cursor = io::Cursor::new(&mut header[..]);
    let _ = write!(cursor, "${}\r\n", out.len() - start);
    let n = cursor.position() as usize;
    out.splice(start..start, header[..n].iter().copied());
    out.extend_from_slice(b"\r\n");
}

/// A RESP array of bulk strings.
pub fn resp_command(args: &[&[u8]], out: &mut Vec<u8>) {
    array(out, args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A RESP reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads one RESP reply.
pub fn read_resp(r: &mut impl BufRead) -> io::Result<Resp> {
    let mut line = Vec::with_capacity(32);
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(if line.is_empty() {
            io::Error::new(io::ErrorKind::UnexpectedEof, "Redis closed the connection")
        } else {
            bad(format!("bad RESP line {:?}", String::from_utf8_lossy(&line)))
        });
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let int = |t: &str| {
        t.parse::<i64>()
            .map_err(|_| bad(format!("bad RESP number {t:?}")))
    };
    Ok(match line[0] {
        b'+' => Resp::Simple(text),
        b'-' => Resp::Error(text),
        b':' => Resp::Int(int(&text)?),
        b'$' => match int(&text)? {
            n if n < 0 => Resp::Bulk(None),
            n => {
                let mut v = vec![0u8; n as usize + 2];
                r.read_exact(&mut v)?;
                v.truncate(n as usize);
                Resp::Bulk(Some(v))
            }
        },
        b'*' => {
            let n = int(&text)?;
            let mut items = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n.max(0) {
                items.push(read_resp(r)?);
            }
            Resp::Array(items)
        }
        other => return Err(bad(format!("unknown RESP type {:?}", other as char))),
    })
}

impl<'c> Decoder<'c> {
    pub fn new(cat: &'c Catalog, redis: bool) -> Self {
        Self {
            cat,
            redis,
            next_id: 1,
            buf: Vec::new(),
        }
    }

    /// The next answered frame. `ops_in(id)`: how many operations frame `id` carried (Redis
    /// answers each command; `None` means the sentinel is next).
    pub fn next(
        &mut self,
        r: &mut BufReader<TcpStream>,
        ops_in: impl FnOnce(u64) -> Option<usize>,
    ) -> io::Result<Answered> {
        if !self.redis {
            let mut len = [0u8; frame::LENGTH_BYTES];
            r.read_exact(&mut len)?;
            self.buf.resize(u32::from_le_bytes(len) as usize, 0);
            r.read_exact(&mut self.buf)?;
            let message =
                frame::parse_message(&self.buf).map_err(|e| bad(format!("unreadable reply: {e}")))?;
            let (id, decoded) = codec::decode_reply(&message)
                .ok_or_else(|| bad(format!("unexpected {:?} message", message.body_type())))?;
            return Ok(Answered::Promised(id, decoded));
        }
        // The first reply is read before looking the frame up: a frame is registered before
        // it is written, so once an answer is here its frame is known (or it was the sentinel).
        let first = read_resp(r)?;
        let id = self.next_id;
        match ops_in(id) {
            Some(n) => {
                self.next_id += 1;
                let mut replies = Vec::with_capacity(n);
                replies.push(first);
                for _ in 1..n {
                    replies.push(read_resp(r)?);
                }
                Ok(Answered::Redis(id, replies))
            }
            None => Ok(Answered::Redis(SENTINEL, Vec::new())),
        }
    }

    /// Each act's answer, reduced.
    pub fn replies(&self, acts: &[Act], answered: Answered) -> Vec<Reply> {
        match answered {
            Answered::Promised(_, Decoded::One(one)) if acts.len() == 1 => vec![self.reply(&acts[0], one)],
            Answered::Promised(_, Decoded::One(Err(e))) => {
                // The whole batch was refused (busy, too large): every act gets the error.
                acts.iter()
                    .map(|_| Reply::Error(e.code.0, e.message.clone()))
                    .collect()
            }
            Answered::Promised(_, Decoded::One(Ok(_))) => acts
                .iter()
                .map(|_| Reply::Error(0, "a single reply to a batch".into()))
                .collect(),
            Answered::Promised(_, Decoded::Many(many)) => {
                let mut out: Vec<Reply> = acts.iter().zip(many).map(|(a, r)| self.reply(a, r)).collect();
                out.resize(acts.len(), Reply::Error(0, "no reply for this operation".into()));
                out
            }
            Answered::Redis(_, replies) => acts.iter().zip(replies).map(|(a, r)| redis_reply(a, r)).collect(),
        }
    }

    fn lines(&self, g: &promised_client::HoldGranted) -> Vec<Line> {
        g.lines
            .iter()
            .filter_map(|l| {
                Some(Line {
                    sku: self.cat.sku_index(&l.sku)?,
                    node: self.cat.node_index(l.node.as_deref()?)?,
                    quantity: l.granted,
                })
            })
            .collect()
    }

    fn reply(&self, act: &Act, r: Result<Answer, promised_client::ServerError>) -> Reply {
        let answer = match r {
            Ok(a) => a,
            Err(e) if e.code == ErrorCode::StaleFeedSequence => return Reply::Refused,
            Err(e) => return Reply::Error(e.code.0, e.message),
        };
        match (act, answer) {
            (Act::Promise { cart, .. }, Answer::Promise(levels)) => {
                let Some(plan) = levels.into_iter().next().and_then(|l| l.plan) else {
                    return Reply::Refused;
                };
                let mut nodes = vec![u32::MAX; cart.len()];
                for p in &plan.packages {
                    let Some(n) = self.cat.node_index(&p.node) else {
                        return Reply::Error(0, format!("a plan names an unknown node {:?}", p.node));
                    };
                    for &l in &p.lines {
                        if let Some(slot) = nodes.get_mut(usize::from(l)) {
                            *slot = n;
                        }
                    }
                }
                if nodes.contains(&u32::MAX) {
                    Reply::Refused
                } else {
                    Reply::Plan(nodes)
                }
            }
            // All or nothing: a granted hold has exactly the lines asked (the verifier checks
            // the server's own view of them afterwards).
            (Act::Hold { lines, .. }, Answer::Hold(HoldOutcome::Granted(_))) => Reply::Granted(lines.clone()),
            (
                Act::RouteOrder { .. },
                Answer::PromiseHeld {
                    held: Some(HoldOutcome::Granted(g)),
                    ..
                },
            ) => Reply::Granted(self.lines(&g)),
            (Act::Hold { .. } | Act::RouteOrder { .. }, _) => Reply::Refused,
            (
                Act::Commit { .. } | Act::Release { .. } | Act::CancelOrder { .. },
                Answer::HoldChange(HoldChange::Refused { .. }),
            ) => Reply::Refused,
            _ => Reply::Done,
        }
    }
}

fn redis_reply(act: &Act, r: Resp) -> Reply {
    match (act, r) {
        (_, Resp::Error(e)) => Reply::Error(0, e),
        (Act::Hold { lines, .. }, Resp::Int(0)) => Reply::Granted(lines.clone()),
        (Act::Hold { .. }, _) => Reply::Refused,
        (Act::Commit { .. } | Act::Release { .. }, Resp::Int(1)) => Reply::Done,
        (Act::Commit { .. } | Act::Release { .. }, _) => Reply::Refused,
        _ => Reply::Done,
    }
}

/// The hold script: all lines or nothing, then the hold as a hash that expires with its TTL.
pub const HOLD_LUA: &str = r"
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') < tonumber(ARGV[i + 2]) then return i end
end
for i = 1, #KEYS do
  redis.call('DECRBY', KEYS[i], ARGV[i + 2])
  redis.call('HSET', ARGV[1], KEYS[i], ARGV[i + 2])
end
redis.call('PEXPIRE', ARGV[1], ARGV[2])
return 0
";

/// Commit: the hold becomes an allocation (kept, no expiry).
pub const COMMIT_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
return 1
";

/// Release: every line's units back, the hold gone.
pub const RELEASE_LUA: &str = r"
local lines = redis.call('HGETALL', KEYS[1])
if #lines == 0 then return 0 end
for i = 1, #lines, 2 do redis.call('INCRBY', lines[i], lines[i + 1]) end
redis.call('DEL', KEYS[1])
return 1
";

/// A blocking one-command-at-a-time Redis connection, for setup and verification.
pub struct RedisAdmin {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl RedisAdmin {
    pub fn connect(addr: &str) -> io::Result<Self> {
        let w = TcpStream::connect(addr)?;
        w.set_nodelay(true)?;
        Ok(Self {
            r: BufReader::new(w.try_clone()?),
            w,
        })
    }

    pub fn call(&mut self, args: &[&[u8]]) -> io::Result<Resp> {
        let mut out = Vec::new();
        resp_command(args, &mut out);
        self.w.write_all(&out)?;
        match read_resp(&mut self.r)? {
            Resp::Error(e) => Err(io::Error::other(format!("Redis: {e}"))),
            ok => Ok(ok),
        }
    }

    /// Many commands in one write, their replies in order.
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> io::Result<Vec<Resp>> {
        let mut out = Vec::new();
        for c in commands {
            let refs: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            resp_command(&refs, &mut out);
        }
        self.w.write_all(&out)?;
        commands.iter().map(|_| read_resp(&mut self.r)).collect()
    }

    fn load(&mut self, script: &str) -> io::Result<String> {
        match self.call(&[b"SCRIPT", b"LOAD", script.as_bytes()])? {
            Resp::Bulk(Some(sha)) => Ok(String::from_utf8_lossy(&sha).into_owned()),
            other => Err(bad(format!("SCRIPT LOAD answered {other:?}"))),
        }
    }

    /// Loads the scripts and writes every checkout position's promisable units.
    pub fn prepare(&mut self, cat: &Catalog) -> io::Result<Scripts> {
        let scripts = Scripts {
            hold: self.load(HOLD_LUA)?,
            commit: self.load(COMMIT_LUA)?,
            release: self.load(RELEASE_LUA)?,
        };
        let all: Vec<_> = cat.seeded_units().collect();
        for chunk in all.chunks(1_000) {
            let mut mset: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
            for &(p, units) in chunk {
                mset.push(PositionKey(p.sku, p.node).to_string().into_bytes());
                mset.push(units.to_string().into_bytes());
            }
            self.pipeline(&[mset])?;
        }
        Ok(scripts)
    }

    /// The promisable units at each position, as Redis has them now.
    pub fn units(&mut self, positions: &[crate::catalog::Pos]) -> io::Result<Vec<i64>> {
        let mut out = Vec::with_capacity(positions.len());
        for chunk in positions.chunks(1_000) {
            let mut mget: Vec<Vec<u8>> = vec![b"MGET".to_vec()];
            mget.extend(
                chunk
                    .iter()
                    .map(|p| PositionKey(p.sku, p.node).to_string().into_bytes()),
            );
            let Some(Resp::Array(values)) = self.pipeline(&[mget])?.pop() else {
                return Err(bad("MGET answered no array".into()));
            };
            for v in values {
                out.push(match v {
                    Resp::Bulk(Some(b)) => String::from_utf8_lossy(&b).parse().unwrap_or(0),
                    _ => 0,
                });
            }
        }
        Ok(out)
    }
}

/// A `redis-server` this harness started on loopback, in a temporary directory, stopped (by
/// its pid) when dropped.
pub struct RedisServer {
    child: std::process::Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `binary` with the AOF on and `appendfsync` as given (`always` or `everysec`).
    pub fn start(binary: &str, fsync: &str) -> anyhow::Result<Self> {
        // The free port is found by binding and letting go: another process (a test running
        // alongside) may take it first, and redis-server then exits. A few tries with new ports.
        let mut last = None;
        for _ in 0..START_TRIES {
            match Self::start_once(binary, fsync)? {
                Ok(server) => return Ok(server),
                Err(why) => last = Some(why),
            }
        }
        Err(last.expect("at least one try"))
    }

    /// One start on a fresh port: `Err` when the binary cannot run at all; `Ok(Err(..))` when
    /// this try failed and another port may work.
    fn start_once(binary: &str, fsync: &str) -> anyhow::Result<anyhow::Result<Self>> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = std::process::Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", fsync, "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("could not start {binary:?} ({e}); install it (Debian: apt-get install redis-server) or pass --redis-server PATH")
            })?;
        let mut server = Self {
            child,
            addr: format!("127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            // Exited first: whatever answers on the port now is not this redis-server.
            if let Some(status) = server.child.try_wait()? {
                return Ok(Err(anyhow::anyhow!("redis-server exited at start ({status})")));
            }
            if let Ok(mut c) = RedisAdmin::connect(&server.addr)
                && c.w.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
                && c.call(&[b"PING"]).is_ok_and(|r| r == Resp::Simple("PONG".into()))
                && c.w.set_read_timeout(None).is_ok()
            {
                return Ok(Ok(server));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(Err(anyhow::anyhow!(
                    "redis-server did not answer PING within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Ports a Redis start tries before it gives up.
const START_TRIES: usize = 3;

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies_parse() {
        let bytes = b"+OK\r\n-ERR nope\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$0\r\n\r\n";
        let mut r = std::io::Cursor::new(&bytes[..]);
        assert_eq!(read_resp(&mut r).unwrap(), Resp::Simple("OK".into()));
        assert_eq!(read_resp(&mut r).unwrap(), Resp::Error("ERR nope".into()));
        assert_eq!(read_resp(&mut r).unwrap(), Resp::Int(42));
        assert_eq!(read_resp(&mut r).unwrap(), Resp::Bulk(Some(b"abc".to_vec())));
        assert_eq!(read_resp(&mut r).unwrap(), Resp::Bulk(None));
        assert_eq!(
            read_resp(&mut r).unwrap(),
            Resp::Array(vec![Resp::Int(1), Resp::Bulk(Some(Vec::new()))])
        );
        assert_eq!(
            read_resp(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut bad = std::io::Cursor::new(&b"?x\r\n"[..]);
        assert!(read_resp(&mut bad).is_err());
    }

    #[test]
    fn operations_are_the_script_calls_they_stand_for() {
        let scripts = Scripts {
            hold: "H".into(),
            commit: "C".into(),
            release: "R".into(),
        };
        let line = |sku, node, quantity| crate::workload::Line { sku, node, quantity };
        let id = promised_client::RequestId(0xab);
        let hold = Act::Hold {
            id,
            lines: vec![line(1, 2, 3), line(4, 5, 1)],
        };
        let mut got = Vec::new();
        resp_act(&scripts, &hold, &mut got);
        let mut want = Vec::new();
        let args: [&[u8]; 9] = [
            b"EVALSHA", b"H", b"2", b"s:1:2", b"s:4:5", b"h:ab", b"600000", b"3", b"1",
        ];
        resp_command(&args, &mut want);
        assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
        let (mut got, mut want) = (Vec::new(), Vec::new());
        resp_act(
            &scripts,
            &Act::Commit {
                request: id,
                hold: id,
            },
            &mut got,
        );
        resp_command(&[b"EVALSHA", b"C", b"2", b"h:ab", b"a:ab"], &mut want);
        assert_eq!(got, want);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        resp_act(&scripts, &Act::Atp { sku: 7, node: 8 }, &mut got);
        resp_command(&[b"GET", b"s:7:8"], &mut want);
        assert_eq!(got, want);
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        resp_command(&[b"GET", b"s:1:2"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$5\r\ns:1:2\r\n");
    }
}
