//! The few protocol pieces the loopback measurement binaries share: reading one frame, and a
//! connection past its handshake. Deliberately raw (no client library) so that
//! the measurements see the server, not a client's overhead.

use std::io::{Read, Write};
use std::net::TcpStream;

use promised_schemas::frame;

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
    sock.write_all(&frame::hello_frame(client_name, token))?;
    let reply = read_frame(&mut sock)?;
    Ok((sock, reply))
}
