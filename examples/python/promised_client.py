"""A small, synchronous Python client for the promised wire protocol.

It exists to show that ``schemas/promised.fbs`` is the contract: every byte
it sends or reads goes through the module ``flatc --python`` generated from
that schema (``promised_wire/promised_generated.py``) and the ``flatbuffers``
runtime from PyPI, and nothing here knows the server's Rust code. Framing, the
handshake, roles and error codes are described in ``schemas/PROTOCOL.md``.

The client sends one request at a time and reads frames until the reply that
carries its request id arrives. The protocol allows pipelining (replies may
come back in any order); waiting for each reply keeps this client simple and
still correct, because it matches replies by id rather than by position.

Example::

    from promised_client import Client, HoldLine

    with Client.connect("127.0.0.1:7411") as c:
        granted = c.hold([HoldLine("SKU-1", "DC-1", 2)], ttl_ms=600_000)
        if granted.granted:
            c.commit(granted.hold)
        print(c.atp("SKU-1", "DC-1"))
"""

import socket
import struct
import uuid
from dataclasses import dataclass, field
from typing import List, Optional, Union

try:
    import flatbuffers
    from promised_wire import promised_generated as wire
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"{e}: the promised client needs the FlatBuffers runtime; install "
        "it with `python3 -m pip install flatbuffers==25.12.19`"
    ) from e

#: ``Hello.magic``: the bytes ``PRMD`` read as a little-endian u32.
HELLO_MAGIC = 0x444D5250
#: The protocol versions this client speaks (inclusive).
PROTOCOL_VERSION_MIN = 1
PROTOCOL_VERSION_MAX = 1
#: The schema's ``file_identifier``; every message carries it.
FILE_IDENTIFIER = b"PRMD"
#: Frame limit before the server announces its own in ``HelloReply``.
DEFAULT_MAX_FRAME_BYTES = 1 << 20
#: A hold's time to live when the caller does not say: 15 minutes.
DEFAULT_TTL_MS = 15 * 60 * 1000

_LENGTH = struct.Struct("<I")


def _names(enum_class):
    """Value -> name for a generated enum class, so names come from the
    schema rather than from a copy kept here."""
    return {
        value: name
        for name, value in vars(enum_class).items()
        if not name.startswith("_") and isinstance(value, int)
    }


ERROR_NAMES = _names(wire.ErrorCode)
_ROLE_NAMES = _names(wire.Role)
_STATE_NAMES = _names(wire.HoldState)
_REASON_NAMES = _names(wire.RefusalReason)
_REPLY_NAMES = _names(wire.ReplyBody)
_BODY_NAMES = _names(wire.Body)


class PromisedError(Exception):
    """An ``Error`` reply: the request was wrong or could not be served, and
    nothing changed.

    ``code`` is the stable number of the schema's ``ErrorCode`` (for example
    100) and ``name`` its name there (``"UnknownSku"``); ``message`` is the
    server's explanation. Refusals (not enough stock, an expired hold) are
    answers, not errors: they come back as ``HoldRefused`` and
    ``HoldChangeRefused`` values.
    """

    def __init__(self, code: int, message: str):
        self.code = code
        self.name = ERROR_NAMES.get(code, f"ErrorCode({code})")
        self.message = message
        super().__init__(f"{self.name} ({code}): {message}")


class ProtocolError(Exception):
    """The server sent something this client cannot make sense of (a reply
    of the wrong kind, a frame too large, a closed connection)."""


# ---- request ids --------------------------------------------------------

Id = Union[uuid.UUID, int]


def new_id() -> uuid.UUID:
    """A fresh 128-bit ``RequestId``: the idempotency key of a write (and a
    hold's id). Keep it to retry: the same id returns the first answer."""
    return uuid.uuid4()


def _hi_lo(value: Id):
    number = value.int if isinstance(value, uuid.UUID) else value
    if not isinstance(number, int) or not 0 <= number < 1 << 128:
        raise ValueError(f"a request id is a UUID or a 128-bit integer, "
                         f"not {value!r}")
    return number >> 64, number & ((1 << 64) - 1)


def _uuid(request_id) -> Optional[uuid.UUID]:
    if request_id is None:
        return None
    return uuid.UUID(int=request_id.Hi() << 64 | request_id.Lo())


def _text(raw: Optional[bytes]) -> Optional[str]:
    return None if raw is None else raw.decode("utf-8")


