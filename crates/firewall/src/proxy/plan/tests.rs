//! Table tests of the plan, without root: every mode × name or address class × protocol, and
//! the address checks every dial goes through.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use palisade_policy::{CanonicalName, CompiledPolicy, Policy};

use super::*;

const ALLOW_ALL: &str = r#"{"mode":"allow-all","allow_cidrs":["10.1.0.0/16"]}"#;
const DENY_ALL: &str = r#"{"mode":"deny-all"}"#;
const CUSTOM: &str = r#"{"mode":"custom",
    "allow_domains":["ok.test","*.wild.test"],
    "allow_cidrs":["203.0.113.0/24","10.1.0.0/16"],
    "transforms":[{"domain":"tx.test","inject_headers":{"X-Key":"v"}}]}"#;

const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const CIDR_PUBLIC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const CIDR_PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
const PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const CGNAT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const SYNTHETIC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 5);

fn policy(json: &str) -> CompiledPolicy {
    Policy::from_json(json.as_bytes()).unwrap().compile()
}

fn name(s: &str) -> CanonicalName {
    canonicalize(s.as_bytes()).unwrap()
}

fn to(ip: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(ip, 443)
}

/// What a plan says, as text: `name <name> [transform]`, `addr` or `deny`, the rule as the
/// event names it, and the reason (empty for an allow).
fn said(plan: &Plan) -> (String, String, String) {
    let kind = match plan {
        Plan::DialName {
            name, transform, ..
        } => match transform {
            Some(i) => format!("name {} transform {i}", name.as_str()),
            None => format!("name {}", name.as_str()),
        },
        Plan::DialAddr { .. } => "addr".to_owned(),
        Plan::Deny { .. } => "deny".to_owned(),
    };
    let reason = match plan {
        Plan::Deny { reason, .. } => reason.to_string(),
        _ => String::new(),
    };
    (kind, plan.rule().to_string(), reason)
}

/// One row: the policy, what it is asked, and the kind, rule and (start of the) reason expected.
type Row<'a> = (&'a str, Plan, &'a str, &'a str, &'a str);

fn check(rows: Vec<Row<'_>>) {
    for (i, (what, plan, kind, rule, reason)) in rows.into_iter().enumerate() {
        let (k, r, why) = said(&plan);
        assert_eq!(
            (k.as_str(), r.as_str()),
            (kind, rule),
            "row {i} ({what}): {why}"
        );
        assert!(
            why.starts_with(reason),
            "row {i} ({what}): reason {why:?} does not start with {reason:?}"
        );
        assert_eq!(plan.is_deny(), kind == "deny", "row {i} ({what})");
    }
}

#[test]
fn tls_in_every_mode() {
    let (a, d, c) = (policy(ALLOW_ALL), policy(DENY_ALL), policy(CUSTOM));
    let tls = |p: &CompiledPolicy, sni: Option<&str>, ech: bool, ip| {
        plan_tls(p, sni.map(str::as_bytes), ech, to(ip))
    };
    let not_allowed = "the name is not in the sandbox's allowed domains";
    check(vec![
        // allow-all: any usable name by name; no name by address.
        (
            "a ok",
            tls(&a, Some("ok.test"), false, PUBLIC),
            "name ok.test",
            "allow-all",
            "",
        ),
        (
            "a ech",
            tls(&a, Some("ok.test"), true, PUBLIC),
            "name ok.test",
            "allow-all",
            "",
        ),
        (
            "a no sni",
            tls(&a, None, false, PUBLIC),
            "addr",
            "allow-all",
            "",
        ),
        (
            "a bad sni",
            tls(&a, Some("a..b"), false, PUBLIC),
            "addr",
            "allow-all",
            "",
        ),
        (
            "a cidr",
            tls(&a, None, false, CIDR_PRIVATE),
            "addr",
            "allow_cidrs",
            "",
        ),
        // deny-all: nothing, whatever is named.
        (
            "d ok",
            tls(&d, Some("ok.test"), false, PUBLIC),
            "deny",
            "deny-all",
            "the sandbox policy denies all traffic",
        ),
        (
            "d no sni",
            tls(&d, None, false, PUBLIC),
            "deny",
            "deny-all",
            "the sandbox policy denies all traffic",
        ),
        // custom: the name decides; an allowed address opens itself to any name.
        (
            "c ok",
            tls(&c, Some("OK.test."), false, PUBLIC),
            "name ok.test",
            "domain:ok.test",
            "",
        ),
        (
            "c wild",
            tls(&c, Some("a.wild.test"), false, PUBLIC),
            "name a.wild.test",
            "domain:*.wild.test",
            "",
        ),
        (
            "c wild base",
            tls(&c, Some("wild.test"), false, PUBLIC),
            "deny",
            "default",
            not_allowed,
        ),
        (
            "c transform",
            tls(&c, Some("tx.test"), false, PUBLIC),
            "name tx.test transform 0",
            "transform:tx.test",
            "",
        ),
        (
            "c denied",
            tls(&c, Some("no.test"), false, PUBLIC),
            "deny",
            "default",
            not_allowed,
        ),
        (
            "c denied to cidr",
            tls(&c, Some("no.test"), false, CIDR_PUBLIC),
            "addr",
            "allow_cidrs",
            "",
        ),
        (
            "c allowed to cidr",
            tls(&c, Some("ok.test"), false, CIDR_PUBLIC),
            "name ok.test",
            "domain:ok.test",
            "",
        ),
        (
            "c no sni",
            tls(&c, None, false, PUBLIC),
            "deny",
            "default",
            "TLS without SNI to 198.51.100.7 outside allow_cidrs",
        ),
        (
            "c no sni to cidr",
            tls(&c, None, false, CIDR_PUBLIC),
            "addr",
            "allow_cidrs",
            "",
        ),
        (
            "c ech",
            tls(&c, Some("ok.test"), true, PUBLIC),
            "deny",
            "default",
            "TLS with Encrypted Client Hello to 198.51.100.7 outside allow_cidrs",
        ),
        (
            "c ech to cidr",
            tls(&c, Some("ok.test"), true, CIDR_PRIVATE),
            "addr",
            "allow_cidrs",
            "",
        ),
        (
            "c bad sni",
            tls(&c, Some("a..b"), false, PUBLIC),
            "deny",
            "default",
            "TLS with an unusable server name (",
        ),
        (
            "c bad sni metadata",
            tls(&c, Some("a..b"), false, METADATA),
            "deny",
            "default",
            "TLS with an unusable server name (",
        ),
    ]);
}

