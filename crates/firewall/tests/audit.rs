//! Audit mode end to end (issue 14): with `"audit": true` the custom policy is evaluated as
//! usual, every would-be denial is let through and recorded as `would-deny`, and what is
//! enforced in every mode (internal addresses, metadata) stays refused. Real curl and nc inside
//! sandbox namespaces, against the test world's upstreams. Runs as root.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::{Bed, show, stdout};
use palisade_firewall::events::{EgressEvent, EventKind, EventVerdict};
use palisade_testbed::addrs;

const AUDIT: &str = r#"{
    "mode": "custom",
    "allow_domains": ["alpha.test"],
    "transforms": [{
        "domain": "api.example.test",
        "strip_headers": ["x-debug"],
        "http_rules": [
            {"action": "deny", "method": "DELETE", "path": "/v1/**"},
            {"action": "allow", "method": "GET", "path": "/**"}
        ]
    }],
    "audit": true
}"#;

fn events(bed: &Bed, id: &str) -> Vec<EgressEvent> {
    bed.fw.events().recent(Some(id), 10_000)
}

fn dst(e: &EgressEvent) -> Option<std::net::IpAddr> {
    e.dst.map(|d: SocketAddr| d.ip())
}

#[test]
fn audit_lets_traffic_through_and_records_exactly_the_would_be_denials() {
    let bed = Bed::new();
    let sb = bed.sandbox(AUDIT);

    // Listed: allowed as usual.
    let out = sb.curl("https://alpha.test/");
    assert!(out.status.success(), "{}", show(&out));
    // Unlisted names resolve and connect (TLS passthrough and plain HTTP).
    let out = sb.curl("https://beta.test/");
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("\"sni\":\"beta.test\""),
        "{}",
        show(&out)
    );
    let out = sb.curl("http://echo.test/hello");
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("/hello"), "{}", show(&out));
    // Name-less traffic to an unlisted public address.
    let out = sb.sh(&format!(
        "printf 'ping-audit' | nc -N -w 3 {} 7",
        addrs::TCP_V4
    ));
    assert_eq!(stdout(&out), "ping-audit", "{}", show(&out));
    // An L7 rule denial is forwarded too.
    let out = sb.curl("-o /dev/null -w '%{http_code}' -X DELETE http://api.example.test/v1/thing");
    assert!(
        stdout(&out).starts_with('2'),
        "DELETE under audit: {}",
        show(&out)
    );
    let out = sb.curl("-o /dev/null -w '%{http_code}' http://api.example.test/v1/models");
    assert!(stdout(&out).starts_with('2'), "{}", show(&out));

    // Enforced in every mode: internal addresses and metadata.
    for ip in [addrs::PRIVATE_V4, addrs::METADATA_V4] {
        let out = sb.curl(&format!("-o /dev/null -w '%{{http_code}}' http://{ip}/"));
        assert_eq!(stdout(&out), "403", "{ip}: {}", show(&out));
    }
    bed.world.assert_untouched("private");
    bed.world.assert_untouched("metadata");

    let all = events(&bed, &sb.id);
    let render = || {
        all.iter()
            .map(|e| {
                format!(
                    "{:?} {:?} {:?} {:?} {} {}",
                    e.kind, e.verdict, e.name, e.dst, e.rule, e.reason
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Nothing allowed by the policy is a would-deny.
    for e in &all {
        if e.name.as_deref() == Some("alpha.test") {
            assert_eq!(e.verdict, EventVerdict::Allow, "{}", render());
        }
        if e.name.as_deref() == Some("api.example.test")
            && e.http.as_ref().is_some_and(|h| h.method == "GET")
        {
            assert_eq!(e.verdict, EventVerdict::Allow, "{}", render());
        }
    }
    // Exactly the would-be denials, each with the rule it would have denied for.
    let would: Vec<&EgressEvent> = all
        .iter()
        .filter(|e| e.verdict == EventVerdict::WouldDeny)
        .collect();
    let names: BTreeSet<&str> = would.iter().filter_map(|e| e.name.as_deref()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["api.example.test", "beta.test", "echo.test"]),
        "{}",
        render()
    );
    for name in ["beta.test", "echo.test"] {
        for kind in [EventKind::Dns, EventKind::Tcp] {
            let kind = if name == "echo.test" && kind == EventKind::Tcp {
                EventKind::Http
            } else {
                kind
            };
            assert!(
                would
                    .iter()
                    .any(|e| e.name.as_deref() == Some(name) && e.kind == kind),
                "{name} {kind:?}:\n{}",
                render()
            );
        }
        // Every event about an unlisted name is a would-deny, none an allow or a deny.
        assert!(
            all.iter()
                .filter(|e| e.name.as_deref() == Some(name))
                .all(|e| e.verdict == EventVerdict::WouldDeny && e.rule.to_string() == "default"),
            "{}",
            render()
        );
    }
    let l7 = would
        .iter()
        .find(|e| e.name.as_deref() == Some("api.example.test"))
        .unwrap();
    assert_eq!(l7.rule.to_string(), "http-rule:0", "{}", render());
    assert_eq!(l7.http.as_ref().unwrap().method, "DELETE");
    let nameless = would
        .iter()
        .find(|e| dst(e) == Some(addrs::TCP_V4.into()))
        .unwrap_or_else(|| panic!("no would-deny for the name-less connection:\n{}", render()));
    assert_eq!(nameless.kind, EventKind::Tcp);
    assert!(nameless.bytes_up >= 10, "{}", render());
    // The internal addresses: plain denials, not would-denies.
    for ip in [addrs::PRIVATE_V4, addrs::METADATA_V4] {
        let hits: Vec<_> = all.iter().filter(|e| dst(e) == Some(ip.into())).collect();
        assert!(!hits.is_empty(), "{ip}:\n{}", render());
        assert!(
            hits.iter().all(|e| e.verdict == EventVerdict::Deny),
            "{ip}:\n{}",
            render()
        );
    }
    assert_eq!(
        would.len(),
        all.iter()
            .filter(|e| e.verdict == EventVerdict::WouldDeny)
            .count()
    );

    // Audit off by a live update: the same unlisted name is refused at once.
    sb.set_policy(&AUDIT.replace("\"audit\": true", "\"audit\": false"), 2);
    let out = sb.curl("https://beta.test/");
    assert!(!out.status.success(), "{}", show(&out));
    let after = events(&bed, &sb.id);
    assert!(
        after[all.len()..]
            .iter()
            .any(|e| e.name.as_deref() == Some("beta.test") && e.verdict == EventVerdict::Deny),
        "{}",
        render()
    );
}

/// Audit with no lists at all (the way to learn everything a sandbox does): DNS resolves
/// every public name, and a malformed request is still refused as in every mode.
#[test]
fn audit_with_empty_lists_observes_everything_and_refuses_malformed_input() {
    let bed = Bed::new();
    let sb = bed.sandbox(r#"{"mode":"custom","audit":true}"#);
    let out = sb.sh("dig +short +tries=1 +time=2 alpha.test A");
    assert!(!stdout(&out).trim().is_empty(), "{}", show(&out));
    let out = sb.curl("https://alpha.test/");
    assert!(out.status.success(), "{}", show(&out));
    // Bare LF request framing: 400, whatever the audit flag says.
    let out = sb.sh(&format!(
        "printf 'GET / HTTP/1.1\\nHost: alpha.test\\n\\n' | nc -w 3 {} 80",
        addrs::GOOD_V4
    ));
    assert!(stdout(&out).contains("400"), "{}", show(&out));
    let all = events(&bed, &sb.id);
    assert!(
        all.iter()
            .any(|e| e.verdict == EventVerdict::Deny && e.rule.to_string() == "malformed"),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .filter(|e| e.name.as_deref() == Some("alpha.test"))
            .all(|e| e.verdict == EventVerdict::WouldDeny),
        "{all:#?}"
    );
}
