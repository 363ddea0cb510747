//! Reading the first bytes of a connection, bounded in time and size, until they name the
//! destination; and replaying them to whoever reads the connection next.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BufMut;
use palisade_wire::{ClientHello, SniffError, Sniffed, sniff};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The most one read takes while peeking; a ClientHello or request head usually fits.
const PEEK_READ: usize = 4096;

/// What the first bytes said.
#[derive(Debug)]
pub(super) enum Peeked {
    Tls(ClientHello),
    Http,
    /// Neither TLS nor HTTP: a protocol with no name.
    Unknown,
    /// The client sent nothing within the quiet window: perhaps a server-speaks-first protocol.
    Quiet,
    /// The client closed before sending anything.
    Closed,
    /// Looks like TLS or HTTP but breaks the format.
    Malformed(&'static str),
    /// More bytes than the peek limit without a complete hello or head.
    TooLarge,
    /// The bytes stopped coming before they named anything.
    TimedOut,
}

/// Reads until the bytes can be classified. When `quiet` is set (the destination is allowed
/// without a name) and the client goes quiet for that long, the bytes so far are taken as a
/// name-less protocol: `Quiet` when nothing came at all (a server-speaks-first protocol),
/// `Unknown` otherwise. Without it, a client that stops early is denied at `timeout`.
pub(super) async fn peek(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    timeout: Duration,
    quiet: Option<Duration>,
) -> io::Result<Peeked> {
    let deadline = Instant::now() + timeout;
    loop {
        let until = match quiet {
            Some(q) => (Instant::now() + q).min(deadline),
            None => deadline,
        };
        // Read straight into `buf`'s spare room, never past `max`: no scratch array lives in
        // the connection's future (an idle tunnel's task keeps the size of its largest state).
        let room = max.saturating_sub(buf.len());
        if room == 0 {
            return Ok(Peeked::TooLarge);
        }
        buf.reserve(room.min(PEEK_READ));
        let mut limited = (&mut *buf).limit(room.min(PEEK_READ));
        let n = match tokio::time::timeout_at(until, stream.read_buf(&mut limited)).await {
            Err(_) if quiet.is_some() && Instant::now() < deadline => {
                return Ok(if buf.is_empty() {
                    Peeked::Quiet
                } else {
                    Peeked::Unknown
                });
            }
            Err(_) => return Ok(Peeked::TimedOut),
            Ok(result) => result?,
        };
        if n == 0 {
            // The client finished sending before the bytes named anything: they are a
            // name-less message, decided on the address alone.
            return Ok(if buf.is_empty() {
                Peeked::Closed
            } else {
                Peeked::Unknown
            });
        }
        match sniff(buf) {
            Ok(Sniffed::Tls(hello)) => return Ok(Peeked::Tls(hello)),
            Ok(Sniffed::Http(_)) => return Ok(Peeked::Http),
            Ok(Sniffed::Unknown) => return Ok(Peeked::Unknown),
            Err(SniffError::Malformed(why)) => return Ok(Peeked::Malformed(why)),
            Err(SniffError::Incomplete) if buf.len() >= max => {
                return Ok(Peeked::TooLarge);
            }
            Err(SniffError::Incomplete) => {}
        }
    }
}

/// A stream that yields `prefix` before reading from `inner`; writes go straight through.
#[derive(Debug)]
pub(super) struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub(super) fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

/// The peeked bytes first, then the stream.
impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                // Replayed: the peeked bytes are not held for the life of the connection.
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

crate::delegate::delegate_async_write!(impl[T] Rewind<T>);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn rewind_replays_prefix_then_reads_inner() {
        let inner: &[u8] = b" world";
        let mut r = Rewind::new(b"hello".to_vec(), inner);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
