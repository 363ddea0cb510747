//! HTTP/1 request framing, sans I/O, in one place (threat 19): the rule for how a request body is
//! framed (RFC 9112 §6.3, §11.2, [`body_framing`]) and the stream follower built on it
//! ([`Follower`]). The sniffer, the follower beneath hyper and the proxy's per-request checks (plain
//! and intercepted) all ask here, so they cannot disagree on where a request ends.
//!
//! Only unambiguous framings pass: no body, one `Content-Length` of plain decimal digits, or one
//! `Transfer-Encoding` field whose value is exactly `chunked` (in HTTP/1.1). Everything else —
//! both headers, repeated or list-valued lengths, coding lists such as `gzip, chunked` — is a shape
//! two hops may read differently, so it is refused rather than normalised. In particular
//! `Transfer-Encoding: gzip, chunked`, which RFC 9112 lets a server read as a chunked body of
//! gzip data, is refused with a 400 on every path (the sniffer once took it, the follower did
//! not): an upstream that ignores an unknown coding, or a hop that decodes it, would frame the
//! body differently, and refusing a rare shape costs less than guessing how the next hop reads it.

mod follow;

pub use follow::{Fed, Follower, Stop, Verdict, check_split};

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// A chunked body, ended by the zero-size chunk and trailers.
    Chunked,
}

/// The body framing that `headers` (name, value; values trimmed of surrounding whitespace) give a
/// request of HTTP/1.`minor_version`, or why the request is refused. The reason is a fixed text.
///
/// # Errors
/// A fixed reason when the framing is ambiguous or malformed.
pub fn body_framing<'a, I>(minor_version: u8, headers: I) -> Result<BodyFraming, &'static str>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut length: Option<&[u8]> = None;
    let mut lengths = 0usize;
    let mut encoding: Option<&[u8]> = None;
    let mut encodings = 0usize;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
            encoding = Some(value);
        }
    }
    match (lengths, encodings) {
        (0, 0) => Ok(BodyFraming::None),
        (_, 1..) if lengths > 0 => Err(CL_WITH_TE),
        (1, 0) => content_length(length.unwrap_or_default()).map(BodyFraming::Length),
        (_, 0) => Err(DUPLICATE_CL),
        (_, 1) if encoding.is_some_and(|te| te.eq_ignore_ascii_case(b"chunked")) => {
            if minor_version == 0 {
                Err(TE_IN_HTTP_1_0)
            } else {
                Ok(BodyFraming::Chunked)
            }
        }
        (_, _) => Err(TE_NOT_CHUNKED),
    }
}

/// `1*DIGIT` that fits in a u64: no sign, no list, no whitespace inside.
///
/// # Errors
/// [`BAD_CL`] otherwise.
pub fn content_length(value: &[u8]) -> Result<u64, &'static str> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return Err(BAD_CL);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(BAD_CL)
}

/// The reasons, as the 400 answers and events spell them.
pub const CL_WITH_TE: &str = "Content-Length together with Transfer-Encoding";
pub const DUPLICATE_CL: &str = "more than one Content-Length";
pub const BAD_CL: &str = "Content-Length is not a single decimal number";
pub const TE_NOT_CHUNKED: &str = "Transfer-Encoding other than a single chunked";
pub const TE_IN_HTTP_1_0: &str = "Transfer-Encoding in an HTTP/1.0 request";

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(version: u8, headers: &[(&str, &str)]) -> Result<BodyFraming, &'static str> {
        body_framing(version, headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    type Case = (
        u8,
        &'static [(&'static str, &'static str)],
        Result<BodyFraming, &'static str>,
    );

    #[test]
    fn table() {
        let cases: &[Case] = &[
            (1, &[], Ok(BodyFraming::None)),
            (1, &[("Host", "a")], Ok(BodyFraming::None)),
            (1, &[("Content-Length", "0")], Ok(BodyFraming::Length(0))),
            (0, &[("content-length", "42")], Ok(BodyFraming::Length(42))),
            (
                1,
                &[("Transfer-Encoding", "chunked")],
                Ok(BodyFraming::Chunked),
            ),
            (
                1,
                &[("transfer-encoding", "Chunked")],
                Ok(BodyFraming::Chunked),
            ),
            (
                1,
                &[("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
                Err(CL_WITH_TE),
            ),
            (
                1,
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
                Err(CL_WITH_TE),
            ),
            (
                1,
                &[("Content-Length", "5"), ("Content-Length", "5")],
                Err(DUPLICATE_CL),
            ),
            (1, &[("Content-Length", "5, 5")], Err(BAD_CL)),
            (1, &[("Content-Length", "+5")], Err(BAD_CL)),
            (1, &[("Content-Length", "0x5")], Err(BAD_CL)),
            (1, &[("Content-Length", "")], Err(BAD_CL)),
            (
                1,
                &[("Content-Length", "18446744073709551616")],
                Err(BAD_CL),
            ),
            (
                1,
                &[("Content-Length", "18446744073709551615")],
                Ok(BodyFraming::Length(u64::MAX)),
            ),
            (
                1,
                &[("Transfer-Encoding", "gzip, chunked")],
                Err(TE_NOT_CHUNKED),
            ),
            (
                1,
                &[("Transfer-Encoding", "chunked, gzip")],
                Err(TE_NOT_CHUNKED),
            ),
            (1, &[("Transfer-Encoding", "identity")], Err(TE_NOT_CHUNKED)),
            (1, &[("Transfer-Encoding", "xchunked")], Err(TE_NOT_CHUNKED)),
            (1, &[("Transfer-Encoding", ",chunked")], Err(TE_NOT_CHUNKED)),
            (
                1,
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ],
                Err(TE_NOT_CHUNKED),
            ),
            (0, &[("Transfer-Encoding", "chunked")], Err(TE_IN_HTTP_1_0)),
        ];
        for (version, headers, want) in cases {
            assert_eq!(judge(*version, headers), *want, "{headers:?}");
        }
    }
}
