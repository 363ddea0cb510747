use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verifier(ca: &SandboxCa) -> anyhow::Result<Arc<rustls::client::WebPkiServerVerifier>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    Ok(
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()?,
    )
}

/// Verifies `leaf` for `name` against `ca` as a real client would.
fn verify(ca: &SandboxCa, leaf: &CertifiedKey, name: &str) -> anyhow::Result<()> {
    let (end_entity, intermediates) = leaf
        .cert
        .split_first()
        .ok_or(anyhow::anyhow!("empty chain"))?;
    verifier(ca)?.verify_server_cert(
        end_entity,
        intermediates,
        &ServerName::try_from(name.to_owned())?,
        &[],
        UnixTime::now(),
    )?;
    Ok(())
}

fn client_config(ca: &SandboxCa, alpn: &[&[u8]]) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Runs a full handshake in memory; returns the negotiated ALPN.
fn handshake(
    server: Arc<ServerConfig>,
    client: ClientConfig,
    name: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut server = ServerConnection::new(server)?;
    let mut client =
        ClientConnection::new(Arc::new(client), ServerName::try_from(name.to_owned())?)?;
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(client.alpn_protocol().map(<[u8]>::to_vec));
        }
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf)?;
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            server.read_tls(&mut rd)?;
            server.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf)?;
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            client.read_tls(&mut rd)?;
            client.process_new_packets()?;
        }
    }
    anyhow::bail!("handshake did not finish")
}

fn parse(der: &[u8]) -> anyhow::Result<X509Certificate<'_>> {
    Ok(X509Certificate::from_der(der)?.1)
}

#[test]
fn generated_ca_has_the_required_shape() -> anyhow::Result<()> {
    let ca = SandboxCa::generate("sbx-123")?;
    assert_eq!(ca.subject_cn(), "Palisade sandbox CA sbx-123");
    let cert = parse(ca.cert_der())?;
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .filter_map(|c| c.as_str().ok())
        .collect();
    assert_eq!(cn, ["Palisade sandbox CA sbx-123"]);
    assert_eq!(cert.subject(), cert.issuer());
    let bc = cert
        .basic_constraints()?
        .ok_or(anyhow::anyhow!("no basicConstraints"))?;
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    let ku = cert
        .key_usage()?
        .ok_or(anyhow::anyhow!("no keyUsage"))?
        .value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    assert!(
        (now - 86_400 - 60..=now - 86_400 + 60).contains(&nb),
        "backdated one day"
    );
    let ten_years = 3650 * 86_400;
    assert!(
        (now + ten_years - 60..=now + ten_years + 60).contains(&na),
        "ten years"
    );
    assert_eq!(
        cert.public_key()
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok()),
        Some(x509_parser::oid_registry::OID_EC_P256)
    );
    // Two CAs never share a key or serial.
    let other = SandboxCa::generate("sbx-123")?;
    assert_ne!(ca.key_pem(), other.key_pem());
    assert_ne!(cert.raw_serial(), parse(other.cert_der())?.raw_serial());
    Ok(())
}

#[test]
fn sandbox_ids_are_checked() {
    for bad in ["", "has space", "tab\t", "nul\0", "é", &"a".repeat(45)] {
        assert!(
            matches!(
                SandboxCa::generate(bad),
                Err(CaError::InvalidSandboxId { .. })
            ),
            "{bad:?} accepted"
        );
    }
    assert!(SandboxCa::generate(&"a".repeat(44)).is_ok());
    assert!(SandboxCa::generate("3f2504e0-4f89-11d3-9a0c-0305e82c3301").is_ok());
}

#[test]
fn pem_round_trip_restores_a_working_ca() -> anyhow::Result<()> {
    let ca = SandboxCa::generate("round-trip")?;
    let restored = SandboxCa::from_pem(ca.cert_pem(), ca.key_pem())?;
    assert_eq!(restored.cert_pem(), ca.cert_pem());
    assert_eq!(restored.cert_der(), ca.cert_der());
    assert_eq!(restored.subject_cn(), ca.subject_cn());
    // A leaf from the restored CA chains to the original certificate.
    let leaf = restored.leaf_for("api.example.test")?;
    verify(&ca, &leaf, "api.example.test")?;
    // And the leaf's authority key id is the CA's subject key id.
    let leaf_cert = parse(&leaf.cert[0])?;
    let ca_cert = parse(ca.cert_der())?;
    let aki = leaf_cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        });
    let ski = ca_cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0),
            _ => None,
        });
    assert!(aki.is_some());
    assert_eq!(aki, ski);
    Ok(())
}

