//! The test CA (ECDSA P-256) and the SNI-selected server certificates it signs.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A throwaway certificate authority for one world.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    pub(crate) fn new() -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Palisade testbed CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let issuer = CertifiedIssuer::self_signed(params, key).context("self-signing test CA")?;
        Ok(Self { issuer })
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub(crate) fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A leaf for one DNS name (may be a wildcard `*.x.test`), chained to this CA.
    pub(crate) fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing {name}"))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = any_supported_type(&der).context("loading leaf key")?;
        Ok(Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.der()],
            signing,
        )))
    }
}

/// Most certificates minted on demand for deep wildcard names.
const MAX_MINTED: usize = 1024;

/// Picks a certificate by SNI: exact name first, then the `*.parent` wildcard for one extra
/// label; names deeper under a wildcard (`a.b.wild.test`) get an exact certificate minted on
/// demand, so every name the test zone serves under a wildcard works with real clients.
/// No SNI or an unknown name: no certificate, so the handshake fails.
#[derive(Debug)]
pub(crate) struct SniResolver {
    ca: Arc<TestCa>,
    certs: HashMap<String, Arc<CertifiedKey>>,
    minted: std::sync::Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl SniResolver {
    pub(crate) fn new(ca: Arc<TestCa>, names: &[&str]) -> Result<Self> {
        let mut certs = HashMap::new();
        for name in names {
            certs.insert((*name).to_owned(), ca.leaf(name)?);
        }
        Ok(Self {
            ca,
            certs,
            minted: std::sync::Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn lookup(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let sni = sni.to_ascii_lowercase();
        if let Some(c) = self.certs.get(&sni) {
            return Some(Arc::clone(c));
        }
        let (_, parent) = sni.split_once('.')?;
        if let Some(c) = self.certs.get(&format!("*.{parent}")) {
            return Some(Arc::clone(c));
        }
        let under_wildcard = self.certs.keys().any(|k| {
            k.strip_prefix("*.").is_some_and(|suffix| {
                sni.strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            })
        });
        if !under_wildcard {
            return None;
        }
        let mut minted = self.minted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = minted.get(&sni) {
            return Some(Arc::clone(c));
        }
        if minted.len() >= MAX_MINTED {
            return None;
        }
        let leaf = self.ca.leaf(&sni).ok()?;
        minted.insert(sni, Arc::clone(&leaf));
        Some(leaf)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_matches_exact_and_one_wildcard_label() {
        let ca = Arc::new(TestCa::new().unwrap());
        let r = SniResolver::new(Arc::clone(&ca), &["alpha.test", "*.wild.test"]).unwrap();
        assert!(r.lookup("alpha.test").is_some());
        assert!(r.lookup("ALPHA.test").is_some());
        assert!(r.lookup("x.wild.test").is_some());
        assert!(r.lookup("wild.test").is_none());
        assert!(r.lookup("a.b.wild.test").is_some());
        assert!(r.lookup("xwild.test").is_none());
        assert!(r.lookup("a.wild.test.evil").is_none());
        assert!(r.lookup("beta.test").is_none());
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