def _as(table_class, table):
    """Reads a union member (a bare ``flatbuffers.table.Table``) as the
    generated class of the member the union's type field names."""
    obj = table_class()
    obj.Init(table.Bytes, table.Pos)
    return obj


def _enum(enum_class, name: str) -> int:
    value = getattr(enum_class, name, None)
    if not isinstance(value, int):
        known = ", ".join(_names(enum_class).values())
        raise ValueError(f"{name!r} is not a {enum_class.__name__} "
                         f"({known})")
    return value


# ---- what the caller passes and gets back -------------------------------

@dataclass
class HoldLine:
    """One line of a hold: ``quantity`` units of ``sku`` at ``node`` (None:
    any open, capable node), needed on ``need_day`` (days since 1970-01-01;
    0: today)."""
    sku: str
    node: Optional[str]
    quantity: int
    need_day: int = 0


@dataclass
class LineQuantity:
    """Units of one hold line, for a partial release."""
    sku: str
    node: str
    quantity: int


@dataclass
class HelloReply:
    version: int
    server_name: str
    role: str
    max_frame_bytes: int
    max_batch_ops: int
    max_in_flight: int


@dataclass
class GrantedLine:
    sku: str
    node: Optional[str]
    requested: int
    granted: int
    need_day: int


@dataclass
class HoldGranted:
    """The hold is placed. ``repeated``: this answers a retry with the same
    hold id, and nothing changed."""
    hold: uuid.UUID
    expires_at_ms: int
    lines: List[GrantedLine]
    repeated: bool
    granted = True


@dataclass
class LineRefusal:
    line: int
    sku: str
    node: Optional[str]
    requested: int
    available: int
    reason: str


@dataclass
class HoldRefused:
    """Nothing was held and nothing changed; ``lines`` say why."""
    lines: List[LineRefusal]
    granted = False


@dataclass
class HoldChanged:
    """A commit or release took effect (or had, with ``repeated``);
    ``state`` is the hold's state after it, e.g. ``"Committed"``."""
    hold: uuid.UUID
    state: str
    repeated: bool
    changed = True


@dataclass
class HoldChangeRefused:
    """A commit or release refused for a business reason (the hold expired
    first)."""
    hold: uuid.UUID
    reason: str
    repeated: bool
    changed = False


@dataclass
class HoldLineValue:
    sku: str
    node: Optional[str]
    need_day: int
    requested: int
    granted: int
    remaining: int


@dataclass
class HoldValue:
    hold: uuid.UUID
    state: str
    placed_at_ms: int
    expires_at_ms: int
    partial: bool
    lines: List[HoldLineValue] = field(default_factory=list)


@dataclass
class Position:
    """The counters of one SKU at one node (inbound lots left out)."""
    on_hand: int
    safety_stock: int
    reserved: int
    allocated: int


# ---- the client ---------------------------------------------------------

