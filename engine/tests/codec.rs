//! The command encoding: every command survives a round trip bit for bit, and no byte string,
//! however damaged, makes the decoder panic or allocate beyond the limits.

use promised_engine::codec::{self, DecodeError};
use promised_engine::network::{Calendar, DailyCapacity, Lane, Location, ServiceLevel, ZoneSpec};
use promised_engine::{
    AdjustReason, Capabilities, Command, Day, HoldLineRequest, LineQuantity, NodeChoice, NodeId, NodeKind,
    NodeSpec, NodeStatus, Quantity, RequestId, ShipSlot, SkuId, ZoneId,
};
use proptest::prelude::*;

fn request() -> impl Strategy<Value = RequestId> {
    any::<u128>().prop_map(RequestId)
}
fn sku() -> impl Strategy<Value = SkuId> {
    any::<u32>().prop_map(SkuId::from_raw)
}
fn node() -> impl Strategy<Value = NodeId> {
    (0..u32::MAX).prop_map(NodeId::from_raw)
}
fn quantity() -> impl Strategy<Value = Quantity> {
    (1..=(1i64 << 31)).prop_map(|q| Quantity::new(q).unwrap())
}
fn name() -> impl Strategy<Value = String> {
    "[!-~]{1,64}"
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        name(),
        0..4usize,
        0..3u8,
        (any::<f32>(), any::<f32>(), any::<u32>()),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (any::<u8>(), any::<u16>(), any::<i16>(), any::<u8>()),
        prop::collection::vec(any::<u32>(), 0..5),
        any::<u32>(),
    )
        .prop_map(
            |(name, kind, status, (lat, lon, zone), (caps, orders, units), (p, cut, off, wd), hol, cost)| {
                NodeSpec {
                    name,
                    kind: NodeKind::ALL[kind],
                    status: [NodeStatus::Open, NodeStatus::Paused, NodeStatus::Closed][status as usize],
                    location: Location {
                        lat,
                        lon,
                        zone: ZoneId(zone),
                    },
                    capabilities: Capabilities(caps),
                    capacity: DailyCapacity { orders, units },
                    processing_days: p,
                    cutoff_minute: cut,
                    utc_offset_minutes: off,
                    calendar: Calendar {
                        weekdays: wd,
                        holidays: hol.into_iter().map(Day).collect(),
                    },
                    cost_factor_milli: cost,
                }
            },
        )
}

fn hold_line() -> impl Strategy<Value = HoldLineRequest> {
    (
        sku(),
        prop::option::of(node()),
        quantity(),
        prop::option::of(0..u32::MAX),
    )
        .prop_map(|(sku, n, quantity, d)| HoldLineRequest {
            sku,
            node: n.map_or(NodeChoice::Any, NodeChoice::Node),
            quantity,
            need_day: d.map(Day),
        })
}

fn line_quantity() -> impl Strategy<Value = LineQuantity> {
    (sku(), node(), quantity()).prop_map(|(sku, node, quantity)| LineQuantity { sku, node, quantity })
}

