//! Issue 11.4: name-less protocols are bound to a name, not to an address. In `custom` mode the
//! filtering DNS answers an allowed name with a synthetic address of the sandbox's own; the proxy
//! maps it back to the name and dials the name's real address. The real address of a shared host
//! (virtual hosting: `shared-a.test` and `shared-b.test` on one address) accepts nothing
//! name-less, and the upstream logs prove it. Runs as root.

#![allow(
    clippy::panic,
    reason = "helpers fail the test with what the sandbox printed"
)]

mod common;

use std::net::Ipv4Addr;

use common::{Bed, Sandbox, show, stdout};
use ipnet::Ipv4Net;
use palisade_firewall::events::EventVerdict;
use palisade_testbed::addrs;

const ONLY_A: &str = r#"{"mode":"custom","allow_domains":["shared-a.test"]}"#;

fn synthetic_range() -> Ipv4Net {
    palisade_firewall::config::SyntheticConfig::default().range
}

/// The single A record the sandbox's resolver gets for `name`.
fn resolve(sb: &Sandbox<'_>, name: &str) -> Ipv4Addr {
    let out = sb.sh(&format!("dig +short +tries=1 +time=2 {name} A"));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{}", show(&out));
    lines[0]
        .parse()
        .unwrap_or_else(|_| panic!("{}", show(&out)))
}

/// Sends `payload` over TCP and prints what comes back (at most 3 s).
fn nc(sb: &Sandbox<'_>, host: impl std::fmt::Display, port: u16, payload: &str) -> String {
    stdout(&sb.sh(&format!("printf '{payload}' | nc -N -w 3 {host} {port}")))
}

#[test]
fn nameless_tcp_is_bound_to_the_name_not_to_the_shared_address() {
    let bed = Bed::new();
    let sb = bed.sandbox(ONLY_A);
    let syn = resolve(&sb, "shared-a.test");
    assert!(synthetic_range().contains(&syn), "{syn} is not synthetic");
    assert_ne!(syn, addrs::SHARED_V4);

    // The name was resolved, yet its real (shared) address accepts nothing name-less, on any
    // port: not shared-a's echo, not shared-b's SSH, not the web ports without a name.
    for port in [7u16, 22, 80, 443, 5432] {
        assert_eq!(nc(&sb, addrs::SHARED_V4, port, "direct"), "", "port {port}");
    }
    let out = sb.sh(&format!(
        "timeout 3 nc -w 2 {} 22 </dev/null",
        addrs::SHARED_V4
    ));
    assert!(stdout(&out).is_empty(), "{}", show(&out));
    for server in ["shared-echo", "shared-ssh", "shared"] {
        bed.world.assert_untouched(server);
    }

    // Through the synthetic address (and by name, which resolves to it), shared-a's name-less
    // service answers.
    assert_eq!(nc(&sb, syn, 7, "via-synthetic"), "via-synthetic");
    assert_eq!(nc(&sb, "shared-a.test", 7, "by-name"), "by-name");
    assert_eq!(
        bed.world.log().bytes_received("shared-echo"),
        b"via-syntheticby-name"
    );
    // A server-speaks-first protocol works through it too.
    let out = sb.sh(&format!("timeout 3 nc -w 2 {syn} 22 </dev/null"));
    assert!(
        stdout(&out).starts_with("SSH-2.0-testbed"),
        "{}",
        show(&out)
    );

    // The events name the destination.
    let events = bed.fw.events().recent(Some(&sb.id), 200);
    let bound = events
        .iter()
        .find(|e| {
            e.rule.to_string() == "dns-bound:shared-a.test" && e.dst.map(|d| d.port()) == Some(7)
        })
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(bound.name.as_deref(), Some("shared-a.test"));
    assert_eq!(bound.dst.map(|d| d.ip()), Some(syn.into()));
    assert!(
        events
            .iter()
            .any(|e| e.dst.map(|d| d.ip()) == Some(addrs::SHARED_V4.into())
                && e.verdict == EventVerdict::Deny),
        "{events:?}"
    );
}

#[test]
fn tls_and_http_through_a_synthetic_address_work_byte_for_byte() {
    let bed = Bed::new();
    let sb = bed.sandbox(ONLY_A);
    let syn = resolve(&sb, "shared-a.test");
    assert!(synthetic_range().contains(&syn), "{syn}");
    let real = addrs::SHARED_V4;
    for (scheme, port) in [("https", 443u16), ("http", 80)] {
        let url = format!("{scheme}://shared-a.test/bytes/300000");
        // By name (through the synthetic address), and pinned to the real address by the
        // client: the name decides both, and the bytes are the same.
        let via = sb.curl(&format!("-w '%{{stderr}}%{{remote_ip}}' {url} | sha256sum"));
        let pinned = sb.curl(&format!(
            "--resolve shared-a.test:{port}:{real} {url} | sha256sum"
        ));
        assert!(via.status.success(), "{}", show(&via));
        assert_eq!(
            String::from_utf8_lossy(&via.stderr).trim(),
            syn.to_string(),
            "{}",
            show(&via)
        );
        let want = palisade_testbed::sha256_hex(&palisade_testbed::pattern(300_000));
        assert!(stdout(&via).starts_with(&want), "{scheme}: {}", show(&via));
        assert_eq!(stdout(&via), stdout(&pinned), "{scheme}");
    }
    // The name sent decides, not the synthetic address: shared-b.test is refused through it.
    let out = sb.curl(&format!(
        "--resolve shared-b.test:443:{syn} https://shared-b.test/"
    ));
    assert!(!out.status.success(), "{}", show(&out));
    let out = sb.curl(&format!(
        "-o /dev/null -w '%{{http_code}}' -H 'Host: shared-b.test' http://{syn}/"
    ));
    assert_eq!(stdout(&out), "403", "{}", show(&out));
    let seen = bed
        .world
        .log()
        .for_server("shared")
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!seen.contains("shared-b.test"), "{seen}");
    // An IP-literal Host naming the synthetic address reaches the name it stands for.
    let out = sb.curl(&format!("-o /dev/null -w '%{{http_code}}' http://{syn}/"));
    assert_eq!(stdout(&out), "200", "{}", show(&out));
}

