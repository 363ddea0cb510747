//! HTTP/1 request framing as the sandbox sent it, followed beneath hyper (threat 19).
//!
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest request head followed (hyper's own limit is the same buffer size).
const MAX_HEAD: usize = 64 * 1024;
/// Request heads read ahead of the service (pipelining) before the guard gives up.
const MAX_PENDING: usize = 1024;
/// Bytes of chunk extensions per body and of trailers per body (hyper's limits).
const MAX_EXTENSIONS: u64 = 16 * 1024;
const MAX_TRAILERS: u64 = 16 * 1024;
/// Headers per head; hyper refuses more than 100 itself.
const MAX_HEADERS: usize = 128;

const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// A head's verdict: `Err` names why the request is refused.
pub(crate) type Verdict = Result<(), &'static str>;

/// Why the follower stopped following the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The connection is HTTP/2 (prior knowledge preface): h2 framing is length-prefixed.
    H2,
    /// After an upgrade or CONNECT the bytes are no longer HTTP/1 messages.
    Opaque,
    /// A head could not be followed; the bytes still go to hyper so it can answer 400 itself.
    Head(&'static str),
    /// A body could not be followed; the bytes from that point on never reach hyper.
    Body(&'static str),
}

#[derive(Debug)]
enum State {
    /// `lead`: how many CR/LF bytes (empty lines, RFC 9112 §2.2) start `buf`.
    Head {
        buf: Vec<u8>,
        lead: usize,
    },
    Length {
        left: u64,
        upgrade: bool,
    },
    Chunked {
        chunk: Chunk,
        upgrade: bool,
    },
    Stopped(Stop),
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Ext(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

/// The pure core: HTTP/1 request framing followed over arbitrary splits of the byte stream.
#[derive(Debug)]
pub(crate) struct Follower {
    state: State,
    requests: u64,
    extensions: u64,
    trailers: u64,
}

/// What one `feed` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Fed {
    /// How many of the fed bytes may be handed on (all of them unless a body broke).
    pub(crate) pass: usize,
    /// The heads completed in these bytes: (request index, verdict).
    pub(crate) heads: Vec<(u64, Verdict)>,
    /// Set when the follower stopped following in these bytes.
    pub(crate) stop: Option<Stop>,
}

impl Default for Follower {
    fn default() -> Self {
        Self {
            state: State::Head {
                buf: Vec::new(),
                lead: 0,
            },
            requests: 0,
            extensions: 0,
            trailers: 0,
        }
    }
}

impl Follower {
    /// The index of the request whose head was completed last.
    pub(crate) fn current(&self) -> Option<u64> {
        self.requests.checked_sub(1)
    }

    pub(crate) fn stopped(&self) -> Option<Stop> {
        match self.state {
            State::Stopped(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> Fed {
        let mut fed = Fed::default();
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            let step = match &mut self.state {
                State::Stopped(_) => rest.len(),
                State::Head { .. } => self.head(rest, &mut fed),
                State::Length { left, upgrade } => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(rest.len());
                    *left -= n as u64;
                    if *left == 0 {
                        let upgrade = *upgrade;
                        self.body_done(upgrade, &mut fed);
                    }
                    n
                }
                State::Chunked { .. } => match self.chunked(rest, &mut fed) {
                    Ok(n) => n,
                    Err(why) => {
                        fed.pass = at;
                        self.stop(Stop::Body(why), &mut fed);
                        return fed;
                    }
                },
            };
            at += step;
        }
        fed.pass = data.len();
        fed
    }

    fn stop(&mut self, stop: Stop, fed: &mut Fed) {
        self.state = State::Stopped(stop);
        fed.stop = Some(stop);
    }

    fn body_done(&mut self, upgrade: bool, fed: &mut Fed) {
        if upgrade {
            self.stop(Stop::Opaque, fed);
        } else {
            self.state = State::Head {
                buf: Vec::new(),
                lead: 0,
            };
        }
    }

    /// Takes head bytes from `rest`; returns how many it used.
    fn head(&mut self, rest: &[u8], fed: &mut Fed) -> usize {
        let State::Head { buf, lead } = &mut self.state else {
            return 0;
        };
        let old = buf.len();
        let room = MAX_HEAD + 1 - old;
        let take = rest.len().min(room);
        buf.extend_from_slice(&rest[..take]);
        if *lead == old {
            *lead += buf[old..]
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
        }
        // A head ends at the first blank line after the request line starts; httparse runs only
        // when one may have arrived, so a client sending a byte at a time costs linear work, and
        // the outcome does not depend on how the stream was split.
        let from = old.saturating_sub(2).max(*lead);
        let window = &buf[from..];
        let blank =
            window.windows(2).any(|w| w == b"\n\n") || window.windows(3).any(|w| w == b"\n\r\n");
        if !blank {
            if buf.len() > MAX_HEAD {
                self.stop(Stop::Head("the request head is too large"), fed);
            }
            return take;
        }
        if self.requests == 0 && buf.starts_with(H2_PREFACE_START) {
            self.stop(Stop::H2, fed);
            return take;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let framing = judge(&req, &buf[..len]);
                let used = take - (buf.len() - len);
                let index = self.requests;
                self.requests += 1;
                self.extensions = 0;
                self.trailers = 0;
                match framing {
                    Ok(Framing { body, upgrade }) => {
                        fed.heads.push((index, Ok(())));
                        match body {
                            BodyLen::None | BodyLen::Length(0) => self.body_done(upgrade, fed),
                            BodyLen::Length(left) => self.state = State::Length { left, upgrade },
                            BodyLen::Chunked => {
                                self.state = State::Chunked {
                                    chunk: Chunk::Start,
                                    upgrade,
                                };
                            }
                        }
                    }
                    Err(why) => {
                        // The service refuses this request and closes; nothing after it is
                        // followed.
                        fed.heads.push((index, Err(why)));
                        self.stop(Stop::Head(why), fed);
                    }
                }
                used
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    self.stop(Stop::Head("the request head is too large"), fed);
                }
                take
            }
            Err(_) => {
                self.stop(Stop::Head("the request head is malformed"), fed);
                take
            }
        }
    }

    /// Follows chunked body bytes; returns how many it used, or why the body is malformed.
    fn chunked(&mut self, rest: &[u8], fed: &mut Fed) -> Result<usize, &'static str> {
        let State::Chunked { chunk, upgrade } = &mut self.state else {
            return Ok(0);
        };
        let upgrade = *upgrade;
        let mut i = 0;
        while i < rest.len() {
            if let Chunk::Data(left) = chunk {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(rest.len() - i);
                *left -= n as u64;
                i += n;
                if *left == 0 {
                    *chunk = Chunk::DataCr;
                }
                continue;
            }
            let b = rest[i];
            i += 1;
            *chunk = match (*chunk, b) {
                (Chunk::Start, _) => Chunk::Size(hex(b).ok_or("bad chunk size")?),
                (Chunk::Size(n), _) if hex(b).is_some() => Chunk::Size(
                    n.checked_mul(16)
                        .and_then(|n| n.checked_add(hex(b).unwrap_or(0)))
                        .ok_or("chunk size too large")?,
                ),
                (Chunk::Size(n) | Chunk::SizeLws(n), b' ' | b'\t') => Chunk::SizeLws(n),
                (Chunk::Size(n) | Chunk::SizeLws(n), b';') => Chunk::Ext(n),
                (Chunk::Size(n) | Chunk::SizeLws(n) | Chunk::Ext(n), b'\r') => Chunk::SizeLf(n),
                (Chunk::Size(_) | Chunk::SizeLws(_), _) => return Err("bad chunk size"),
                (Chunk::Ext(_), b'\n') => return Err("bare LF in a chunk extension"),
                (Chunk::Ext(n), _) => {
                    self.extensions += 1;
                    if self.extensions >= MAX_EXTENSIONS {
                        return Err("chunk extensions too long");
                    }
                    Chunk::Ext(n)
                }
                (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
                (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
                (Chunk::SizeLf(_), _) => return Err("chunk size line not ended by CRLF"),
                // Data is consumed in bulk above.
                (Chunk::Data(_), _) => return Err("internal: chunk data state"),
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Start,
                (Chunk::DataCr | Chunk::DataLf, _) => {
                    return Err("chunk data not followed by CRLF");
                }
                (Chunk::EndCr, b'\r') => Chunk::EndLf,
                (Chunk::EndCr | Chunk::Trailer, b'\n') => return Err("bare LF in the trailers"),
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::EndCr | Chunk::Trailer, _) => {
                    self.trailers += 1;
                    if self.trailers >= MAX_TRAILERS {
                        return Err("trailers too long");
                    }
                    Chunk::Trailer
                }
                (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
                (Chunk::TrailerLf, _) => return Err("trailer line not ended by CRLF"),
                (Chunk::EndLf, b'\n') => {
                    self.body_done(upgrade, fed);
                    return Ok(i);
                }
                (Chunk::EndLf, _) => return Err("chunked body not ended by CRLF"),
            };
        }
        Ok(i)
    }
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

enum BodyLen {
    None,
    Length(u64),
    Chunked,
}

struct Framing {
    body: BodyLen,
    upgrade: bool,
}

/// The framing of one parsed head, or why it is refused: only one unambiguous framing passes.
fn judge(req: &httparse::Request<'_, '_>, head: &[u8]) -> Result<Framing, &'static str> {
    let mut lengths = Vec::new();
    let mut encodings = Vec::new();
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encodings.push(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    // httparse accepts a lone LF as a line end; the next hop may not agree where lines end.
    if head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Err("bare LF in the request head");
    }
    let body = match (lengths.as_slice(), encodings.as_slice()) {
        ([], []) => BodyLen::None,
        (_, [_, ..]) if !lengths.is_empty() => {
            return Err("Content-Length together with Transfer-Encoding");
        }
        ([one], []) => BodyLen::Length(content_length(one)?),
        (_, []) => return Err("more than one Content-Length"),
        (_, [te]) if te.eq_ignore_ascii_case(b"chunked") => {
            if req.version == Some(0) {
                return Err("Transfer-Encoding in an HTTP/1.0 request");
            }
            BodyLen::Chunked
        }
        (_, _) => return Err("Transfer-Encoding other than a single chunked"),
    };
    Ok(Framing { body, upgrade })
}

fn content_length(v: &[u8]) -> Result<u64, &'static str> {
    const BAD: &str = "Content-Length is not a single decimal number";
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(BAD)
}

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
            this.follower.state = State::Stopped(Stop::Head("too many pipelined requests"));
            this.verdicts.lock().stop = this.follower.stopped();
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

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// For the fuzz harness: the follower finds the same heads and stop however the stream is split
/// (whole, in three pieces, and for short inputs a byte at a time). Panics if not.
pub(crate) fn check_split(data: &[u8]) {
    fn run(data: &[u8], cuts: &[usize]) -> (Vec<(u64, Verdict)>, Option<Stop>) {
        let mut f = Follower::default();
        let mut heads = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&data.len())) {
            let fed = f.feed(&data[start..end]);
            heads.extend(fed.heads);
            if fed.stop.is_some() {
                return (heads, fed.stop);
            }
            start = end;
        }
        (heads, None)
    }
    let whole = run(data, &[]);
    let n = data.len();
    assert_eq!(whole, run(data, &[n / 3, 2 * n / 3]), "split in three");
    if n <= 2048 {
        let bytewise: Vec<usize> = (1..n).collect();
        assert_eq!(whole, run(data, &bytewise), "byte by byte");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const CLTE: &str = "Content-Length together with Transfer-Encoding";
    const TE: &str = "Transfer-Encoding other than a single chunked";
    const DUPCL: &str = "more than one Content-Length";
    const BADCL: &str = "Content-Length is not a single decimal number";

    /// Feeds `data` whole, then a byte at a time: both must find the same heads and stop.
    fn follow(data: &[u8]) -> (Vec<Verdict>, Option<Stop>) {
        let mut whole = Follower::default();
        let fed = whole.feed(data);
        let mut bytewise = Follower::default();
        let mut heads = Vec::new();
        let mut stop = None;
        for b in data {
            let f = bytewise.feed(std::slice::from_ref(b));
            heads.extend(f.heads);
            stop = stop.or(f.stop);
        }
        assert_eq!(heads, fed.heads, "{:?}", String::from_utf8_lossy(data));
        assert_eq!(stop, fed.stop, "{:?}", String::from_utf8_lossy(data));
        (fed.heads.into_iter().map(|(_, v)| v).collect(), fed.stop)
    }

    #[test]
    fn table() {
        let get = "GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n";
        let h = "Host: a.test\r\n";
        let cases: Vec<(String, Vec<Verdict>, Option<Stop>)> = vec![
            (get.to_owned(), vec![Ok(())], None),
            (format!("{get}{get}"), vec![Ok(()), Ok(())], None),
            (format!("\r\n\r\n{get}"), vec![Ok(())], None),
            (
                format!("POST / HTTP/1.1\r\n{h}Content-Length: 5\r\n\r\nhello{get}"),
                vec![Ok(()), Ok(())],
                None,
            ),
            (
                format!("POST / HTTP/1.1\r\n{h}Content-Length: 0\r\n\r\n{get}"),
                vec![Ok(()), Ok(())],
                None,
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Transfer-Encoding: Chunked\r\n\r\n\
                     5\r\nhello\r\n1A ;ext=\"x\"\r\n{}\r\n0\r\n\r\n{get}",
                    "z".repeat(26)
                ),
                vec![Ok(()), Ok(())],
                None,
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n\
                     5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n{get}"
                ),
                vec![Ok(()), Ok(())],
                None,
            ),
            // Smuggling shapes: refused, and nothing after them is followed.
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{get}"
                ),
                vec![Err(CLTE)],
                Some(Stop::Head(CLTE)),
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}transfer-encoding: chunked\r\ncontent-length: 60\r\n\r\n0\r\n\r\n{get}"
                ),
                vec![Err(CLTE)],
                Some(Stop::Head(CLTE)),
            ),
            (
                format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: gzip\r\n\r\n{get}"),
                vec![Err(TE)],
                Some(Stop::Head(TE)),
            ),
            (
                format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n{get}"),
                vec![Err(TE)],
                Some(Stop::Head(TE)),
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                ),
                vec![Err(TE)],
                Some(Stop::Head(TE)),
            ),
            (
                format!("POST / HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n"),
                vec![Err("Transfer-Encoding in an HTTP/1.0 request")],
                Some(Stop::Head("Transfer-Encoding in an HTTP/1.0 request")),
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Content-Length: 0\r\nContent-Length: 48\r\n\r\n{get}"
                ),
                vec![Err(DUPCL)],
                Some(Stop::Head(DUPCL)),
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
                ),
                vec![Err(DUPCL)],
                Some(Stop::Head(DUPCL)),
            ),
            (
                format!("POST / HTTP/1.1\r\n{h}Content-Length: 5, 5\r\n\r\nhello"),
                vec![Err(BADCL)],
                Some(Stop::Head(BADCL)),
            ),
            (
                format!("POST / HTTP/1.1\r\n{h}Content-Length: +5\r\n\r\nhello"),
                vec![Err(BADCL)],
                Some(Stop::Head(BADCL)),
            ),
            (
                format!("POST / HTTP/1.1\r\n{h}Content-Length: 99999999999999999999\r\n\r\n"),
                vec![Err(BADCL)],
                Some(Stop::Head(BADCL)),
            ),
            (
                "GET / HTTP/1.1\nHost: a.test\n\n".to_owned(),
                vec![Err("bare LF in the request head")],
                Some(Stop::Head("bare LF in the request head")),
            ),
            (
                format!("GET / HTTP/1.1\r\n{h}X-A: a\r\n b\r\n\r\n{get}"),
                vec![],
                Some(Stop::Head("the request head is malformed")),
            ),
            (
                format!("GET / HTTP/1.1\r\n{h}X-A: a\nb\r\n\r\n"),
                vec![],
                Some(Stop::Head("the request head is malformed")),
            ),
            // Bodies that cannot be followed.
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{get}"
                ),
                vec![Ok(())],
                Some(Stop::Body("bad chunk size")),
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"
                ),
                vec![Ok(())],
                Some(Stop::Body("chunk data not followed by CRLF")),
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
                ),
                vec![Ok(())],
                Some(Stop::Body("bad chunk size")),
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n{}\r\n",
                    "f".repeat(17)
                ),
                vec![Ok(())],
                Some(Stop::Body("chunk size too large")),
            ),
            (
                format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n"),
                vec![Ok(())],
                Some(Stop::Body("bare LF in the trailers")),
            ),
            (
                format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0;a\nb\r\n\r\n"),
                vec![Ok(())],
                Some(Stop::Body("bare LF in a chunk extension")),
            ),
            // No longer HTTP/1 messages.
            (
                format!("GET /ws HTTP/1.1\r\n{h}Upgrade: websocket\r\n\r\n\x01\x05hello{get}"),
                vec![Ok(())],
                Some(Stop::Opaque),
            ),
            (
                format!("CONNECT a.test:443 HTTP/1.1\r\n{h}\r\n{get}"),
                vec![Ok(())],
                Some(Stop::Opaque),
            ),
            (
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00".to_owned(),
                vec![],
                Some(Stop::H2),
            ),
            // Bounds.
            (
                format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD)),
                vec![],
                Some(Stop::Head("the request head is too large")),
            ),
            (format!("{}{get}", "\r\n".repeat(20)), vec![Ok(())], None),
            (
                format!("\r\n\r{get}"),
                vec![],
                Some(Stop::Head("the request head is malformed")),
            ),
            (
                "\r\n".repeat(MAX_HEAD),
                vec![],
                Some(Stop::Head("the request head is too large")),
            ),
        ];
        for (data, heads, stop) in &cases {
            let got = follow(data.as_bytes());
            assert_eq!(&got, &(heads.clone(), *stop), "{data:?}");
        }
    }

    #[test]
    fn a_body_error_stops_handing_on_bytes_at_the_body() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let data = format!("{head}5\r\nhello\r\nzz\r\n");
        let fed = Follower::default().feed(data.as_bytes());
        assert_eq!(fed.pass, head.len());
        assert_eq!(fed.stop, Some(Stop::Body("bad chunk size")));
    }

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

    /// A valid request: method, body framing (none, length or chunks), trailers.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        let chunks = proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..40), any::<bool>()),
            0..4,
        );
        (0u8..3, chunks, any::<bool>(), "[a-z]{1,8}").prop_map(|(kind, chunks, trailer, path)| {
            let mut out = Vec::new();
            match kind {
                0 => out.extend(format!("GET /{path} HTTP/1.1\r\nHost: a.test\r\n\r\n").bytes()),
                1 => {
                    let body: Vec<u8> = chunks.iter().flat_map(|(c, _)| c.clone()).collect();
                    out.extend(
                        format!(
                            "POST /{path} HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        )
                        .bytes(),
                    );
                    out.extend(body);
                }
                _ => {
                    out.extend(
                        format!("PUT /{path} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
                            .bytes(),
                    );
                    for (c, ext) in &chunks {
                        let ext = if *ext { ";x=1" } else { "" };
                        out.extend(format!("{:X}{ext}\r\n", c.len()).bytes());
                        out.extend(c);
                        out.extend(b"\r\n");
                    }
                    out.extend(b"0\r\n");
                    if trailer {
                        out.extend(b"X-Sum: 1\r\n");
                    }
                    out.extend(b"\r\n");
                }
            }
            out
        })
    }

    proptest! {
        #[test]
        fn valid_streams_are_followed_to_the_byte_however_split(
            reqs in proptest::collection::vec(request(), 1..6),
            cuts in proptest::collection::vec(any::<u16>(), 0..12),
        ) {
            let data: Vec<u8> = reqs.concat();
            let mut points: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % (data.len() + 1)).collect();
            points.push(0);
            points.push(data.len());
            points.sort_unstable();
            let mut f = Follower::default();
            let mut heads = Vec::new();
            for w in points.windows(2) {
                let fed = f.feed(&data[w[0]..w[1]]);
                prop_assert_eq!(fed.pass, w[1] - w[0]);
                prop_assert_eq!(fed.stop, None);
                heads.extend(fed.heads);
            }
            let want: Vec<(u64, Verdict)> = (0..reqs.len() as u64).map(|i| (i, Ok(()))).collect();
            prop_assert_eq!(heads, want);
            // Exactly at a message boundary: nothing is left half-read.
            let at_boundary = matches!(&f.state, State::Head { buf, .. } if buf.is_empty());
            prop_assert!(at_boundary);
        }

        #[test]
        fn any_bytes_give_the_same_result_however_split(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            seed in request(),
            at in any::<u16>(),
        ) {
            // A valid request with garbage spliced in somewhere, and pure garbage.
            let mut spliced = seed.clone();
            let i = usize::from(at) % (spliced.len() + 1);
            spliced.splice(i..i, data.iter().copied());
            let _ = follow(&spliced);
            let _ = follow(&data);
        }
    }
}
