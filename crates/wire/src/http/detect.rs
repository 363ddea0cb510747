//! Is this the start of an HTTP/1 request? Decided from as few bytes as possible, so that a
//! partial request is `Incomplete` rather than `Unknown`, yet text protocols that merely start
//! with a word (SSH banners, IRC, memcached) are still told apart.

use crate::SniffError;

use super::MAX_HEAD;

/// Longest method token we wait for before calling the bytes something else.
const MAX_METHOD: usize = 32;

/// Methods of the IANA HTTP Method Registry (plus PURGE): one of these followed by SP is HTTP at
/// once. Any other token needs a whole request line ending in `HTTP/…` to count as HTTP.
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"QUERY",
    b"PRI",
    b"ACL",
    b"BASELINE-CONTROL",
    b"BIND",
    b"CHECKIN",
    b"CHECKOUT",
    b"COPY",
    b"LABEL",
    b"LINK",
    b"LOCK",
    b"MERGE",
    b"MKACTIVITY",
    b"MKCALENDAR",
    b"MKCOL",
    b"MKREDIRECTREF",
    b"MKWORKSPACE",
    b"MOVE",
    b"ORDERPATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"REBIND",
    b"REPORT",
    b"SEARCH",
    b"UNBIND",
    b"UNCHECKOUT",
    b"UNLINK",
    b"UNLOCK",
    b"UPDATE",
    b"UPDATEREDIRECTREF",
    b"VERSION-CONTROL",
    b"PURGE",
];

/// RFC 9110 §5.6.2 `tchar`.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `buf` (which starts at the request line) is an HTTP/1 request.
pub(super) fn looks_like_http(buf: &[u8]) -> Result<bool, SniffError> {
    let token = buf.iter().take_while(|&&b| is_tchar(b)).count();
    if token > MAX_METHOD || token == 0 && !buf.is_empty() {
        return Ok(false);
    }
    let known = KNOWN_METHODS.contains(&&buf[..token]);
    match buf.get(token) {
        None => return Err(SniffError::Incomplete),
        Some(b' ') if known => return Ok(true),
        Some(b' ') => {}
        // Some servers split the request line on any whitespace: `GET\t/` must not pass as
        // a protocol without a name.
        Some(b'\t' | b'\x0b' | b'\x0c' | b'\r' | b'\n') if known => {
            return Err(SniffError::Malformed(
                "request line separator is not a single SP",
            ));
        }
        Some(_) => return Ok(false),
    }
    // An unregistered method: HTTP only if the request line ends in a version.
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_HEAD {
            Ok(false)
        } else {
            Err(SniffError::Incomplete)
        };
    };
    let line = &window[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let last = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    // Case-insensitive: a lenient upstream might take `http/1.1`; httparse will then refuse it.
    Ok(last
        .get(..5)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"HTTP/")))
}