#[test]
fn a_policy_update_removing_the_name_refuses_its_synthetic_address() {
    let bed = Bed::new();
    let sb = bed.sandbox(ONLY_A);
    let syn = resolve(&sb, "shared-a.test");
    assert_eq!(nc(&sb, syn, 7, "before"), "before");
    sb.set_policy(r#"{"mode":"custom","allow_domains":["alpha.test"]}"#, 2);
    assert_eq!(nc(&sb, syn, 7, "after"), "");
    assert_eq!(bed.world.log().bytes_received("shared-echo"), b"before");
    let events = bed.fw.events().recent(Some(&sb.id), 100);
    assert!(
        events.iter().any(|e| e.verdict == EventVerdict::Deny
            && e.name.as_deref() == Some("shared-a.test")
            && e.dst.map(|d| d.ip()) == Some(syn.into())),
        "{events:?}"
    );
    // Allowed again: the sandbox's cached address works again, with no new DNS answer.
    sb.set_policy(ONLY_A, 3);
    assert_eq!(nc(&sb, syn, 7, "again"), "again");
}

#[test]
fn synthetic_addresses_are_per_sandbox_and_unknown_ones_go_nowhere() {
    let bed = Bed::new();
    let a = bed.sandbox(ONLY_A);
    let t = bed.sandbox(r#"{"mode":"custom","allow_domains":["tcp.test"]}"#);
    let syn_a = resolve(&a, "shared-a.test");
    let syn_t = resolve(&t, "tcp.test");
    // Each sandbox numbers its own names: the same address may stand for different names.
    assert_eq!(syn_a, syn_t);
    assert_eq!(nc(&t, syn_t, 7, "to-tcp"), "to-tcp");
    assert_eq!(bed.world.log().bytes_received("tcp"), b"to-tcp");
    bed.world.assert_untouched("shared-echo");
    // An address of the range never handed to this sandbox: refused whatever the port.
    let never = Ipv4Addr::from(u32::from(syn_t) + 200);
    assert_eq!(nc(&t, never, 7, "nowhere"), "");
    bed.world.assert_untouched("shared-echo");

    // allow-all keeps real answers (name-less traffic goes to any public address there).
    let all = bed.sandbox(r#"{"mode":"allow-all"}"#);
    assert_eq!(resolve(&all, "shared-a.test"), addrs::SHARED_V4);
    // A name whose addresses all lie in allow_cidrs keeps them: UDP to them works.
    let cidr = bed.sandbox(&format!(
        r#"{{"mode":"custom","allow_domains":["tcp.test"],"allow_cidrs":["{}/32"]}}"#,
        addrs::TCP_V4
    ));
    assert_eq!(resolve(&cidr, "tcp.test"), addrs::TCP_V4);
    let out = cidr.sh("printf 'udp-echo' | nc -u -w 1 tcp.test 7");
    assert_eq!(stdout(&out), "udp-echo", "{}", show(&out));
}

#[test]
fn an_open_tunnel_through_a_synthetic_address_closes_when_the_name_is_removed() {
    use std::io::{BufRead, BufReader, Write};
    let bed = Bed::new();
    let sb = bed.sandbox(ONLY_A);
    let script = r#"
import socket, sys
s = socket.create_connection(("shared-a.test", 7), timeout=10)
print(s.getpeername()[0], flush=True)
s.sendall(b"before"); print(s.recv(100).decode(), flush=True)
sys.stdin.readline()
try:
    s.sendall(b"after")
    print("got", s.recv(100), flush=True)
except OSError as e:
    print("closed", type(e).__name__, flush=True)
"#;
    let mut child = std::process::Command::new("timeout")
        .args(["-s", "KILL", "20", "ip", "netns", "exec", &sb.net.netns])
        .args(["python3", "-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let peer: Ipv4Addr = lines.next().unwrap().unwrap().parse().unwrap();
    assert!(synthetic_range().contains(&peer), "{peer}");
    assert_eq!(lines.next().unwrap().unwrap(), "before");
    // The tunnel is open; the policy stops allowing its name.
    sb.set_policy(r#"{"mode":"custom","allow_domains":["alpha.test"]}"#, 2);
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = child.wait();
    assert!(
        rest.iter()
            .any(|l| l.starts_with("closed") || l == "got b''"),
        "{rest:?}"
    );
    assert_eq!(bed.world.log().bytes_received("shared-echo"), b"before");
    let events = bed.fw.events().recent(Some(&sb.id), 50);
    assert!(
        events.iter().any(|e| e.reason.contains("new policy denies")
            && e.name.as_deref() == Some("shared-a.test")),
        "{events:?}"
    );
}
