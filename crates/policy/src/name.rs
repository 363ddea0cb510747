//! Canonical host names and domain patterns.
//!
//! A name from a sandbox (SNI, `Host`, a DNS question) is canonicalised exactly once, and the
//! firewall matches and dials that same spelling (threats.md, principle 1).

use std::fmt;
use std::sync::Arc;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Longest name in presentation form, without the trailing dot (RFC 1035).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;
/// Raw input longer than this is refused before any Unicode processing (bounded work).
pub const MAX_RAW_LEN: usize = 1024;

/// A host name in canonical form: ASCII, lowercase, A-labels (punycode) for internationalised
/// labels, no trailing dot, RFC 1035 length limits, letters, digits and inner hyphens only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CanonicalName(Box<str>);

impl CanonicalName {
    /// The canonical spelling.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of labels (`a.example.com` has 3).
    pub fn label_count(&self) -> usize {
        self.0.split('.').count()
    }
}

impl fmt::Display for CanonicalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CanonicalName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for CanonicalName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        canonicalize(s.as_bytes())
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing (or only a dot) was given.
    #[error("the name is empty")]
    Empty,
    /// The bytes are not UTF-8.
    #[error("the name is not valid UTF-8")]
    NotUtf8,
    /// Raw input or canonical form exceeds the length limit.
    #[error("the name is {len} bytes long; the limit is {limit}")]
    TooLong {
        /// Length seen.
        len: usize,
        /// Limit applied.
        limit: usize,
    },
    /// A label exceeds 63 bytes.
    #[error("a label is {len} bytes long; the limit is 63")]
    LabelTooLong {
        /// Length of the label in its A-label form.
        len: usize,
    },
    /// Leading dot, two dots in a row, or more than one trailing dot.
    #[error(
        "the name has an empty label (a leading dot, two dots in a row, or more than one trailing dot)"
    )]
    EmptyLabel,
    /// A character that is never valid in a host name.
    #[error("the name contains {ch:?}, which is not allowed in a host name")]
    InvalidChar {
        /// The first offending character.
        ch: char,
    },
    /// A label starts or ends with a hyphen.
    #[error("a label starts or ends with '-'")]
    Hyphen,
    /// An IPv4 or IPv6 literal (or a form some parsers read as IPv4, like `127.1` or `0x7f.1`).
    #[error("the name is an IP address literal, not a host name")]
    IpLiteral,
    /// Unicode that IDNA (UTS #46) refuses, or a malformed `xn--` label.
    #[error("the name is not a valid internationalised domain name")]
    Idna,
}

/// Canonicalises a host name from the sandbox or from a policy.
///
/// Strict: accepts letters, digits, hyphens and dots in ASCII, and Unicode that IDNA (UTS #46,
/// STD3 rules) maps to such a name; removes one trailing dot; lowercases; converts to A-labels.
/// Refuses empty names and labels, control characters (NUL included), IP literals, labels over 63
/// and names over 253 bytes.
pub fn canonicalize(raw: &[u8]) -> Result<CanonicalName, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.len() > MAX_RAW_LEN {
        return Err(NameError::TooLong {
            len: raw.len(),
            limit: MAX_RAW_LEN,
        });
    }
    let text = std::str::from_utf8(raw).map_err(|_| NameError::NotUtf8)?;
    if text.starts_with('[') || text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(NameError::IpLiteral);
    }
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return Err(NameError::Empty);
    }
    // Clear errors for the common ASCII mistakes before IDNA gives its generic one.
    for ch in text.chars() {
        if ch.is_control()
            || ch.is_whitespace()
            || (ch.is_ascii() && !(ch.is_ascii_alphanumeric() || ch == '-' || ch == '.'))
        {
            return Err(NameError::InvalidChar { ch });
        }
    }
    if text.split('.').any(str::is_empty) {
        return Err(NameError::EmptyLabel);
    }
    let canonical = if is_plain_ascii(text) {
        // UTS #46 maps letters, digits and hyphens to their lowercase selves and nothing else
        // applies to them, so the result is the same without the Unicode tables.
        text.to_ascii_lowercase()
    } else {
        Uts46::new()
            .to_ascii(
                text.as_bytes(),
                AsciiDenyList::STD3,
                Hyphens::Allow,
                DnsLength::Ignore,
            )
            .map_err(|_| NameError::Idna)?
            .into_owned()
    };
    check_ascii_name(&canonical)?;
    Ok(CanonicalName(canonical.into_boxed_str()))
}

