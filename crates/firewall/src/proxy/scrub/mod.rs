//! What an intercepted upstream sends back is scrubbed of every injected secret before the
//! sandbox sees it: an upstream that echoes the request (an error page, a debug endpoint, a
//! reflected `Authorization`) would otherwise hand the sandbox the credential that header
//! injection kept out of it.
//!
//! Header values and trailers are scrubbed whole; the body streams through a
//! [`palisade_scrub::Scrubber`], which catches a secret split across frames and holds back only
//! bytes that may still begin one (SSE is not delayed). A compressed body (`gzip`, `deflate`,
//! `br`, `zstd`) is decoded, scrubbed and passed on uncompressed, with `Content-Encoding` and
//! `Content-Length` removed; any other coding is refused (fail closed), as is a body that does
//! not decode.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use palisade_scrub::{Patterns, Scrubber};

/// Errors a scrubbed body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Compressed input taken per step, so a small frame of a compression bomb cannot expand into a
/// huge buffer at once.
const INPUT_STEP: usize = 4 * 1024;

/// Scrubs every header value in place; returns how many secrets were replaced.
pub(crate) fn scrub_headers(headers: &mut HeaderMap, patterns: &Arc<Patterns>) -> u64 {
    let mut replaced = 0;
    for value in headers.values_mut() {
        // Most values hold no secret: checked without building a scrubbed copy.
        if !patterns.is_match(value.as_bytes()) {
            continue;
        }
        let (out, n) = patterns.scrub_all(value.as_bytes());
        if n > 0 {
            replaced += n;
            // The marker is visible ASCII, so the scrubbed value is a valid header value; should
            // it not be, the value is dropped to the marker alone rather than kept.
            *value = HeaderValue::from_bytes(&out)
                .unwrap_or_else(|_| HeaderValue::from_static("[REDACTED]"));
        }
    }
    replaced
}

/// The content codings the scrubber can see through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// The response's content coding, or why it cannot be inspected.
pub(crate) fn coding(headers: &HeaderMap) -> Result<Coding, String> {
    let values: Vec<&HeaderValue> = headers.get_all(header::CONTENT_ENCODING).iter().collect();
    let one = match values.as_slice() {
        [] => return Ok(Coding::Identity),
        [one] => one.to_str().unwrap_or_default().trim().to_ascii_lowercase(),
        _ => return Err("more than one Content-Encoding".to_owned()),
    };
    Ok(match one.as_str() {
        "" | "identity" => Coding::Identity,
        "gzip" | "x-gzip" => Coding::Gzip,
        "deflate" => Coding::Deflate,
        "br" => Coding::Brotli,
        "zstd" => Coding::Zstd,
        other => return Err(format!("Content-Encoding {other:?} cannot be inspected")),
    })
}

/// Where a streaming decoder writes; shared so the output can be taken between writes.
#[derive(Debug, Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<Sink>),
    Deflate(flate2::write::ZlibDecoder<Sink>),
    Brotli(Box<brotli::DecompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Decoder<'static, Sink>),
}

impl Decoder {
    fn new(coding: Coding, sink: &Sink) -> io::Result<Option<Self>> {
        let s = sink.clone();
        Ok(Some(match coding {
            Coding::Identity => return Ok(None),
            Coding::Gzip => Decoder::Gzip(flate2::write::MultiGzDecoder::new(s)),
            Coding::Deflate => Decoder::Deflate(flate2::write::ZlibDecoder::new(s)),
            Coding::Brotli => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(s, 4096))),
            Coding::Zstd => Decoder::Zstd(zstd::stream::write::Decoder::new(s)?),
        }))
    }

    fn write(&mut self, input: &[u8]) -> io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.write_all(input).and_then(|()| d.flush()),
            Decoder::Deflate(d) => d.write_all(input).and_then(|()| d.flush()),
            Decoder::Brotli(d) => d.write_all(input).and_then(|()| d.flush()),
            Decoder::Zstd(d) => d.write_all(input).and_then(|()| d.flush()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Deflate(d) => d.try_finish(),
            Decoder::Brotli(d) => d.close(),
            Decoder::Zstd(d) => d.flush(),
        }
    }
}

