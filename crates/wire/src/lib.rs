//! Protocol sniffing: the TLS ClientHello (SNI, ALPN, ECH) and HTTP/1 request heads, parsed from
//! peeked bytes. Pure code.
//!
//! The transparent proxy peeks at the first bytes a sandbox sends (bounded in bytes and time) and
//! calls [`sniff`] on everything seen so far. The answer is one of:
//! - `Ok(Sniffed::Tls(_))` / `Ok(Sniffed::Http(_))`: decide on the name inside;
//! - `Ok(Sniffed::Unknown)`: the bytes can no longer be a TLS handshake record nor an HTTP/1
//!   request, so the connection carries a protocol without a name;
//! - `Err(SniffError::Incomplete)`: read more (up to the proxy's bound, then deny);
//! - `Err(SniffError::Malformed(_))`: it claims to be TLS or HTTP but breaks the format: deny.
//!
//! Parsers never allocate more than the input they are given, never panic and never loop more
//! than the input length, so they can be called on every new segment. Every strict prefix of a
//! well-formed ClientHello or request head is `Incomplete`.

#![forbid(unsafe_code)]

mod http;
#[cfg(feature = "fuzzing")]
pub mod invariants;
mod reader;
mod tls;

pub use http::{MAX_HEAD, MAX_HEADERS, RequestHead, TargetForm, framing, parse_http_head};
pub use tls::{ClientHello, MAX_CLIENT_HELLO, parse_client_hello};

/// More bytes are needed before anything can be said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("incomplete: more bytes are needed")]
pub struct Incomplete;

/// Why sniffing gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SniffError {
    /// The bytes so far are a valid prefix: read more.
    #[error("incomplete: more bytes are needed")]
    Incomplete,
    /// The sandbox sent something that looks like TLS or HTTP but violates the format. The
    /// reason is a fixed text; it never quotes the sandbox's bytes.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

impl From<Incomplete> for SniffError {
    fn from(_: Incomplete) -> Self {
        SniffError::Incomplete
    }
}

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// A complete TLS ClientHello.
    Tls(ClientHello),
    /// A complete HTTP/1.x request head.
    Http(RequestHead),
    /// Neither a TLS handshake record nor an HTTP/1 request line.
    Unknown,
}

/// Sniffs the first bytes a client sent on a TCP connection.
///
/// # Errors
/// [`SniffError::Incomplete`] when more bytes are needed, [`SniffError::Malformed`] when the bytes
/// look like TLS or HTTP but violate the format.
pub fn sniff(buf: &[u8]) -> Result<Sniffed, SniffError> {
    if let Some(hello) = parse_client_hello(buf)? {
        return Ok(Sniffed::Tls(hello));
    }
    match parse_http_head(buf)? {
        Some(head) => Ok(Sniffed::Http(head)),
        None => Ok(Sniffed::Unknown),
    }
}
