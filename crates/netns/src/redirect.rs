//! The other end of the `dstnat` redirect: where a redirected TCP connection was going.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsFd;

/// The destination a connection redirected by the sandbox chain's `dstnat` rule was addressed
/// to (`SO_ORIGINAL_DST`, as conntrack recorded it). IPv4 only: sandboxes have no IPv6.
///
/// # Errors
/// The socket was not redirected (no conntrack entry), or the original address is not IPv4.
pub fn original_dst(socket: &impl AsFd) -> io::Result<SocketAddrV4> {
    let addr = socket2::SockRef::from(socket).original_dst_v4()?;
    addr.as_socket_ipv4().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not IPv4",
        )
    })
}
