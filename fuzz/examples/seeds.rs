//! Writes the seed corpus for the `frame` fuzz target: a few valid frames, so libFuzzer starts
//! from messages the verifier accepts and mutates inward from there. Each file is a byte stream
//! of one or more frames.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds [DIR]` (default `fuzz/seeds`).

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use promised_schemas::frame::write_frame;
use promised_schemas::{HELLO_MAGIC, wire};

type Body = (wire::Body, WIPOffset<UnionWIPOffset>);

fn frame(request_id: u64, build: impl FnOnce(&mut FlatBufferBuilder<'_>) -> Body) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let (body_type, body) = build(&mut b);
    let msg = wire::Message::create(
        &mut b,
        &wire::MessageArgs {
            request_id,
            body_type,
            body: Some(body),
        },
    );
    wire::finish_message_buffer(&mut b, msg);
    let mut out = Vec::new();
    write_frame(b.finished_data(), &mut out);
    out
}

fn hello(b: &mut FlatBufferBuilder<'_>) -> Body {
    let (name, token) = (b.create_string("seed"), b.create_string("writer-secret"));
    let h = wire::Hello::create(
        b,
        &wire::HelloArgs {
            magic: HELLO_MAGIC,
            min_version: 1,
            max_version: 1,
            client_name: Some(name),
            auth_token: Some(token),
        },
    );
    (wire::Body::Hello, h.as_union_value())
}

/// Operation `i` of a few that carry vectors and strings (and one empty table); `None` past the
/// last.
fn operation(
    b: &mut FlatBufferBuilder<'_>,
    i: usize,
) -> Option<(wire::Operation, WIPOffset<UnionWIPOffset>)> {
    let id = |n| wire::RequestId::new(1, n);
    let (sku, node) = (b.create_string("SKU-1"), b.create_string("DC-1"));
    Some(match i {
        0 => {
            let line = wire::HoldLine::create(
                b,
                &wire::HoldLineArgs {
                    sku: Some(sku),
                    node: Some(node),
                    quantity: 2,
                    need_day: 0,
                },
            );
            let any = wire::HoldLine::create(
                b,
                &wire::HoldLineArgs {
                    sku: Some(sku),
                    node: None,
                    quantity: 1,
                    need_day: 20_000,
                },
            );
            let lines = b.create_vector(&[line, any]);
            let h = wire::Hold::create(
                b,
                &wire::HoldArgs {
                    hold: Some(&id(1)),
                    lines: Some(lines),
                    ttl_ms: 60_000,
                    partial: true,
                },
            );
            (wire::Operation::Hold, h.as_union_value())
        }
        1 => {
            let lq = wire::LineQuantity::create(
                b,
                &wire::LineQuantityArgs {
                    sku: Some(sku),
                    node: Some(node),
                    quantity: 1,
                },
            );
            let lqs = b.create_vector(&[lq]);
            let r = wire::Release::create(
                b,
                &wire::ReleaseArgs {
                    request: Some(&id(2)),
                    hold: Some(&id(1)),
                    lines: Some(lqs),
                },
            );
            (wire::Operation::Release, r.as_union_value())
        }
        2 => {
            let c = wire::Commit::create(
                b,
                &wire::CommitArgs {
                    request: Some(&id(3)),
                    hold: Some(&id(1)),
                },
            );
            (wire::Operation::Commit, c.as_union_value())
        }
        3 => {
            let count = wire::SkuCount::create(
                b,
                &wire::SkuCountArgs {
                    sku: Some(sku),
                    on_hand: 100,
                },
            );
            let counts = b.create_vector(&[count]);
            let f = wire::SetOnHand::create(
                b,
                &wire::SetOnHandArgs {
                    request: Some(&id(4)),
                    node: Some(node),
                    feed_seq: 1,
                    counts: Some(counts),
                },
            );
            (wire::Operation::SetOnHand, f.as_union_value())
        }
        4 => {
            let reference = b.create_string("PO-1");
            let a = wire::AddInbound::create(
                b,
                &wire::AddInboundArgs {
                    request: Some(&id(5)),
                    sku: Some(sku),
                    node: Some(node),
                    reference: Some(reference),
                    quantity: 10,
                    arrival_day: 20_001,
                },
            );
            (wire::Operation::AddInbound, a.as_union_value())
        }
        5 => {
            let holidays = b.create_vector(&[20_002u32, 20_003]);
            let n = wire::UpsertNode::create(
                b,
                &wire::UpsertNodeArgs {
                    name: Some(node),
                    holidays: Some(holidays),
                    weekdays: 31,
                    cost_factor_milli: 1000,
                    ..Default::default()
                },
            );
            (wire::Operation::UpsertNode, n.as_union_value())
        }
        6 => {
            let q = wire::Atp::create(
                b,
                &wire::AtpArgs {
                    sku: Some(sku),
                    node: Some(node),
                    day: 0,
                },
            );
            (wire::Operation::Atp, q.as_union_value())
        }
        7 => {
            let skus = b.create_vector(&[sku]);
            let s = wire::Subscribe::create(
                b,
                &wire::SubscribeArgs {
                    skus: Some(skus),
                    nodes: None,
                    threshold: 5,
                },
            );
            (wire::Operation::Subscribe, s.as_union_value())
        }
        8 => {
            let d = wire::StateDigest::create(b, &wire::StateDigestArgs {});
            (wire::Operation::StateDigest, d.as_union_value())
        }
        _ => return None,
    })
}

fn request(b: &mut FlatBufferBuilder<'_>, op: (wire::Operation, WIPOffset<UnionWIPOffset>)) -> Body {
    let r = wire::Request::create(
        b,
        &wire::RequestArgs {
            op_type: op.0,
            op: Some(op.1),
        },
    );
    (wire::Body::Request, r.as_union_value())
}

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/seeds".into()));
    std::fs::create_dir_all(&dir)?;
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes);

    write("hello", &frame(1, hello))?;
    // A session: the Hello, then each operation as its own request.
    let mut session = frame(1, hello);
    let ops = (0..).take_while(|&i| operation(&mut FlatBufferBuilder::new(), i).is_some());
    for i in ops {
        session.extend(frame(10 + i as u64, |b| {
            let op = operation(b, i).expect("operation i");
            request(b, op)
        }));
    }
    write("session", &session)?;
    // Every operation in one batch.
    write(
        "batch",
        &frame(2, |b| {
            let mut requests = Vec::new();
            while let Some(op) = operation(b, requests.len()) {
                let r = wire::Request::create(
                    b,
                    &wire::RequestArgs {
                        op_type: op.0,
                        op: Some(op.1),
                    },
                );
                requests.push(r);
            }
            let requests = b.create_vector(&requests);
            let batch = wire::Batch::create(
                b,
                &wire::BatchArgs {
                    requests: Some(requests),
                },
            );
            (wire::Body::Batch, batch.as_union_value())
        }),
    )?;
    // What a server sends: a HelloReply, a granted hold, an error, in a batch reply, an event.
    let mut replies = frame(1, |b| {
        let name = b.create_string("promised");
        let r = wire::HelloReply::create(
            b,
            &wire::HelloReplyArgs {
                version: 1,
                server_name: Some(name),
                role: wire::Role::Write,
                max_frame_bytes: 1 << 20,
                max_batch_ops: 10_000,
                max_in_flight: 1024,
            },
        );
        (wire::Body::HelloReply, r.as_union_value())
    });
    replies.extend(frame(3, |b| {
        let (sku, node) = (b.create_string("SKU-1"), b.create_string("DC-1"));
        let line = wire::GrantedLine::create(
            b,
            &wire::GrantedLineArgs {
                sku: Some(sku),
                node: Some(node),
                requested: 2,
                granted: 2,
                need_day: 20_000,
            },
        );
        let lines = b.create_vector(&[line]);
        let g = wire::HoldGranted::create(
            b,
            &wire::HoldGrantedArgs {
                hold: Some(&wire::RequestId::new(1, 1)),
                expires_at_ms: 1,
                lines: Some(lines),
                repeated: false,
            },
        );
        let message = b.create_string("unknown SKU \"X\"");
        let e = wire::Error::create(
            b,
            &wire::ErrorArgs {
                code: wire::ErrorCode::UnknownSku,
                message: Some(message),
            },
        );
        let replies = [
            wire::Reply::create(
                b,
                &wire::ReplyArgs {
                    result_type: wire::ReplyBody::HoldGranted,
                    result: Some(g.as_union_value()),
                },
            ),
            wire::Reply::create(
                b,
                &wire::ReplyArgs {
                    result_type: wire::ReplyBody::Error,
                    result: Some(e.as_union_value()),
                },
            ),
        ];
        let replies = b.create_vector(&replies);
        let br = wire::BatchReply::create(
            b,
            &wire::BatchReplyArgs {
                replies: Some(replies),
            },
        );
        (wire::Body::BatchReply, br.as_union_value())
    }));
    replies.extend(frame(0, |b| {
        let (sku, node) = (b.create_string("SKU-1"), b.create_string("DC-1"));
        let low = wire::LowStock::create(
            b,
            &wire::LowStockArgs {
                sku: Some(sku),
                node: Some(node),
                atp: 3,
                threshold: 5,
                at_ms: 1,
            },
        );
        let e = wire::EventMessage::create(
            b,
            &wire::EventMessageArgs {
                event_type: wire::Event::LowStock,
                event: Some(low.as_union_value()),
            },
        );
        (wire::Body::EventMessage, e.as_union_value())
    }));
    write("replies", &replies)?;
    Ok(())
}
