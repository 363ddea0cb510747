//! The filtering DNS server against a logging upstream, queried with raw hickory messages, the
//! hickory resolver and the real `dig`. Loopback only; no root needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "dns_support.rs"]
mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use palisade_firewall::events::{EventKind, EventVerdict};
use support::*;

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const TYPES: [RecordType; 6] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::TXT,
    RecordType::MX,
    RecordType::HTTPS,
    RecordType::SVCB,
];

#[tokio::test]
async fn allowed_name_is_resolved_upstream_and_remembered() {
    let w = World::start().await;
    for via in [Via::Udp, Via::Tcp] {
        let msg = ask(&w, via, CUSTOM, "www.allowed.test.", RecordType::A).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{via:?}");
        assert!(msg.metadata.recursion_available);
        assert_eq!(a_records(&msg), [v4("198.51.100.11")], "{via:?}");
    }
    let told = w.view.told.lock().unwrap().clone();
    assert!(
        told.iter().any(|t| t.src == ip(CUSTOM)
            && t.name == "www.allowed.test"
            && t.addrs == [v4("198.51.100.11")]),
        "{told:?}"
    );
    // The upstream was asked in the canonical spelling, fully qualified.
    assert!(
        w.upstream
            .seen()
            .iter()
            .all(|s| s.name == "www.allowed.test.")
    );
}

#[tokio::test]
async fn cname_chains_are_followed() {
    let w = World::start().await;
    let msg = ask(&w, Via::Udp, CUSTOM, "alias.allowed.test.", RecordType::A).await;
    assert_eq!(a_records(&msg), [v4("198.51.100.11")]);
    // Only A records for the name asked: the CNAME target is not revealed as a separate record.
    assert!(
        msg.answers
            .iter()
            .all(|r| r.name.to_ascii() == "alias.allowed.test.")
    );
}

/// Threat 14: a denied name never reaches the upstream, whatever the type or transport.
#[tokio::test]
async fn denied_names_never_reach_upstream() {
    let w = World::start().await;
    let names = [
        "denied.test.",
        "secret.denied.test.",
        "DENIED.test.",
        "allowed.test.denied.test.",
        "evilallowed.test.",
        "nonexistent.example.",
        "xn--bcher-kva.example.",
    ];
    for via in [Via::Udp, Via::Tcp] {
        for name in names {
            for qtype in TYPES {
                let msg = ask(&w, via, CUSTOM, name, qtype).await;
                assert_eq!(
                    msg.metadata.response_code,
                    ResponseCode::NXDomain,
                    "{name} {qtype} {via:?}"
                );
                assert!(msg.answers.is_empty());
                // A short negative TTL, so a policy update is seen at once.
                let soa = msg
                    .authorities
                    .first()
                    .expect("negative answer carries an SOA");
                assert!(soa.ttl <= 5, "negative TTL {}", soa.ttl);
            }
        }
    }
    assert!(
        w.upstream.seen().is_empty(),
        "upstream saw {:?}",
        w.upstream.seen()
    );
}

#[tokio::test]
async fn deny_all_is_refused_without_upstream() {
    let w = World::start().await;
    for via in [Via::Udp, Via::Tcp] {
        for qtype in TYPES {
            let msg = ask(&w, via, DENY_ALL, "allowed.test.", qtype).await;
            assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
        }
    }
    // `dig +time=1 +tries=1` gets its answer within its one second, over UDP and TCP.
    for tcp in [false, true] {
        let d = dig(&w, DENY_ALL, "allowed.test", "A", tcp).await;
        assert_eq!(d.status, "REFUSED", "{}", d.raw);
    }
    assert!(w.upstream.seen().is_empty());
}

#[tokio::test]
async fn unknown_source_is_refused() {
    let w = World::start().await;
    for via in [Via::Udp, Via::Tcp] {
        let msg = ask(&w, via, UNKNOWN, "allowed.test.", RecordType::A).await;
        assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    }
    let d = dig(&w, UNKNOWN, "allowed.test", "A", false).await;
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    assert!(w.upstream.seen().is_empty());
}

#[tokio::test]
async fn other_types_of_allowed_names_are_empty_without_upstream() {
    let w = World::start().await;
    for via in [Via::Udp, Via::Tcp] {
        for qtype in &TYPES[1..] {
            let msg = ask(&w, via, CUSTOM, "allowed.test.", *qtype).await;
            assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{qtype}");
            assert!(msg.answers.is_empty(), "{qtype}: {:?}", msg.answers);
        }
    }
    assert!(w.upstream.seen().is_empty(), "{:?}", w.upstream.seen());
}

