use std::net::IpAddr;

use palisade_policy::{AddressClass as C, classify};

use crate::compiled;

fn ip(s: &str) -> IpAddr {
    match s.parse() {
        Ok(ip) => ip,
        Err(e) => panic!("{s}: {e}"),
    }
}

#[test]
fn classes() {
    let table = [
        ("8.8.8.8", C::Public),
        ("1.1.1.1", C::Public),
        ("0.0.0.0", C::Unspecified),
        ("0.1.2.3", C::Unspecified),
        ("10.0.0.1", C::Private),
        ("172.16.0.1", C::Private),
        ("172.31.255.255", C::Private),
        ("172.32.0.1", C::Public),
        ("192.168.1.1", C::Private),
        ("100.64.0.1", C::Cgnat),
        ("100.96.0.2", C::Cgnat),
        ("100.127.255.255", C::Cgnat),
        ("100.128.0.1", C::Public),
        ("127.0.0.1", C::Loopback),
        ("127.255.0.9", C::Loopback),
        ("169.254.169.254", C::Metadata),
        ("168.63.129.16", C::Metadata),
        ("169.254.170.2", C::LinkLocal),
        ("192.0.0.8", C::Reserved),
        ("192.0.2.1", C::Documentation),
        ("198.51.100.7", C::Documentation),
        ("203.0.113.9", C::Documentation),
        ("192.88.99.1", C::Reserved),
        ("198.18.0.1", C::Benchmarking),
        ("198.19.255.1", C::Benchmarking),
        ("224.0.0.1", C::Multicast),
        ("239.255.255.250", C::Multicast),
        ("240.0.0.1", C::Reserved),
        ("255.255.255.255", C::Broadcast),
        ("::", C::Unspecified),
        ("::1", C::Loopback),
        ("2606:4700::1111", C::Public),
        ("2001:db8::1", C::Documentation),
        ("3fff::1", C::Documentation),
        ("fc00::1", C::UniqueLocal),
        ("fd12:3456::1", C::UniqueLocal),
        ("fd00:ec2::254", C::Metadata),
        ("fe80::1", C::LinkLocal),
        ("fec0::1", C::Reserved),
        ("ff02::1", C::Multicast),
        ("2001:2::1", C::Benchmarking),
        ("2001::1", C::Reserved),    // Teredo
        ("2001:10::1", C::Reserved), // ORCHID
        ("100::1", C::Reserved),     // discard-only
        ("4000::1", C::Reserved),
        ("64:ff9b:1::1", C::Private),
        // embedded IPv4 forms, decoded first
        ("::ffff:127.0.0.1", C::Loopback),
        ("::ffff:169.254.169.254", C::Metadata),
        ("::ffff:8.8.8.8", C::Public),
        ("::ffff:198.51.100.1", C::Documentation),
        ("::127.0.0.1", C::Loopback),
        ("::10.1.2.3", C::Private),
        ("64:ff9b::a9fe:a9fe", C::Metadata),
        ("64:ff9b::8.8.8.8", C::Public),
        ("2002:7f00:1::", C::Loopback),
        ("2002:a00:1:1::1", C::Private),
        ("2002:808:808::1", C::Public),
    ];
    for (s, want) in table {
        assert_eq!(classify(ip(s)), want, "{s}");
        assert_eq!(
            want.is_internal(),
            !matches!(want, C::Public | C::Documentation),
            "{s}"
        );
    }
}

#[test]
fn allow_cidrs_open_internal_ranges() {
    let c =
        compiled(r#"{"mode":"custom","allow_cidrs":["10.1.0.0/16","fd00::/8","192.0.2.0/24"]}"#);
    let table = [
        ("10.1.2.3", C::Private, true, false),
        ("10.2.0.1", C::Private, false, true),
        ("::ffff:10.1.2.3", C::Private, true, false),
        ("::ffff:10.2.0.1", C::Private, false, true),
        ("fd00:ec2::254", C::Metadata, true, false),
        ("169.254.169.254", C::Metadata, false, true),
        ("192.0.2.5", C::Documentation, true, false),
        ("198.51.100.5", C::Documentation, false, false),
        ("8.8.8.8", C::Public, false, false),
        ("127.0.0.1", C::Loopback, false, true),
    ];
    for (s, class, inside, refused) in table {
        let v = c.check_addr(ip(s));
        assert_eq!(
            (v.class, v.in_allow_cidrs, v.internal_refused()),
            (class, inside, refused),
            "{s}"
        );
    }
    // Internal ranges are refused in allow-all too unless opened.
    let all = compiled(r#"{"mode":"allow-all"}"#);
    assert!(all.check_addr(ip("127.0.0.1")).internal_refused());
    assert!(!all.check_addr(ip("203.0.113.1")).internal_refused());
    let opened = compiled(r#"{"mode":"allow-all","allow_cidrs":["127.0.0.0/8"]}"#);
    assert!(!opened.check_addr(ip("127.0.0.1")).internal_refused());
}