#[test]
fn plain_http_in_every_mode() {
    let (a, d, c) = (policy(ALLOW_ALL), policy(DENY_ALL), policy(CUSTOM));
    let http =
        |p: &CompiledPolicy, host: &str, ip| plan_http(p, host, SocketAddrV4::new(ip, 80), None);
    check(vec![
        (
            "a name",
            http(&a, "ok.test", PUBLIC),
            "name ok.test",
            "allow-all",
            "",
        ),
        (
            "a literal",
            http(&a, "198.51.100.7", PUBLIC),
            "addr",
            "allow-all",
            "",
        ),
        (
            "a v6 literal",
            http(&a, "[2001:db8::1]", PUBLIC),
            "addr",
            "allow-all",
            "",
        ),
        (
            "a bad host",
            http(&a, "bad_host!", PUBLIC),
            "addr",
            "allow-all",
            "",
        ),
        // The matcher's own words for deny-all where a name was sent (the proxy's where none was).
        (
            "d name",
            http(&d, "ok.test", PUBLIC),
            "deny",
            "deny-all",
            "the sandbox's network policy denies all traffic",
        ),
        (
            "d literal",
            http(&d, "198.51.100.7", PUBLIC),
            "deny",
            "deny-all",
            "the sandbox policy denies all traffic",
        ),
        // Today's behaviour: an unusable Host is refused by the default rule in deny-all too.
        (
            "d bad host",
            http(&d, "bad_host!", PUBLIC),
            "deny",
            "default",
            "unusable host name: ",
        ),
        (
            "c name",
            http(&c, "ok.test", PUBLIC),
            "name ok.test",
            "domain:ok.test",
            "",
        ),
        (
            "c transform",
            http(&c, "tx.test", PUBLIC),
            "name tx.test transform 0",
            "transform:tx.test",
            "",
        ),
        (
            "c denied",
            http(&c, "no.test", PUBLIC),
            "deny",
            "default",
            "the name is not in the sandbox's allowed domains",
        ),
        (
            "c denied to cidr",
            http(&c, "no.test", CIDR_PUBLIC),
            "addr",
            "allow_cidrs",
            "",
        ),
        (
            "c literal",
            http(&c, "198.51.100.7", PUBLIC),
            "deny",
            "default",
            "HTTP to 198.51.100.7 is outside allow_cidrs; without a name",
        ),
        (
            "c literal to cidr",
            http(&c, "203.0.113.5", CIDR_PUBLIC),
            "addr",
            "allow_cidrs",
            "",
        ),
        (
            "c bad host",
            http(&c, "bad_host!", PUBLIC),
            "deny",
            "default",
            "unusable host name: ",
        ),
    ]);
}

