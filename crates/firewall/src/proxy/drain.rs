//! An upstream response body that is read to its end even when the sandbox's side stops early.
//!
//! hyper's HTTP/1 server stops polling a response body once it has written its
//! `Content-Length`, and drops it. An HTTP/2 upstream that sends `END_STREAM` in a frame of its
//! own after the data (a streamed body of known length) then sees its stream cancelled, and
//! when the late frame arrives h2 answers it with a reset of its own, which it counts: after
//! 1,024 of them on one connection it tears the connection down (`ENHANCE_YOUR_CALM`) with
//! every request in flight on it, and the sandbox gets 502s. So what is left of a body dropped
//! before its end is read in the background and thrown away, bounded in bytes and time, and
//! the stream ends as the upstream meant it to.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// How long a dropped body's end is waited for.
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// How many more bytes of a dropped body are read before giving up (a body the client
/// abandoned halfway is not worth downloading).
const DRAIN_BYTES: usize = 64 * 1024;

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Drained<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
{
    inner: Option<B>,
}

impl<B> Drained<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
{
    pub(crate) fn new(inner: B) -> Self {
        Self { inner: Some(inner) }
    }
}

impl<B> HttpBody for Drained<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl<B> Drop for Drained<B>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
{
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        // Outside a runtime (never on the proxy's paths) the body is simply dropped.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(drain(body));
        }
    }
}

async fn drain<B>(mut body: B)
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    let read = async {
        let mut left = DRAIN_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                left = left.saturating_sub(data.len());
                if left == 0 {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A body whose data comes at once and whose end comes later, as a late END_STREAM frame:
    /// `ended` is set when it is polled to its end.
    struct LateEnd {
        sent: bool,
        later: Pin<Box<tokio::time::Sleep>>,
        ended: Arc<AtomicBool>,
    }

    impl LateEnd {
        fn new(ended: &Arc<AtomicBool>) -> Self {
            Self {
                sent: false,
                later: Box::pin(tokio::time::sleep(Duration::from_millis(50))),
                ended: Arc::clone(ended),
            }
        }
    }

    impl HttpBody for LateEnd {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if !self.sent {
                self.sent = true;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"0123456789")))));
            }
            if self.later.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.ended.store(true, Ordering::SeqCst);
            Poll::Ready(None)
        }

        fn is_end_stream(&self) -> bool {
            self.ended.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_read_to_the_end() {
        let ended = Arc::new(AtomicBool::new(false));
        let mut body = Drained::new(LateEnd::new(&ended));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().map(Bytes::len), Some(10));
        drop(body);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(ended.load(Ordering::SeqCst), "the rest was not read");
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_left_alone() {
        let ended = Arc::new(AtomicBool::new(false));
        let mut body = Drained::new(LateEnd::new(&ended));
        while body.frame().await.is_some() {}
        assert!(ended.load(Ordering::SeqCst));
        assert!(body.is_end_stream());
    }
}