#[test]
fn from_pem_refuses_bad_input() -> anyhow::Result<()> {
    let ca = SandboxCa::generate("a")?;
    let other = SandboxCa::generate("b")?;
    assert!(matches!(
        SandboxCa::from_pem(ca.cert_pem(), other.key_pem()),
        Err(CaError::KeyMismatch)
    ));
    assert!(matches!(
        SandboxCa::from_pem("garbage", ca.key_pem()),
        Err(CaError::InvalidCaCert { .. })
    ));
    assert!(matches!(
        SandboxCa::from_pem(ca.cert_pem(), "garbage"),
        Err(CaError::InvalidCaKey { .. })
    ));
    let two = format!("{}{}", ca.cert_pem(), other.cert_pem());
    assert!(matches!(
        SandboxCa::from_pem(&two, ca.key_pem()),
        Err(CaError::InvalidCaCert { .. })
    ));
    // A leaf is not a CA.
    let leaf = ca.leaf_for("api.example.test")?;
    let leaf_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(&leaf.cert[0])
    );
    assert!(matches!(
        SandboxCa::from_pem(&leaf_pem, ca.key_pem()),
        Err(CaError::InvalidCaCert { .. })
    ));
    // Not P-256.
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    assert!(matches!(
        SandboxCa::from_pem(ca.cert_pem(), &ed.serialize_pem()),
        Err(CaError::InvalidCaKey { .. })
    ));
    Ok(())
}

fn base64_lines(der: &[u8]) -> String {
    // The key PEM encoder is the only base64 at hand; encode via a Pem wrapper of x509-parser's
    // dependency would add a crate, so build it by hand (standard alphabet, 64 columns).
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(64)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn leaf_has_exactly_the_sni_and_chains() -> anyhow::Result<()> {
    let ca = SandboxCa::generate("leaf")?;
    let leaf = ca.leaf_for("API.Example.test.")?;
    assert_eq!(leaf.cert.len(), 2);
    assert_eq!(&leaf.cert[1], ca.cert_der());
    leaf.keys_match()?;
    let cert = parse(&leaf.cert[0])?;
    let san = cert
        .subject_alternative_name()?
        .ok_or(anyhow::anyhow!("no SAN"))?;
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::DNSName("api.example.test")]
    );
    let eku = cert
        .extended_key_usage()?
        .ok_or(anyhow::anyhow!("no EKU"))?
        .value;
    assert!(eku.server_auth && !eku.client_auth && !eku.any);
    assert!(!cert.is_ca());
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!((7 * 86_400 + 3600 - 60..=7 * 86_400 + 3600 + 60).contains(&lifetime));
    verify(&ca, &leaf, "api.example.test")?;
    // Exactly that name: no parent, sibling or child name is covered.
    for other in [
        "example.test",
        "www.api.example.test",
        "apii.example.test",
        "other.test",
    ] {
        assert!(verify(&ca, &leaf, other).is_err(), "{other} accepted");
    }
    // A different sandbox's CA does not vouch for it.
    let stranger = SandboxCa::generate("stranger")?;
    assert!(verify(&stranger, &leaf, "api.example.test").is_err());
    Ok(())
}

#[test]
fn leaf_for_refuses_bad_names() -> anyhow::Result<()> {
    let ca = SandboxCa::generate("names")?;
    for bad in ["", "*.example.test", "127.0.0.1", "a b", "bücher.example"] {
        assert!(
            matches!(ca.leaf_for(bad), Err(CaError::InvalidName { .. })),
            "{bad:?}"
        );
    }
    // A long but valid name gets a leaf without a CN (CN is limited to 64 bytes).
    let long = format!(
        "{}.example.test",
        ["a".repeat(60), "b".repeat(60)].join(".")
    );
    let leaf = ca.leaf_for(&long)?;
    verify(&ca, &leaf, &long)?;
    Ok(())
}

#[test]
fn cache_counts_hits_and_misses() -> anyhow::Result<()> {
    let ca = SandboxCa::generate("cache")?;
    assert_eq!(ca.cache_stats().hits + ca.cache_stats().misses, 0);
    let a = ca.leaf_for("a.example.test")?;
    let a2 = ca.leaf_for("a.example.test")?;
    let a3 = ca.leaf_for("A.EXAMPLE.TEST.")?;
    assert!(Arc::ptr_eq(&a, &a2) && Arc::ptr_eq(&a, &a3));
    let b = ca.leaf_for("b.example.test")?;
    assert!(!Arc::ptr_eq(&a, &b));
    let stats = ca.cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 2));
    assert!((stats.hit_rate() - 0.5).abs() < 1e-9);
    // Refused names count as neither.
    assert!(ca.leaf_for("*.x").is_err());
    assert_eq!(ca.cache_stats().misses, 2);
    Ok(())
}

