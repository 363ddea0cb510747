//! The sandbox CA: generation, restoration from the sealed store, and leaf minting.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::CaError;
use crate::ca_pem::{invalid, read_ca_pem};
use crate::cache::{CacheStats, LeafCache};
use crate::name::canonical_sni;
use crate::resolver;

/// Prefix of every sandbox CA's common name; the sandbox id follows.
pub(crate) const CA_CN_PREFIX: &str = "Palisade sandbox CA ";
/// X.520 upper bound for a common name.
const MAX_CN_LEN: usize = 64;
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
const CA_BACKDATE: time::Duration = time::Duration::days(1);

/// How leaves are minted and cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafSettings {
    /// Lifetime of a leaf from now (never past the CA's notAfter).
    pub validity: Duration,
    /// How far notBefore lies in the past, for clients with a slow clock.
    pub backdate: Duration,
    /// Most leaves cached per sandbox.
    pub cache_capacity: NonZeroUsize,
    /// How long a cached leaf is served; capped at half of `validity`, so a client never sees a
    /// leaf close to its notAfter.
    pub cache_ttl: Duration,
}

impl Default for LeafSettings {
    fn default() -> Self {
        Self {
            validity: Duration::from_secs(7 * 24 * 3600),
            backdate: Duration::from_secs(3600),
            cache_capacity: NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
            cache_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// A sandbox's certificate authority (ECDSA P-256) with its leaf cache.
///
/// `Debug` shows the subject and cache counters, never the key.
pub struct SandboxCa {
    inner: Arc<Inner>,
    /// Built once with the resolver; `server_config` only sets ALPN on a clone.
    base_config: ServerConfig,
}

pub(crate) struct Inner {
    subject_cn: String,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: Zeroizing<String>,
    issuer: Issuer<'static, KeyPair>,
    /// One key for all of this sandbox's leaves: minting is then a single signature instead of
    /// a key generation plus two key loads (~4x cheaper). It lives only in memory, like the
    /// leaves; a restart makes a new one.
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn rustls::sign::SigningKey>,
    not_after: OffsetDateTime,
    settings: LeafSettings,
    cache: LeafCache,
}

impl SandboxCa {
    /// A new CA for `sandbox_id`: CN "Palisade sandbox CA <id>", CA:true with pathlen 0,
    /// keyCertSign and cRLSign, valid for ten years from one day ago.
    ///
    /// The id must be 1–44 printable ASCII characters (the CN has at most 64).
    pub fn generate(sandbox_id: &str) -> Result<Self, CaError> {
        Self::generate_with(sandbox_id, LeafSettings::default())
    }

    /// [`SandboxCa::generate`] with non-default leaf settings.
    pub fn generate_with(sandbox_id: &str, settings: LeafSettings) -> Result<Self, CaError> {
        let subject_cn = ca_common_name(sandbox_id)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Palisade");
        dn.push(DnType::CommonName, subject_cn.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CA_BACKDATE;
        params.not_after = now + CA_VALIDITY;
        let cert = params.self_signed(&key)?;
        let (leaf_key, leaf_signer) = new_leaf_key()?;
        let inner = Inner {
            subject_cn,
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
            leaf_key,
            leaf_signer,
            settings,
            cache: new_cache(&settings),
        };
        Self::with_inner(inner)
    }

    /// Restores a CA from its certificate and key PEM (the key out of the sealed store), e.g.
    /// after a daemon restart. The key must be ECDSA P-256 and belong to the certificate, and the
    /// certificate must be a CA that has not expired.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        Self::from_pem_with(cert_pem, key_pem, LeafSettings::default())
    }

    /// [`SandboxCa::from_pem`] with non-default leaf settings.
    pub fn from_pem_with(
        cert_pem: &str,
        key_pem: &str,
        settings: LeafSettings,
    ) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|_| CaError::InvalidCaKey {
            reason: "not a PEM (PKCS#8) private key",
        })?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::InvalidCaKey {
                reason: "not an ECDSA P-256 key",
            });
        }
        let parsed = ParsedCa::parse(cert_pem)?;
        if parsed.spki_key != key.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        let key_pem = Zeroizing::new(key.serialize_pem());
        let cert_der = CertificateDer::from(parsed.der);
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::InvalidCaCert {
                reason: format!("cannot issue from it: {e}"),
            })?;
        let (leaf_key, leaf_signer) = new_leaf_key()?;
        let inner = Inner {
            subject_cn: parsed.subject_cn,
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key_pem,
            issuer,
            leaf_key,
            leaf_signer,
            not_after: parsed.not_after,
            settings,
            cache: new_cache(&settings),
        };
        Self::with_inner(inner)
    }

    fn with_inner(inner: Inner) -> Result<Self, CaError> {
        let inner = Arc::new(inner);
        let base_config = resolver::base_config(Arc::clone(&inner))?;
        Ok(Self { inner, base_config })
    }

    /// The CA certificate, PEM. This is what goes into the sandbox's trust stores.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.inner.cert_pem
    }

    /// The CA certificate, DER.
    #[must_use]
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.inner.cert_der
    }

    /// The CA's common name ("Palisade sandbox CA <id>").
    #[must_use]
    pub fn subject_cn(&self) -> &str {
        &self.inner.subject_cn
    }

    /// The CA private key (PKCS#8 PEM), **for sealing in the store only**: it must never be
    /// logged, returned by an API, or written where a sandbox can read it.
    #[must_use]
    pub fn key_pem(&self) -> &str {
        &self.inner.key_pem
    }

    /// The leaf for `sni` (chain `[leaf, ca]`), from the cache or freshly minted.
    ///
    /// The name is canonicalised first ([`crate::canonical_sni`]); the leaf's only SAN is that
    /// DNS name.
    pub fn leaf_for(&self, sni: &str) -> Result<Arc<CertifiedKey>, CaError> {
        self.inner.leaf_for(sni)
    }

    /// Mints a new leaf for `sni` without touching the cache (benchmarks, tests).
    pub fn mint_leaf(&self, sni: &str) -> Result<CertifiedKey, CaError> {
        self.inner.mint(&canonical_sni(sni)?)
    }

    /// Counters of the leaf cache.
    #[must_use]
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// A rustls server configuration that presents, for each ClientHello, a leaf for its SNI.
    /// A ClientHello without SNI (or with a name that cannot be minted) gets no certificate and
    /// the handshake fails.
    #[must_use]
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
        let mut config = self.base_config.clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Inner {
    pub(crate) fn leaf_for(&self, sni: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let name = canonical_sni(sni)?;
        if let Some(leaf) = self.cache.get(&name) {
            return Ok(leaf);
        }
        let leaf = Arc::new(self.mint(&name)?);
        Ok(self.cache.insert(name, leaf))
    }

    /// `name` must be canonical already.
    fn mint(&self, name: &str) -> Result<CertifiedKey, CaError> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::DnsName(name.try_into()?)];
        let mut dn = DistinguishedName::new();
        // Clients check the SAN only; the CN is for humans reading the chain, when it fits.
        if name.len() <= MAX_CN_LEN {
            dn.push(DnType::CommonName, name);
        }
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - self.settings.backdate;
        params.not_after = (now + self.settings.validity).min(self.not_after);
        let cert = params.signed_by(&self.leaf_key, &self.issuer)?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            Arc::clone(&self.leaf_signer),
        ))
    }
}

