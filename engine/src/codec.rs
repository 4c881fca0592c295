//! The stable binary encoding of commands (version 1): what the write-ahead log will store and a
//! replica will replay, so it must outlive any in-memory layout.
//!
//! Layout (all integers little-endian, documented in `docs/design.md`): a version byte, a kind
//! byte, then the command's fields in declaration order. Strings and lists carry a length prefix
//! (`u16` for strings, `u32` for lists), checked against the engine's limits before anything is
//! allocated. Decoding never panics and never trusts a length: any byte string either decodes to
//! exactly one command, consuming every byte, or is refused with the offset and the reason.
//! Decoding checks shape only (ranges of enums, quantities, sizes); `Engine::apply` still checks
//! meaning (ids exist, names are valid), as for any other command.

use crate::capacity::ShipSlot;
use crate::command::{AdjustReason, Command, HoldLineRequest, LineQuantity, NodeChoice};
use crate::ids::{Day, NodeId, Quantity, RequestId, SkuId, ZoneId};
use crate::limits;
use crate::network::{Calendar, Capabilities, DailyCapacity, Location, NodeKind, NodeSpec, NodeStatus};

/// The only encoding version so far.
pub const CODEC_VERSION: u8 = 1;

/// Holidays in one node calendar: ten years of public holidays.
pub const HOLIDAYS_MAX: usize = 366;