fn command() -> impl Strategy<Value = Command> {
    let reason = prop::sample::select(vec![
        AdjustReason::CycleCount,
        AdjustReason::Damage,
        AdjustReason::Shrink,
        AdjustReason::Found,
        AdjustReason::Correction,
    ]);
    prop_oneof![
        node_spec().prop_map(Command::UpsertNode),
        (name(), any::<u32>()).prop_map(|(name, c)| Command::UpsertSku {
            name,
            required: Capabilities(c)
        }),
        (
            request(),
            node(),
            any::<u64>(),
            prop::collection::vec((sku(), any::<u32>()), 0..20)
        )
            .prop_map(|(request, node, feed_seq, counts)| Command::SetOnHand {
                request,
                node,
                feed_seq,
                counts
            }),
        (request(), sku(), node(), any::<i64>(), reason).prop_map(|(request, sku, node, delta, reason)| {
            Command::AdjustOnHand {
                request,
                sku,
                node,
                delta,
                reason,
            }
        }),
        (request(), sku(), node(), any::<u32>()).prop_map(|(request, sku, node, quantity)| {
            Command::SetSafetyStock {
                request,
                sku,
                node,
                quantity,
            }
        }),
        (request(), sku(), node(), name(), quantity(), any::<u32>()).prop_map(
            |(request, sku, node, reference, quantity, a)| Command::AddInbound {
                request,
                sku,
                node,
                reference,
                quantity,
                arrival: Day(a)
            }
        ),
        (request(), sku(), node(), name()).prop_map(|(request, sku, node, reference)| {
            Command::ReceiveInbound {
                request,
                sku,
                node,
                reference,
            }
        }),
        (request(), sku(), node(), name()).prop_map(|(request, sku, node, reference)| {
            Command::CancelInbound {
                request,
                sku,
                node,
                reference,
            }
        }),
        (request(), sku(), node(), quantity()).prop_map(|(request, sku, node, quantity)| Command::Return {
            request,
            sku,
            node,
            quantity
        }),
        (
            request(),
            prop::collection::vec(hold_line(), 0..12),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(hold, lines, ttl_ms, partial)| Command::Hold {
                hold,
                lines,
                ttl_ms,
                partial
            }),
        (
            request(),
            prop::collection::vec(hold_line(), 0..12),
            prop::collection::vec((node(), any::<u32>()), 0..12)
        )
            .prop_map(|(order, lines, packages)| Command::RouteOrder {
                order,
                destination: promised_engine::promise::Destination {
                    zone: ZoneId(packages.len() as u32),
                    point: (packages.len() % 2 == 0).then_some((12.5, -70.25))
                },
                promised: Day(lines.len() as u32 * 7),
                level: [ServiceLevel::Ground, ServiceLevel::TwoDay, ServiceLevel::NextDay]
                    [packages.len() % 3],
                lines,
                packages: packages
                    .into_iter()
                    .map(|(node, d)| ShipSlot { node, day: Day(d) })
                    .collect()
            }),
        (
            request(),
            prop::collection::vec(
                (
                    request(),
                    prop::collection::vec(node(), 0..4),
                    prop::collection::vec((node(), any::<u32>()), 0..4)
                ),
                0..5
            ),
            any::<bool>()
        )
            .prop_map(|(request, moves, partial)| Command::Reroute {
                request,
                partial,
                moves: moves
                    .into_iter()
                    .map(
                        |(order, line_nodes, packages)| promised_engine::reroute::RerouteMove {
                            order,
                            line_nodes,
                            packages: packages
                                .into_iter()
                                .map(|(node, d)| ShipSlot { node, day: Day(d) })
                                .collect(),
                        }
                    )
                    .collect()
            }),
        (request(), request()).prop_map(|(request, hold)| Command::Commit { request, hold }),
        (request(), request(), prop::collection::vec(line_quantity(), 0..6))
            .prop_map(|(request, hold, lines)| Command::Release { request, hold, lines }),
        (request(), request()).prop_map(|(request, hold)| Command::CancelAllocation { request, hold }),
        (request(), request(), prop::collection::vec(line_quantity(), 0..6))
            .prop_map(|(request, hold, lines)| Command::Ship { request, hold, lines }),
        Just(Command::Tick),
        (any::<u32>(), -90.0f32..90.0, -180.0f32..180.0).prop_map(|(z, lat, lon)| {
            Command::UpsertZone(ZoneSpec {
                zone: ZoneId(z),
                lat,
                lon,
            })
        }),
        (
            node(),
            any::<u32>(),
            0usize..3,
            any::<u8>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(node, zone, level, transit_days, package, unit)| {
                Command::UpsertLane(Lane {
                    node,
                    zone: ZoneId(zone),
                    level: ServiceLevel::ALL[level],
                    transit_days,
                    cost_per_package_cents: package,
                    cost_per_unit_cents: unit,
                })
            }),
    ]
}

