//! TLS interception with header transforms (issue 4, "Credential brokering"), end to end: a
//! sandbox namespace made by palisade-netns with the real nftables rules, the firewall running
//! in the testbed's `fw` namespace, a per-sandbox CA installed into a temporary rootfs, and real
//! clients (curl, python3, node) that trust it through the environment only.
//! Runs as root: it builds network namespaces and nftables rules of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::field_reassign_with_default,
    reason = "test harness: a failed setup step is a failed test"
)]

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Bed, Sandbox, show, stdout};
use palisade_ca::{SandboxCa, trust};
use palisade_testbed::addrs;

const SECRET: &str = "sk-test-SECRET";

/// The seed's transform example, with alpha.test as a plain (tunnelled) allowed domain.
const SEED_POLICY: &str = r#"{
    "mode": "custom",
    "allow_domains": ["api.example.test", "alpha.test"],
    "transforms": [{
        "domain": "api.example.test",
        "inject_headers": {"Authorization": "Bearer sk-test-SECRET"},
        "strip_headers": ["X-Debug"]
    }]
}"#;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Everything the upstream servers logged, as one string to search.
fn upstream_log(bed: &Bed) -> String {
    format!("{:?}", bed.world.log().entries())
}

/// A sandbox of the common bed with its own CA handed to the data plane, and a temporary rootfs
/// with that CA installed; its clients get only the CA variables, PATH, HOME and LANG.
struct ISandbox<'a> {
    inner: Sandbox<'a>,
    dir: PathBuf,
    env: Vec<(String, String)>,
    ca: Arc<SandboxCa>,
}

impl<'a> std::ops::Deref for ISandbox<'a> {
    type Target = Sandbox<'a>;

    fn deref(&self) -> &Sandbox<'a> {
        &self.inner
    }
}

fn isandbox<'a>(bed: &'a Bed, policy_json: &str) -> ISandbox<'a> {
    let inner = bed.sandbox(policy_json);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("palisade-icpt-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    std::fs::create_dir_all(dir.join("home")).unwrap();
    let ca = Arc::new(SandboxCa::generate(&inner.id).expect("CA"));
    let installed = trust::install(&dir.join("rootfs"), ca.cert_pem()).expect("trust install");
    let mut env = Vec::new();
    for (name, value) in trust::env_vars(&installed) {
        let host = dir.join("rootfs").join(value.trim_start_matches('/'));
        assert!(host.exists(), "{name} → {}", host.display());
        env.push((name, host.display().to_string()));
    }
    env.push(("HOME".into(), dir.join("home").display().to_string()));
    env.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
    env.push(("LANG".into(), "C".into()));
    assert!(bed.fw.registry().set_ca(&inner.id, Arc::clone(&ca)));
    ISandbox {
        inner,
        dir,
        env,
        ca,
    }
}

impl ISandbox<'_> {
    /// `sh -c script` inside the sandbox namespace with only the sandbox environment (the CA
    /// variables, PATH, HOME, LANG), under a hard time limit.
    fn sh_for(&self, secs: u32, script: &str) -> Output {
        std::process::Command::new("timeout")
            .args(["-s", "KILL", &secs.to_string(), "ip", "netns", "exec"])
            .arg(&self.net.netns)
            .args(["sh", "-c", script])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir)
            .output()
            .expect("run in sandbox")
    }

    fn sh(&self, script: &str) -> Output {
        self.sh_for(30, script)
    }

    /// A python3 script run inside the sandbox (written to a file under the sandbox dir).
    fn python(&self, name: &str, code: &str) -> Output {
        let path = self.dir.join(format!("{name}.py"));
        std::fs::write(&path, code).unwrap();
        self.sh(&format!("python3 {}", path.display()))
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

impl Drop for ISandbox<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn echo(out: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("not echo JSON ({e}): {}", show(out)))
}

