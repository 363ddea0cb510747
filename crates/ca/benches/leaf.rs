//! Leaf minting, cached lookup and a full in-memory TLS handshake pair.
//!
//! `cargo bench -p palisade-ca --bench leaf`; design.md expects 54–72 µs to mint and
//! 0.4–0.5 ms for a full handshake pair on one core.

#![expect(
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark setup and report"
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_ca::SandboxCa;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

fn client_config(ca: &SandboxCa) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("CA root");
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    // Every iteration must be a full handshake, not a resumption.
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>, name: &ServerName<'static>) {
    let mut server = ServerConnection::new(Arc::clone(server)).expect("server");
    let mut client = ClientConnection::new(Arc::clone(client), name.clone()).expect("client");
    let mut buf = Vec::with_capacity(4096);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("server read");
            server.process_new_packets().expect("server process");
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("client read");
            client.process_new_packets().expect("client process");
        }
    }
}

fn leaf(c: &mut Criterion) {
    // Baseline in the same run: one raw P-256 signature over a leaf-sized message, the floor
    // of what minting can cost. Compare ratios, not absolute times, on a busy machine.
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("key");
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key");
    let message = [0x5au8; 400];
    c.bench_function("baseline_p256_sign", |b| {
        b.iter(|| black_box(key.sign(&rng, black_box(&message)).expect("sign")));
    });

    let ca = Arc::new(SandboxCa::generate("bench").expect("CA"));
    c.bench_function("mint_leaf", |b| {
        b.iter(|| black_box(ca.mint_leaf(black_box("api.example.test")).expect("mint")));
    });
    ca.leaf_for("api.example.test").expect("warm");
    c.bench_function("leaf_for_cached", |b| {
        b.iter(|| black_box(ca.leaf_for(black_box("api.example.test")).expect("cached")));
    });
    let server = ca.server_config(&[b"http/1.1"]);
    let client = client_config(&ca);
    let name = ServerName::try_from("api.example.test").expect("name");
    c.bench_function("full_handshake_pair_cached_leaf", |b| {
        b.iter(|| handshake(&server, &client, &name));
    });
    let stats = ca.cache_stats();
    println!(
        "cache after benches: {stats:?}, hit rate {:.4}",
        stats.hit_rate()
    );
}

criterion_group!(benches, leaf);
criterion_main!(benches);