/// ASCII letters, digits, hyphens and dots with no `xn--` label (those need punycode checks).
fn is_plain_ascii(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !text
            .split('.')
            .any(|l| l.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--")))
}

/// Syntax of the IDNA output (IDNA may map full stops or drop ignored code points, so the
/// checks run again on what will actually be matched and dialled).
fn check_ascii_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: name.len(),
            limit: MAX_NAME_LEN,
        });
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong { len: label.len() });
        }
        if let Some(ch) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::InvalidChar { ch });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::Hyphen);
        }
        last = label;
    }
    // No top-level domain is numeric; a numeric last label makes WHATWG URL parsers, libc and
    // others read the whole name as IPv4 (`127.1`, `2130706433`, `0x7f.0.0.1`).
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if last.bytes().all(|b| b.is_ascii_digit()) || hex {
        return Err(NameError::IpLiteral);
    }
    Ok(())
}

/// A domain pattern from a policy: an exact name, or `*.` and a base of at least two labels that
/// matches every name strictly below the base on a label boundary (never the base itself).
///
/// Cheap to clone (shared text), so verdicts can carry the rule that decided them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainPattern {
    /// Full text, `*.example.com` or `example.com`.
    text: Arc<str>,
    wildcard: bool,
}

/// Why a domain pattern was refused. The messages complete a sentence that starts with the
/// quoted pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Empty or only whitespace.
    #[error("is empty")]
    Empty,
    /// `*` alone, `*.tld`, or an exact single-label name.
    #[error("is too broad: {0}")]
    TooBroad(&'static str),
    /// A `*` anywhere but a leading `*.`.
    #[error(
        "has a '*' that is not a leading \"*.\" (only \"*.example.com\" style wildcards are supported)"
    )]
    StrayWildcard,
    /// An address where a name belongs.
    #[error(
        "is an IP address, not a domain; list addresses in allow_cidrs (for example \"192.0.2.1/32\")"
    )]
    IpLiteral,
    /// The name part is not a valid host name.
    #[error("is not a valid domain name: {0}")]
    Name(NameError),
}

impl DomainPattern {
    /// Parses and canonicalises a pattern. Surrounding whitespace is ignored (as the Leap0 SDK
    /// does); the canonical form is what [`Display`](fmt::Display) prints.
    pub fn parse(raw: &str) -> Result<DomainPattern, PatternError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(PatternError::Empty);
        }
        if raw == "*" || raw == "*." {
            return Err(PatternError::TooBroad(
                "\"*\" would allow every domain; use mode \"allow-all\" instead",
            ));
        }
        let (wildcard, base) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        if base.contains('*') {
            return Err(PatternError::StrayWildcard);
        }
        if base.parse::<std::net::IpAddr>().is_ok() || base.parse::<ipnet::IpNet>().is_ok() {
            return Err(PatternError::IpLiteral);
        }
        let name = canonicalize(base.as_bytes()).map_err(|e| match e {
            NameError::IpLiteral => PatternError::IpLiteral,
            other => PatternError::Name(other),
        })?;
        if name.label_count() < 2 {
            return Err(PatternError::TooBroad(if wildcard {
                "a wildcard needs at least two labels after \"*.\" (for example \"*.example.com\")"
            } else {
                "a domain needs at least two labels (for example \"example.com\")"
            }));
        }
        let text: Arc<str> = if wildcard {
            format!("*.{name}").into()
        } else {
            name.as_str().into()
        };
        Ok(DomainPattern { text, wildcard })
    }

    /// `true` for `*.example.com`.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The name without `*.`: `example.com` for both `*.example.com` and `example.com`.
    pub fn base(&self) -> &str {
        if self.wildcard {
            self.text.get(2..).unwrap_or("")
        } else {
            &self.text
        }
    }

    /// Canonical text, `*.example.com` or `example.com`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` is matched: equal to an exact pattern, or strictly below a wildcard's base
    /// on a label boundary.
    pub fn matches(&self, name: &CanonicalName) -> bool {
        let name = name.as_str();
        let base = self.base();
        if !self.wildcard {
            return name == base;
        }
        name.len() > base.len() + 1
            && name.ends_with(base)
            && name.as_bytes().get(name.len() - base.len() - 1) == Some(&b'.')
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DomainPattern({:?})", &*self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII fast path gives exactly what UTS #46 gives.
    #[test]
    fn ascii_fast_path_agrees_with_idna() {
        for raw in [
            "example.com",
            "EXAMPLE.Com",
            "a-b--c.x1",
            "R3---SN-abc.googlevideo.com",
            "0.a",
            "a.b.c.d.e",
        ] {
            assert!(is_plain_ascii(raw));
            let idna = Uts46::new().to_ascii(
                raw.as_bytes(),
                AsciiDenyList::STD3,
                Hyphens::Allow,
                DnsLength::Ignore,
            );
            assert_eq!(
                idna.ok().map(|c| c.into_owned()),
                Some(raw.to_ascii_lowercase()),
                "{raw}"
            );
        }
        assert!(!is_plain_ascii("XN--bcher-kva.example"));
        assert!(!is_plain_ascii("bücher.example"));
    }
}