/// The values the echo server saw for a (lower-case) header name.
fn seen(v: &serde_json::Value, name: &str) -> Vec<String> {
    v["header_map"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The digests of the values the echo server saw for a header: how a test checks what was
/// injected, since the value itself is scrubbed from what the sandbox receives.
fn seen_sha(v: &serde_json::Value, name: &str) -> Vec<String> {
    v["header_sha256"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The upstream got the injected secret (by its digest), and the sandbox only the marker.
fn assert_injected(v: &serde_json::Value, who: &str) {
    assert_eq!(
        seen_sha(v, "authorization"),
        vec![palisade_testbed::sha256_hex(
            format!("Bearer {SECRET}").as_bytes()
        )],
        "{who}: {v}"
    );
    assert_eq!(seen(v, "authorization"), vec!["[REDACTED]"], "{who}: {v}");
    assert!(!v.to_string().contains(SECRET), "{who}: {v}");
}

fn assert_transformed(v: &serde_json::Value, who: &str) {
    assert_eq!(v["server"], "good", "{who}: {v}");
    assert_eq!(v["sni"], "api.example.test", "{who}: {v}");
    assert_injected(v, who);
    assert!(seen(v, "x-debug").is_empty(), "{who}: {v}");
}

/// Python: a raw TLS connection to api.example.test (trusting the CA through the environment),
/// sends `raw` and prints what came back before the connection closed or went quiet.
fn py_raw(raw: &[u8]) -> String {
    py_raw_parts(&[raw])
}

/// Like `py_raw`, but sends `parts` one after another with a pause between them, so the proxy
/// has forwarded the head before the later parts arrive.
fn py_raw_parts(parts: &[&[u8]]) -> String {
    let hex: Vec<String> = parts
        .iter()
        .map(|p| {
            let h: String = p.iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{h}\"")
        })
        .collect();
    let hex = hex.join(", ");
    format!(
        r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(("api.example.test", 443), timeout=5),
                    server_hostname="api.example.test")
for i, part in enumerate([{hex}]):
    if i:
        time.sleep(0.5)
    try:
        s.sendall(bytes.fromhex(part))
    except (ssl.SSLError, ConnectionError):
        break
got = b""
try:
    while len(got) < 65536:
        b = s.recv(65536)
        if not b:
            break
        got += b
except (socket.timeout, ssl.SSLError, ConnectionError):
    pass
sys.stdout.write(got.decode("latin-1"))
"#
    )
}

/// The payload of a chunked HTTP/1.1 body (no extensions or trailers expected).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

#[test]
fn seed_example_end_to_end_with_curl_python_node_and_no_secret_inside() {
    let bed = Bed::new();
    let sb = isandbox(&bed, SEED_POLICY);

    // curl: no flags but the environment.
    let out = sb.sh(
        "curl -sS --max-time 10 -H 'X-Debug: 1' -H 'Authorization: Bearer fake' \
         https://api.example.test/hello",
    );
    assert!(out.status.success(), "{}", show(&out));
    let v = echo(&out);
    assert_transformed(&v, "curl");
    assert_eq!(v["path"], "/hello");

    // python3 urllib.
    let out = sb.python(
        "urllib",
        r#"
import urllib.request
req = urllib.request.Request("https://api.example.test/py",
    headers={"X-Debug": "1", "Authorization": "Bearer fake"})
print(urllib.request.urlopen(req, timeout=10).read().decode())
"#,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_transformed(&echo(&out), "python");

    // node fetch.
    let out = sb.sh(
        r#"node -e 'fetch("https://api.example.test/node", {headers: {"X-Debug": "1", "Authorization": "Bearer fake"}}).then(r => r.text()).then(t => console.log(t)).catch(e => { console.error(e); process.exit(1) })'"#,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_transformed(&echo(&out), "node");

    // Plain HTTP to the transform domain gets the same transform.
    let out = sb.sh(
        "curl -sS --max-time 10 -H 'X-Debug: 1' -H 'Authorization: Bearer fake' \
         http://api.example.test/plain",
    );
    assert!(out.status.success(), "{}", show(&out));
    let v = echo(&out);
    assert_injected(&v, "plain HTTP");
    assert!(seen(&v, "x-debug").is_empty(), "{v}");

    // Leaf cache: three clients, several connections, one leaf minted for the name.
    for _ in 0..3 {
        let out = sb.sh("curl -sS --max-time 10 -o /dev/null https://api.example.test/again");
        assert!(out.status.success(), "{}", show(&out));
    }
    let stats = sb.ca.cache_stats();
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert!(stats.hits >= 5, "{stats:?}");

    // The secret is nowhere inside the sandbox: environment, files we created there, and the
    // output of commands run there that do not ask an echo server to reflect it.
    let out = sb.sh(&format!(
        "env; cat /proc/self/environ | tr '\\0' '\\n'; grep -r -l -a '{SECRET}' {} ; \
         curl -sS --max-time 10 -v https://api.example.test/bytes/100 -o /dev/null; \
         curl -sS --max-time 10 -v http://api.example.test/bytes/100 -o /dev/null; \
         curl -sS --max-time 10 -v https://api.example.test/redirect; \
         curl -sS --max-time 10 -v -X TRACE https://api.example.test/; \
         curl -sS --max-time 10 -v https://api.example.test/ -H 'Host: alpha.test'; \
         openssl s_client -connect api.example.test:443 -servername api.example.test \
             </dev/null 2>&1 | head -40",
        sb.dir.display()
    ));
    let all = format!("{}{}", stdout(&out), common::stderr(&out));
    assert!(!all.contains(SECRET), "{all}");
    assert!(all.contains("302") && all.contains("421"), "{all}");
    assert!(
        sb.env
            .iter()
            .all(|(k, v)| !k.contains(SECRET) && !v.contains(SECRET))
    );
    let mut files = vec![sb.rootfs()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&p) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "{}",
                p.display()
            );
        }
    }

    // Events: header names only, and there is one per intercepted request.
    let events = bed.fw.events().recent(Some(&sb.id), 10_000);
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(SECRET), "{json}");
    assert!(!json.contains("Bearer"), "{json}");
    let injected = events
        .iter()
        .filter(|e| e.rule.to_string() != "scrub")
        .filter_map(|e| e.http.as_ref())
        .filter(|h| h.path == "/hello")
        .collect::<Vec<_>>();
    assert_eq!(injected.len(), 1, "{json}");
    assert_eq!(injected[0].method, "GET");
    assert_eq!(injected[0].host, "api.example.test");
    assert_eq!(injected[0].status, 200);
    assert!(
        injected[0]
            .injected
            .iter()
            .any(|h| h.eq_ignore_ascii_case("authorization")),
        "{json}"
    );
    assert!(
        injected[0]
            .stripped
            .iter()
            .any(|h| h.eq_ignore_ascii_case("x-debug")),
        "{json}"
    );
    // Debug output of the whole data-plane state never shows the secret either.
    let registry_dbg = format!("{:?}", bed.fw.registry().by_id(&sb.id));
    assert!(!registry_dbg.contains(SECRET), "{registry_dbg}");
    bed.world.assert_untouched("attacker");
}