/// `f32` NaNs compare unequal; compare node specs by their encoding-relevant bits instead.
fn same(a: &Command, b: &Command) -> bool {
    match (a, b) {
        (Command::UpsertNode(x), Command::UpsertNode(y)) => {
            let bits = |s: &NodeSpec| (s.location.lat.to_bits(), s.location.lon.to_bits());
            let strip = |s: &NodeSpec| NodeSpec {
                location: Location {
                    lat: 0.0,
                    lon: 0.0,
                    zone: s.location.zone,
                },
                ..s.clone()
            };
            bits(x) == bits(y) && strip(x) == strip(y)
        }
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_command_round_trips(cmd in command()) {
        let mut bytes = Vec::new();
        codec::encode(&cmd, &mut bytes);
        let back = codec::decode(&bytes).unwrap();
        prop_assert!(same(&cmd, &back), "{cmd:?} came back as {back:?}");
    }

    #[test]
    fn every_strict_prefix_is_refused(cmd in command(), cut in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        codec::encode(&cmd, &mut bytes);
        let cut = cut.index(bytes.len());
        prop_assert!(codec::decode(&bytes[..cut]).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused(cmd in command(), extra in prop::collection::vec(any::<u8>(), 1..8)) {
        let mut bytes = Vec::new();
        codec::encode(&cmd, &mut bytes);
        let len = bytes.len();
        bytes.extend(extra);
        let is_trailing = matches!(codec::decode(&bytes), Err(DecodeError::TrailingBytes { at, .. }) if at == len);
        prop_assert!(is_trailing);
    }

    /// Random bytes and single-byte corruptions of real encodings: an answer, never a panic.
    #[test]
    fn damaged_bytes_never_panic(cmd in command(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), noise in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = Vec::new();
        codec::encode(&cmd, &mut bytes);
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        let _ = codec::decode(&bytes);
        let _ = codec::decode(&noise);
    }
}

#[test]
fn forged_lengths_are_refused_before_allocating() {
    let mut bytes = vec![codec::CODEC_VERSION, 3];
    bytes.extend_from_slice(&[0; 16]); // request
    bytes.extend_from_slice(&0u32.to_le_bytes()); // node
    bytes.extend_from_slice(&1u64.to_le_bytes()); // feed seq
    bytes.extend_from_slice(&u32::MAX.to_le_bytes()); // counts: 4 billion
    assert!(matches!(
        codec::decode(&bytes),
        Err(DecodeError::TooLong { field: "counts", .. })
    ));
    let n = 10_000u32;
    let at = bytes.len() - 4;
    bytes[at..].copy_from_slice(&n.to_le_bytes()); // allowed, but the bytes are not there
    assert!(matches!(
        codec::decode(&bytes),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn version_and_kind_are_checked() {
    assert_eq!(
        codec::decode(&[9, 15]),
        Err(DecodeError::UnknownVersion { version: 9 })
    );
    assert_eq!(
        codec::decode(&[codec::CODEC_VERSION, 99]),
        Err(DecodeError::UnknownKind { at: 1, kind: 99 })
    );
    assert_eq!(codec::decode(&[codec::CODEC_VERSION, 15]), Ok(Command::Tick));
    assert!(matches!(
        codec::decode(&[]),
        Err(DecodeError::Truncated { at: 0, .. })
    ));
}

/// A real history (the `small` data set loaded, then holds, commits, releases and a tick), logged
/// as encoded bytes, decodes and replays into a fresh engine with the same state digest.
#[test]
fn an_encoded_history_replays_to_the_same_state() {
    use std::sync::{Arc, Mutex};

    use promised_engine::dataset::{DataSet, DataSetSpec};
    use promised_engine::{CommandLog, Engine, EngineConfig, Timestamp};

    #[derive(Default)]
    struct BytesLog(Mutex<Vec<(u64, Timestamp, Vec<u8>)>>);
    impl CommandLog for BytesLog {
        fn append(&self, seq: u64, now: Timestamp, command: &Command) {
            let mut bytes = Vec::new();
            codec::encode(command, &mut bytes);
            self.0.lock().unwrap().push((seq, now, bytes));
        }
    }

    let log = Arc::new(BytesLog::default());
    let engine = Engine::with_log(EngineConfig::default(), Some(log.clone()));
    let ds = DataSet::generate(&DataSetSpec::small());
    let now = ds.spec.start_day.start();
    ds.load(&engine, now).unwrap();
    for i in 0..200u32 {
        let sku = engine.sku_id(&ds.skus[(i % 50) as usize].name).unwrap();
        let hold = RequestId(u128::from(i) + (1 << 100));
        let line = HoldLineRequest {
            sku,
            node: NodeChoice::Any,
            quantity: Quantity::new(1).unwrap(),
            need_day: None,
        };
        engine
            .apply(
                now,
                &Command::Hold {
                    hold,
                    lines: vec![line],
                    ttl_ms: 60_000,
                    partial: false,
                },
            )
            .unwrap();
        let request = RequestId(hold.0 + (1 << 90));
        let next = match i % 3 {
            0 => Command::Commit { request, hold },
            1 => Command::Release {
                request,
                hold,
                lines: vec![],
            },
            _ => continue,
        };
        engine.apply(now, &next).unwrap();
    }
    engine.apply(Timestamp(now.0 + 120_000), &Command::Tick).unwrap();

    let replica = Engine::new(EngineConfig::default());
    let records = log.0.lock().unwrap();
    for (i, (seq, at, bytes)) in records.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        replica.apply(*at, &codec::decode(bytes).unwrap()).unwrap();
    }
    assert_eq!(replica.state_digest(), engine.state_digest());
}
