//! Byte budgets (issue 15), end to end with real clients in sandbox namespaces: uploads cut
//! through an opaque tunnel and through interception (HTTP/2 and HTTP/1.1), a download cut by a
//! received budget, new connections refused afterwards (a 403 naming the budget on the HTTP
//! paths, a reset on TLS tunnels and name-less TCP), another domain unaffected, the sandbox
//! budget covering name-less TCP to `allow_cidrs`, counts kept across a policy update.
//! Runs as root: it builds network namespaces and nftables rules of its own.
//!
//! The bound asserted on a cut upload: the upstream receives **at most the budget**. Every batch
//! is charged before it is forwarded and the batch that would pass the budget is dropped, and on
//! the tunnel the budget counts the TLS bytes the body travels in, on interception the TLS
//! records the sandbox sent; either way the body the upstream sees is smaller than what was
//! charged. (Concurrent connections of one sandbox could each have one batch in flight; these
//! tests upload over one connection.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a failed setup step is a failed test"
)]

mod common;

use std::sync::Arc;

use common::{Bed, Sandbox, show, stdout};
use palisade_ca::SandboxCa;
use palisade_firewall::EgressEvent;
use palisade_testbed::addrs;

const MB: u64 = 1_000_000;

/// A sandbox whose curl trusts both the testbed's CA (tunnels) and its own CA (interception):
/// the bundle's path.
fn with_ca(bed: &Bed, sb: &Sandbox<'_>) -> String {
    let ca = Arc::new(SandboxCa::generate(&sb.id).expect("CA"));
    assert!(bed.fw.registry().set_ca(&sb.id, Arc::clone(&ca)));
    let test_ca = std::fs::read_to_string(bed.world.test_ca_path()).unwrap();
    let path = std::env::temp_dir().join(format!(
        "palisade-budget-{}-{}.pem",
        std::process::id(),
        sb.id
    ));
    std::fs::write(&path, format!("{test_ca}\n{}", ca.cert_pem())).unwrap();
    path.display().to_string()
}

fn events(bed: &Bed, sb: &Sandbox<'_>) -> Vec<EgressEvent> {
    bed.fw.events().recent(Some(&sb.id), 10_000)
}

fn has_budget_event(events: &[EgressEvent], rule: &str) -> bool {
    events.iter().any(|e| {
        e.rule.to_string() == rule
            && e.verdict == palisade_firewall::events::EventVerdict::Deny
            && e.reason.contains("byte budget")
    })
}

/// The upload lengths the upstream logged, once there are `n` (it logs a cut body when its
/// handler sees the connection end, which may come just after curl has exited), or what there
/// is after 5 s.
fn uploads(read: impl Fn() -> Vec<u64>, n: usize) -> Vec<u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let got = read();
        if got.len() >= n || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Uploads `size` zero bytes with curl `args`; the curl output.
fn upload(sb: &Sandbox<'_>, ca: &str, size: u64, args: &str) -> std::process::Output {
    sb.sh(&format!(
        "head -c {size} /dev/zero | curl -sS --max-time 15 --cacert {ca} -T - {args}"
    ))
}

/// (status code, body) of one curl request.
fn get(sb: &Sandbox<'_>, ca: &str, args: &str) -> (String, String) {
    let out = sb.sh(&format!(
        "curl -sS --max-time 10 --cacert {ca} -o /dev/stderr -w '%{{http_code}}' {args}"
    ));
    (
        stdout(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const POLICY: &str = r#"{
    "mode": "custom",
    "allow_domains": ["alpha.test", "beta.test"],
    "transforms": [{"domain": "api.example.test",
                    "inject_headers": {"Authorization": "Bearer sk-test-SECRET"}}],
    "budgets": {"domains": [
        {"domain": "alpha.test", "sent_bytes": 1000000, "window_secs": 3600},
        {"domain": "api.example.test", "sent_bytes": 1000000, "window_secs": 3600}]}
}"#;

#[test]
fn domain_budgets_cut_uploads_through_tunnels_and_interception_and_refuse_what_follows() {
    let bed = Bed::new();
    let log = bed.world.log();

    // Through an opaque TLS tunnel.
    let sb = bed.sandbox(POLICY);
    let ca = with_ca(&bed, &sb);
    let out = upload(&sb, &ca, 5 * MB, "https://alpha.test/upload");
    assert!(
        !out.status.success(),
        "the upload went through: {}",
        show(&out)
    );
    let got = uploads(|| log.upload_lengths("good"), 1);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0] <= MB,
        "the upstream received {} bytes past a 1 MB budget",
        got[0]
    );
    let ev = events(&bed, &sb);
    assert!(has_budget_event(&ev, "budget:domain:alpha.test"), "{ev:?}");
    // A new TLS connection to the spent domain is reset; plain HTTP gets a 403 naming it.
    let out = sb.sh(&format!(
        "curl -sS --max-time 5 --cacert {ca} https://alpha.test/"
    ));
    assert!(!out.status.success(), "{}", show(&out));
    let (code, body) = get(&sb, &ca, "http://alpha.test/plain");
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains("byte budget for alpha.test is spent"),
        "{body}"
    );
    // Another domain without a budget, and the other budgeted domain, still work.
    let (code, body) = get(&sb, &ca, "https://beta.test/");
    assert_eq!(code, "200", "{body}");
    let (code, body) = get(&sb, &ca, "https://api.example.test/small");
    assert_eq!(code, "200", "{body}");

    // Through interception, over HTTP/2 (this sandbox) and HTTP/1.1 (the next).
    let out = upload(&sb, &ca, 5 * MB, "https://api.example.test/upload");
    assert!(
        !out.status.success(),
        "the upload went through: {}",
        show(&out)
    );
    let got = uploads(|| log.upload_lengths("good"), 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[1] <= MB,
        "the upstream received {} bytes past a 1 MB budget",
        got[1]
    );
    assert!(has_budget_event(
        &events(&bed, &sb),
        "budget:domain:api.example.test"
    ));
    // A new intercepted connection is answered with a 403 naming the budget, on both versions,
    // and never reaches the upstream.
    let before = log.for_server("good").len();
    for http in ["--http2", "--http1.1"] {
        let (code, body) = get(&sb, &ca, &format!("{http} https://api.example.test/after"));
        assert_eq!(code, "403", "{http}: {body}");
        assert!(
            body.contains("byte budget for api.example.test is spent"),
            "{body}"
        );
    }
    let (code, body) = get(&sb, &ca, "http://api.example.test/after-plain");
    assert_eq!(code, "403", "{body}");
    assert!(!format!("{:?}", &log.for_server("good")[before..]).contains("/after"));

    // A live update that keeps the budget keeps its count: still spent. One that raises it
    // lets traffic through again.
    sb.set_policy(POLICY, 2);
    let (code, _) = get(&sb, &ca, "https://api.example.test/kept");
    assert_eq!(code, "403");
    sb.set_policy(&POLICY.replace("1000000", "100000000"), 3);
    let (code, body) = get(&sb, &ca, "https://api.example.test/raised");
    assert_eq!(code, "200", "{body}");

    // HTTP/1.1 through interception, in a fresh sandbox.
    let sb2 = bed.sandbox(POLICY);
    let ca2 = with_ca(&bed, &sb2);
    let out = upload(
        &sb2,
        &ca2,
        5 * MB,
        "--http1.1 https://api.example.test/upload",
    );
    assert!(
        !out.status.success(),
        "the upload went through: {}",
        show(&out)
    );
    let got = uploads(|| log.upload_lengths("good"), 3);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[2] <= MB,
        "the upstream received {} bytes past a 1 MB budget",
        got[2]
    );
    eprintln!("bytes the upstream received of 5 MB uploads under a 1 MB budget: {got:?}");
}