#[test]
fn tunnels_keep_the_real_certificate_and_transform_domains_are_not_frontable() {
    let bed = Bed::new();
    let sb = isandbox(&bed, SEED_POLICY);

    // Threat 3: alpha.test is tunnelled, so only the testbed CA verifies it.
    let out = sb.sh("curl -sS --max-time 10 https://alpha.test/");
    assert!(!out.status.success(), "{}", show(&out));
    let out = sb.sh(&format!(
        "curl -sS --max-time 10 --cacert {} https://alpha.test/",
        bed.world.test_ca_path().display()
    ));
    assert!(out.status.success(), "{}", show(&out));
    let v = echo(&out);
    assert_eq!(v["sni"], "alpha.test");
    assert!(seen(&v, "authorization").is_empty(), "{v}");
    // And the intercepted name is not verifiable with the testbed CA alone: it is ours.
    let out = sb.sh(&format!(
        "curl -sS --max-time 10 --cacert {} https://api.example.test/",
        bed.world.test_ca_path().display()
    ));
    assert!(!out.status.success(), "{}", show(&out));
    let issuer = sb.sh(
        "openssl s_client -connect alpha.test:443 -servername alpha.test </dev/null 2>/dev/null \
         | openssl x509 -noout -issuer; \
         openssl s_client -connect api.example.test:443 -servername api.example.test \
         </dev/null 2>/dev/null | openssl x509 -noout -issuer",
    );
    let issuer = stdout(&issuer);
    let lines: Vec<&str> = issuer.lines().collect();
    assert_eq!(lines.len(), 2, "{issuer}");
    assert!(!lines[0].contains("Palisade sandbox CA"), "{issuer}");
    assert!(
        lines[1].contains(&format!("Palisade sandbox CA {}", sb.id)),
        "{issuer}"
    );

    bed.world.log().clear();
    // Threat 5: another authority on an intercepted connection gets 421, HTTP/1.1 and HTTP/2.
    for (flags, want_version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = sb.sh(&format!(
            "curl -sS --max-time 10 {flags} -o /dev/null -w '%{{http_code}} %{{http_version}}' \
             -H 'Host: alpha.test' https://api.example.test/front"
        ));
        assert_eq!(
            stdout(&out),
            format!("421 {want_version}"),
            "{}",
            show(&out)
        );
    }
    // A keep-alive connection: the first request is served, the second names another host.
    let out = sb.python(
        "keepalive",
        r#"
import http.client
c = http.client.HTTPSConnection("api.example.test", timeout=10)
c.request("GET", "/first", headers={"Host": "api.example.test"})
r = c.getresponse(); r.read(); print(r.status)
c.request("GET", "/second", headers={"Host": "alpha.test"})
r = c.getresponse(); r.read(); print(r.status)
c.close()
c = http.client.HTTPSConnection("api.example.test", timeout=10)
c.request("GET", "https://evil.test/abs", headers={"Host": "evil.test"})
r = c.getresponse(); r.read(); print(r.status)
"#,
    );
    assert_eq!(stdout(&out).trim(), "200\n421\n421", "{}", show(&out));
    let log = upstream_log(&bed);
    assert!(
        !log.contains("/front") && !log.contains("/second") && !log.contains("/abs"),
        "{log}"
    );
    assert_eq!(
        log.matches(SECRET).count(),
        1,
        "only /first carried it: {log}"
    );
    bed.world.assert_untouched("attacker");
}

