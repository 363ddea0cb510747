//! HTTP/1 request heads: the request line and headers through `httparse`, plus the checks that
//! keep the firewall and the upstream reading the same request (RFC 9112 §6.3, §11.2).

use std::fmt;
use std::mem::MaybeUninit;

use crate::SniffError;

mod detect;
pub mod framing;
mod target;
#[cfg(test)]
mod tests;

pub use target::TargetForm;

/// The largest request head accepted, request line and blank line included.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields accepted in one head.
pub const MAX_HEADERS: usize = 256;

/// A parsed HTTP/1.x request head.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method token, exactly as sent.
    pub method: String,
    /// The request target, exactly as sent.
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The Host header value, raw (surrounding whitespace removed); at most one is allowed.
    pub host: Option<Vec<u8>>,
    /// Bytes up to and including the blank line that ends the head.
    pub head_len: usize,
    /// Every header field in order, names as spelled, values with surrounding whitespace removed.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// The form of the request target (validated against the method while parsing).
    pub fn target_form(&self) -> TargetForm {
        // Parsing already refused every target that does not classify.
        target::classify(&self.method, &self.target).unwrap_or(TargetForm::Origin)
    }

    /// The authority the request names in its target (absolute form: between `scheme://` and the
    /// path; CONNECT: the whole target), raw and possibly with a port. RFC 9112 §3.2.2: when
    /// present it overrides Host, so the proxy must decide on this rather than on `host`.
    pub fn target_authority(&self) -> Option<&str> {
        match self.target_form() {
            TargetForm::Absolute => target::absolute_authority(&self.target),
            TargetForm::Authority => Some(&self.target),
            TargetForm::Origin | TargetForm::Asterisk => None,
        }
    }

    /// The value of the first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The declared body length (validated while parsing: one header, decimal digits only).
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| framing::content_length(v).ok())
    }

    /// Whether the body is chunked (Transfer-Encoding present; parsing made sure it is exactly
    /// one `chunked`).
    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some()
    }
}

/// Header values stay out of Debug output: the sandbox may send its own credentials.
impl fmt::Debug for RequestHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("version", &self.version)
            .field("host", &self.host.as_deref().map(String::from_utf8_lossy))
            .field("head_len", &self.head_len)
            .field("header_names", &names)
            .finish()
    }
}

/// Parses an HTTP/1.x request head from the first bytes of a connection.
///
/// Returns `Ok(None)` when the bytes are not an HTTP/1 request. Only the head is looked at;
/// bytes after it (a body, a pipelined request) are left alone.
///
/// # Errors
/// `Incomplete` until the blank line has arrived; `Malformed` for syntax errors, bare-LF line
/// endings, obs-fold, NUL, a duplicate Host, Content-Length with Transfer-Encoding, a duplicate or
/// invalid Content-Length, a Transfer-Encoding other than a single `chunked`, a missing Host in
/// HTTP/1.1, a target form the method does not allow, userinfo in the target, and heads over
/// [`MAX_HEAD`] bytes.
pub fn parse_http_head(buf: &[u8]) -> Result<Option<RequestHead>, SniffError> {
    // RFC 9112 §2.2 lets servers skip empty lines before the request line; the firewall refuses
    // them instead, so a request cannot hide behind them and be taken for something else.
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let skipped = leading_empty_lines(window)?;
    if !detect::looks_like_http(&window[skipped..])? {
        return Ok(None);
    }
    if skipped > 0 {
        return Err(SniffError::Malformed("empty line before the request line"));
    }
    let Some(end) = head_end(window)? else {
        // Surface syntax errors before the head is complete.
        parse_with_httparse(window)?;
        return if buf.len() >= MAX_HEAD {
            Err(SniffError::Malformed("request head over 64 KiB"))
        } else {
            Err(SniffError::Incomplete)
        };
    };
    let Some(head) = parse_with_httparse(&window[..end])? else {
        return Err(SniffError::Malformed("request head does not parse"));
    };
    check_framing(&head)?;
    Ok(Some(head))
}

fn leading_empty_lines(buf: &[u8]) -> Result<usize, SniffError> {
    let mut at = 0;
    while let Some(rest) = buf.get(at..) {
        match rest {
            [b'\r', b'\n', ..] => at += 2,
            [b'\r'] => return Err(SniffError::Incomplete),
            _ => break,
        }
    }
    Ok(at)
}

/// Finds the end of the head (after CRLF CRLF), refusing NUL and bare LF on the way. httparse
/// accepts bare LF as a line ending; some upstreams do not, and that difference is a smuggling
/// vector.
fn head_end(window: &[u8]) -> Result<Option<usize>, SniffError> {
    for (i, &b) in window.iter().enumerate() {
        match b {
            0 => return Err(SniffError::Malformed("NUL byte in the request head")),
            b'\n' => {
                if i == 0 || window[i - 1] != b'\r' {
                    return Err(SniffError::Malformed("bare LF line ending"));
                }
                if i >= 3 && &window[i - 3..i] == b"\r\n\r" {
                    return Ok(Some(i + 1));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Runs httparse; `Ok(None)` while the head is partial.
fn parse_with_httparse(buf: &[u8]) -> Result<Option<RequestHead>, SniffError> {
    // Uninitialised slots: zeroing 256 headers would cost more than parsing a small head.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(SniffError::Malformed(httparse_reason(e))),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(SniffError::Malformed("incomplete request line"));
    };
    target::classify(method, target)?;
    let mut host = None;
    let mut fields = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = trim(h.value);
        if h.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(SniffError::Malformed("duplicate Host header"));
            }
            host = Some(value.to_vec());
        }
        fields.push((h.name.to_owned(), value.to_vec()));
    }
    Ok(Some(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        version,
        host,
        head_len,
        headers: fields,
    }))
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name (or obs-fold)",
        httparse::Error::HeaderValue => "invalid byte in a header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status | httparse::Error::Token => "invalid request line",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
    }
}

/// Message framing must be unambiguous (RFC 9112 §6.3): otherwise the firewall and the upstream
/// may disagree on where the next request starts, and the second one goes unchecked. The rule
/// itself is [`framing::body_framing`], shared with the stream follower ([`framing::Follower`]).
fn check_framing(head: &RequestHead) -> Result<(), SniffError> {
    if head.version == 1 && head.host.is_none() {
        return Err(SniffError::Malformed("HTTP/1.1 request without Host"));
    }
    framing::body_framing(
        head.version,
        head.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
    )
    .map(|_| ())
    .map_err(SniffError::Malformed)
}

pub(crate) fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end]
}
