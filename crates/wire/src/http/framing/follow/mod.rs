//! HTTP/1 request framing followed over a byte stream, sans I/O (threat 19).
//!
//! A proxy that hands the stream to an HTTP library cannot see what the library normalised away
//! (hyper drops `Content-Length` next to `Transfer-Encoding: chunked` and re-frames the body).
//! [`Follower`] reads the same bytes first: every head with httparse, `Content-Length` bodies
//! counted, chunked bodies chunk by chunk including trailers, and gives one verdict per request
//! head. Its answers do not depend on how the stream is split into reads
//! ([`check_split`], property tests, the `intercept_http` fuzz target). It fails closed: once it
//! cannot follow the stream it stops, and the caller refuses every later request.

use super::{BodyFraming, body_framing};

/// The largest request head followed (hyper's own limit is the same buffer size).
const MAX_HEAD: usize = crate::http::MAX_HEAD;
/// Bytes of chunk extensions per body and of trailers per body (hyper's limits).
const MAX_EXTENSIONS: u64 = 16 * 1024;
const MAX_TRAILERS: u64 = 16 * 1024;
/// Headers per head; hyper refuses more than 100 itself.
const MAX_HEADERS: usize = 128;

const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// A head's verdict: `Err` names why the request is refused.
pub type Verdict = Result<(), &'static str>;

/// Why the follower stopped following the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
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
pub struct Follower {
    state: State,
    requests: u64,
    extensions: u64,
    trailers: u64,
}

/// What one `feed` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// How many of the fed bytes may be handed on (all of them unless a body broke).
    pub pass: usize,
    /// The heads completed in these bytes: (request index, verdict).
    pub heads: Vec<(u64, Verdict)>,
    /// Set when the follower stopped following in these bytes.
    pub stop: Option<Stop>,
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
    pub fn current(&self) -> Option<u64> {
        self.requests.checked_sub(1)
    }

    /// Stops following (the caller cannot keep up, e.g. too many pipelined heads): every later
    /// request is refused with `why`.
    pub fn give_up(&mut self, why: &'static str) -> Stop {
        let stop = Stop::Head(why);
        self.state = State::Stopped(stop);
        stop
    }

    pub fn stopped(&self) -> Option<Stop> {
        match self.state {
            State::Stopped(s) => Some(s),
            _ => None,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Fed {
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
                            BodyFraming::None | BodyFraming::Length(0) => {
                                self.body_done(upgrade, fed)
                            }
                            BodyFraming::Length(left) => {
                                self.state = State::Length { left, upgrade }
                            }
                            BodyFraming::Chunked => {
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

struct Framing {
    body: BodyFraming,
    upgrade: bool,
}

/// The framing of one parsed head, or why it is refused: only one unambiguous framing passes
/// ([`body_framing`], the rule the sniffer uses too).
fn judge(req: &httparse::Request<'_, '_>, head: &[u8]) -> Result<Framing, &'static str> {
    // httparse accepts a lone LF as a line end; the next hop may not agree where lines end.
    if head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Err("bare LF in the request head");
    }
    let upgrade = req.method == Some("CONNECT")
        || req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
    let body = body_framing(
        req.version.unwrap_or(1),
        req.headers
            .iter()
            .map(|h| (h.name, crate::http::trim(h.value))),
    )?;
    Ok(Framing { body, upgrade })
}

/// For fuzz harnesses and tests: the follower finds the same heads and stop however the stream is split
/// (whole, in three pieces, and for short inputs a byte at a time). Panics if not.
pub fn check_split(data: &[u8]) {
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
mod tests;