#[test]
fn smuggling_shapes_are_refused_and_strip_and_inject_hold_for_any_spelling() {
    let bed = Bed::new();
    let sb = isandbox(&bed, SEED_POLICY);
    bed.world.log().clear();
    let host = "Host: api.example.test\r\n";
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: api.example.test\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "CL+TE",
            format!(
                "POST /clte HTTP/1.1\r\n{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE+CL",
            format!(
                "POST /tecl HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "duplicate CL",
            format!(
                "POST /dupcl HTTP/1.1\r\n{host}Content-Length: 0\r\nContent-Length: 48\r\n\r\n{smuggled}"
            ),
        ),
        (
            "same CL twice",
            format!(
                "POST /dupcl2 HTTP/1.1\r\n{host}Content-Length: 1\r\nContent-Length: 1\r\n\r\nx{smuggled}"
            ),
        ),
        (
            "bad chunk size",
            format!(
                "POST /badchunk HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "bare LF",
            format!("GET /barelf HTTP/1.1\n{host}X-Smuggle: a\nb\r\n\r\n{smuggled}"),
        ),
        (
            "bare LF only",
            format!("GET /barelf2 HTTP/1.1\nHost: api.example.test\n\n{smuggled}"),
        ),
        (
            "obs-fold",
            format!("GET /fold HTTP/1.1\r\n{host}X-A: a\r\n b\r\n\r\n{smuggled}"),
        ),
        (
            "TE not chunked",
            format!("POST /tegzip HTTP/1.1\r\n{host}Transfer-Encoding: gzip\r\n\r\n{smuggled}"),
        ),
        (
            "TE not only chunked",
            format!(
                "POST /tegzip2 HTTP/1.1\r\n{host}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
    ];
    for (what, raw) in &cases {
        let out = sb.python("raw", &py_raw(raw.as_bytes()));
        let resp = stdout(&out);
        // One answer, a 400, and the connection closed: the smuggled request is never read.
        assert!(
            status_line(&resp).starts_with("HTTP/1.1 400"),
            "{what}: {}",
            show(&out)
        );
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{what}: {resp}");
        assert!(!resp.contains("\"server\""), "{what}: {resp}");
    }
    // Nothing of any of them reached the upstream: not the smuggled request, not the refused
    // ones, not the secret.
    let log = upstream_log(&bed);
    assert!(!log.contains("smuggled"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
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
    let refused = bed.fw.events().recent(Some(&sb.id), 1000);
    let json = serde_json::to_string(&refused).unwrap();
    assert!(
        json.contains("Content-Length together with Transfer-Encoding"),
        "{json}"
    );

    // A body that breaks after its head went upstream: the client gets 400 (its body was
    // malformed), not 502, and the upstream request is aborted.
    let head = format!("POST /late HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n");
    let out = sb.python(
        "late",
        &py_raw_parts(&[
            format!("{head}5\r\nhello\r\n").as_bytes(),
            format!("zz\r\nhello\r\n0\r\n\r\n{smuggled}").as_bytes(),
        ]),
    );
    let resp = stdout(&out);
    assert!(
        status_line(&resp).starts_with("HTTP/1.1 400"),
        "{}",
        show(&out)
    );
    assert!(resp.contains("request body is malformed"), "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{resp}");
    assert!(!upstream_log(&bed).contains("smuggled"));

    // Threat 20: every spelling and every copy of X-Debug goes; the client's Authorization
    // never arrives, however many it sends and however spelled.
    let raw = format!(
        "GET /spell HTTP/1.1\r\n{host}X-DEBUG: 1\r\nx-debug: 2\r\nX-Debug: 3\r\nx-DeBuG: 4\r\n\
         AUTHORIZATION: Bearer fake1\r\nauthorization: Bearer fake2\r\nConnection: close\r\n\r\n"
    );
    let out = sb.python("spell", &py_raw(raw.as_bytes()));
    let resp = stdout(&out);
    assert!(
        status_line(&resp).starts_with("HTTP/1.1 200"),
        "{}",
        show(&out)
    );
    // A scrubbed response streams without Content-Length: chunked on HTTP/1.1.
    let body = dechunk(resp.split_once("\r\n\r\n").map_or("", |(_, b)| b));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{resp}"));
    assert_transformed(&v, "spellings");
    let log = upstream_log(&bed);
    assert!(!log.contains("fake1") && !log.contains("fake2"), "{log}");
    // Over HTTP/2 too (lower-case on the wire by definition; several copies).
    let out = sb.sh(
        "curl -sS --max-time 10 --http2 -H 'X-Debug: 1' -H 'X-DEBUG: 2' \
         -H 'Authorization: Bearer fake3' https://api.example.test/h2spell",
    );
    let v = echo(&out);
    assert_transformed(&v, "h2 spellings");
    assert!(!upstream_log(&bed).contains("fake3"));
    bed.world.assert_untouched("attacker");
}

/// Samples this process's VmRSS (the firewall runs in-process) until stopped; returns the max.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn http2_sse_websocket_large_upload_no_redirect_no_trace() {
    let bed = Bed::new();
    let sb = isandbox(&bed, SEED_POLICY);

    // HTTP/2 on both sides.
    let out =
        sb.sh("curl -sS --max-time 10 --http2 -w '\\n%{http_version}' https://api.example.test/h2");
    let text = stdout(&out);
    let (json, client_version) = text.rsplit_once('\n').unwrap_or_default();
    assert_eq!(client_version, "2", "{}", show(&out));
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(v["version"], "HTTP/2.0", "{v}");
    assert_transformed(&v, "h2");

    // SSE: the first event arrives well before the last one is produced.
    let out = sb.python(
        "sse",
        r#"
import time, urllib.request
t0 = time.monotonic()
r = urllib.request.urlopen("https://api.example.test/sse?n=5&ms=200", timeout=10)
times = []
for line in r:
    if line.startswith(b"data:"):
        times.append(time.monotonic() - t0)
print(len(times), " ".join("%.3f" % t for t in times))
"#,
    );
    let text = stdout(&out);
    let mut parts = text.split_whitespace();
    assert_eq!(parts.next(), Some("5"), "{}", show(&out));
    let times: Vec<f64> = parts.map(|t| t.parse().unwrap()).collect();
    // The server spaces events 200 ms apart; buffered delivery would bunch them at the end.
    assert!(times[4] - times[0] >= 0.6, "{times:?}");

    // WebSocket through interception (the handshake carries the transform).
    let out = sb.python(
        "ws",
        r#"
import base64, os, socket, ssl, struct
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(("api.example.test", 443), timeout=10),
                    server_hostname="api.example.test")
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: api.example.test\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
           "X-Debug: 1\r\n\r\n" % key).encode())
head = b""
while b"\r\n\r\n" not in head:
    b = s.recv(1)
    if not b:
        break
    head += b
print(head.split(b"\r\n")[0].decode())
msg = b"hello through palisade"
mask = os.urandom(4)
s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(msg)))
hdr = s.recv(2)
n = hdr[1] & 0x7f
data = b""
while len(data) < n:
    data += s.recv(n - len(data))
print(data.decode())
"#,
    );
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 101"), "{}", show(&out));
    assert!(text.contains("hello through palisade"), "{}", show(&out));
    let log = upstream_log(&bed);
    assert!(
        log.contains("websocket message: hello through palisade"),
        "{log}"
    );

    // No redirect followed, TRACE refused.
    let out = sb.sh(
        "curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{redirect_url}' \
         https://api.example.test/redirect",
    );
    assert_eq!(stdout(&out), "302 http://evil.test/", "{}", show(&out));
    let out = sb.sh(
        "curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X TRACE https://api.example.test/",
    );
    assert_eq!(stdout(&out), "405", "{}", show(&out));
    assert!(!upstream_log(&bed).contains("TRACE"));
    bed.world.assert_untouched("attacker");

    // A 1 GiB upload generated on the fly: the sha matches and memory stays flat.
    const MIB: usize = 1 << 20;
    let size = 1024 * MIB;
    let want = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let zeros = vec![0u8; MIB];
        for _ in 0..1024 {
            h.update(&zeros);
        }
        format!("{:x}", h.finalize())
    };
    // The upstream servers run in this process too, so first a tunnelled upload (alpha.test,
    // not intercepted) sets the baseline: what the in-process upstream and relay use.
    let tunnel = upload(
        &sb,
        &format!(
            "--cacert {} https://alpha.test/upload",
            bed.world.test_ca_path().display()
        ),
        size,
        &want,
    );
    let h2 = upload(&sb, "https://api.example.test/upload", size, &want);
    let h1 = upload(
        &sb,
        "--http1.1 https://api.example.test/upload",
        size,
        &want,
    );
    eprintln!(
        "1 GiB uploads (time, RSS before, peak KiB): tunnel {tunnel:?}, \
         intercepted h2 {h2:?}, intercepted h1.1 {h1:?}"
    );
    for (what, (_, before, peak)) in [("h2", h2), ("h1.1", h1)] {
        let over = peak.saturating_sub(before.max(tunnel.2)) / 1024;
        assert!(
            over <= 64,
            "intercepted {what} upload grew RSS {over} MiB past the tunnel's peak"
        );
    }
}

