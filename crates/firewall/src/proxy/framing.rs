//! HTTP/1 request framing as the sandbox sent it, followed beneath hyper (threat 19).
//!
//! The follower itself is pure and lives in `palisade_wire::framing`; this is its I/O shell.
//! hyper resolves framing conflicts on its own (it drops `Content-Length` when
//! `Transfer-Encoding: chunked` is present and re-frames the body), so the service above it can
//! no longer tell that a request was ambiguous. [`FramingGuard`] wraps the client stream before
//! hyper reads it, follows every message exactly (heads with httparse, `Content-Length` bodies
//! counted, chunked bodies chunk by chunk including trailers) and leaves one verdict per request
//! head in [`Verdicts`]; the service takes the verdict for each request before anything goes
//! upstream. It fails closed: once it cannot follow the stream, every later request is refused,
//! and a body it cannot follow ends the stream for hyper at that point.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use http::Version;
use palisade_wire::framing::{Fed, Follower, Stop, Verdict};
use tokio::io::{AsyncRead, ReadBuf};

/// Request heads read ahead of the service (pipelining) before the guard gives up.
const MAX_PENDING: usize = 1024;

/// The verdicts a guard leaves for the service, one per request head, in order.
#[derive(Debug, Default)]
pub(crate) struct Verdicts {
    inner: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<(u64, Verdict)>,
    stop: Option<Stop>,
    /// The request whose body could not be followed.
    broken_body: Option<u64>,
}

impl Verdicts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The request whose body could not be followed, if one could not.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn broken_body(&self) -> Option<u64> {
        self.lock().broken_body
    }

    /// The verdict on the next request hyper hands the service (a request of `version`).
    pub(crate) fn admit(&self, version: Version) -> Result<(), String> {
        let mut q = self.lock();
        if version == Version::HTTP_2 {
            return match q.stop {
                Some(Stop::H2) => Ok(()),
                _ => Err("an HTTP/2 request on a connection that did not start as HTTP/2".into()),
            };
        }
        match q.pending.pop_front() {
            Some((_, v)) => v.map_err(str::to_owned),
            None => Err(match q.stop {
                Some(Stop::Opaque) => "no further requests after an upgrade or CONNECT".to_owned(),
                Some(Stop::H2) => "an HTTP/1 request on an HTTP/2 connection".to_owned(),
                Some(Stop::Head(why) | Stop::Body(why)) => why.to_owned(),
                None => "the proxy could not follow the request framing".to_owned(),
            }),
        }
    }

    fn record(&self, fed: &Fed, current: Option<u64>) -> bool {
        let mut q = self.lock();
        q.pending.extend(fed.heads.iter().copied());
        if let Some(stop) = fed.stop {
            q.stop = Some(stop);
            // A body that broke before its head reached the service: refuse the request
            // outright instead of forwarding a head whose body will fail.
            if let (Stop::Body(why), Some(index)) = (stop, current) {
                q.broken_body = Some(index);
                if let Some(v) = q.pending.iter_mut().find(|(i, _)| *i == index) {
                    v.1 = Err(why);
                }
            }
        }
        q.pending.len() <= MAX_PENDING
    }
}

/// The client stream with the follower in front of hyper.
#[derive(Debug)]
pub(crate) struct FramingGuard<S> {
    inner: S,
    follower: Follower,
    verdicts: Arc<Verdicts>,
    failed: Option<&'static str>,
}

impl<S> FramingGuard<S> {
    pub(crate) fn new(inner: S, verdicts: Arc<Verdicts>) -> Self {
        Self {
            inner,
            follower: Follower::default(),
            verdicts,
            failed: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if new.is_empty() || this.follower.stopped().is_some() {
            return Poll::Ready(Ok(()));
        }
        let fed = this.follower.feed(new);
        if fed.heads.is_empty() && fed.stop.is_none() {
            return Poll::Ready(Ok(()));
        }
        let within = this.verdicts.record(&fed, this.follower.current());
        if !within {
            let stop = this.follower.give_up("too many pipelined requests");
            this.verdicts.lock().stop = Some(stop);
        }
        if let Some(Stop::Body(why)) = fed.stop {
            this.failed = Some(why);
            buf.set_filled(before + fed.pass);
            if fed.pass == 0 {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
            }
        }
        Poll::Ready(Ok(()))
    }
}

crate::delegate::delegate_async_write!(impl[S] FramingGuard<S>);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn verdicts_in_order_and_a_body_error_before_the_head_was_served_refuses_it() {
        let v = Verdicts::default();
        let mut f = Follower::default();
        let fed = f
            .feed(b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(v.record(&fed, f.current()));
        assert_eq!(v.admit(Version::HTTP_11), Ok(()));
        let fed = f.feed(b"xx\r\n");
        assert!(v.record(&fed, f.current()));
        assert_eq!(v.broken_body(), Some(1));
        assert_eq!(v.admit(Version::HTTP_11), Err("bad chunk size".to_owned()));
        assert_eq!(v.admit(Version::HTTP_11), Err("bad chunk size".to_owned()));
        assert!(v.admit(Version::HTTP_2).is_err());
    }

    #[test]
    fn no_verdict_without_a_head_and_h2_only_after_the_preface() {
        let v = Verdicts::default();
        assert!(v.admit(Version::HTTP_11).is_err());
        assert!(v.admit(Version::HTTP_2).is_err());
        let mut f = Follower::default();
        let fed = f.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        v.record(&fed, f.current());
        assert_eq!(v.admit(Version::HTTP_2), Ok(()));
        assert!(v.admit(Version::HTTP_11).is_err());
    }

    #[tokio::test]
    async fn the_guard_hands_on_the_head_then_fails_the_read() {
        let (mut client, server) = tokio::io::duplex(4096);
        let verdicts = Arc::new(Verdicts::default());
        let mut guard = FramingGuard::new(server, Arc::clone(&verdicts));
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        client.write_all(head).await.unwrap();
        client.write_all(b"5\r\nhello\r\nq\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = guard.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], head);
        assert!(guard.read(&mut buf).await.is_err());
        assert!(guard.read(&mut buf).await.is_err());
        // The head had not reached the service: its verdict now refuses it.
        assert_eq!(
            verdicts.admit(Version::HTTP_11),
            Err("bad chunk size".to_owned())
        );
    }
}
