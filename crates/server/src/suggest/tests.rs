#![allow(clippy::unwrap_used, reason = "tests")]

use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_store::{EgressEventFields, EgressEventRecord};

use super::*;

fn ev(
    verdict: &str,
    protocol: &str,
    name: Option<&str>,
    dst: &str,
    rule: &str,
) -> EgressEventRecord {
    let (addr, port) = dst.rsplit_once(':').unwrap();
    EgressEventRecord {
        id: 0,
        sandbox_id: "sb".into(),
        event: EgressEventFields {
            at_ms: 1_000,
            verdict: verdict.into(),
            protocol: protocol.into(),
            dst_addr: Some(addr.into()),
            dst_port: Some(port.parse().unwrap()),
            name: name.map(str::to_owned),
            rule: Some(rule.into()),
            reason: Some("why".into()),
            bytes_up: 10,
            bytes_down: 100,
            duration_ms: 1,
        },
        detail: None,
    }
}

/// An event naming `name`: a DNS query to the sandbox's resolver, or a TLS connection.
fn named(verdict: &str, protocol: &str, name: &str, rule: &str) -> EgressEventRecord {
    let dst = if protocol == "dns" {
        "10.0.0.1:53"
    } else {
        "198.18.0.9:443"
    };
    ev(verdict, protocol, Some(name), dst, rule)
}

fn tcp(name: &str) -> EgressEventRecord {
    named("would-deny", "tcp", name, "default")
}

fn spec(json: &str) -> NetworkPolicySpec {
    NetworkPolicySpec::from_json(json.as_bytes()).unwrap()
}

fn domains(s: &Suggestion) -> Vec<&str> {
    s.domains.iter().map(|d| d.domain.as_str()).collect()
}

fn not_suggested(s: &Suggestion) -> Vec<&str> {
    s.not_suggested.iter().map(|n| n.what.as_str()).collect()
}

const AUDIT: &str = r#"{"mode":"custom","audit":true}"#;

#[test]
fn registrable_domains_follow_the_public_suffix_list() {
    for (name, want) in [
        ("www.example.com", Some("example.com")),
        ("a.b.example.co.uk", Some("example.co.uk")),
        ("co.uk", None),
        ("com", None),
        // Private section: every user's site is its own registrable domain.
        ("alice.github.io", Some("alice.github.io")),
        ("x.alice.github.io", Some("alice.github.io")),
        ("github.io", None),
        // IDN: A-labels, as names are canonicalised (公司.cn is a public suffix).
        ("a.b.xn--55qx5d.cn", Some("b.xn--55qx5d.cn")),
        ("xn--55qx5d.cn", None),
        // Unknown TLDs take the list's default rule.
        ("x.wild.test", Some("wild.test")),
    ] {
        assert_eq!(registrable(name), want, "{name}");
    }
}

#[test]
fn exact_names_below_the_threshold_and_a_wildcard_at_it() {
    let two = [tcp("a.example.com"), tcp("b.example.com")];
    let s = suggest("sb", &spec(AUDIT), &two);
    assert_eq!(domains(&s), ["a.example.com", "b.example.com"]);

    let three = [
        tcp("a.example.com"),
        tcp("b.example.com"),
        tcp("x.c.example.com"),
        tcp("example.com"),
        tcp("other.test"),
    ];
    let s = suggest("sb", &spec(AUDIT), &three);
    assert_eq!(domains(&s), ["example.com", "*.example.com", "other.test"]);
    let wild = &s.domains[1];
    assert_eq!(
        wild.names,
        ["a.example.com", "b.example.com", "x.c.example.com"]
    );
    assert_eq!(wild.evidence.count, 3);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert!(!s.network_policy.audit);
    // The suggested policy allows every name seen.
    let p = s.network_policy.validate().unwrap().compile();
    for e in &three {
        let n = canonicalize(e.event.name.as_deref().unwrap().as_bytes()).unwrap();
        assert!(p.decide_name(&n).is_allowed(), "{n}");
    }
}

