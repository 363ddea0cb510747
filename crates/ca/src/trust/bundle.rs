//! Pure edits of PEM bundle files: put the Palisade CA in once, take any older one out.

use crate::authority::CA_CN_PREFIX;

/// First line of the block this crate appends to a bundle.
pub const BEGIN_MARKER: &str =
    "# BEGIN Palisade sandbox CA (managed by Palisade; replaced on re-install)";
/// Last line of that block.
pub const END_MARKER: &str = "# END Palisade sandbox CA";

const BEGIN_PREFIX: &[u8] = b"# BEGIN Palisade sandbox CA";
const END_PREFIX: &[u8] = b"# END Palisade sandbox CA";
const PEM_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const PEM_END: &[u8] = b"-----END CERTIFICATE-----";

/// `existing` without any Palisade CA, then one marked block with `ca_pem`.
///
/// Removed: every marked block, and every unmarked certificate whose subject CN starts with
/// "Palisade sandbox CA " (a copy that `update-ca-certificates` or `update-ca-trust` put in the
/// bundle from an older install). Everything else is kept byte for byte.
pub(crate) fn splice(existing: &[u8], ca_pem: &str) -> Vec<u8> {
    let mut out = without_palisade(existing);
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(BEGIN_MARKER.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(ca_pem.trim().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(END_MARKER.as_bytes());
    out.push(b'\n');
    out
}

/// Holding back lines while we decide whether they are a Palisade certificate.
enum State {
    Copy,
    /// Inside a marked block; the lines are kept in case the END marker never comes.
    Marked(Vec<u8>),
    /// Inside an unmarked PEM certificate.
    Pem(Vec<u8>),
}

fn without_palisade(existing: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(existing.len());
    let mut state = State::Copy;
    for line in existing.split_inclusive(|&b| b == b'\n') {
        let text = line.trim_ascii();
        state = match state {
            State::Copy if text.starts_with(BEGIN_PREFIX) => State::Marked(line.to_vec()),
            State::Copy if text.starts_with(PEM_BEGIN) => State::Pem(line.to_vec()),
            State::Copy => {
                out.extend_from_slice(line);
                State::Copy
            }
            State::Marked(_) if text.starts_with(END_PREFIX) => State::Copy,
            State::Marked(mut held) => {
                held.extend_from_slice(line);
                State::Marked(held)
            }
            State::Pem(mut held) => {
                held.extend_from_slice(line);
                if text.starts_with(PEM_END) {
                    if !is_palisade_cert(&held) {
                        out.extend_from_slice(&held);
                    }
                    State::Copy
                } else {
                    State::Pem(held)
                }
            }
        };
    }
    match state {
        State::Copy => {}
        // Truncated PEM: not ours to judge, keep it.
        State::Pem(held) => out.extend_from_slice(&held),
        // A BEGIN marker without END (a hand-edited or truncated file): drop our block up to the
        // end of its certificate, keep whatever follows.
        State::Marked(held) => {
            let mut after_cert = false;
            for line in held.split_inclusive(|&b| b == b'\n') {
                if after_cert {
                    out.extend_from_slice(line);
                } else if line.trim_ascii().starts_with(PEM_END) {
                    after_cert = true;
                }
            }
        }
    }
    out
}

fn is_palisade_cert(pem: &[u8]) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| cn.starts_with(CA_CN_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SandboxCa;

    const OTHER: &str =
        "# Some root\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn count(haystack: &[u8], needle: &str) -> usize {
        String::from_utf8_lossy(haystack).matches(needle).count()
    }

    #[test]
    fn appends_once_and_keeps_the_rest() -> anyhow::Result<()> {
        let ca = SandboxCa::generate("bundle-1")?;
        let once = splice(OTHER.as_bytes(), ca.cert_pem());
        assert!(once.starts_with(OTHER.as_bytes()));
        let twice = splice(&once, ca.cert_pem());
        assert_eq!(once, twice, "idempotent");
        assert_eq!(count(&twice, BEGIN_MARKER), 1);
        assert_eq!(count(&twice, ca.cert_pem().trim()), 1);
        Ok(())
    }

    #[test]
    fn replaces_older_palisade_ca_marked_or_not() -> anyhow::Result<()> {
        let old = SandboxCa::generate("old")?;
        let new = SandboxCa::generate("new")?;
        // An older marked block, plus a copy that update-ca-certificates put in unmarked, and a
        // file without a final newline.
        let mut existing = splice(OTHER.as_bytes(), old.cert_pem());
        existing.extend_from_slice(old.cert_pem().trim().as_bytes());
        let out = splice(&existing, new.cert_pem());
        assert_eq!(count(&out, old.cert_pem().trim()), 0);
        assert_eq!(count(&out, new.cert_pem().trim()), 1);
        assert_eq!(count(&out, "AAAA"), 1);
        Ok(())
    }

    #[test]
    fn unterminated_marker_keeps_what_follows() -> anyhow::Result<()> {
        let old = SandboxCa::generate("old")?;
        let new = SandboxCa::generate("new")?;
        let existing = format!("{BEGIN_MARKER}\n{}\n{OTHER}", old.cert_pem().trim());
        let out = splice(existing.as_bytes(), new.cert_pem());
        assert_eq!(count(&out, old.cert_pem().trim()), 0);
        assert_eq!(count(&out, "AAAA"), 1);
        assert_eq!(count(&out, new.cert_pem().trim()), 1);
        Ok(())
    }

    #[test]
    fn empty_and_garbage_input() -> anyhow::Result<()> {
        let ca = SandboxCa::generate("x")?;
        let out = splice(b"", ca.cert_pem());
        assert!(out.starts_with(BEGIN_MARKER.as_bytes()));
        let garbage = b"\xff\xfe-----BEGIN CERTIFICATE-----\nnot base64\n";
        let out = splice(garbage, ca.cert_pem());
        assert!(out.starts_with(garbage));
        Ok(())
    }
}
