//! The forms in which an upstream may echo a secret back.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// Patterns shorter than this are not scrubbed: a short string occurs by chance in ordinary
/// bodies, and replacing it would corrupt them. A credential this short is not one a scrubber
/// can protect (documented).
pub const MIN_PATTERN: usize = 6;

/// Every form of `secret` to scrub, each at least [`MIN_PATTERN`] bytes: the value as injected;
/// when it has an auth scheme (`Bearer sk-…`, `Basic dXNl…`), the token after it; and for each of
/// those, the percent-encoded spellings (upper- and lower-case hex, `+` for space) and the
/// base64 fragments that encode it at each of the three alignments a longer encoded text can
/// put it at (standard and URL-safe alphabets, the characters that depend on the secret alone).
pub fn forms(secret: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut bases: Vec<&[u8]> = vec![secret];
    if let Some(sp) = secret.iter().position(|&b| b == b' ') {
        let token = trim_start(&secret[sp + 1..]);
        if !token.is_empty() {
            bases.push(token);
        }
    }
    let mut out: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut push = |form: Zeroizing<Vec<u8>>| {
        if form.len() >= MIN_PATTERN && !out.iter().any(|f| **f == *form) {
            out.push(form);
        }
    };
    for base in bases {
        push(Zeroizing::new(base.to_vec()));
        push(percent(base, b"0123456789ABCDEF", false));
        push(percent(base, b"0123456789abcdef", false));
        push(percent(base, b"0123456789ABCDEF", true));
        for align in 0..3 {
            push(base64_fragment(base, align, false));
            push(base64_fragment(base, align, true));
        }
    }
    out
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &b[n..]
}

/// RFC 3986 percent-encoding of everything but unreserved characters; `form`: space as `+`
/// (application/x-www-form-urlencoded).
fn percent(s: &[u8], hex: &[u8; 16], form: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() * 3));
    for &b in s {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b),
            b' ' if form => out.push(b'+'),
            _ => {
                out.push(b'%');
                out.push(hex[usize::from(b >> 4)]);
                out.push(hex[usize::from(b & 0x0f)]);
            }
        }
    }
    out
}

/// The base64 characters that encode `s` when it starts `align` bytes into a 3-byte group of a
/// longer encoded text: only the characters whose 6 bits all come from `s`.
fn base64_fragment(s: &[u8], align: usize, url_safe: bool) -> Zeroizing<Vec<u8>> {
    let mut padded = Zeroizing::new(vec![0u8; align]);
    padded.extend_from_slice(s);
    let encoded = Zeroizing::new(if url_safe {
        URL_SAFE_NO_PAD.encode(padded.as_slice())
    } else {
        STANDARD_NO_PAD.encode(padded.as_slice())
    });
    // Character i covers bits [6i, 6i + 6); `s` covers bits [8 align, 8 (align + len)).
    let first = (8 * align).div_ceil(6);
    let end = (8 * (align + s.len())) / 6;
    let bytes = encoded.as_bytes();
    Zeroizing::new(bytes.get(first..end).unwrap_or_default().to_vec())
}