/// A response body with every secret replaced; see the module doc.
pub(crate) struct ScrubBody<B> {
    inner: B,
    scrubber: Scrubber,
    decoder: Option<(Decoder, Sink)>,
    /// Compressed input not yet decoded (taken [`INPUT_STEP`] bytes at a time).
    pending: Bytes,
    /// Trailers waiting until the data before them has gone out.
    trailers: Option<HeaderMap>,
    patterns: Arc<Patterns>,
    /// Secrets replaced in the trailers.
    in_trailers: u64,
    ended: bool,
    /// Told how many secrets the body and trailers held, once, at the end.
    on_end: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl<B> std::fmt::Debug for ScrubBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrubBody")
            .field("scrubber", &self.scrubber)
            .field("decoding", &self.decoder.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> ScrubBody<B> {
    /// `coding` is the response's content coding (see [`coding`]); the caller removes
    /// `Content-Encoding` and `Content-Length` from the response.
    pub(crate) fn new(
        inner: B,
        patterns: Arc<Patterns>,
        coding: Coding,
        on_end: Box<dyn FnOnce(u64) + Send + Sync>,
    ) -> io::Result<Self> {
        let sink = Sink::default();
        let decoder = Decoder::new(coding, &sink)?.map(|d| (d, sink));
        Ok(Self {
            inner,
            scrubber: patterns.stream(),
            decoder,
            pending: Bytes::new(),
            trailers: None,
            patterns,
            in_trailers: 0,
            ended: false,
            on_end: Some(on_end),
        })
    }

    /// Decodes (if needed) and scrubs `input`; returns what may go out now.
    fn push(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match &mut self.decoder {
            Some((decoder, sink)) => {
                decoder.write(input)?;
                self.scrubber.feed(&sink.take(), &mut out);
            }
            None => self.scrubber.feed(input, &mut out),
        }
        Ok(out)
    }

    /// The end of the body: the decoder's and the scrubber's last bytes.
    fn finish(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if let Some((decoder, sink)) = &mut self.decoder {
            decoder.finish()?;
            self.scrubber.feed(&sink.take(), &mut out);
        }
        self.scrubber.finish(&mut out);
        Ok(out)
    }

    fn report(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.scrubber.replaced() + self.in_trailers);
        }
    }
}

/// A body dropped early (the client went away) still reports what it replaced.
impl<B> Drop for ScrubBody<B> {
    fn drop(&mut self) {
        self.report();
    }
}

impl<B> HttpBody for ScrubBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(INPUT_STEP);
                let step = this.pending.split_to(n);
                let out = this.push(&step)?;
                if !out.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                continue;
            }
            if this.ended {
                if let Some(mut t) = this.trailers.take() {
                    this.in_trailers += scrub_headers(&mut t, &this.patterns);
                    this.report();
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                this.report();
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if this.decoder.is_some() {
                            this.pending = data;
                            continue;
                        }
                        // The common frame holds no secret: it goes on as it came, uncopied.
                        if let Some(n) = this.scrubber.feed_unchanged(&data) {
                            let mut out = data.slice(..n);
                            if this.inner.is_end_stream() {
                                this.ended = true;
                                let tail = this.finish()?;
                                if !tail.is_empty() {
                                    out = Bytes::from([out.as_ref(), tail.as_slice()].concat());
                                }
                            }
                            if !out.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                            continue;
                        }
                        let mut out = this.push(&data)?;
                        // The last frame of a body of known length: its held-back tail goes
                        // out with it, one frame rather than two (fewer writes and TLS records
                        // per small response).
                        if this.inner.is_end_stream() {
                            this.ended = true;
                            out.extend_from_slice(&this.finish()?);
                        }
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    this.ended = true;
                    let out = this.finish()?;
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_empty() && self.trailers.is_none() && self.on_end.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // The length may change: a secret and its marker differ in length, decoding expands.
        SizeHint::default()
    }
}

/// The response body the sandbox gets from an intercepted upstream under `policy`: headers
/// scrubbed in place, the body wrapped so it is scrubbed as it streams; an event is recorded at
/// the end when anything was replaced (`info`: the request's details). `Err` says why the
/// response cannot be inspected; the caller refuses it.
pub(crate) fn response<B>(
    conn: &super::Conn,
    policy: &palisade_policy::CompiledPolicy,
    parts: &mut http::response::Parts,
    body: B,
    info: crate::events::HttpInfo,
) -> Result<super::rewrite::Body, String>
where
    B: HttpBody<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    use palisade_policy::Scrub;

    let patterns = match policy.scrub() {
        Scrub::Nothing => return Ok(body.map_err(Into::into).boxed()),
        Scrub::Unavailable => return Err("the secrets could not be compiled for scrubbing".into()),
        Scrub::Patterns(p) => Arc::clone(p),
    };
    let in_headers = scrub_headers(&mut parts.headers, &patterns);
    let coding = coding(&parts.headers)?;
    if coding != Coding::Identity {
        parts.headers.remove(header::CONTENT_ENCODING);
    }
    // A secret and its marker differ in length, and decoding changes it too.
    parts.headers.remove(header::CONTENT_LENGTH);
    let conn = conn.clone();
    let on_end = Box::new(move |in_body: u64| {
        let n = in_headers + in_body;
        if n == 0 {
            return;
        }
        let mut ev = conn.event(
            crate::events::EventKind::Http,
            crate::events::EventVerdict::Allow,
            &crate::decision::RuleRef::Scrub,
            format!("{n} occurrence(s) of an injected secret replaced in the response"),
        );
        ev.name = Some(info.host.clone());
        ev.http = Some(info);
        conn.record(ev);
    });
    let scrubbed = ScrubBody::new(body, patterns, coding, on_end)
        .map_err(|e| format!("cannot decode the response: {e}"))?;
    Ok(scrubbed.boxed())
}

#[cfg(test)]
mod tests;