#[test]
fn name_less_connections_and_synthetic_addresses_in_every_mode() {
    let (a, d, c) = (policy(ALLOW_ALL), policy(DENY_ALL), policy(CUSTOM));
    let conn = |p: &CompiledPolicy, ip, syn: Option<&str>| {
        let syn = syn.map(name);
        plan_nameless(p, to(ip), syn.as_ref(), Carrier::Connection)
    };
    check(vec![
        ("a public", conn(&a, PUBLIC, None), "addr", "allow-all", ""),
        // The plan allows; the address check refuses internal classes (below).
        (
            "a loopback",
            conn(&a, LOOPBACK, None),
            "addr",
            "allow-all",
            "",
        ),
        (
            "a cidr",
            conn(&a, CIDR_PRIVATE, None),
            "addr",
            "allow_cidrs",
            "",
        ),
        (
            "a synthetic",
            conn(&a, SYNTHETIC, Some("no.test")),
            "addr",
            "dns-bound:no.test",
            "",
        ),
        (
            "d public",
            conn(&d, PUBLIC, None),
            "deny",
            "deny-all",
            "the sandbox policy denies all traffic",
        ),
        (
            "d synthetic",
            conn(&d, SYNTHETIC, Some("ok.test")),
            "deny",
            "deny-all",
            "connection to 198.18.0.5, the sandbox's address for ok.test, which the policy does not allow",
        ),
        (
            "c public",
            conn(&c, PUBLIC, None),
            "deny",
            "default",
            "connection to 198.51.100.7 is outside allow_cidrs; without a name, an allowed name is reached only through the address the sandbox's DNS answered for it",
        ),
        (
            "c private",
            conn(&c, PRIVATE, None),
            "deny",
            "default",
            "connection to 10.9.9.9 is outside allow_cidrs",
        ),
        (
            "c metadata",
            conn(&c, METADATA, None),
            "deny",
            "default",
            "connection to 169.254.169.254 is outside",
        ),
        (
            "c cidr public",
            conn(&c, CIDR_PUBLIC, None),
            "addr",
            "allow_cidrs",
            "",
        ),
        (
            "c cidr private",
            conn(&c, CIDR_PRIVATE, None),
            "addr",
            "allow_cidrs",
            "",
        ),
        (
            "c synthetic allowed",
            conn(&c, SYNTHETIC, Some("ok.test")),
            "addr",
            "dns-bound:ok.test",
            "",
        ),
        (
            "c synthetic transform",
            conn(&c, SYNTHETIC, Some("tx.test")),
            "addr",
            "dns-bound:tx.test",
            "",
        ),
        (
            "c synthetic denied",
            conn(&c, SYNTHETIC, Some("no.test")),
            "deny",
            "default",
            "connection to 198.18.0.5, the sandbox's address for no.test, which the policy does not allow",
        ),
    ]);
}

#[test]
fn every_dial_passes_the_address_classes_in_every_mode() {
    use AddrRefusal::{Internal, OwnOrSandbox};
    let (a, d, c) = (policy(ALLOW_ALL), policy(DENY_ALL), policy(CUSTOM));
    let rows: [(&CompiledPolicy, Ipv4Addr, bool, Result<(), AddrRefusal>); 17] = [
        (&a, PUBLIC, false, Ok(())),
        (&a, PRIVATE, false, Err(Internal)),
        (&a, LOOPBACK, false, Err(Internal)),
        (&a, METADATA, false, Err(Internal)),
        (&a, CGNAT, false, Err(Internal)),
        (&a, CIDR_PRIVATE, false, Ok(())),
        (&a, PUBLIC, true, Err(OwnOrSandbox)),
        (&a, CIDR_PRIVATE, true, Ok(())),
        (&d, PUBLIC, false, Ok(())),
        (&d, LOOPBACK, false, Err(Internal)),
        (&c, PUBLIC, false, Ok(())),
        (&c, PRIVATE, false, Err(Internal)),
        (&c, METADATA, false, Err(Internal)),
        (&c, CIDR_PRIVATE, false, Ok(())),
        (&c, CIDR_PUBLIC, true, Ok(())),
        (&c, PUBLIC, true, Err(OwnOrSandbox)),
        (&c, LOOPBACK, true, Err(OwnOrSandbox)),
    ];
    for (i, (p, ip, own, want)) in rows.into_iter().enumerate() {
        assert_eq!(
            check_dial_addr(p, IpAddr::V4(ip), own),
            want,
            "row {i}: {ip}"
        );
    }
}

#[test]
fn a_policy_swap_rechecks_open_connections() {
    let (a, d, c) = (policy(ALLOW_ALL), policy(DENY_ALL), policy(CUSTOM));
    let by_name = |n: &str, ip| Recheck::Name {
        name: name(n),
        ip: IpAddr::V4(ip),
    };
    let by_addr = |ip| Recheck::Addr { orig: to(ip) };
    let rows = [
        (by_name("ok.test", PUBLIC), &c, false, true),
        (by_name("no.test", PUBLIC), &c, false, false),
        (by_name("no.test", PUBLIC), &a, false, true),
        (by_name("ok.test", PUBLIC), &d, false, false),
        (by_name("ok.test", PRIVATE), &c, false, false),
        (by_name("ok.test", PUBLIC), &c, true, false),
        (by_addr(PUBLIC), &a, false, true),
        (by_addr(PUBLIC), &c, false, false),
        (by_addr(CIDR_PUBLIC), &c, false, true),
        (by_addr(CIDR_PRIVATE), &c, true, true),
        (by_addr(LOOPBACK), &a, false, false),
        (by_addr(PUBLIC), &d, false, false),
    ];
    for (i, (recheck, p, own, want)) in rows.into_iter().enumerate() {
        assert_eq!(recheck.still_allowed(p, own), want, "row {i}: {recheck:?}");
    }
}
