//! The one spelling of a server name that a leaf certificate is minted and cached for.

use std::net::IpAddr;

use rustls::pki_types::DnsName;

use crate::CaError;

/// Canonical form of an SNI for a leaf certificate: ASCII lowercase, one trailing dot removed,
/// strict DNS syntax (A-labels only, labels of 1–63 bytes, at most 253 bytes). IP literals and
/// wildcards are refused: a leaf is only ever minted for one exact host name.
///
/// The proxy canonicalises names itself before deciding; this check makes sure the CA never signs
/// anything else, whatever it is handed.
pub fn canonical_sni(sni: &str) -> Result<String, CaError> {
    let name = sni.strip_suffix('.').unwrap_or(sni);
    if name.is_empty() {
        return Err(CaError::InvalidName {
            reason: "empty name",
        });
    }
    if name.ends_with('.') {
        return Err(CaError::InvalidName {
            reason: "empty label",
        });
    }
    if !name.is_ascii() {
        return Err(CaError::InvalidName {
            reason: "not an A-label (non-ASCII)",
        });
    }
    if name.contains('*') {
        return Err(CaError::InvalidName {
            reason: "wildcards are not minted",
        });
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(CaError::InvalidName {
            reason: "IP literal",
        });
    }
    let name = name.to_ascii_lowercase();
    if DnsName::try_from_str(&name).is_err() {
        return Err(CaError::InvalidName {
            reason: "not a valid DNS name",
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (input, want) in [
            ("api.example.test", "api.example.test"),
            ("API.Example.TEST", "api.example.test"),
            ("api.example.test.", "api.example.test"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(canonical_sni(input).ok().as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn refused_forms() {
        let long_label = format!("{}.test", "a".repeat(64));
        let long_name = format!("{}test", "abcdefghi.".repeat(26));
        for input in [
            "",
            ".",
            "api.example.test..",
            "*.example.test",
            "127.0.0.1",
            "::1",
            "[::1]",
            "bücher.example",
            "a b.test",
            "a\0b.test",
            "-a.test",
            "a-.test",
            "a..test",
            "1.2.3.4.",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(canonical_sni(input).is_err(), "{input:?} accepted");
        }
    }
}