class Client:
    """One handshaken connection to a promised server.

    Use ``Client.connect``; close it with ``close()`` or a ``with`` block.
    Not thread-safe: one request at a time.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._next_request_id = 1  # 0 is reserved for server events
        self.max_frame_bytes = DEFAULT_MAX_FRAME_BYTES
        self.hello: Optional[HelloReply] = None

    @classmethod
    def connect(cls, addr: str, token: Optional[str] = None,
                client_name: str = "promised-python",
                timeout: float = 10.0) -> "Client":
        """Connects to ``addr`` (``HOST:PORT``) and does the ``Hello``
        handshake. ``token`` is required when the server was started with
        tokens; its role decides what the connection may do. ``timeout``
        (seconds) bounds every network wait, so a stalled server raises
        ``socket.timeout`` instead of hanging the caller."""
        host, sep, port = addr.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, not {addr!r}")
        sock = socket.create_connection((host.strip("[]"), int(port)),
                                        timeout=timeout)
        client = cls(sock)
        try:
            client.hello = client._handshake(client_name, token)
        except BaseException:
            sock.close()
            raise
        client.max_frame_bytes = client.hello.max_frame_bytes
        return client

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writes ---------------------------------------------------------

    def hold(self, lines, ttl_ms: int = DEFAULT_TTL_MS,
             partial: bool = False, hold: Optional[Id] = None
             ) -> Union[HoldGranted, HoldRefused]:
        """Holds stock for a cart. ``lines`` are ``HoldLine`` values or
        ``(sku, node, quantity[, need_day])`` tuples; all are granted or
        none (``partial=True``: line by line). ``hold`` is the hold's id and
        idempotency key (a fresh one if omitted): repeating a hold with the
        same id answers ``repeated=True`` and changes nothing."""
        hold_id = new_id() if hold is None else hold
        lines = [line if isinstance(line, HoldLine) else HoldLine(*line)
                 for line in lines]

        def build(b):
            offsets = []
            for line in lines:
                sku = b.CreateString(line.sku)
                node = b.CreateString(line.node) if line.node else None
                wire.HoldLineStart(b)
                wire.HoldLineAddSku(b, sku)
                if node is not None:
                    wire.HoldLineAddNode(b, node)
                wire.HoldLineAddQuantity(b, line.quantity)
                wire.HoldLineAddNeedDay(b, line.need_day)
                offsets.append(wire.HoldLineEnd(b))
            vector = _vector(b, wire.HoldStartLinesVector, offsets)
            wire.HoldStart(b)
            wire.HoldAddHold(b, wire.CreateRequestId(b, *_hi_lo(hold_id)))
            wire.HoldAddLines(b, vector)
            wire.HoldAddTtlMs(b, ttl_ms)
            wire.HoldAddPartial(b, partial)
            return wire.HoldEnd(b)

        kind, body = self._call(wire.Operation.Hold, build)
        if kind == wire.ReplyBody.HoldGranted:
            g = _as(wire.HoldGranted, body)
            return HoldGranted(
                hold=_uuid(g.Hold()),
                expires_at_ms=g.ExpiresAtMs(),
                lines=[_granted_line(g.Lines(i))
                       for i in range(g.LinesLength())],
                repeated=g.Repeated(),
            )
        if kind == wire.ReplyBody.HoldRefused:
            r = _as(wire.HoldRefused, body)
            return HoldRefused(
                [_refusal(r.Lines(i)) for i in range(r.LinesLength())])
        raise _unexpected("Hold", kind)

    def commit(self, hold: Id, request: Optional[Id] = None
               ) -> Union[HoldChanged, HoldChangeRefused]:
        """Turns a hold into an allocation (the order was placed).
        ``request`` is the idempotency key (fresh if omitted)."""
        request = new_id() if request is None else request

        def build(b):
            wire.CommitStart(b)
            wire.CommitAddRequest(b, wire.CreateRequestId(b, *_hi_lo(request)))
            wire.CommitAddHold(b, wire.CreateRequestId(b, *_hi_lo(hold)))
            return wire.CommitEnd(b)

        return self._hold_change("Commit", wire.Operation.Commit, build)

    def release(self, hold: Id, lines=None, request: Optional[Id] = None
                ) -> Union[HoldChanged, HoldChangeRefused]:
        """Gives held units back: all of them, or ``lines``
        (``LineQuantity`` values or ``(sku, node, quantity)`` tuples)."""
        request = new_id() if request is None else request
        lines = [line if isinstance(line, LineQuantity) else
                 LineQuantity(*line) for line in (lines or [])]

        def build(b):
            vector = None
            if lines:
                vector = _vector(b, wire.ReleaseStartLinesVector,
                                 [_line_quantity(b, line) for line in lines])
            wire.ReleaseStart(b)
            wire.ReleaseAddRequest(b,
                                   wire.CreateRequestId(b, *_hi_lo(request)))
            wire.ReleaseAddHold(b, wire.CreateRequestId(b, *_hi_lo(hold)))
            if vector is not None:
                wire.ReleaseAddLines(b, vector)
            return wire.ReleaseEnd(b)

        return self._hold_change("Release", wire.Operation.Release, build)

    def set_on_hand(self, node: str, counts: dict, feed_seq: int,
                    request: Optional[Id] = None) -> bool:
        """Sets absolute on-hand counts (``{sku: units}``) at ``node``, as a
        stock feed would. ``feed_seq`` must be above the node's last one.
        Returns ``repeated``: True when this answers a retry."""
        request = new_id() if request is None else request

        def build(b):
            offsets = []
            for sku, on_hand in counts.items():
                name = b.CreateString(sku)
                wire.SkuCountStart(b)
                wire.SkuCountAddSku(b, name)
                wire.SkuCountAddOnHand(b, on_hand)
                offsets.append(wire.SkuCountEnd(b))
            vector = _vector(b, wire.SetOnHandStartCountsVector, offsets)
            node_name = b.CreateString(node)
            wire.SetOnHandStart(b)
            wire.SetOnHandAddRequest(b,
                                     wire.CreateRequestId(b, *_hi_lo(request)))
            wire.SetOnHandAddNode(b, node_name)
            wire.SetOnHandAddFeedSeq(b, feed_seq)
            wire.SetOnHandAddCounts(b, vector)
            return wire.SetOnHandEnd(b)

        kind, body = self._call(wire.Operation.SetOnHand, build)
        if kind != wire.ReplyBody.Fed:
            raise _unexpected("SetOnHand", kind)
        return _as(wire.Fed, body).Repeated()

    def upsert_node(self, name: str, kind: str = "Dc", status: str = "Open",
                    capabilities: int = 0, zone: int = 0, lat: float = 0.0,
                    lon: float = 0.0, capacity_orders: int = 0,
                    capacity_units: int = 0, processing_days: int = 0,
                    cutoff_minute: int = 0, utc_offset_minutes: int = 0,
                    weekdays: int = 0b11111, holidays=(),
                    cost_factor_milli: int = 1000) -> str:
        """Creates or replaces a fulfilment node. ``kind`` and ``status``
        are names from the schema's ``NodeKind`` and ``NodeStatus``; the
        defaults are the schema's. Returns the node's id."""
        kind_value = _enum(wire.NodeKind, kind)
        status_value = _enum(wire.NodeStatus, status)

        def build(b):
            days = None
            if holidays:
                wire.UpsertNodeStartHolidaysVector(b, len(holidays))
                for day in reversed(list(holidays)):
                    b.PrependUint32(day)
                days = b.EndVector()
            node_name = b.CreateString(name)
            wire.UpsertNodeStart(b)
            wire.UpsertNodeAddName(b, node_name)
            wire.UpsertNodeAddKind(b, kind_value)
            wire.UpsertNodeAddStatus(b, status_value)
            wire.UpsertNodeAddLat(b, lat)
            wire.UpsertNodeAddLon(b, lon)
            wire.UpsertNodeAddZone(b, zone)
            wire.UpsertNodeAddCapabilities(b, capabilities)
            wire.UpsertNodeAddCapacityOrders(b, capacity_orders)
            wire.UpsertNodeAddCapacityUnits(b, capacity_units)
            wire.UpsertNodeAddProcessingDays(b, processing_days)
            wire.UpsertNodeAddCutoffMinute(b, cutoff_minute)
            wire.UpsertNodeAddUtcOffsetMinutes(b, utc_offset_minutes)
            wire.UpsertNodeAddWeekdays(b, weekdays)
            if days is not None:
                wire.UpsertNodeAddHolidays(b, days)
            wire.UpsertNodeAddCostFactorMilli(b, cost_factor_milli)
            return wire.UpsertNodeEnd(b)

        reply_kind, body = self._call(wire.Operation.UpsertNode, build)
        if reply_kind != wire.ReplyBody.NodeUpserted:
            raise _unexpected("UpsertNode", reply_kind)
        return _text(_as(wire.NodeUpserted, body).Node())

    def upsert_sku(self, name: str, required_capabilities: int = 0) -> str:
        """Creates or replaces a SKU; ``required_capabilities`` is the bit
        set a node needs to ship it. Returns the SKU's id."""

        def build(b):
            sku = b.CreateString(name)
            wire.UpsertSkuStart(b)
            wire.UpsertSkuAddName(b, sku)
            wire.UpsertSkuAddRequiredCapabilities(b, required_capabilities)
            return wire.UpsertSkuEnd(b)

        kind, body = self._call(wire.Operation.UpsertSku, build)
        if kind != wire.ReplyBody.SkuUpserted:
            raise _unexpected("UpsertSku", kind)
        return _text(_as(wire.SkuUpserted, body).Sku())

    # ---- reads ----------------------------------------------------------

    def atp(self, sku: str, node: str, day: int = 0) -> int:
        """Available to promise of ``sku`` at ``node`` on ``day`` (days
        since 1970-01-01; 0: today)."""

        def build(b):
            s, n = b.CreateString(sku), b.CreateString(node)
            wire.AtpStart(b)
            wire.AtpAddSku(b, s)
            wire.AtpAddNode(b, n)
            wire.AtpAddDay(b, day)
            return wire.AtpEnd(b)

        return self._atp_value("Atp", wire.Operation.Atp, build)

    def network_atp(self, sku: str, day: int = 0) -> int:
        """ATP of ``sku`` summed over every open node able to ship it."""

        def build(b):
            s = b.CreateString(sku)
            wire.NetworkAtpStart(b)
            wire.NetworkAtpAddSku(b, s)
            wire.NetworkAtpAddDay(b, day)
            return wire.NetworkAtpEnd(b)

        return self._atp_value("NetworkAtp", wire.Operation.NetworkAtp, build)

    def position(self, sku: str, node: str) -> Position:
        """The ledger counters of ``sku`` at ``node``."""

        def build(b):
            s, n = b.CreateString(sku), b.CreateString(node)
            wire.GetPositionStart(b)
            wire.GetPositionAddSku(b, s)
            wire.GetPositionAddNode(b, n)
            return wire.GetPositionEnd(b)

        kind, body = self._call(wire.Operation.GetPosition, build)
        if kind != wire.ReplyBody.PositionValue:
            raise _unexpected("GetPosition", kind)
        p = _as(wire.PositionValue, body)
        return Position(p.OnHand(), p.SafetyStock(), p.Reserved(),
                        p.Allocated())

    def get_hold(self, hold: Id) -> Optional[HoldValue]:
        """The hold's state and lines, or None when the server does not
        know the id (never used, or forgotten after retention)."""

        def build(b):
            wire.GetHoldStart(b)
            wire.GetHoldAddHold(b, wire.CreateRequestId(b, *_hi_lo(hold)))
            return wire.GetHoldEnd(b)

        kind, body = self._call(wire.Operation.GetHold, build)
        if kind == wire.ReplyBody.NotFound:
            return None
        if kind != wire.ReplyBody.HoldValue:
            raise _unexpected("GetHold", kind)
        h = _as(wire.HoldValue, body)
        lines = []
        for i in range(h.LinesLength()):
            line = h.Lines(i)
            lines.append(HoldLineValue(
                sku=_text(line.Sku()), node=_text(line.Node()),
                need_day=line.NeedDay(), requested=line.Requested(),
                granted=line.Granted(), remaining=line.Remaining()))
        return HoldValue(
            hold=_uuid(h.Hold()), state=_STATE_NAMES.get(h.State(), "?"),
            placed_at_ms=h.PlacedAtMs(), expires_at_ms=h.ExpiresAtMs(),
            partial=h.Partial(), lines=lines)

    # ---- framing and dispatch -------------------------------------------

    def _handshake(self, client_name: str, token: Optional[str]
                   ) -> HelloReply:
        b = flatbuffers.Builder(128)
        name = b.CreateString(client_name)
        auth = b.CreateString(token) if token is not None else None
        wire.HelloStart(b)
        wire.HelloAddMagic(b, HELLO_MAGIC)
        wire.HelloAddMinVersion(b, PROTOCOL_VERSION_MIN)
        wire.HelloAddMaxVersion(b, PROTOCOL_VERSION_MAX)
        wire.HelloAddClientName(b, name)
        if auth is not None:
            wire.HelloAddAuthToken(b, auth)
        hello = wire.HelloEnd(b)
        request_id = self._send(b, wire.Body.Hello, hello)
        message = self._read_reply(request_id)
        if message.BodyType() == wire.Body.Reply:
            self._raise_if_error(_as(wire.Reply, message.Body()))
        if message.BodyType() != wire.Body.HelloReply:
            raise ProtocolError("expected a HelloReply, got "
                                + _BODY_NAMES.get(message.BodyType(), "?"))
        r = _as(wire.HelloReply, message.Body())
        return HelloReply(
            version=r.Version(), server_name=_text(r.ServerName()),
            role=_ROLE_NAMES.get(r.Role(), "?"),
            max_frame_bytes=r.MaxFrameBytes(),
            max_batch_ops=r.MaxBatchOps(), max_in_flight=r.MaxInFlight())

    def _call(self, op_type: int, build_op):
        """Sends one ``Request`` whose operation ``build_op(builder)``
        builds; returns the reply's (``ReplyBody`` type, table), or raises
        ``PromisedError`` for an ``Error`` reply."""
        b = flatbuffers.Builder(256)
        op = build_op(b)
        wire.RequestStart(b)
        wire.RequestAddOpType(b, op_type)
        wire.RequestAddOp(b, op)
        request = wire.RequestEnd(b)
        request_id = self._send(b, wire.Body.Request, request)
        message = self._read_reply(request_id)
        if message.BodyType() != wire.Body.Reply:
            raise ProtocolError("expected a Reply, got "
                                + _BODY_NAMES.get(message.BodyType(), "?"))
        reply = _as(wire.Reply, message.Body())
        self._raise_if_error(reply)
        return reply.ResultType(), reply.Result()

    def _send(self, b, body_type: int, body) -> int:
        """Wraps ``body`` in a ``Message`` with the next request id, frames
        it (u32 little-endian length, then the message) and sends it."""
        request_id = self._next_request_id
        self._next_request_id += 1
        wire.MessageStart(b)
        wire.MessageAddRequestId(b, request_id)
        wire.MessageAddBodyType(b, body_type)
        wire.MessageAddBody(b, body)
        b.Finish(wire.MessageEnd(b), file_identifier=FILE_IDENTIFIER)
        data = b.Output()
        if len(data) > self.max_frame_bytes:
            # The server would answer FrameTooLarge and close: say so here.
            raise ValueError(f"the request is {len(data)} bytes, above the "
                             f"{self.max_frame_bytes}-byte frame limit")
        self._sock.sendall(_LENGTH.pack(len(data)) + bytes(data))
        return request_id

    def _read_reply(self, request_id: int):
        """Reads frames until the one answering ``request_id``.

        Events (request id 0, ``EventMessage``) are skipped: this client
        does not subscribe. An ``Error`` with request id 0 is about the
        connection itself (a timeout, a frame the server could not read)
        and is raised."""
        while True:
            message = self._read_message()
            got = message.RequestId()
            if got == request_id:
                return message
            if message.BodyType() == wire.Body.EventMessage:
                continue
            if got == 0 and message.BodyType() == wire.Body.Reply:
                self._raise_if_error(_as(wire.Reply, message.Body()))
            raise ProtocolError(f"got a reply to request {got} while waiting "
                                f"for request {request_id}")

    def _read_message(self):
        (length,) = _LENGTH.unpack(self._read_exactly(_LENGTH.size))
        if length == 0 or length > self.max_frame_bytes:
            raise ProtocolError(f"the server sent a frame of {length} bytes "
                                f"(limit {self.max_frame_bytes})")
        data = self._read_exactly(length)
        if not wire.Message.MessageBufferHasIdentifier(data, 0):
            raise ProtocolError("the server sent a message without the "
                                "PRMD file identifier")
        return wire.Message.GetRootAs(data, 0)

    def _read_exactly(self, n: int) -> bytearray:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ProtocolError("the server closed the connection")
            buf += chunk
        return buf

    @staticmethod
    def _raise_if_error(reply) -> None:
        if reply.ResultType() == wire.ReplyBody.Error:
            error = _as(wire.Error, reply.Result())
            raise PromisedError(error.Code(), _text(error.Message()) or "")

    def _hold_change(self, what: str, op_type: int, build):
        kind, body = self._call(op_type, build)
        if kind == wire.ReplyBody.HoldChanged:
            c = _as(wire.HoldChanged, body)
            return HoldChanged(_uuid(c.Hold()),
                               _STATE_NAMES.get(c.State(), "?"), c.Repeated())
        if kind == wire.ReplyBody.HoldChangeRefused:
            r = _as(wire.HoldChangeRefused, body)
            return HoldChangeRefused(_uuid(r.Hold()),
                                     _REASON_NAMES.get(r.Reason(), "?"),
                                     r.Repeated())
        raise _unexpected(what, kind)

    def _atp_value(self, what: str, op_type: int, build) -> int:
        kind, body = self._call(op_type, build)
        if kind != wire.ReplyBody.AtpValue:
            raise _unexpected(what, kind)
        return _as(wire.AtpValue, body).Atp()


def _vector(b, start_vector, offsets):
    """A vector of tables: FlatBuffers builds back to front."""
    start_vector(b, len(offsets))
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _line_quantity(b, line: LineQuantity):
    sku, node = b.CreateString(line.sku), b.CreateString(line.node)
    wire.LineQuantityStart(b)
    wire.LineQuantityAddSku(b, sku)
    wire.LineQuantityAddNode(b, node)
    wire.LineQuantityAddQuantity(b, line.quantity)
    return wire.LineQuantityEnd(b)


def _granted_line(line) -> GrantedLine:
    return GrantedLine(sku=_text(line.Sku()), node=_text(line.Node()),
                       requested=line.Requested(), granted=line.Granted(),
                       need_day=line.NeedDay())


def _refusal(line) -> LineRefusal:
    return LineRefusal(line=line.Line(), sku=_text(line.Sku()),
                       node=_text(line.Node()), requested=line.Requested(),
                       available=line.Available(),
                       reason=_REASON_NAMES.get(line.Reason(), "?"))


def _unexpected(what: str, kind: int) -> ProtocolError:
    name = _REPLY_NAMES.get(kind, f"ReplyBody({kind})")
    return ProtocolError(f"unexpected {name} reply to {what}")
