//! The few protocol pieces the loopback measurement binaries share: the `Hello` frame, reading
//! one frame, and a connection past its handshake. Deliberately raw (no client library) so that
//! the measurements see the server, not a client's overhead.

use std::io::{Read, Write};
use std::net::TcpStream;

use flatbuffers::FlatBufferBuilder;
use promised_schemas::frame::write_frame;
use promised_schemas::wire;

/// A framed `Hello` (request id 1).
pub fn hello_frame(client_name: &str, token: Option<&str>) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let name = b.create_string(client_name);
    let token = token.map(|t| b.create_string(t));
    let hello = wire::Hello::create(
        &mut b,
        &wire::HelloArgs {
            magic: promised_schemas::HELLO_MAGIC,
            min_version: promised_schemas::PROTOCOL_VERSION_MIN,
            max_version: promised_schemas::PROTOCOL_VERSION_MAX,
            client_name: Some(name),
            auth_token: token,
        },
    );
    let m = wire::Message::create(
        &mut b,
        &wire::MessageArgs {
            request_id: 1,
            body_type: wire::Body::Hello,
            body: Some(hello.as_union_value()),
        },
    );
    wire::finish_message_buffer(&mut b, m);
    let mut out = Vec::new();
    write_frame(b.finished_data(), &mut out);
    out
}

/// The next frame's message bytes.
pub fn read_frame(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// Connects with TCP_NODELAY and completes the handshake; returns the stream and the reply.
pub fn connect(addr: &str, client_name: &str, token: Option<&str>) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    sock.write_all(&hello_frame(client_name, token))?;
    let reply = read_frame(&mut sock)?;
    Ok((sock, reply))
}