/// Why bytes are not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("truncated at byte {at}: {field} needs more bytes")]
    Truncated { at: usize, field: &'static str },
    #[error("unknown command encoding version {version} (this build reads {CODEC_VERSION})")]
    UnknownVersion { version: u8 },
    #[error("unknown command kind {kind} at byte {at}")]
    UnknownKind { at: usize, kind: u8 },
    #[error("invalid {field} at byte {at}")]
    InvalidValue { at: usize, field: &'static str },
    #[error("{field} at byte {at} has {len} entries; at most {max} are allowed")]
    TooLong {
        at: usize,
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{extra} unexpected bytes after the command, from byte {at}")]
    TrailingBytes { at: usize, extra: usize },
}

mod kind {
    pub const UPSERT_NODE: u8 = 1;
    pub const UPSERT_SKU: u8 = 2;
    pub const SET_ON_HAND: u8 = 3;
    pub const ADJUST_ON_HAND: u8 = 4;
    pub const SET_SAFETY_STOCK: u8 = 5;
    pub const ADD_INBOUND: u8 = 6;
    pub const RECEIVE_INBOUND: u8 = 7;
    pub const CANCEL_INBOUND: u8 = 8;
    pub const RETURN: u8 = 9;
    pub const HOLD: u8 = 10;
    pub const COMMIT: u8 = 11;
    pub const RELEASE: u8 = 12;
    pub const CANCEL_ALLOCATION: u8 = 13;
    pub const SHIP: u8 = 14;
    pub const TICK: u8 = 15;
    pub const UPSERT_ZONE: u8 = 16;
    pub const UPSERT_LANE: u8 = 17;
    pub const ROUTE_ORDER: u8 = 18;
    pub const REROUTE: u8 = 19;
}

/// Appends the encoding of `command` to `out`.
pub fn encode(command: &Command, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.u8(CODEC_VERSION);
    match command {
        Command::UpsertNode(spec) => {
            w.u8(kind::UPSERT_NODE);
            w.str(&spec.name);
            w.u8(spec.kind as u8);
            w.u8(spec.status as u8);
            w.u32(spec.location.lat.to_bits());
            w.u32(spec.location.lon.to_bits());
            w.u32(spec.location.zone.0);
            w.u32(spec.capabilities.0);
            w.u32(spec.capacity.orders);
            w.u32(spec.capacity.units);
            w.u8(spec.processing_days);
            w.u16(spec.cutoff_minute);
            w.u16(spec.utc_offset_minutes as u16);
            w.u8(spec.calendar.weekdays);
            w.len(spec.calendar.holidays.len());
            for day in &spec.calendar.holidays {
                w.u32(day.0);
            }
            w.u32(spec.cost_factor_milli);
        }
        Command::UpsertSku { name, required } => {
            w.u8(kind::UPSERT_SKU);
            w.str(name);
            w.u32(required.0);
        }
        Command::SetOnHand {
            request,
            node,
            feed_seq,
            counts,
        } => {
            w.u8(kind::SET_ON_HAND);
            w.request(*request);
            w.u32(node.raw());
            w.u64(*feed_seq);
            w.len(counts.len());
            for (sku, quantity) in counts {
                w.u32(sku.raw());
                w.u32(*quantity);
            }
        }
        Command::AdjustOnHand {
            request,
            sku,
            node,
            delta,
            reason,
        } => {
            w.u8(kind::ADJUST_ON_HAND);
            w.request(*request);
            w.u32(sku.raw());
            w.u32(node.raw());
            w.u64(*delta as u64);
            w.u8(*reason as u8);
        }
        Command::SetSafetyStock {
            request,
            sku,
            node,
            quantity,
        } => {
            w.u8(kind::SET_SAFETY_STOCK);
            w.request(*request);
            w.u32(sku.raw());
            w.u32(node.raw());
            w.u32(*quantity);
        }
        Command::AddInbound {
            request,
            sku,
            node,
            reference,
            quantity,
            arrival,
        } => {
            w.u8(kind::ADD_INBOUND);
            w.request(*request);
            w.u32(sku.raw());
            w.u32(node.raw());
            w.str(reference);
            w.u32(quantity.get());
            w.u32(arrival.0);
        }
        Command::ReceiveInbound {
            request,
            sku,
            node,
            reference,
        }
        | Command::CancelInbound {
            request,
            sku,
            node,
            reference,
        } => {
            let tag = if matches!(command, Command::ReceiveInbound { .. }) {
                kind::RECEIVE_INBOUND
            } else {
                kind::CANCEL_INBOUND
            };
            w.u8(tag);
            w.request(*request);
            w.u32(sku.raw());
            w.u32(node.raw());
            w.str(reference);
        }
        Command::Return {
            request,
            sku,
            node,
            quantity,
        } => {
            w.u8(kind::RETURN);
            w.request(*request);
            w.u32(sku.raw());
            w.u32(node.raw());
            w.u32(quantity.get());
        }
        Command::Hold {
            hold,
            lines,
            ttl_ms,
            partial,
        } => {
            w.u8(kind::HOLD);
            w.request(*hold);
            w.u64(*ttl_ms);
            w.u8(u8::from(*partial));
            hold_lines(&mut w, lines);
        }
        Command::RouteOrder {
            order,
            lines,
            packages,
            destination,
            promised,
            level,
        } => {
            w.u8(kind::ROUTE_ORDER);
            w.request(*order);
            hold_lines(&mut w, lines);
            w.len(packages.len());
            for p in packages {
                w.u32(p.node.raw());
                w.u32(p.day.0);
            }
            w.u32(destination.zone.0);
            match destination.point {
                Some((lat, lon)) => {
                    w.u8(1);
                    w.u32(lat.to_bits());
                    w.u32(lon.to_bits());
                }
                None => w.u8(0),
            }
            w.u32(promised.0);
            w.u8(*level as u8);
        }
        Command::Reroute {
            request,
            moves,
            partial,
        } => {
            w.u8(kind::REROUTE);
            w.request(*request);
            w.u8(u8::from(*partial));
            w.len(moves.len());
            for m in moves {
                w.request(m.order);
                w.len(m.line_nodes.len());
                for n in &m.line_nodes {
                    w.u32(n.raw());
                }
                w.len(m.packages.len());
                for p in &m.packages {
                    w.u32(p.node.raw());
                    w.u32(p.day.0);
                }
            }
        }
        Command::Commit { request, hold } | Command::CancelAllocation { request, hold } => {
            let tag = if matches!(command, Command::Commit { .. }) {
                kind::COMMIT
            } else {
                kind::CANCEL_ALLOCATION
            };
            w.u8(tag);
            w.request(*request);
            w.request(*hold);
        }
        Command::Release { request, hold, lines } | Command::Ship { request, hold, lines } => {
            let tag = if matches!(command, Command::Release { .. }) {
                kind::RELEASE
            } else {
                kind::SHIP
            };
            w.u8(tag);
            w.request(*request);
            w.request(*hold);
            w.len(lines.len());
            for line in lines {
                w.u32(line.sku.raw());
                w.u32(line.node.raw());
                w.u32(line.quantity.get());
            }
        }
        Command::Tick => w.u8(kind::TICK),
        Command::UpsertZone(z) => {
            w.u8(kind::UPSERT_ZONE);
            w.u32(z.zone.0);
            w.u32(z.lat.to_bits());
            w.u32(z.lon.to_bits());
        }
        Command::UpsertLane(l) => {
            w.u8(kind::UPSERT_LANE);
            w.u32(l.node.raw());
            w.u32(l.zone.0);
            w.u8(l.level as u8);
            w.u8(l.transit_days);
            w.u32(l.cost_per_package_cents);
            w.u32(l.cost_per_unit_cents);
        }
    }
}

/// Decodes exactly one command from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8("version")?;
    if version != CODEC_VERSION {
        return Err(DecodeError::UnknownVersion { version });
    }
    let kind_at = r.at;
    let command = match r.u8("kind")? {
        kind::UPSERT_NODE => {
            let name = r.str("node name")?;
            let kind = r.enum_u8("node kind", |k| NodeKind::ALL.get(usize::from(k)).copied())?;
            let status = r.enum_u8("node status", |s| match s {
                0 => Some(NodeStatus::Open),
                1 => Some(NodeStatus::Paused),
                2 => Some(NodeStatus::Closed),
                _ => None,
            })?;
            let lat = f32::from_bits(r.u32("latitude")?);
            let lon = f32::from_bits(r.u32("longitude")?);
            let zone = ZoneId(r.u32("zone")?);
            let capabilities = Capabilities(r.u32("capabilities")?);
            let capacity = DailyCapacity {
                orders: r.u32("order capacity")?,
                units: r.u32("unit capacity")?,
            };
            let processing_days = r.u8("processing days")?;
            let cutoff_minute = r.u16("cut-off minute")?;
            let utc_offset_minutes = r.u16("UTC offset")? as i16;
            let weekdays = r.u8("weekdays")?;
            let n_holidays = r.len("holidays", HOLIDAYS_MAX, 4)?;
            let mut holidays = Vec::with_capacity(n_holidays);
            for _ in 0..n_holidays {
                holidays.push(Day(r.u32("holiday")?));
            }
            let cost_factor_milli = r.u32("cost factor")?;
            Command::UpsertNode(NodeSpec {
                name,
                kind,
                status,
                location: Location { lat, lon, zone },
                capabilities,
                capacity,
                processing_days,
                cutoff_minute,
                utc_offset_minutes,
                calendar: Calendar { weekdays, holidays },
                cost_factor_milli,
            })
        }
        kind::UPSERT_SKU => Command::UpsertSku {
            name: r.str("SKU name")?,
            required: Capabilities(r.u32("required capabilities")?),
        },
        kind::SET_ON_HAND => {
            let request = r.request()?;
            let node = r.node()?;
            let feed_seq = r.u64("feed sequence")?;
            let n = r.len("counts", limits::FEED_LINES_MAX, 8)?;
            let mut counts = Vec::with_capacity(n);
            for _ in 0..n {
                counts.push((r.sku()?, r.u32("on-hand count")?));
            }
            Command::SetOnHand {
                request,
                node,
                feed_seq,
                counts,
            }
        }
        kind::ADJUST_ON_HAND => Command::AdjustOnHand {
            request: r.request()?,
            sku: r.sku()?,
            node: r.node()?,
            delta: r.u64("delta")? as i64,
            reason: r.enum_u8("adjust reason", |x| match x {
                0 => Some(AdjustReason::CycleCount),
                1 => Some(AdjustReason::Damage),
                2 => Some(AdjustReason::Shrink),
                3 => Some(AdjustReason::Found),
                4 => Some(AdjustReason::Correction),
                _ => None,
            })?,
        },
        kind::SET_SAFETY_STOCK => Command::SetSafetyStock {
            request: r.request()?,
            sku: r.sku()?,
            node: r.node()?,
            quantity: r.u32("safety stock")?,
        },
        kind::ADD_INBOUND => Command::AddInbound {
            request: r.request()?,
            sku: r.sku()?,
            node: r.node()?,
            reference: r.str("lot reference")?,
            quantity: r.quantity()?,
            arrival: Day(r.u32("arrival day")?),
        },
        kind::RECEIVE_INBOUND => Command::ReceiveInbound {
            request: r.request()?,
            sku: r.sku()?,
            node: r.node()?,
            reference: r.str("lot reference")?,
        },
        kind::CANCEL_INBOUND => Command::CancelInbound {
            request: r.request()?,
            sku: r.sku()?,
            node: r.node()?,
            reference: r.str("lot reference")?,
        },
        kind::RETURN => Command::Return {
            request: r.request()?,
            sku: r.sku()?,
            node: r.node()?,
            quantity: r.quantity()?,
        },
        kind::HOLD => {
            let hold = r.request()?;
            let ttl_ms = r.u64("time-to-live")?;
            let partial = r.bool("partial flag")?;
            let lines = read_hold_lines(&mut r)?;
            Command::Hold {
                hold,
                lines,
                ttl_ms,
                partial,
            }
        }
        kind::REROUTE => {
            let request = r.request()?;
            let partial = r.bool("partial flag")?;
            // A move is at least its id and two list lengths.
            let n = r.len("moves", limits::REROUTE_MOVES_MAX, 24)?;
            let mut moves = Vec::with_capacity(n);
            for _ in 0..n {
                let order = r.request()?;
                let k = r.len("line nodes", limits::HOLD_LINES_MAX, 4)?;
                let line_nodes = (0..k).map(|_| r.node()).collect::<Result<_, _>>()?;
                let k = r.len("packages", limits::HOLD_LINES_MAX, 8)?;
                let mut packages = Vec::with_capacity(k);
                for _ in 0..k {
                    packages.push(ShipSlot {
                        node: r.node()?,
                        day: Day(r.u32("ship day")?),
                    });
                }
                moves.push(crate::reroute::RerouteMove {
                    order,
                    line_nodes,
                    packages,
                });
            }
            Command::Reroute {
                request,
                moves,
                partial,
            }
        }
        kind::ROUTE_ORDER => {
            let order = r.request()?;
            let lines = read_hold_lines(&mut r)?;
            let n = r.len("packages", limits::HOLD_LINES_MAX, 8)?;
            let mut packages = Vec::with_capacity(n);
            for _ in 0..n {
                packages.push(ShipSlot {
                    node: r.node()?,
                    day: Day(r.u32("ship day")?),
                });
            }
            let zone = ZoneId(r.u32("destination zone")?);
            let point = if r.bool("destination point flag")? {
                Some((
                    f32::from_bits(r.u32("latitude")?),
                    f32::from_bits(r.u32("longitude")?),
                ))
            } else {
                None
            };
            Command::RouteOrder {
                order,
                lines,
                packages,
                destination: crate::promise::Destination { zone, point },
                promised: Day(r.u32("promised day")?),
                level: r.level()?,
            }
        }
        kind::COMMIT => Command::Commit {
            request: r.request()?,
            hold: r.request()?,
        },
        kind::CANCEL_ALLOCATION => Command::CancelAllocation {
            request: r.request()?,
            hold: r.request()?,
        },
        tag @ (kind::RELEASE | kind::SHIP) => {
            let request = r.request()?;
            let hold = r.request()?;
            let n = r.len("lines", limits::CHANGE_LINES_MAX, 12)?;
            let mut lines = Vec::with_capacity(n);
            for _ in 0..n {
                lines.push(LineQuantity {
                    sku: r.sku()?,
                    node: r.node()?,
                    quantity: r.quantity()?,
                });
            }
            if tag == kind::RELEASE {
                Command::Release { request, hold, lines }
            } else {
                Command::Ship { request, hold, lines }
            }
        }
        kind::TICK => Command::Tick,
        kind::UPSERT_ZONE => Command::UpsertZone(crate::network::ZoneSpec {
            zone: crate::ids::ZoneId(r.u32("zone")?),
            lat: f32::from_bits(r.u32("lat")?),
            lon: f32::from_bits(r.u32("lon")?),
        }),
        kind::UPSERT_LANE => {
            let node = r.node()?;
            let zone = crate::ids::ZoneId(r.u32("zone")?);
            let level = r.level()?;
            Command::UpsertLane(crate::network::Lane {
                node,
                zone,
                level,
                transit_days: r.u8("transit days")?,
                cost_per_package_cents: r.u32("cost per package")?,
                cost_per_unit_cents: r.u32("cost per unit")?,
            })
        }
        other => {
            return Err(DecodeError::UnknownKind {
                at: kind_at,
                kind: other,
            });
        }
    };
    if r.at != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            at: r.at,
            extra: bytes.len() - r.at,
        });
    }
    Ok(command)
}