#[test]
fn cache_is_bounded_and_expires() -> anyhow::Result<()> {
    let settings = LeafSettings {
        cache_capacity: std::num::NonZeroUsize::new(2).ok_or(anyhow::anyhow!("zero"))?,
        ..LeafSettings::default()
    };
    let ca = SandboxCa::generate_with("bounded", settings)?;
    let first = ca.leaf_for("1.example.test")?;
    ca.leaf_for("2.example.test")?;
    ca.leaf_for("3.example.test")?; // evicts 1
    assert_eq!(ca.cache_stats().entries, 2);
    let again = ca.leaf_for("1.example.test")?;
    assert!(
        !Arc::ptr_eq(&first, &again),
        "least recently used was evicted"
    );
    assert_eq!(ca.cache_stats().misses, 4);

    // A zero time-to-live serves nothing from the cache.
    let settings = LeafSettings {
        cache_ttl: Duration::ZERO,
        ..LeafSettings::default()
    };
    let ca = SandboxCa::generate_with("ttl", settings)?;
    let a = ca.leaf_for("a.example.test")?;
    let b = ca.leaf_for("a.example.test")?;
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!((ca.cache_stats().hits, ca.cache_stats().misses), (0, 2));
    Ok(())
}

#[test]
fn debug_and_errors_never_show_the_key() -> anyhow::Result<()> {
    let ca = SandboxCa::generate("debug")?;
    let shown = format!("{ca:?} {:#?}", ca);
    assert!(shown.contains("redacted"));
    assert!(!shown.contains("PRIVATE KEY"));
    for line in ca.key_pem().lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line));
    }
    // A key that almost parses must not be echoed in the error.
    let body: String = ca
        .key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let broken = format!(
        "-----BEGIN PRIVATE KEY-----\n{}XX\n-----END PRIVATE KEY-----\n",
        body
    );
    let error = SandboxCa::from_pem(ca.cert_pem(), &broken)
        .err()
        .ok_or(anyhow::anyhow!("accepted"))?;
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(&body[..32]));
    Ok(())
}

#[test]
fn server_config_mints_by_sni_and_refuses_without() -> anyhow::Result<()> {
    let ca = Arc::new(SandboxCa::generate("server")?);
    let server = ca.server_config(&[b"h2", b"http/1.1"]);
    let alpn = handshake(
        Arc::clone(&server),
        client_config(&ca, &[b"h2"])?,
        "api.example.test",
    )?;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let alpn = handshake(
        Arc::clone(&server),
        client_config(&ca, &[])?,
        "api.example.test",
    )?;
    assert_eq!(alpn, None);
    assert_eq!(ca.cache_stats().misses, 1);
    assert_eq!(ca.cache_stats().hits, 1);

    let mut no_sni = client_config(&ca, &[])?;
    no_sni.enable_sni = false;
    assert!(handshake(Arc::clone(&server), no_sni, "api.example.test").is_err());

    // A client that trusts another sandbox's CA refuses this one's leaf.
    let stranger = SandboxCa::generate("stranger")?;
    assert!(handshake(server, client_config(&stranger, &[])?, "api.example.test").is_err());
    Ok(())
}

#[test]
fn shareable_across_proxy_tasks() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SandboxCa>();
    assert_send_sync::<Arc<SandboxCa>>();
}

#[test]
fn concurrent_lookups_agree_on_one_leaf() -> anyhow::Result<()> {
    let ca = Arc::new(SandboxCa::generate("threads")?);
    let leaves = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| ca.leaf_for("api.example.test")))
            .collect();
        handles.into_iter().map(|h| h.join()).collect::<Vec<_>>()
    });
    let mut first: Option<Arc<CertifiedKey>> = None;
    for leaf in leaves {
        let leaf = leaf.map_err(|_| anyhow::anyhow!("thread panicked"))??;
        // Racing misses may mint more than once, but the cache keeps one and later lookups all
        // get it.
        let _ = first.get_or_insert(leaf);
    }
    let cached = ca.leaf_for("api.example.test")?;
    let again = ca.leaf_for("api.example.test")?;
    assert!(Arc::ptr_eq(&cached, &again));
    let stats = ca.cache_stats();
    assert_eq!(stats.hits + stats.misses, 10);
    assert_eq!(stats.entries, 1);
    Ok(())
}
