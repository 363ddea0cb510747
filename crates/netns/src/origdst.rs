//! The destination a sandbox meant before the nftables redirect sent its connection to the proxy.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};

use nix::sys::socket::{getsockopt, sockopt::OriginalDst};

/// `SO_ORIGINAL_DST` of an accepted, redirected IPv4 connection. On a connection that was not
/// NATed the kernel reports the local address; on one it has no conntrack entry for it fails
/// (`ENOENT`).
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddrV4> {
    let sin = getsockopt(stream, OriginalDst).map_err(std::io::Error::from)?;
    // Both fields are in network byte order.
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}
