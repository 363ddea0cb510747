//! The TLS ClientHello: record reassembly and the handful of extensions the proxy decides on.
//!
//! The proxy only ever sees an accumulated prefix of the stream, so parsing restarts from the
//! first byte on every call and answers `Incomplete` until the whole handshake message is there,
//! however it was split over TCP segments and TLS records (RFC 8446 §5.1 lets a client fragment a
//! handshake message over several records, and some evasion tools do exactly that).

use std::borrow::Cow;

use crate::SniffError;
use crate::reader::Reader;

#[cfg(test)]
mod tests;

/// The most bytes of TLS records a ClientHello may take, headers included. Real hellos are well
/// under 2 KiB (post-quantum key shares push Chrome's to ~1.8 KiB); anything larger is refused.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

const RECORD_HEADER: usize = 5;
/// RFC 8446 §5.1: a plaintext record fragment is at most 2^14 bytes.
const MAX_FRAGMENT: usize = 1 << 14;
const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;
const HANDSHAKE_HEADER: usize = 4;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_ECH: u16 = 0xfe0d;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What the proxy needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The raw `host_name` bytes exactly as sent; `None` when there is no server_name extension.
    /// Not validated beyond being non-empty: the proxy canonicalises it with palisade-policy.
    pub sni: Option<Vec<u8>>,
    /// Protocol names offered in ALPN, in the client's order (empty when there is no ALPN).
    pub alpn: Vec<Vec<u8>>,
    /// An encrypted_client_hello extension (0xfe0d) is present; `sni` is then the outer
    /// (public) name and the real destination is hidden.
    pub ech: bool,
    /// Bytes of the TLS records that carried the ClientHello, headers included.
    pub record_len: usize,
}

/// Parses a TLS ClientHello from the first bytes of a connection.
///
/// Returns `Ok(None)` when the bytes are not a TLS handshake record at all.
///
/// # Errors
/// `Incomplete` until the whole handshake message has arrived; `Malformed` for SSLv2-compatible
/// hellos, lying lengths, truncated or duplicate extensions, a server_name extension that is not
/// exactly one non-empty host_name, and hellos over [`MAX_CLIENT_HELLO`].
pub fn parse_client_hello(buf: &[u8]) -> Result<Option<ClientHello>, SniffError> {
    if !is_tls(buf)? {
        return Ok(None);
    }
    let (msg, record_len) = reassemble(buf)?;
    let mut hello = parse_message(&msg)?;
    hello.record_len = record_len;
    Ok(Some(hello))
}

/// Whether the bytes start like a TLS handshake record (`0x16 0x03 0x0X`). SSLv2-compatible
/// hellos (RFC 5246 appendix E.2) are refused outright: no SNI, and nothing modern sends them.
fn is_tls(buf: &[u8]) -> Result<bool, SniffError> {
    let Some(&first) = buf.first() else {
        return Err(SniffError::Incomplete);
    };
    if first == HANDSHAKE {
        return match buf.get(1..3) {
            None if buf.get(1).is_none_or(|&major| major == 3) => Err(SniffError::Incomplete),
            Some(&[3, minor]) if minor <= 0x0f => Ok(true),
            _ => Ok(false),
        };
    }
    if first & 0x80 != 0 {
        // Two-byte SSLv2 record header, then msg_type 1 (client-hello), then version 0x0002
        // (SSLv2) or 0x03XX (the compatible form).
        return match (buf.get(2), buf.get(3)) {
            (None, _) => Err(SniffError::Incomplete),
            (Some(&CLIENT_HELLO), None) => Err(SniffError::Incomplete),
            (Some(&CLIENT_HELLO), Some(0x00 | 0x03)) => {
                Err(SniffError::Malformed("SSLv2-compatible ClientHello"))
            }
            _ => Ok(false),
        };
    }
    Ok(false)
}

