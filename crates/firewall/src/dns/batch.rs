//! Datagrams in and out several at a time: `recvmmsg(2)` and `sendmmsg(2)`.
//!
//! Under load the resolver's socket holds many queries at once; taking them (and sending their
//! answers) in one system call each instead of one per datagram is most of what a query costs
//! beyond its decision. Only the system calls change: every datagram is still decided, rate
//! limited and answered on its own, in the order it arrived.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams taken per receive call (and answers sent per send call).
pub(crate) const BATCH: usize = 32;
/// The largest datagram: a longer one would be cut, then fail to parse.
const DATAGRAM: usize = 65_535;

/// Buffers for one batch of received datagrams, reused for every batch.
#[derive(Debug)]
pub(crate) struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    /// Length and sender of each datagram of the last batch.
    got: Vec<(usize, SocketAddr)>,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        Self {
            bufs: (0..BATCH).map(|_| vec![0u8; DATAGRAM]).collect(),
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Waits for at least one datagram and takes up to [`BATCH`] of those waiting.
    pub(crate) async fn recv(&mut self, sock: &UdpSocket) -> io::Result<()> {
        loop {
            sock.readable().await?;
            match sock.try_io(Interest::READABLE, || self.recv_now(sock)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    fn recv_now(&mut self, sock: &UdpSocket) -> io::Result<()> {
        self.got.clear();
        // Made per call: its raw pointers would keep the serving future from being `Send`.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
            self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let received = recvmmsg(
            sock.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for msg in received {
            // A datagram without a sender address cannot be answered; skip it.
            if let Some(peer) = msg.address.as_ref().and_then(socket_addr) {
                self.got.push((msg.bytes, peer));
            }
        }
        Ok(())
    }

    /// The datagrams of the last batch, in the order they arrived.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got
            .iter()
            .zip(&self.bufs)
            .map(|(&(len, peer), buf)| (buf.get(..len).unwrap_or_default(), peer))
    }
}

/// Answers gathered while a batch is decided, sent together.
#[derive(Debug, Default)]
pub(crate) struct SendBatch {
    replies: Vec<(Vec<u8>, SocketAddr)>,
}

impl SendBatch {
    pub(crate) fn push(&mut self, reply: Vec<u8>, peer: SocketAddr) {
        self.replies.push((reply, peer));
    }

    /// Sends every gathered answer: as many as the socket takes in one call each round, the
    /// rest waiting for room. A failed send (the client's port unreachable, say) loses only
    /// that answer, as a lost datagram would.
    pub(crate) async fn flush(&mut self, sock: &UdpSocket) {
        let mut start = 0;
        while start < self.replies.len() {
            let rest = self.replies.get(start..).unwrap_or_default();
            let chunk = rest.get(..BATCH).unwrap_or(rest);
            let sent = sock.try_io(Interest::WRITABLE, || send_now(sock, chunk));
            match sent {
                Ok(n) => start += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if sock.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    // sendmmsg stops at the first datagram that fails: drop it and go on.
                    tracing::debug!(error = %e, "DNS UDP send failed");
                    start += 1;
                }
            }
        }
        self.replies.clear();
    }
}

fn send_now(sock: &UdpSocket, chunk: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    use rustix::net::addr::SocketAddrArg;
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
    let addrs: Vec<SocketAddrAny> = chunk.iter().map(|(_, peer)| peer.as_any()).collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(r, _)| [IoSlice::new(r)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = chunk
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    Ok(rustix::net::sendmmsg(sock, &mut msgs, SendFlags::DONTWAIT)?)
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}
