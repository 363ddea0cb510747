//! Trust inside the sandbox: the CA certificate goes into the trust store files of the root
//! filesystem's distribution (Debian/Ubuntu, RHEL/Fedora, Alpine), and [`env_vars`] gives the
//! variables that point clients at the bundle.
//!
//! Only the certificate is written; the key never enters the rootfs. All file operations are
//! confined to the rootfs (see `rootfs.rs`): a hostile root cannot make the host write elsewhere.

mod bundle;
mod hash;
mod rootfs;

use std::path::{Path, PathBuf};

use crate::CaError;
use crate::ca_pem::{invalid, read_ca_pem};
use rootfs::{Entry, Rootfs};

pub use bundle::{BEGIN_MARKER, END_MARKER};

/// Debian/Ubuntu, and Alpine: the bundle and the `SSL_CERT_DIR` directory.
pub const DEBIAN_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const DEBIAN_CERT_DIR: &str = "/etc/ssl/certs";
/// Where `update-ca-certificates` (Debian, Alpine) picks up local CAs, so a re-run inside the
/// sandbox keeps ours.
const LOCAL_CA_FILE: &str = "/usr/local/share/ca-certificates/palisade-sandbox-ca.crt";
/// Alpine's (and LibreSSL's) default bundle.
const ALPINE_CERT_PEM: &str = "/etc/ssl/cert.pem";
const ALPINE_RELEASE: &str = "/etc/alpine-release";
/// RHEL/Fedora: the bundle (usually a link into `ca-trust/extracted`) and the anchors that
/// `update-ca-trust` rebuilds it from.
pub const RHEL_BUNDLE: &str = "/etc/pki/tls/certs/ca-bundle.crt";
const RHEL_CERT_DIR: &str = "/etc/pki/tls/certs";
const RHEL_CA_TRUST: &str = "/etc/pki/ca-trust";
const RHEL_ANCHOR_FILE: &str = "/etc/pki/ca-trust/source/anchors/palisade-sandbox-ca.pem";
/// Name of the copy in the certificate directory that the hash link points at.
const DIR_COPY_NAME: &str = "palisade-sandbox-ca.pem";
/// Bundles larger than this are refused rather than read.
const MAX_BUNDLE_BYTES: u64 = 32 << 20;

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustInstall {
    /// The bundle the variables point at, as a path inside the sandbox
    /// (e.g. `/etc/ssl/certs/ca-certificates.crt`).
    pub bundle_path: String,
    /// The hashed certificate directory for `SSL_CERT_DIR`, inside the sandbox.
    pub cert_dir: String,
    /// Every file written or linked, as paths inside the sandbox (symlinks resolved).
    pub files_written: Vec<PathBuf>,
}

/// Installs `ca_pem` into every trust store layout found under `rootfs` (Debian/Ubuntu when
/// none is), idempotently: bundles get one marked block, which a later install replaces, so
/// re-installing another sandbox CA leaves exactly the new one.
pub fn install(rootfs: &Path, ca_pem: &str) -> Result<TrustInstall, CaError> {
    let ca = CaPem::parse(ca_pem)?;
    let root = Rootfs::open(rootfs)?;

    let has_ssl_certs = root.is_dir(DEBIAN_CERT_DIR);
    let alpine = root.entry(ALPINE_CERT_PEM)? != Entry::Missing
        || root.entry(ALPINE_RELEASE)? != Entry::Missing;
    let rhel = root.is_dir(RHEL_CERT_DIR) || root.is_dir(RHEL_CA_TRUST);
    let debian = has_ssl_certs || !(alpine || rhel);

    let mut written = Vec::new();
    if debian || alpine {
        written.push(update_bundle(&root, DEBIAN_BUNDLE, &ca)?);
        written.push(root.write(LOCAL_CA_FILE, ca.text.as_bytes(), 0o644)?);
        written.extend(hash_links(&root, DEBIAN_CERT_DIR, &ca)?);
    }
    if alpine {
        // Usually a link to the bundle above; the marked block makes a second pass a no-op.
        written.push(update_bundle(&root, ALPINE_CERT_PEM, &ca)?);
    }
    if rhel {
        written.push(update_bundle(&root, RHEL_BUNDLE, &ca)?);
        written.push(root.write(RHEL_ANCHOR_FILE, ca.text.as_bytes(), 0o644)?);
        if !(debian || alpine) {
            written.extend(hash_links(&root, RHEL_CERT_DIR, &ca)?);
        }
    }
    let (bundle_path, cert_dir) = if debian || alpine {
        (DEBIAN_BUNDLE, DEBIAN_CERT_DIR)
    } else {
        (RHEL_BUNDLE, RHEL_CERT_DIR)
    };
    let mut files_written: Vec<PathBuf> = Vec::with_capacity(written.len());
    for path in written.into_iter().map(PathBuf::from) {
        if !files_written.contains(&path) {
            files_written.push(path);
        }
    }
    tracing::debug!(rootfs = %rootfs.display(), files = files_written.len(), "sandbox CA installed");
    Ok(TrustInstall {
        bundle_path: bundle_path.to_owned(),
        cert_dir: cert_dir.to_owned(),
        files_written,
    })
}