/// Threat 11: names resolving to internal addresses are answered without them, unless the
/// address is inside `allow_cidrs`.
#[tokio::test]
async fn internal_addresses_are_removed_unless_in_allow_cidrs() {
    let w = World::start().await;
    for name in [
        "loop.allowed.test.",
        "private.allowed.test.",
        "meta.allowed.test.",
        "cgnat.allowed.test.",
    ] {
        for src in [CUSTOM, ALLOW_ALL] {
            let msg = ask(&w, Via::Udp, src, name, RecordType::A).await;
            assert_eq!(msg.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(
                a_records(&msg).is_empty(),
                "{name} from {src}: {:?}",
                msg.answers
            );
        }
    }
    let mixed = ask(&w, Via::Udp, CUSTOM, "mixed.allowed.test.", RecordType::A).await;
    assert_eq!(a_records(&mixed), [v4("198.51.100.12")]);
    let cidr = ask(&w, Via::Udp, CUSTOM, "cidr.allowed.test.", RecordType::A).await;
    assert_eq!(a_records(&cidr), [v4("10.9.0.7")]);
    // ... but only for the policy that opens that range.
    let cidr_all = ask(&w, Via::Udp, ALLOW_ALL, "cidr.allowed.test.", RecordType::A).await;
    assert!(a_records(&cidr_all).is_empty());

    let told = w.view.told.lock().unwrap().clone();
    assert!(told.iter().all(|t| {
        !t.addrs
            .iter()
            .any(|a| a.is_loopback() || *a == v4("10.0.0.1"))
    }));
    let meta = w
        .view
        .events
        .recent(Some("sb-custom"), 100)
        .into_iter()
        .find(|e| e.name.as_deref() == Some("meta.allowed.test"))
        .unwrap();
    assert_eq!(meta.verdict, EventVerdict::Deny);
    assert!(meta.reason.contains("169.254.169.254"), "{}", meta.reason);
}

#[tokio::test]
async fn ttl_is_capped_and_answers_are_cached() {
    let w = World::start().await;
    let first = ask(&w, Via::Udp, CUSTOM, "allowed.test.", RecordType::A).await;
    let ttl = first.answers[0].ttl;
    assert!(
        (1..=60).contains(&ttl),
        "upstream TTL 3600 must be capped at 60, got {ttl}"
    );
    let short = ask(&w, Via::Udp, CUSTOM, "www.allowed.test.", RecordType::A).await;
    assert!(short.answers[0].ttl <= 30);
    for via in [Via::Udp, Via::Tcp] {
        let again = ask(&w, via, CUSTOM, "allowed.test.", RecordType::A).await;
        assert_eq!(a_records(&again), [v4("198.51.100.10")]);
    }
    assert_eq!(
        w.upstream.count("allowed.test"),
        1,
        "{:?}",
        w.upstream.seen()
    );
}

#[tokio::test]
async fn question_case_is_echoed_exactly() {
    let w = World::start().await;
    for (name, rcode) in [
        ("wWw.AlLoWeD.tEsT.", ResponseCode::NoError),
        ("DeNiEd.TeSt.", ResponseCode::NXDomain),
    ] {
        for via in [Via::Udp, Via::Tcp] {
            let msg = ask(&w, via, CUSTOM, name, RecordType::A).await;
            assert_eq!(msg.metadata.response_code, rcode);
            assert_eq!(
                msg.queries[0].name().to_ascii(),
                name,
                "question echoed as asked"
            );
            for r in &msg.answers {
                assert_eq!(r.name.to_ascii(), name, "answer owner in the client's case");
            }
        }
    }
    // The upstream only ever saw the canonical spelling.
    let seen = w.upstream.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| s.name == "www.allowed.test."),
        "{seen:?}"
    );
}