/// Uploads `size` zero bytes generated on the fly with curl `args`, checks the sha the
/// upstream saw, and samples this process's RSS meanwhile: (time, RSS before, peak) in KiB.
fn upload(sb: &ISandbox<'_>, args: &str, size: usize, want: &str) -> (Duration, u64, u64) {
    let before = rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(rss_kib());
                std::thread::sleep(Duration::from_millis(20));
            }
            max
        })
    };
    let started = Instant::now();
    let out = sb.sh_for(
        120,
        &format!("head -c {size} /dev/zero | curl -sS --max-time 110 -T - {args}"),
    );
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let v = echo(&out);
    assert_eq!(v["len"].as_u64(), Some(size as u64), "{args}: {v}");
    assert_eq!(v["sha256"], want, "{args}: {v}");
    (took, before, peak)
}

#[test]
fn upstream_failure_is_a_502_that_says_what_failed() {
    let bed = Bed::new();
    // The echo host serves plain HTTP on 80 only: nothing listens on 443 there.
    bed.world.dns().set_a("api.example.test", &[addrs::ECHO_V4]);
    let sb = isandbox(&bed, SEED_POLICY);
    let out = sb.sh("curl -sS --max-time 10 -w '\\n%{http_code}' https://api.example.test/down");
    let text = stdout(&out);
    assert!(text.ends_with("\n502"), "{}", show(&out));
    assert!(text.contains("upstream failed"), "{text}");
    assert!(
        text.contains("198.51.100.20:443") || text.to_lowercase().contains("refused"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
}

/// Issue 4's closing-note numbers: keep-alive requests/s and latency through interception
/// against the same python client talking TLS end to end with the upstream (alpha.test, an
/// opaque tunnel) in the same run, the first-connection cost of a new name (leaf minting), and
/// issue 7's scenario 4 (a new client connection per request): leaf-cache hit rate and upstream
/// connection reuse, counted from the CA's cache counters and the distinct client ports the
/// upstream saw. Bounded: at most 3000 requests or 10 s per loop. Not a pass/fail speed test.
#[test]
#[ignore = "measurement; run with --ignored --nocapture"]
fn measure_interception_overhead() {
    let bed = Bed::new();
    let sb = isandbox(&bed, SEED_POLICY);
    let ca = bed.world.test_ca_path().display().to_string();
    let script = sb.dir.join("measure.py");
    std::fs::write(
        &script,
        format!(
            r#"
import http.client, ssl, sys, time
def ctx(cafile=None):
    return ssl.create_default_context(cafile=cafile)
def fresh(host, c, path="/bytes/64"):
    t = time.perf_counter()
    conn = http.client.HTTPSConnection(host, context=c, timeout=10)
    conn.request("GET", path); conn.getresponse().read(); conn.close()
    return (time.perf_counter() - t) * 1e3
def stats(lat, total):
    lat.sort()
    return len(lat) / total, lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
def loop(host, c):
    conn = http.client.HTTPSConnection(host, context=c, timeout=10)
    conn.request("GET", "/bytes/64"); conn.getresponse().read()
    lat = []; start = time.perf_counter()
    while len(lat) < 3000 and time.perf_counter() - start < 10:
        t = time.perf_counter()
        conn.request("GET", "/bytes/64"); conn.getresponse().read()
        lat.append((time.perf_counter() - t) * 1e3)
    return stats(lat, time.perf_counter() - start)
def fresh_loop(host, c, n):
    lat = []; start = time.perf_counter()
    while len(lat) < n and time.perf_counter() - start < 10:
        lat.append(fresh(host, c, "/bytes/64?fresh=1"))
    return stats(lat, time.perf_counter() - start)
sand, test = ctx(), ctx("{ca}")
first = fresh("api.example.test", sand)
again = sorted(fresh("api.example.test", sand) for _ in range(20))[10]
direct = sorted(fresh("alpha.test", test) for _ in range(20))[10]
print("first-connection ms: new name (mint) %.2f, cached leaf %.2f, tunnel %.2f" % (first, again, direct))
for name, host, c in (("tunnel", "alpha.test", test), ("intercepted", "api.example.test", sand)):
    rps, p50, p99 = loop(host, c)
    print("keep-alive %s: %.0f req/s p50 %.3f ms p99 %.3f ms" % (name, rps, p50, p99))
sys.stdout.flush()
input()
for name, host, c in (("tunnel", "alpha.test", test), ("intercepted", "api.example.test", sand)):
    rps, p50, p99 = fresh_loop(host, c, 500)
    print("new connection per request %s: %.0f req/s p50 %.3f ms p99 %.3f ms" % (name, rps, p50, p99))
"#
        ),
    )
    .unwrap();
    // The first part, then (once the log is cleared) the new-connection-per-request part.
    let mut child = std::process::Command::new("timeout")
        .args(["-s", "KILL", "120", "ip", "netns", "exec"])
        .arg(&sb.net.netns)
        .args(["python3", &script.display().to_string()])
        .env_clear()
        .envs(sb.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout_pipe = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first_part = String::new();
    for _ in 0..3 {
        std::io::BufRead::read_line(&mut stdout_pipe, &mut first_part).unwrap();
    }
    eprint!("{first_part}");
    bed.world.log().clear();
    let leaf_before = sb.ca.cache_stats();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout_pipe, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    eprint!("{rest}{}", common::stderr(&out));
    assert!(out.status.success());
    let leaf = sb.ca.cache_stats();
    let (hits, misses) = (
        leaf.hits - leaf_before.hits,
        leaf.misses - leaf_before.misses,
    );
    let fresh: Vec<_> = bed
        .world
        .log()
        .entries()
        .into_iter()
        .filter(|e| {
            e.detail
                .starts_with("GET api.example.test /bytes/64?fresh=1")
        })
        .collect();
    let conns: std::collections::HashSet<_> = fresh.iter().map(|e| e.peer).collect();
    eprintln!(
        "new connection per request, intercepted: leaf cache {hits} hits / {misses} misses \
         ({:.2}% hits); upstream: {} requests over {} connections ({:.2}% reused); log dropped {}",
        100.0 * hits as f64 / (hits + misses).max(1) as f64,
        fresh.len(),
        conns.len(),
        100.0 * (1.0 - conns.len() as f64 / fresh.len().max(1) as f64),
        bed.world.log().dropped()
    );
    assert_eq!(sb.ca.cache_stats().misses, 1);
}

/// Issue 15, response scrubbing: an upstream that echoes the injected header back in a body (as
/// sent, base64, percent-encoded), in response headers, split over many frames, in an SSE
/// stream cut mid-secret, and compressed (gzip, br, zstd) — over HTTP/1.1 and HTTP/2 with curl,
/// and with python3 and node. Every byte each client received is searched for the secret in
/// each of those forms; the upstream's log proves the secret was injected.
#[test]
fn responses_are_scrubbed_of_the_secret_in_every_shape() {
    let bed = Bed::new();
    let sb = isandbox(&bed, SEED_POLICY);
    let value = format!("Bearer {SECRET}");
    let forms: Vec<String> = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        vec![
            SECRET.to_owned(),
            b64.encode(&value),
            b64.encode(SECRET),
            "Bearer%20sk-test-SECRET".to_owned(),
        ]
    };
    let check = |who: &str, out: &Output| {
        assert!(out.status.success(), "{who}: {}", show(out));
        let got = String::from_utf8_lossy(&out.stdout);
        for f in &forms {
            assert!(!got.contains(f.as_str()), "{who}: {f:?} in {got}");
        }
        assert!(got.contains("[REDACTED]"), "{who}: {got}");
    };
    for shape in ["body", "header", "split", "sse", "gzip", "br", "zstd"] {
        for http in ["--http1.1", "--http2"] {
            let out = sb.sh(&format!(
                "curl -sS --max-time 10 {http} -D - 'https://api.example.test/reflect?as={shape}'"
            ));
            check(&format!("curl {http} {shape}"), &out);
        }
    }
    // Bodies decoded by the clients themselves, as applications read them.
    let out = sb.python(
        "reflect",
        r#"
import urllib.request
for shape in ["body", "split", "sse", "gzip"]:
    r = urllib.request.urlopen("https://api.example.test/reflect?as=" + shape, timeout=10)
    print(dict(r.headers), r.read().decode("latin-1"))
r = urllib.request.urlopen("https://api.example.test/reflect?as=header", timeout=10)
print(dict(r.headers))
"#,
    );
    check("python3", &out);
    let out = sb.sh(
        r#"node -e 'Promise.all(["body","split","sse","gzip","br","header"].map(s => fetch("https://api.example.test/reflect?as=" + s).then(async r => JSON.stringify([...r.headers]) + await r.text()))).then(t => console.log(t.join("\n"))).catch(e => { console.error(e); process.exit(1) })'"#,
    );
    check("node", &out);

    // The upstream did receive the secret: injection still works, the echo is what was scrubbed.
    let log = upstream_log(&bed);
    assert!(log.contains(&value), "the secret was never injected");
    // Each scrub is an event, without the value.
    let events = bed.fw.events().recent(Some(&sb.id), 10_000);
    let scrubs = events
        .iter()
        .filter(|e| e.rule.to_string() == "scrub")
        .count();
    assert!(scrubs >= 14, "{scrubs} scrub events");
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(SECRET), "{json}");
}

/// Issue 15, L7 rules: a transform domain's `http_rules` decide each intercepted request by
/// method and path, over HTTP/1.1 and HTTP/2 and on plain HTTP to the same domain; a denial is
/// a 403 naming the rule, an ambiguous path a 400, and neither reaches the upstream.
#[test]
fn http_rules_allow_and_deny_by_method_and_path() {
    let bed = Bed::new();
    let sb = isandbox(
        &bed,
        r#"{
        "mode": "custom",
        "transforms": [{
            "domain": "api.example.test",
            "inject_headers": {"Authorization": "Bearer sk-test-SECRET"},
            "http_rules": [
                {"action": "deny", "method": "DELETE", "path": "/v1/**"},
                {"action": "allow", "method": "GET", "path": "/v1/models"},
                {"action": "allow", "method": "POST", "path": "/v1/chat/*"}
            ]
        }]
    }"#,
    );
    let code = |args: &str| {
        let out = sb.sh(&format!(
            "curl -sS --max-time 10 -o /dev/stderr -w '%{{http_code}}' {args}"
        ));
        (
            stdout(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for http in ["--http1.1", "--http2"] {
        let (c, body) = code(&format!("{http} https://api.example.test/v1/models"));
        assert_eq!(c, "200", "{http}: {body}");
        let (c, body) = code(&format!(
            "{http} -X POST -d '{{}}' https://api.example.test/v1/chat/completions"
        ));
        assert_eq!(c, "200", "{http}: {body}");
        let (c, body) = code(&format!(
            "{http} -X DELETE https://api.example.test/v1/models"
        ));
        assert_eq!(c, "403", "{http}: {body}");
        assert!(
            body.contains("http_rules[0] (deny DELETE /v1/**)"),
            "{body}"
        );
        let (c, body) = code(&format!("{http} https://api.example.test/admin/denied"));
        assert_eq!(c, "403", "{http}: {body}");
        assert!(body.contains("matches no allow rule"), "{body}");
        let (c, body) = code(&format!(
            "{http} --path-as-is https://api.example.test/v1/chat/../../admin/dots"
        ));
        assert_eq!(c, "400", "{http}: {body}");
        let (c, body) = code(&format!(
            "{http} -X POST https://api.example.test/v1/chat%2Fcompletions/encoded"
        ));
        assert_eq!(c, "400", "{http}: {body}");
    }
    // Plain HTTP to the transform domain follows the same rules.
    let (c, body) = code("http://api.example.test/admin/plain");
    assert_eq!(c, "403", "{body}");
    let (c, _) = code("http://api.example.test/v1/models");
    assert_eq!(c, "200");
    // The same rules for python3 (HTTP/1.1) and node (HTTP/2, its http2 module).
    let out = sb.python(
        "rules",
        r#"
import urllib.request, urllib.error
for method, path in [("GET", "/v1/models"), ("DELETE", "/v1/models"), ("GET", "/admin/py")]:
    try:
        r = urllib.request.urlopen(urllib.request.Request(
            "https://api.example.test" + path, method=method), timeout=10)
        print(r.status)
    except urllib.error.HTTPError as e:
        print(e.code, e.read().decode().strip())
"#,
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", show(&out));
    assert_eq!(lines[0], "200", "{text}");
    assert!(
        lines[1].starts_with("403 ") && lines[1].contains("http_rules[0]"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("403 ") && lines[2].contains("matches no allow rule"),
        "{text}"
    );
    let out = sb.sh(r#"node -e '
const http2 = require("http2");
const c = http2.connect("https://api.example.test");
const req = (m, p) => new Promise((ok, fail) => {
  const s = c.request({":method": m, ":path": p});
  let st, b = "";
  s.on("response", h => st = h[":status"]);
  s.setEncoding("utf8");
  s.on("data", d => b += d);
  s.on("end", () => ok(st + " " + b.trim()));
  s.on("error", fail);
  s.end();
});
(async () => {
  for (const [m, p] of [["GET", "/v1/models"], ["DELETE", "/v1/models"], ["GET", "/admin/node"]])
    console.log(await req(m, p));
  c.close();
})().catch(e => { console.error(e); process.exit(1); });
'"#);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", show(&out));
    assert!(lines[0].starts_with("200 "), "{text}");
    assert!(
        lines[1].starts_with("403 ") && lines[1].contains("http_rules[0]"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("403 ") && lines[2].contains("matches no allow rule"),
        "{text}"
    );

    let log = upstream_log(&bed);
    for path in ["/admin", "DELETE", "/encoded", "/dots"] {
        assert!(!log.contains(path), "{path} reached the upstream: {log}");
    }
    let events = bed.fw.events().recent(Some(&sb.id), 10_000);
    assert!(
        events.iter().any(|e| e.rule.to_string() == "http-rule:0"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.rule.to_string() == "http-rules"),
        "{events:?}"
    );
}

/// Issue 15, placeholders: the sandbox holds a `pl-secret-…` token; towards the transform's
/// domain the firewall replaces it with the secret in the headers the placeholder names (and
/// nowhere else in the request); towards any other domain it is just a string.
#[test]
fn placeholders_become_the_secret_only_towards_their_domain() {
    const PL: &str = "pl-secret-0123456789abcdef0123";
    const REAL: &str = "sk-real-PLACEHOLDER-7c1e";
    let bed = Bed::new();
    let sb = isandbox(
        &bed,
        &format!(
            r#"{{"mode": "custom", "allow_domains": ["alpha.test"],
            "transforms": [{{"domain": "api.example.test",
                "placeholders": [{{"placeholder": "{PL}", "value": "{REAL}",
                                   "headers": ["Authorization", "X-Api-Key"]}}]}}]}}"#
        ),
    );
    let out = sb.sh(&format!(
        "TOKEN={PL}; curl -sS --max-time 10 -H \"Authorization: Bearer $TOKEN\" \
         -H \"X-Api-Key: $TOKEN\" -H \"X-Other: $TOKEN\" 'https://api.example.test/pl?t='$TOKEN"
    ));
    let v = echo(&out);
    let sha = |s: &str| vec![palisade_testbed::sha256_hex(s.as_bytes())];
    assert_eq!(
        seen_sha(&v, "authorization"),
        sha(&format!("Bearer {REAL}")),
        "{v}"
    );
    assert_eq!(seen_sha(&v, "x-api-key"), sha(REAL), "{v}");
    // A header it does not name, and the query string, keep the token.
    assert_eq!(seen(&v, "x-other"), vec![PL.to_owned()], "{v}");
    assert!(v["query"].as_str().unwrap_or_default().contains(PL), "{v}");
    assert!(
        !v.to_string().contains(REAL),
        "the secret reached the sandbox: {v}"
    );
    // Another domain gets the token as sent, never the secret.
    let out = sb.sh(&format!(
        "curl -sS --max-time 10 -H 'Authorization: Bearer {PL}' http://alpha.test/other"
    ));
    let v = echo(&out);
    assert_eq!(
        seen(&v, "authorization"),
        vec![format!("Bearer {PL}")],
        "{v}"
    );
    // python3 and node, as SDKs would send the token: replaced towards the domain only.
    let out = sb.python(
        "pl",
        &format!(
            r#"
import urllib.request
for url in ["https://api.example.test/pl-py", "http://alpha.test/other-py"]:
    req = urllib.request.Request(url, headers={{"Authorization": "Bearer {PL}", "X-Api-Key": "{PL}"}})
    print(urllib.request.urlopen(req, timeout=10).read().decode())
"#
        ),
    );
    let node = sb.sh(&format!(
        r#"node -e 'Promise.all(["https://api.example.test/pl-node", "http://alpha.test/other-node"].map(u => fetch(u, {{headers: {{authorization: "Bearer {PL}", "x-api-key": "{PL}"}}}}).then(r => r.text()))).then(t => console.log(t.join("\n"))).catch(e => {{ console.error(e); process.exit(1) }})'"#
    ));
    for (who, out) in [("python3", &out), ("node", &node)] {
        let text = stdout(out);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 2, "{who}: {}", show(out));
        assert!(
            !text.contains(REAL),
            "{who}: the secret reached the sandbox: {text}"
        );
        let towards: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            seen_sha(&towards, "authorization"),
            sha(&format!("Bearer {REAL}")),
            "{who}: {towards}"
        );
        assert_eq!(
            seen_sha(&towards, "x-api-key"),
            sha(REAL),
            "{who}: {towards}"
        );
        let elsewhere: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(
            seen(&elsewhere, "x-api-key"),
            vec![PL.to_owned()],
            "{who}: {elsewhere}"
        );
        assert_eq!(
            seen(&elsewhere, "authorization"),
            vec![format!("Bearer {PL}")],
            "{who}: {elsewhere}"
        );
    }
    let log = upstream_log(&bed);
    assert_eq!(
        log.matches(REAL).count(),
        6,
        "the secret went only to api.example.test (curl, python3, node): {log}"
    );
    // The value never shows in the data plane's debug output either.
    let dbg = format!("{:?}", bed.fw.registry().by_id(&sb.id).map(|e| e.policy()));
    assert!(!dbg.contains(REAL), "{dbg}");
}