#[test]
fn a_received_budget_cuts_a_download_and_the_sandbox_budget_covers_nameless_tcp() {
    let bed = Bed::new();

    // A download past the sandbox's received budget, through a tunnel.
    let sb = bed.sandbox(
        r#"{"mode": "custom", "allow_domains": ["alpha.test", "beta.test"],
            "budgets": {"sandbox": {"received_bytes": 1000000, "window_secs": 3600}}}"#,
    );
    let ca = bed.world.test_ca_path().display().to_string();
    let out = sb.sh(&format!(
        "curl -sS --max-time 15 --cacert {ca} -o /dev/null -w '%{{size_download}}' \
         https://alpha.test/bytes/5000000"
    ));
    assert!(
        !out.status.success(),
        "the download went through: {}",
        show(&out)
    );
    let size: u64 = stdout(&out).trim().parse().unwrap_or(u64::MAX);
    assert!(
        size <= MB,
        "the client received {size} bytes past a 1 MB budget"
    );
    assert!(has_budget_event(&events(&bed, &sb), "budget:sandbox"));
    // Everything the sandbox opens now is refused: plain HTTP with a 403 naming the budget.
    let (code, body) = get(&sb, &ca, "http://beta.test/");
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains("the sandbox's byte budget is spent"),
        "{body}"
    );
    let out = sb.sh(&format!(
        "curl -sS --max-time 5 --cacert {ca} https://beta.test/"
    ));
    assert!(!out.status.success(), "{}", show(&out));

    // Name-less TCP to allow_cidrs counts against the sandbox budget.
    let sb = bed.sandbox(&format!(
        r#"{{"mode": "custom", "allow_cidrs": ["{}/32"],
            "budgets": {{"sandbox": {{"sent_bytes": 100000, "window_secs": 3600}}}}}}"#,
        addrs::TCP_V4
    ));
    let send = |n: usize| {
        sb.sh(&format!(
            r#"python3 -c '
import socket, time
s = socket.create_connection(("{}", 9), timeout=5)
sent = 0
try:
    while sent < {n}:
        sent += s.send(b"x" * min(16384, {n} - sent))
    time.sleep(0.5)
    s.send(b"x")
    print("sent", sent)
except OSError as e:
    print("cut", sent, e)
'"#,
            addrs::TCP_V4
        ))
    };
    // The proxy dials from the firewall host, so the sink cannot tell sandboxes apart; only
    // this sandbox talks to it in this world.
    let sink = || -> u64 {
        bed.world
            .log()
            .for_server("tcp")
            .iter()
            .filter(|e| e.kind == palisade_testbed::Kind::Bytes)
            .map(|e| e.data.len() as u64)
            .sum()
    };
    let out = send(1_000_000);
    assert!(stdout(&out).starts_with("cut"), "{}", show(&out));
    let received = sink();
    assert!(
        received <= 100_000,
        "the sink received {received} bytes past a 100 kB budget"
    );
    assert!(has_budget_event(&events(&bed, &sb), "budget:sandbox"));
    // A new connection moves nothing.
    let out = send(10);
    assert!(stdout(&out).starts_with("cut"), "{}", show(&out));
    assert_eq!(sink(), received);
}
