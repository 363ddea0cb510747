//! Each policy mode end to end, with curl and python3 as the sandbox's clients (issue 3).
//! Runs as root: it builds network namespaces and nftables rules of its own.

mod common;

use std::time::Duration;

use common::{Bed, show, stdout};
use palisade_testbed::addrs;

const ALLOW_ALL: &str = r#"{"mode":"allow-all"}"#;
const DENY_ALL: &str = r#"{"mode":"deny-all"}"#;

fn py_fetch(url: &str, ca: &str) -> String {
    format!(
        r#"python3 -c '
import hashlib, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile="{ca}")
body = urllib.request.urlopen("{url}", context=ctx, timeout=5).read()
print(len(body), hashlib.sha256(body).hexdigest())
'"#
    )
}

fn expected(n: usize) -> String {
    use sha2::Digest;
    let body = palisade_testbed::pattern(n);
    format!("{} {:x}", n, sha2::Sha256::digest(&body))
}

#[test]
fn allow_all_reaches_https_and_http_byte_for_byte() {
    let bed = Bed::new();
    let sb = bed.sandbox(ALLOW_ALL);
    let out = sb.curl("https://alpha.test/");
    assert!(out.status.success(), "{}", show(&out));
    let body = stdout(&out);
    assert!(
        body.contains("\"sni\":\"alpha.test\"") && body.contains("\"server\":\"good\""),
        "{body}"
    );

    let n = 3 * 1024 * 1024 + 17;
    let out = sb.sh(&format!(
        "curl -sS --max-time 10 --cacert {} https://alpha.test/bytes/{n} | sha256sum",
        sb.ca_path()
    ));
    let want = expected(n);
    let want_sha = want.split(' ').nth(1).unwrap();
    assert!(stdout(&out).starts_with(want_sha), "{}", show(&out));

    let out = sb.curl("http://echo.test/hello");
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("/hello"), "{}", show(&out));

    let out = sb.sh(&py_fetch(
        &format!("https://alpha.test/bytes/{n}"),
        &sb.ca_path(),
    ));
    assert_eq!(stdout(&out).trim(), want, "{}", show(&out));
    let out = sb.sh(&py_fetch("http://alpha.test/bytes/1000", &sb.ca_path()));
    assert_eq!(stdout(&out).trim(), expected(1000), "{}", show(&out));
    bed.world.assert_untouched("attacker");
}

#[test]
fn deny_all_fails_fast_and_nothing_arrives() {
    let bed = Bed::new();
    let sb = bed.sandbox(DENY_ALL);
    // Name resolution is refused at once.
    let (out, took) = sb.timed(&format!(
        "curl -sS --max-time 5 --cacert {} https://alpha.test/",
        sb.ca_path()
    ));
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        took < Duration::from_secs(1),
        "took {took:?}: {}",
        show(&out)
    );
    // Straight to an address: TLS is reset, plain HTTP gets an explanatory 403.
    let (out, took) = sb.timed(&format!(
        "curl -sS --max-time 5 --cacert {} --resolve alpha.test:443:{} https://alpha.test/",
        sb.ca_path(),
        addrs::GOOD_V4
    ));
    assert!(!out.status.success(), "{}", show(&out));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let out = sb.sh(&format!(
        "curl -s -o /dev/stderr -w '%{{http_code}}' --max-time 5 -H 'Host: alpha.test' http://{}/",
        addrs::GOOD_V4
    ));
    assert_eq!(stdout(&out), "403", "{}", show(&out));
    assert!(
        common::stderr(&out).contains("denies alpha.test"),
        "{}",
        show(&out)
    );
    let (out, took) = sb.timed(&format!(
        "python3 -c 'import urllib.request; urllib.request.urlopen(\"http://{}/\", timeout=5)'",
        addrs::ECHO_V4
    ));
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    for server in ["good", "attacker", "echo", "tcp", "private", "metadata"] {
        bed.world.assert_untouched(server);
    }
    assert!(
        bed.world.log().dns_queries().is_empty(),
        "{}",
        bed.world.log().render()
    );
}