impl std::fmt::Debug for SandboxCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.inner, f)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxCa")
            .field("subject_cn", &self.subject_cn)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .field("settings", &self.settings)
            .field("cache", &self.cache)
            .finish()
    }
}

/// The sandbox's leaf key, as rcgen (to put in certificates) and rustls (to sign) want it.
fn new_leaf_key() -> Result<(KeyPair, Arc<dyn rustls::sign::SigningKey>), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&der)?;
    Ok((key, signer))
}

fn new_cache(settings: &LeafSettings) -> LeafCache {
    let ttl = settings.cache_ttl.min(settings.validity / 2);
    LeafCache::new(settings.cache_capacity, ttl)
}

fn ca_common_name(sandbox_id: &str) -> Result<String, CaError> {
    if sandbox_id.is_empty() {
        return Err(CaError::InvalidSandboxId { reason: "empty" });
    }
    if CA_CN_PREFIX.len() + sandbox_id.len() > MAX_CN_LEN {
        return Err(CaError::InvalidSandboxId {
            reason: "longer than 44 characters",
        });
    }
    if !sandbox_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CaError::InvalidSandboxId {
            reason: "only printable ASCII without spaces is allowed",
        });
    }
    Ok(format!("{CA_CN_PREFIX}{sandbox_id}"))
}

/// 128 random bits, positive and without a leading zero byte (RFC 5280 §4.1.2.2).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Generate(rcgen::Error::RingUnspecified))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// What `from_pem` needs out of a CA certificate.
struct ParsedCa {
    der: Vec<u8>,
    spki_key: Vec<u8>,
    subject_cn: String,
    not_after: OffsetDateTime,
}

impl ParsedCa {
    fn parse(cert_pem: &str) -> Result<Self, CaError> {
        read_ca_pem(cert_pem, |x509, der| {
            let not_after =
                OffsetDateTime::from_unix_timestamp(x509.validity().not_after.timestamp())
                    .map_err(|_| invalid("notAfter out of range"))?;
            if not_after <= OffsetDateTime::now_utc() {
                return Err(invalid("expired"));
            }
            let subject_cn = x509
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or_default()
                .to_owned();
            Ok(Self {
                der: der.to_vec(),
                spki_key: x509.public_key().subject_public_key.data.to_vec(),
                subject_cn,
                not_after,
            })
        })
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