/// The lines of a hold or route order: SKU, node (`u32::MAX`: any), quantity, need day
/// (`u32::MAX`: today).
fn hold_lines(w: &mut Writer<'_>, lines: &[HoldLineRequest]) {
    w.len(lines.len());
    for line in lines {
        w.u32(line.sku.raw());
        w.u32(match line.node {
            NodeChoice::Node(n) => n.raw(),
            NodeChoice::Any => u32::MAX,
        });
        w.u32(line.quantity.get());
        w.u32(line.need_day.map_or(u32::MAX, |d| d.0));
    }
}

fn read_hold_lines(r: &mut Reader<'_>) -> Result<Vec<HoldLineRequest>, DecodeError> {
    let n = r.len("hold lines", limits::HOLD_LINES_MAX, 16)?;
    let mut lines = Vec::with_capacity(n);
    for _ in 0..n {
        let sku = r.sku()?;
        let node = match r.u32("node")? {
            u32::MAX => NodeChoice::Any,
            n => NodeChoice::Node(NodeId::from_raw(n)),
        };
        let quantity = r.quantity()?;
        let need_day = match r.u32("need day")? {
            u32::MAX => None,
            d => Some(Day(d)),
        };
        lines.push(HoldLineRequest {
            sku,
            node,
            quantity,
            need_day,
        });
    }
    Ok(lines)
}

pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, x: u8) {
        self.0.push(x);
    }
    pub(crate) fn u16(&mut self, x: u16) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    pub(crate) fn request(&mut self, id: RequestId) {
        self.0.extend_from_slice(&id.0.to_le_bytes());
    }
    pub(crate) fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("list lengths are bounded by the engine's limits"));
    }
    /// Strings longer than `u16::MAX` bytes are cut: such a name is invalid anyway and is refused
    /// by `apply`, which sees the same (cut) name when the record is replayed.
    pub(crate) fn str(&mut self, s: &str) {
        let mut end = s.len().min(usize::from(u16::MAX));
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
}

pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(DecodeError::Truncated { at: self.at, field });
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N, field)?.try_into().expect("took exactly N bytes"))
    }
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn request(&mut self) -> Result<RequestId, DecodeError> {
        Ok(RequestId(u128::from_le_bytes(self.array("request id")?)))
    }
    pub(crate) fn sku(&mut self) -> Result<SkuId, DecodeError> {
        Ok(SkuId::from_raw(self.u32("SKU id")?))
    }
    pub(crate) fn node(&mut self) -> Result<NodeId, DecodeError> {
        Ok(NodeId::from_raw(self.u32("node id")?))
    }
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let at = self.at;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue { at, field }),
        }
    }
    pub(crate) fn level(&mut self) -> Result<crate::network::ServiceLevel, DecodeError> {
        let at = self.at;
        let raw = self.u8("service level")?;
        crate::network::ServiceLevel::from_u8(raw).ok_or(DecodeError::InvalidValue {
            at,
            field: "service level",
        })
    }
    pub(crate) fn quantity(&mut self) -> Result<Quantity, DecodeError> {
        let at = self.at;
        let q = self.u32("quantity")?;
        Quantity::new(i64::from(q)).map_err(|_| DecodeError::InvalidValue {
            at,
            field: "quantity",
        })
    }
    pub(crate) fn enum_u8<T>(
        &mut self,
        field: &'static str,
        from: impl FnOnce(u8) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let at = self.at;
        let raw = self.u8(field)?;
        from(raw).ok_or(DecodeError::InvalidValue { at, field })
    }
    /// A list length, checked against `max` and against the bytes left (each entry takes at least
    /// `entry_bytes`), so a forged length cannot make the decoder allocate.
    pub(crate) fn len(
        &mut self,
        field: &'static str,
        max: usize,
        entry_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let at = self.at;
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { at, field, len, max });
        }
        if len * entry_bytes > self.bytes.len() - self.at {
            return Err(DecodeError::Truncated { at: self.at, field });
        }
        Ok(len)
    }
    pub(crate) fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let at = self.at;
        let len = usize::from(self.u16(field)?);
        if len > limits::NAME_BYTES_MAX {
            return Err(DecodeError::TooLong {
                at,
                field,
                len,
                max: limits::NAME_BYTES_MAX,
            });
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidValue { at, field })
    }
}