#[test]
fn public_suffixes_are_never_wildcarded() {
    // Three sites under co.uk and three under github.io are unrelated owners: exact names.
    let events = [
        tcp("shop.co.uk"),
        tcp("bank.co.uk"),
        tcp("news.co.uk"),
        tcp("alice.github.io"),
        tcp("bob.github.io"),
        tcp("carol.github.io"),
    ];
    let s = suggest("sb", &spec(AUDIT), &events);
    assert!(
        domains(&s).iter().all(|d| !d.starts_with('*')),
        "{:?}",
        domains(&s)
    );
    assert_eq!(s.domains.len(), 6);
    // Three names below one user's site do give that site's wildcard, never *.github.io.
    let events = [
        tcp("a.alice.github.io"),
        tcp("b.alice.github.io"),
        tcp("c.alice.github.io"),
    ];
    let s = suggest("sb", &spec(AUDIT), &events);
    assert_eq!(domains(&s), ["*.alice.github.io"]);
    let events = [tcp("a.x.co.uk"), tcp("b.x.co.uk"), tcp("c.x.co.uk")];
    assert_eq!(
        domains(&suggest("sb", &spec(AUDIT), &events)),
        ["*.x.co.uk"]
    );
}

#[test]
fn idn_names_group_by_their_a_label_registrable_domain() {
    let events = [
        tcp("a.xn--mnchen-3ya.de"),
        tcp("b.xn--mnchen-3ya.de"),
        tcp("c.xn--mnchen-3ya.de"),
        // A Unicode spelling in an event is canonicalised to the same A-labels.
        tcp("münchen.de"),
    ];
    let s = suggest("sb", &spec(AUDIT), &events);
    assert_eq!(domains(&s), ["xn--mnchen-3ya.de", "*.xn--mnchen-3ya.de"]);
}

#[test]
fn addresses_become_host_cidrs_and_internal_ones_never_do() {
    let events = [
        ev("would-deny", "tcp", None, "198.51.100.30:22", "default"),
        ev("would-deny", "tcp", None, "198.51.100.30:7", "default"),
        ev("deny", "tcp", None, "8.8.8.8:5432", "default"),
        ev("deny", "http", None, "10.99.0.10:80", "address"),
        ev("deny", "tcp", None, "169.254.169.254:80", "default"),
        ev("allow", "tcp", None, "10.1.2.3:5432", "allow_cidrs"),
    ];
    let current = spec(r#"{"mode":"custom","allow_cidrs":["10.1.2.0/24"],"audit":true}"#);
    let s = suggest("sb", &current, &events);
    let cidrs: Vec<(&str, &str)> = s
        .cidrs
        .iter()
        .map(|c| (c.cidr.as_str(), c.source.as_str()))
        .collect();
    assert_eq!(
        cidrs,
        [
            ("10.1.2.0/24", "kept"),
            ("8.8.8.8/32", "seen"),
            ("198.51.100.30/32", "seen")
        ]
    );
    assert_eq!(s.cidrs[2].evidence.ports, [7, 22]);
    assert_eq!(s.cidrs[2].evidence.count, 2);
    assert_eq!(s.cidrs[2].evidence.bytes_sent, 20);
    assert_eq!(s.cidrs[0].evidence.count, 1);
    let not = not_suggested(&s);
    assert!(not.contains(&"10.99.0.10"), "{not:?}");
    assert!(not.contains(&"169.254.169.254"), "{not:?}");
    assert!(s.domains.is_empty());
}

#[test]
fn transforms_and_budgets_are_kept_and_cover_their_names() {
    let current = spec(
        r#"{"mode":"custom","allow_domains":["old.example.com","alpha.test"],
            "transforms":[{"domain":"api.example.test","inject_headers":{"Authorization":"[REDACTED]"}}],
            "budgets":{"sandbox":{"sent_bytes":1000000,"window_secs":60}},
            "audit":true}"#,
    );
    let events = [
        ev(
            "allow",
            "tcp",
            Some("alpha.test"),
            "198.18.0.2:443",
            "domain:alpha.test",
        ),
        ev(
            "allow",
            "http",
            Some("api.example.test"),
            "198.18.0.3:80",
            "transform:api.example.test",
        ),
        ev(
            "allow",
            "dns",
            Some("alpha.test"),
            "100.96.0.1:53",
            "domain:alpha.test",
        ),
        // L7 rule would-deny and a spent budget: no list entry lifts them.
        ev(
            "would-deny",
            "http",
            Some("api.example.test"),
            "198.18.0.3:80",
            "http-rule:0",
        ),
        ev(
            "deny",
            "tcp",
            Some("beta.test"),
            "198.18.0.4:443",
            "budget:sandbox",
        ),
    ];
    let s = suggest("sb", &current, &events);
    assert_eq!(domains(&s), ["alpha.test"]);
    assert_eq!(s.unused, ["old.example.com"]);
    assert_eq!(s.network_policy.transforms, current.transforms);
    assert_eq!(s.network_policy.budgets, current.budgets);
    let alpha = &s.domains[0].evidence;
    assert_eq!(alpha.count, 2);
    assert_eq!(alpha.ports, [443], "DNS carries no port");
    let not = not_suggested(&s);
    assert_eq!(not, ["api.example.test", "beta.test"]);
}