/// Joins the handshake message from consecutive handshake records. Returns the message (header
/// included) and how many record bytes carried it. Borrows when one record holds it all.
fn reassemble(buf: &[u8]) -> Result<(Cow<'_, [u8]>, usize), SniffError> {
    let mut msg: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut pos = 0;
    loop {
        let header = buf
            .get(pos..pos + RECORD_HEADER)
            .ok_or(SniffError::Incomplete)?;
        if header[0] != HANDSHAKE {
            return Err(SniffError::Malformed(
                "a non-handshake record before the ClientHello was complete",
            ));
        }
        if header[1] != 3 || header[2] > 4 {
            return Err(SniffError::Malformed("unsupported TLS record version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(SniffError::Malformed("empty handshake record"));
        }
        if len > MAX_FRAGMENT {
            return Err(SniffError::Malformed("TLS record over 16 KiB"));
        }
        let start = pos + RECORD_HEADER;
        let end = start + len;
        if end > MAX_CLIENT_HELLO {
            return Err(SniffError::Malformed("ClientHello over 64 KiB"));
        }
        let fragment = buf.get(start..end.min(buf.len())).unwrap_or_default();
        if msg.is_empty() {
            msg = Cow::Borrowed(fragment);
        } else {
            msg.to_mut().extend_from_slice(fragment);
        }
        // What this record will have contributed once it has fully arrived.
        let msg_len_at_record_end = msg.len() + (end - start - fragment.len());
        if let Some(&msg_type) = msg.first()
            && msg_type != CLIENT_HELLO
        {
            return Err(SniffError::Malformed(
                "first handshake message is not a ClientHello",
            ));
        }
        if let Some(length) = msg.get(1..HANDSHAKE_HEADER) {
            let total = HANDSHAKE_HEADER
                + ((usize::from(length[0]) << 16)
                    | (usize::from(length[1]) << 8)
                    | usize::from(length[2]));
            if total > MAX_CLIENT_HELLO {
                return Err(SniffError::Malformed("ClientHello over 64 KiB"));
            }
            if msg_len_at_record_end > total {
                return Err(SniffError::Malformed(
                    "data after the ClientHello in its record",
                ));
            }
            if msg_len_at_record_end == total {
                if end > buf.len() {
                    return Err(SniffError::Incomplete);
                }
                return Ok((msg, end));
            }
        }
        if end > buf.len() {
            return Err(SniffError::Incomplete);
        }
        pos = end;
    }
}

/// Parses a complete ClientHello handshake message (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2).
fn parse_message(msg: &[u8]) -> Result<ClientHello, SniffError> {
    let mut r = Reader::new(msg.get(HANDSHAKE_HEADER..).unwrap_or_default());
    let version = r.u16("truncated ClientHello version")?;
    if version >> 8 != 3 {
        return Err(SniffError::Malformed("unsupported ClientHello version"));
    }
    r.take(32, "truncated ClientHello random")?;
    if r.vec8("truncated session id")?.len() > 32 {
        return Err(SniffError::Malformed("session id over 32 bytes"));
    }
    let suites = r.vec16("truncated cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(SniffError::Malformed("bad cipher suites length"));
    }
    if r.vec8("truncated compression methods")?.is_empty() {
        return Err(SniffError::Malformed("no compression methods"));
    }
    let mut hello = ClientHello {
        sni: None,
        alpn: Vec::new(),
        ech: false,
        record_len: 0,
    };
    if r.is_empty() {
        // A hello without extensions (TLS 1.2 and older allow it).
        return Ok(hello);
    }
    let extensions = r.vec16("truncated extensions")?;
    if !r.is_empty() {
        return Err(SniffError::Malformed(
            "bytes after the ClientHello extensions",
        ));
    }
    let mut seen = Vec::with_capacity(32);
    let mut r = Reader::new(extensions);
    while !r.is_empty() {
        let ty = r.u16("truncated extension")?;
        let data = r.vec16("extension length beyond the extensions")?;
        seen.push(ty);
        match ty {
            EXT_SERVER_NAME => hello.sni = Some(parse_server_name(data)?),
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            EXT_ECH => hello.ech = true,
            _ => {}
        }
    }
    // RFC 8446 §4.2: at most one extension of each type. A second server_name is the classic way
    // to make the firewall and the server read different names.
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(SniffError::Malformed("duplicate extension"));
    }
    Ok(hello)
}

/// RFC 6066 §3: a ServerNameList; we accept exactly one non-empty host_name.
fn parse_server_name(data: &[u8]) -> Result<Vec<u8>, SniffError> {
    let mut outer = Reader::new(data);
    let list = outer.vec16("truncated server_name list")?;
    if !outer.is_empty() {
        return Err(SniffError::Malformed("bytes after the server_name list"));
    }
    let mut r = Reader::new(list);
    let name_type = r.u8("empty server_name list")?;
    if name_type != NAME_TYPE_HOST_NAME {
        return Err(SniffError::Malformed("server_name is not a host_name"));
    }
    let name = r.vec16("truncated host_name")?;
    if name.is_empty() {
        return Err(SniffError::Malformed("empty host_name"));
    }
    if !r.is_empty() {
        return Err(SniffError::Malformed("more than one name in server_name"));
    }
    Ok(name.to_vec())
}

/// RFC 7301 §3.1: a non-empty list of non-empty protocol names.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, SniffError> {
    let mut outer = Reader::new(data);
    let list = outer.vec16("truncated ALPN list")?;
    if !outer.is_empty() {
        return Err(SniffError::Malformed("bytes after the ALPN list"));
    }
    if list.is_empty() {
        return Err(SniffError::Malformed("empty ALPN list"));
    }
    let mut r = Reader::new(list);
    let mut names = Vec::new();
    while !r.is_empty() {
        let name = r.vec8("truncated ALPN protocol name")?;
        if name.is_empty() {
            return Err(SniffError::Malformed("empty ALPN protocol name"));
        }
        names.push(name.to_vec());
    }
    Ok(names)
}
