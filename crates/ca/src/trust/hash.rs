//! OpenSSL's subject name hash (`X509_NAME_hash`, what `openssl x509 -hash` prints and
//! `c_rehash` names links after), so `SSL_CERT_DIR` lookups find the CA.
//!
//! The hash is the first four bytes (little-endian) of SHA-1 over the name's canonical encoding:
//! each RDN's SET encoded on its own, string values turned into lowercase UTF8String with
//! whitespace trimmed and collapsed.

use asn1::{Class, Tag};
use x509_parser::prelude::X509Certificate;
use x509_parser::x509::AttributeTypeAndValue;

use x509_parser::der_parser::asn1_rs as asn1;

/// `openssl x509 -hash` of the certificate's subject; `None` for names we cannot canonicalise
/// (then no hash link is made; the bundle still works).
pub(crate) fn subject_hash(cert: &X509Certificate<'_>) -> Option<u32> {
    let mut canon = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let mut entries = rdn.iter().map(canonical_atv).collect::<Option<Vec<_>>>()?;
        // DER SET OF: elements in ascending order of their encodings.
        entries.sort();
        canon.extend(tlv(0x31, &entries.concat()));
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &canon);
    let bytes = digest.as_ref().get(..4)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn canonical_atv(atv: &AttributeTypeAndValue<'_>) -> Option<Vec<u8>> {
    let oid = tlv(0x06, atv.attr_type().as_bytes());
    let value = atv.attr_value();
    let header = &value.header;
    if header.class() != Class::Universal || header.is_constructed() {
        return None;
    }
    let tag = header.tag();
    let value = match to_utf8(tag, value.data) {
        Some(text) => tlv(
            u8::try_from(Tag::Utf8String.0).ok()?,
            canonical_text(&text).as_bytes(),
        ),
        None if tag.0 < 31 => tlv(u8::try_from(tag.0).ok()?, value.data),
        None => return None,
    };
    Some(tlv(0x30, &[oid, value].concat()))
}

/// The string value as UTF-8 when its type is one OpenSSL canonicalises.
fn to_utf8(tag: Tag, data: &[u8]) -> Option<String> {
    match tag {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString => {
            String::from_utf8(data.to_vec()).ok()
        }
        // OpenSSL reads T61String as Latin-1.
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

/// Trim ASCII whitespace, collapse inner runs to one space, lowercase ASCII letters.
fn canonical_text(text: &str) -> String {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.trim_matches(is_space).chars() {
        if is_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_space = false;
        }
    }
    out
}

/// DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_rules() {
        assert_eq!(
            canonical_text("  Palisade   Sandbox\tCA  "),
            "palisade sandbox ca"
        );
        assert_eq!(canonical_text("ÄbC"), "Äbc");
    }

    /// Every `<hash>.0` link of the host's trust directory names its certificate by this hash:
    /// hundreds of real subjects (PrintableString, UTF8String, BMPString, multi-attribute names).
    #[test]
    fn matches_openssl_on_host_trust_store() -> anyhow::Result<()> {
        let dir = std::path::Path::new("/etc/ssl/certs");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some((hex, "0")) = name.split_once('.') else {
                continue;
            };
            let Ok(expected) = u32::from_str_radix(hex, 16) else {
                continue;
            };
            if hex.len() != 8 {
                continue;
            }
            let pem = std::fs::read(&path)?;
            let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)?;
            let cert = pem.parse_x509()?;
            assert_eq!(subject_hash(&cert), Some(expected), "{name}");
            checked += 1;
        }
        if checked == 0 {
            println!("note: no hashed certificates in /etc/ssl/certs; install ca-certificates");
        }
        Ok(())
    }
}