#[test]
fn apply_keeps_secrets_and_sets_audit_as_asked() {
    let full = Policy::from_json(
        br#"{"mode":"custom","transforms":[{"domain":"api.example.test","inject_headers":{"Authorization":"Bearer sk-real"}}],"audit":true}"#,
    )
    .unwrap();
    let s = suggest("sb", &full.redacted_spec(), &[tcp("beta.test")]);
    let applied = apply_to(&full, &s, false).unwrap();
    assert!(!applied.audit());
    assert_eq!(applied.allow_domains().len(), 1);
    let secret = applied.transforms()[0].inject()[0].1.expose().to_owned();
    assert_eq!(secret, "Bearer sk-real");
    assert!(apply_to(&full, &s, true).unwrap().audit());
}

#[test]
fn over_the_limits_is_reported_not_hidden() {
    let events: Vec<_> = (0..60)
        .map(|i| tcp(&format!("host{i}.site{i}.test")))
        .collect();
    let s = suggest("sb", &spec(AUDIT), &events);
    assert_eq!(s.domains.len(), 60);
    assert_eq!(s.problems.len(), 1);
    assert_eq!(s.problems[0].field, "network_policy.allow_domains");
}

#[test]
fn names_a_person_allowed_are_suggested_and_refused_ones_are_not() {
    // `on_unknown: hold`: each name waited in the approval queue; the rule says who decided.
    let events = [
        named("allow", "dns", "once.test", "approval:allow-once"),
        named("allow", "tcp", "once.test", "approval:allow-once"),
        named("allow", "tcp", "always.test", "approval:allow-always"),
        named("deny", "tcp", "refused.test", "approval:deny"),
        named("deny", "dns", "forever.test", "approval:deny-always"),
        named("deny", "dns", "late.test", "approval:timeout"),
        named("deny", "dns", "full.test", "hold-limit"),
    ];
    let hold = spec(r#"{"mode":"custom","on_unknown":"hold"}"#);
    let s = suggest("sb", &hold, &events);
    assert_eq!(domains(&s), ["always.test", "once.test"]);
    assert_eq!(s.domains[1].evidence.count, 2);
    let not = not_suggested(&s);
    assert_eq!(
        not,
        ["forever.test", "full.test", "late.test", "refused.test"]
    );
}

#[test]
fn rules_this_build_cannot_read_count_for_nothing() {
    // A rule text this build does not know (a newer daemon's, or a damaged row) never becomes
    // an entry: allowing what cannot be read would be a silent allow. An earlier version's bare
    // `domain` (an intercepted request an allow_domains entry let through) still counts.
    let events = [
        named("allow", "tcp", "new.test", "some-future-rule"),
        named("allow", "tcp", "old.test", "domain"),
        named("deny", "tcp", "odd.test", "domain:"),
    ];
    let s = suggest("sb", &spec(AUDIT), &events);
    assert_eq!(domains(&s), ["old.test"]);
    let not = not_suggested(&s);
    assert_eq!(not, ["odd.test"]);
}
