//! A server that speaks the protocol and does nothing: it grants every hold in full, answers
//! every commit, release and feed as done, every ATP with the same number, and knows no
//! positions or holds. It measures the harness alone (`promised-noop`, then `promised-load
//! --addr` at it), and it is the wrong server that `--verify` must catch.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use promised_schemas::{frame, wire};

type Result = (wire::ReplyBody, WIPOffset<UnionWIPOffset>);

/// Serves `listener` until the process ends: a thread per connection.
pub fn serve(listener: TcpListener) -> std::io::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            let _ = connection(stream);
        });
    }
    Ok(())
}

fn connection(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::with_capacity(1 << 16, stream);
    let mut b = FlatBufferBuilder::with_capacity(1 << 16);
    let mut out = Vec::with_capacity(1 << 16);
    let mut buf = Vec::new();
    let mut greeted = false;
    loop {
        let mut len = [0u8; frame::LENGTH_BYTES];
        if r.read_exact(&mut len).is_err() {
            return Ok(());
        }
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        r.read_exact(&mut buf)?;
        let Ok(message) = frame::parse_message(&buf) else {
            return Ok(());
        };
        let built = if !greeted {
            greeted = true;
            let server_name = b.create_string("promised-noop");
            let hello = wire::HelloReply::create(
                &mut b,
                &wire::HelloReplyArgs {
                    version: promised_schemas::PROTOCOL_VERSION_MAX,
                    server_name: Some(server_name),
                    role: wire::Role::Admin,
                    max_frame_bytes: frame::MAX_FRAME_BYTES_DEFAULT,
                    max_batch_ops: 10_000,
                    max_in_flight: 1_024,
                },
            );
            Some((wire::Body::HelloReply, hello.as_union_value()))
        } else if let Some(req) = message.body_as_request() {
            Some((wire::Body::Reply, reply(&mut b, &req).as_union_value()))
        } else if let Some(batch) = message.body_as_batch() {
            let replies: Vec<_> = batch.requests().iter().map(|req| reply(&mut b, &req)).collect();
            let replies = b.create_vector(&replies);
            let br = wire::BatchReply::create(
                &mut b,
                &wire::BatchReplyArgs {
                    replies: Some(replies),
                },
            );
            Some((wire::Body::BatchReply, br.as_union_value()))
        } else {
            None
        };
        if let Some((body_type, body)) = built {
            out.extend(frame::finish_frame(&mut b, message.request_id(), body_type, body));
        }
        b.reset();
        // Answer everything read so far in one write.
        if r.buffer().len() < frame::LENGTH_BYTES || out.len() > 1 << 20 {
            w.write_all(&out)?;
            out.clear();
        }
    }
}

fn reply<'a>(b: &mut FlatBufferBuilder<'a>, req: &wire::Request<'_>) -> WIPOffset<wire::Reply<'a>> {
    let (result_type, result) = answer(b, req);
    wire::Reply::create(
        b,
        &wire::ReplyArgs {
            result_type,
            result: Some(result),
        },
    )
}

fn answer<'a>(b: &mut FlatBufferBuilder<'a>, req: &wire::Request<'_>) -> Result {
    use wire::Operation as O;
    let changed = |b: &mut FlatBufferBuilder<'a>, hold: Option<&wire::RequestId>, state| {
        let t = wire::HoldChanged::create(
            b,
            &wire::HoldChangedArgs {
                hold,
                state,
                repeated: false,
            },
        );
        (wire::ReplyBody::HoldChanged, t.as_union_value())
    };
    match req.op_type() {
        O::Hold => {
            let h = req.op_as_hold().expect("verified");
            let lines: Vec<_> = h
                .lines()
                .iter()
                .map(|l| {
                    let (sku, node) = (b.create_string(l.sku()), l.node().map(|n| b.create_string(n)));
                    wire::GrantedLine::create(
                        b,
                        &wire::GrantedLineArgs {
                            sku: Some(sku),
                            node,
                            requested: l.quantity(),
                            granted: l.quantity(),
                            need_day: l.need_day(),
                        },
                    )
                })
                .collect();
            let lines = b.create_vector(&lines);
            let g = wire::HoldGranted::create(
                b,
                &wire::HoldGrantedArgs {
                    hold: Some(h.hold()),
                    expires_at_ms: h.ttl_ms(),
                    lines: Some(lines),
                    repeated: false,
                },
            );
            (wire::ReplyBody::HoldGranted, g.as_union_value())
        }
        O::Commit => changed(
            b,
            req.op_as_commit().map(|c| c.hold()),
            wire::HoldState::Committed,
        ),
        O::Release => changed(
            b,
            req.op_as_release().map(|c| c.hold()),
            wire::HoldState::Released,
        ),
        O::CancelAllocation => changed(
            b,
            req.op_as_cancel_allocation().map(|c| c.hold()),
            wire::HoldState::Cancelled,
        ),
        O::Atp => {
            let a = wire::AtpValue::create(b, &wire::AtpValueArgs { atp: 1_000 });
            (wire::ReplyBody::AtpValue, a.as_union_value())
        }
        O::SetOnHand | O::AdjustOnHand => {
            let f = wire::Fed::create(b, &wire::FedArgs { repeated: false });
            (wire::ReplyBody::Fed, f.as_union_value())
        }
        O::GetPosition => {
            let p = wire::PositionValue::create(b, &wire::PositionValueArgs::default());
            (wire::ReplyBody::PositionValue, p.as_union_value())
        }
        O::GetHold => {
            let n = wire::NotFound::create(b, &wire::NotFoundArgs {});
            (wire::ReplyBody::NotFound, n.as_union_value())
        }
        other => {
            let message = b.create_string(&format!(
                "the no-op server does not answer {}",
                other.variant_name().unwrap_or("this operation")
            ));
            let e = wire::Error::create(
                b,
                &wire::ErrorArgs {
                    code: wire::ErrorCode::UnknownOperation,
                    message: Some(message),
                },
            );
            (wire::ReplyBody::Error, e.as_union_value())
        }
    }
}
