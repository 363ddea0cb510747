//! Properties every answer of the parsers must have, whatever the input. The fuzz targets and the
//! seed-corpus test run these, so both check the same thing. Each returns a description of the
//! first violation found.

use crate::{
    ClientHello, MAX_CLIENT_HELLO, MAX_HEAD, SniffError, Sniffed, parse_client_hello,
    parse_http_head, sniff,
};

/// Inputs up to this length have every prefix checked; longer ones a spread-out sample.
const ALL_PREFIXES_UP_TO: usize = 2048;
const SAMPLED_PREFIXES: usize = 512;

/// The kind of an answer, for comparing a prefix's answer with the whole input's.
#[derive(Debug, PartialEq, Eq)]
enum Kind<T> {
    Found(T),
    NotThisProtocol,
    Incomplete,
    Malformed,
}

fn kind<T>(r: Result<Option<T>, SniffError>) -> Kind<T> {
    match r {
        Ok(Some(t)) => Kind::Found(t),
        Ok(None) => Kind::NotThisProtocol,
        Err(SniffError::Incomplete) => Kind::Incomplete,
        Err(SniffError::Malformed(_)) => Kind::Malformed,
    }
}

fn prefix_lengths(len: usize) -> Box<dyn Iterator<Item = usize>> {
    if len <= ALL_PREFIXES_UP_TO {
        Box::new(0..len)
    } else {
        let step = len / SAMPLED_PREFIXES;
        Box::new(
            (0..len)
                .step_by(step.max(1))
                .chain(len.saturating_sub(16)..len),
        )
    }
}

/// A prefix of the input answers `Incomplete` or the same as the whole input: the proxy may call
/// the parser at any segment boundary and must never get a different answer by calling early.
fn prefixes_agree<T: PartialEq + std::fmt::Debug>(
    buf: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<T>, SniffError>,
    what: &str,
) -> Result<(), String> {
    let whole = kind(parse(buf));
    for n in prefix_lengths(buf.len()) {
        let part = kind(parse(&buf[..n]));
        if part != Kind::Incomplete && part != whole {
            return Err(format!(
                "{what}: prefix of {n} bytes gave {part:?}, whole gave {whole:?}"
            ));
        }
    }
    Ok(())
}

/// Checks [`parse_client_hello`] on `buf`.
///
/// # Errors
/// A description of the violated property.
pub fn check_client_hello(buf: &[u8]) -> Result<(), String> {
    let result = parse_client_hello(buf);
    match &result {
        Ok(Some(h)) => {
            if h.record_len > buf.len() || h.record_len > MAX_CLIENT_HELLO {
                return Err(format!(
                    "record_len {} of {} bytes",
                    h.record_len,
                    buf.len()
                ));
            }
            if parse_client_hello(&buf[..h.record_len]) != result {
                return Err("the hello's own records parse differently".into());
            }
            if h.sni.as_ref().is_some_and(Vec::is_empty) || h.alpn.iter().any(Vec::is_empty) {
                return Err("empty SNI or ALPN name accepted".into());
            }
            for n in prefix_lengths(h.record_len) {
                if parse_client_hello(&buf[..n]) != Err(SniffError::Incomplete) {
                    return Err(format!(
                        "prefix of {n} bytes of a valid hello not Incomplete"
                    ));
                }
            }
            refragments_alike(&buf[..h.record_len], h)?;
        }
        Err(SniffError::Incomplete) if buf.len() >= MAX_CLIENT_HELLO => {
            return Err(format!("Incomplete after {} bytes", buf.len()));
        }
        _ => {}
    }
    prefixes_agree(buf, parse_client_hello, "client hello")?;
    check_sniff(buf)
}

/// Checks [`parse_http_head`] on `buf`.
///
/// # Errors
/// A description of the violated property.
pub fn check_http_head(buf: &[u8]) -> Result<(), String> {
    let result = parse_http_head(buf);
    match &result {
        Ok(Some(h)) => {
            if h.head_len > buf.len() || h.head_len > MAX_HEAD {
                return Err(format!("head_len {} of {} bytes", h.head_len, buf.len()));
            }
            if !buf[..h.head_len].ends_with(b"\r\n\r\n") {
                return Err("head does not end in CRLF CRLF".into());
            }
            if parse_http_head(&buf[..h.head_len]) != result {
                return Err("the head alone parses differently".into());
            }
            if h.host.as_deref() != h.header("host") {
                return Err("host differs from the Host header".into());
            }
            let bad = |v: &Vec<u8>| v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0));
            if h.headers.iter().any(|(_, v)| bad(v)) || h.version > 1 {
                return Err("CR, LF or NUL in a header value, or a version above 1.1".into());
            }
            if h.content_length().is_some() && h.is_chunked() {
                return Err("both Content-Length and chunked".into());
            }
            for n in prefix_lengths(h.head_len) {
                if parse_http_head(&buf[..n]) != Err(SniffError::Incomplete) {
                    return Err(format!(
                        "prefix of {n} bytes of a valid head not Incomplete"
                    ));
                }
            }
        }
        Err(SniffError::Incomplete) if buf.len() >= MAX_HEAD => {
            return Err(format!("Incomplete after {} bytes", buf.len()));
        }
        _ => {}
    }
    prefixes_agree(buf, parse_http_head, "http head")?;
    check_sniff(buf)
}

/// [`sniff`] is the two parsers in turn, and only a complete answer of either is final.
fn check_sniff(buf: &[u8]) -> Result<(), String> {
    let expected = match parse_client_hello(buf) {
        Ok(Some(h)) => Ok(Sniffed::Tls(h)),
        Err(e) => Err(e),
        Ok(None) => match parse_http_head(buf) {
            Ok(Some(h)) => Ok(Sniffed::Http(h)),
            Ok(None) => Ok(Sniffed::Unknown),
            Err(e) => Err(e),
        },
    };
    if sniff(buf) != expected {
        return Err("sniff disagrees with the parsers".into());
    }
    Ok(())
}

/// The same handshake message cut into records of other sizes parses to the same hello.
fn refragments_alike(records: &[u8], hello: &ClientHello) -> Result<(), String> {
    let mut msg = Vec::new();
    let mut rest = records;
    while let Some(len) = rest.get(3..5) {
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let end = (5 + len).min(rest.len());
        msg.extend_from_slice(&rest[5..end]);
        rest = &rest[end..];
    }
    for size in [1, 3, 4, 5, 100, 16384] {
        let mut again = Vec::new();
        for chunk in msg.chunks(size) {
            let Ok(len) = u16::try_from(chunk.len()) else {
                return Err("chunk over 64 KiB".into());
            };
            again.extend_from_slice(&[0x16, 3, 1]);
            again.extend_from_slice(&len.to_be_bytes());
            again.extend_from_slice(chunk);
        }
        if again.len() > MAX_CLIENT_HELLO {
            continue;
        }
        match parse_client_hello(&again) {
            Ok(Some(h)) if h.sni == hello.sni && h.alpn == hello.alpn && h.ech == hello.ech => {
                if h.record_len != again.len() {
                    return Err(format!(
                        "refragmented by {size}: record_len {}",
                        h.record_len
                    ));
                }
            }
            other => return Err(format!("refragmented by {size}: {other:?}")),
        }
    }
    Ok(())
}