/// The variables design.md lists, each pointing at the bundle (`SSL_CERT_DIR` at the hashed
/// directory), for the sandbox's process environment.
#[must_use]
pub fn env_vars(install: &TrustInstall) -> Vec<(String, String)> {
    const BUNDLE_VARS: [&str; 12] = [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "DENO_CERT",
        "AWS_CA_BUNDLE",
        "PIP_CERT",
        "HTTPLIB2_CA_CERTS",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        "NIX_SSL_CERT_FILE",
        "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
    ];
    let mut vars = vec![("SSL_CERT_DIR".to_owned(), install.cert_dir.clone())];
    vars.extend(
        BUNDLE_VARS
            .iter()
            .map(|k| ((*k).to_owned(), install.bundle_path.clone())),
    );
    vars
}

/// A CA certificate checked to be exactly one PEM certificate of a CA.
struct CaPem {
    text: String,
    subject_hash: Option<u32>,
}

impl CaPem {
    fn parse(ca_pem: &str) -> Result<Self, CaError> {
        let text = ca_pem.trim();
        if text.lines().any(|l| l.starts_with('#')) {
            return Err(invalid("comment lines are not allowed"));
        }
        read_ca_pem(text, |cert, _| {
            Ok(Self {
                text: format!("{text}\n"),
                subject_hash: hash::subject_hash(cert),
            })
        })
    }
}

fn update_bundle(root: &Rootfs, path: &str, ca: &CaPem) -> Result<String, CaError> {
    let existing = root.read(path, MAX_BUNDLE_BYTES)?.unwrap_or_default();
    let updated = bundle::splice(&existing, &ca.text);
    root.write(path, &updated, 0o644)
}

/// A copy of the CA in `dir` and an OpenSSL `<hash>.<n>` link to it; links an older install
/// made are removed first.
fn hash_links(root: &Rootfs, dir: &str, ca: &CaPem) -> Result<Vec<String>, CaError> {
    let copy = root.write(&format!("{dir}/{DIR_COPY_NAME}"), ca.text.as_bytes(), 0o644)?;
    let Some(hash) = ca.subject_hash else {
        tracing::warn!("CA subject cannot be hashed the OpenSSL way: no hash link made");
        return Ok(vec![copy]);
    };
    let ours = |entry: &Entry| matches!(entry, Entry::Symlink(t) if t == DIR_COPY_NAME);
    for (name, entry) in root.list(dir)? {
        if is_hash_link_name(&name) && ours(&entry) {
            root.remove(&format!("{dir}/{name}"))?;
        }
    }
    for n in 0..16 {
        let link = format!("{dir}/{hash:08x}.{n}");
        if root.entry(&link)? == Entry::Missing {
            root.symlink(&link, DIR_COPY_NAME)?;
            return Ok(vec![copy, link]);
        }
    }
    tracing::warn!("no free hash link name for the CA: SSL_CERT_DIR lookups will miss it");
    Ok(vec![copy])
}

fn is_hash_link_name(name: &str) -> bool {
    name.split_once('.').is_some_and(|(hex, n)| {
        hex.len() == 8
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