#[test]
fn custom_allows_exactly_its_domains() {
    let bed = Bed::new();
    let sb = bed.sandbox(r#"{"mode":"custom","allow_domains":["alpha.test","*.wild.test"]}"#);
    for url in [
        "https://alpha.test/",
        "https://x.wild.test/",
        "https://a.b.wild.test/",
        "http://alpha.test/",
    ] {
        let out = sb.curl(url);
        assert!(out.status.success(), "{url}: {}", show(&out));
    }
    let out = sb.sh(&py_fetch("https://alpha.test/bytes/100000", &sb.ca_path()));
    assert_eq!(stdout(&out).trim(), expected(100000), "{}", show(&out));

    for url in [
        "https://beta.test/",
        "https://wild.test/",
        "https://evil.test/",
        "http://evil.test/",
    ] {
        let (out, took) = sb.timed(&format!(
            "curl -sS --max-time 5 --cacert {} {url}",
            sb.ca_path()
        ));
        assert!(!out.status.success(), "{url}: {}", show(&out));
        assert!(took < Duration::from_secs(1), "{url} took {took:?}");
    }
    // Even when the sandbox knows the address.
    let (out, took) = sb.timed(&format!(
        "curl -sS --max-time 5 --cacert {} --resolve beta.test:443:{} https://beta.test/",
        sb.ca_path(),
        addrs::GOOD_V4
    ));
    assert!(!out.status.success(), "{}", show(&out));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    bed.world.assert_untouched("attacker");
    let log = bed.world.log().for_server("good");
    assert!(
        !log.iter().any(|e| e.detail.contains("beta.test")),
        "{}",
        bed.world.log().render()
    );
}

#[test]
fn allow_cidrs_open_tcp_and_udp() {
    let bed = Bed::new();
    let sb = bed.sandbox(&format!(
        r#"{{"mode":"custom","allow_cidrs":["{}/32"]}}"#,
        addrs::TCP_V4
    ));
    // TCP echo on port 7.
    let out = sb.sh(&format!(
        "printf 'ping-tcp' | nc -N -w 3 {} 7",
        addrs::TCP_V4
    ));
    assert_eq!(stdout(&out), "ping-tcp", "{}", show(&out));
    // UDP echo on port 7.
    let out = sb.sh(&format!(
        "printf 'ping-udp' | nc -u -w 2 {} 7",
        addrs::TCP_V4
    ));
    assert_eq!(stdout(&out), "ping-udp", "{}", show(&out));
    // The same protocols elsewhere go nowhere.
    let (out, took) = sb.timed(&format!(
        "printf 'x' | nc -N -w 3 {} 5432",
        addrs::ATTACKER_V4
    ));
    assert!(stdout(&out).is_empty());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let _ = sb.sh(&format!(
        "printf 'x' | nc -u -w 1 {} 123",
        addrs::ATTACKER_V4
    ));
    bed.world.assert_untouched("attacker");
}

#[test]
fn dns_answers_exactly_as_the_policy_says() {
    let bed = Bed::new();
    let custom = bed.sandbox(r#"{"mode":"custom","allow_domains":["alpha.test"]}"#);
    // custom: an allowed name gets a synthetic address of the sandbox's own (issue 11.4),
    // which the proxy maps back to the name.
    let out = custom.sh("dig +short +tries=1 +time=2 alpha.test A");
    let answer: std::net::Ipv4Addr = stdout(&out).trim().parse().expect("one address");
    assert!(
        palisade_firewall::config::SyntheticConfig::default()
            .range
            .contains(&answer),
        "{}",
        show(&out)
    );
    let out = custom.sh("dig +tries=1 +time=2 beta.test A");
    assert!(stdout(&out).contains("NXDOMAIN"), "{}", show(&out));
    let out = custom.sh("dig +short +tries=1 +time=2 alpha.test AAAA");
    assert_eq!(stdout(&out).trim(), "", "{}", show(&out));
    let deny = bed.sandbox(DENY_ALL);
    let out = deny.sh("dig +tries=1 +time=2 alpha.test A");
    assert!(stdout(&out).contains("REFUSED"), "{}", show(&out));
    let allow = bed.sandbox(ALLOW_ALL);
    let out = allow.sh("dig +short +tries=1 +time=2 beta.test A");
    assert_eq!(
        stdout(&out).trim(),
        addrs::GOOD_V4.to_string(),
        "{}",
        show(&out)
    );
    let queries: Vec<String> = bed
        .world
        .log()
        .dns_queries()
        .into_iter()
        .map(|q| q.name.to_lowercase())
        .collect();
    assert!(
        queries
            .iter()
            .all(|q| q == "alpha.test." || q == "beta.test."),
        "{queries:?}"
    );
    // beta.test reached the upstream only for the allow-all sandbox (once, then cached).
    assert!(
        queries.iter().filter(|q| *q == "beta.test.").count() <= 1,
        "{queries:?}"
    );
}