#[tokio::test]
async fn upstream_failure_is_servfail() {
    let w = World::start().await;
    let msg = ask(&w, Via::Udp, CUSTOM, "fail.allowed.test.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
    let ev = w.view.events.recent(Some("sb-custom"), 10);
    assert!(ev.last().unwrap().reason.contains("upstream"), "{ev:?}");
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let w = World::start().await;
    // No EDNS: 512 bytes at most, so 60 addresses do not fit.
    let packet = query_bytes(9, "many.allowed.test.", RecordType::A, false);
    let reply = udp_raw(w.udp, CUSTOM, &packet, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(reply.len() <= 512);
    let msg = hickory_proto::op::Message::from_vec(&reply).unwrap();
    assert!(msg.metadata.truncation);
    // With EDNS (1232) they fit; over TCP always.
    let edns = ask(&w, Via::Udp, CUSTOM, "many.allowed.test.", RecordType::A).await;
    assert!(!edns.metadata.truncation);
    assert_eq!(a_records(&edns).len(), 60);
    let tcp = tcp_raw(w.tcp, CUSTOM, &packet).await.unwrap();
    let tcp = hickory_proto::op::Message::from_vec(&tcp).unwrap();
    assert_eq!(a_records(&tcp).len(), 60);
}

#[tokio::test]
async fn policy_update_takes_effect_at_once() {
    let w = World::start().await;
    let before = ask(&w, Via::Udp, CUSTOM, "open.test.", RecordType::A).await;
    assert_eq!(before.metadata.response_code, ResponseCode::NXDomain);
    w.view.set(
        CUSTOM,
        "sb-custom",
        r#"{"mode":"custom","allow_domains":["open.test"]}"#,
    );
    let after = ask(&w, Via::Udp, CUSTOM, "open.test.", RecordType::A).await;
    assert_eq!(a_records(&after), [v4("203.0.113.5")]);
    let gone = ask(&w, Via::Udp, CUSTOM, "allowed.test.", RecordType::A).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(w.upstream.count("allowed.test"), 0);
}

#[tokio::test]
async fn every_query_is_an_event() {
    let w = World::start().await;
    ask(&w, Via::Udp, CUSTOM, "www.allowed.test.", RecordType::A).await;
    ask(&w, Via::Tcp, CUSTOM, "denied.test.", RecordType::TXT).await;
    ask(&w, Via::Udp, DENY_ALL, "allowed.test.", RecordType::A).await;
    let ev = w.view.events.recent(Some("sb-custom"), 10);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(ev.iter().all(|e| e.kind == EventKind::Dns));
    assert_eq!(ev[0].verdict, EventVerdict::Allow);
    assert_eq!(ev[0].name.as_deref(), Some("www.allowed.test"));
    assert_eq!(ev[0].dst, Some(w.udp));
    assert_eq!(ev[0].rule.to_string(), "domain:*.allowed.test");
    assert_eq!(ev[1].verdict, EventVerdict::Deny);
    assert_eq!(ev[1].name.as_deref(), Some("denied.test"));
    assert_eq!(ev[1].dst, Some(w.tcp));
    assert!(!ev[1].reason.is_empty());
    let deny = w.view.events.recent(Some("sb-deny"), 10);
    assert_eq!(deny.len(), 1);
    assert_eq!(deny[0].verdict, EventVerdict::Deny);
}

fn hickory_client(w: &World, tcp: bool) -> TokioResolver {
    let conn = if tcp {
        let mut c = ConnectionConfig::tcp();
        c.port = w.tcp.port();
        c
    } else {
        let mut c = ConnectionConfig::udp();
        c.port = w.udp.port();
        c
    };
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        w.udp.ip(),
        true,
        vec![conn],
    )]);
    let mut opts = ResolverOpts::default();
    opts.use_hosts_file = ResolveHosts::Never;
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(5);
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .unwrap()
}

#[tokio::test]
async fn hickory_resolver_as_client() {
    let w = World::start().await;
    for tcp in [false, true] {
        let client = hickory_client(&w, tcp);
        let ok = client
            .lookup("www.allowed.test.", RecordType::A)
            .await
            .unwrap();
        let addrs: Vec<_> = ok
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        assert_eq!(addrs, [v4("198.51.100.11")]);
        let denied = client
            .lookup("secret.denied.test.", RecordType::A)
            .await
            .unwrap_err();
        assert!(denied.is_nx_domain(), "{denied}");
        let aaaa = client
            .lookup("www.allowed.test.", RecordType::AAAA)
            .await
            .unwrap_err();
        assert!(aaaa.is_no_records_found() && !aaaa.is_nx_domain(), "{aaaa}");
    }
    assert_eq!(w.upstream.count("secret.denied.test"), 0);
}

#[tokio::test]
async fn dig_as_client() {
    let w = World::start().await;
    for tcp in [false, true] {
        let ok = dig(&w, CUSTOM, "www.allowed.test", "A", tcp).await;
        assert_eq!(ok.status, "NOERROR", "{}", ok.raw);
        assert!(
            ok.answers.iter().any(|l| l.contains("198.51.100.11")),
            "{}",
            ok.raw
        );
        for qtype in ["A", "AAAA", "TXT", "MX", "HTTPS"] {
            let denied = dig(&w, CUSTOM, "secret.denied.test", qtype, tcp).await;
            assert_eq!(denied.status, "NXDOMAIN", "{qtype}: {}", denied.raw);
        }
        let https = dig(&w, CUSTOM, "www.allowed.test", "HTTPS", tcp).await;
        assert_eq!(https.status, "NOERROR", "{}", https.raw);
        assert!(https.answers.is_empty(), "{}", https.raw);
        let inner = dig(&w, CUSTOM, "meta.allowed.test", "A", tcp).await;
        assert_eq!(inner.status, "NOERROR", "{}", inner.raw);
        assert!(inner.answers.is_empty(), "{}", inner.raw);
    }
    assert_eq!(w.upstream.count("secret.denied.test"), 0);
    assert!(w.upstream.seen().iter().all(|s| s.qtype == RecordType::A));
}
