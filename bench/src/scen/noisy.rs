//! Issue 11.5, a noisy neighbour: the quiet sandbox's DNS latency (one query at a time, paced)
//! and HTTP request latency through the proxy (keep-alive GETs to an allowed name), measured by
//! a small python probe in the sandbox (no dnsperf or oha needed), alone and beside
//! a sandbox that holds connections up to past its cap (1,024 by default) and floods the
//! firewall's DNS. Reported, never asserted (the tests assert only that the quiet one works).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::bed::{CLIENT_CPU, IBed};
use super::dns::percentile;
use super::load::in_ns;
use super::{Comparison, Sample, interleave, rows};

const SECS: u32 = 3;
/// Pause between two probes (DNS queries or HTTP requests).
const PACE_MS: u32 = 2;
/// Connections the neighbour tries to hold (past the default cap of 1,024).
const HOLD: usize = 1_100;

/// The neighbour: hold connections to the good server's HTTP port and flood DNS for `SECS`
/// (bounded in count and time).
const NOISY: &str = r#"
import socket, threading, time, os, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
end = time.time() + float(os.environ["SECS"])
hold_n = int(os.environ["HOLD"])
held = []
def hold():
    while time.time() < end:
        if len(held) >= hold_n:
            time.sleep(0.05); continue
        try:
            held.append(socket.create_connection(("198.51.100.10", 80), timeout=2))
        except OSError:
            time.sleep(0.01)
def flood():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    q = bytes.fromhex("abcd01000001000000000000") + b"\x05alpha\x04test\x00\x00\x01\x00\x01"
    while time.time() < end:
        for _ in range(200):
            u.sendto(q, ("198.51.100.53", 53))
        time.sleep(0.001)
threads = [threading.Thread(target=hold), threading.Thread(target=flood)]
[t.start() for t in threads]
[t.join() for t in threads]
"#;

struct Noise(Child);

impl Noise {
    fn start(ns: &str, secs: u32) -> Result<Noise> {
        let child = Command::new("timeout")
            .args([
                "-s",
                "KILL",
                &(secs + 10).to_string(),
                "ip",
                "netns",
                "exec",
                ns,
            ])
            .args(["taskset", "-c", CLIENT_CPU, "python3", "-c", NOISY])
            .env("SECS", secs.to_string())
            .env("HOLD", HOLD.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the noisy neighbour")?;
        // Let it reach its cap before measuring.
        std::thread::sleep(Duration::from_secs(2));
        Ok(Noise(child))
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The quiet sandbox's probe: `MODE` dns (UDP queries for an allowed name, one at a time) or
/// http (GETs on one keep-alive connection); prints the latencies in µs, one a line.
const PROBE: &str = r#"
import os, socket, time, http.client
end = time.time() + float(os.environ["SECS"])
pace = float(os.environ["PACE_MS"]) / 1000
out = []
if os.environ["MODE"] == "dns":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    q = bytes.fromhex("beef01000001000000000000") + b"\x05alpha\x04test\x00\x00\x01\x00\x01"
    while time.time() < end:
        t = time.perf_counter()
        u.sendto(q, ("198.51.100.53", 53))
        try:
            while u.recv(512)[:2] != b"\xbe\xef":
                pass
            out.append((time.perf_counter() - t) * 1e6)
        except OSError:
            out.append(2e6)
        time.sleep(pace)
else:
    c = http.client.HTTPConnection("198.51.100.10", 80, timeout=5)
    while time.time() < end:
        t = time.perf_counter()
        try:
            c.request("GET", "/", headers={"Host": "alpha.test"})
            c.getresponse().read()
            out.append((time.perf_counter() - t) * 1e6)
        except OSError:
            out.append(5e6)
            c = http.client.HTTPConnection("198.51.100.10", 80, timeout=5)
        time.sleep(pace)
print("\n".join("%.1f" % x for x in out))
"#;

/// (p50, p99) in µs of `mode` probes from `ns` for `secs`, the probes made and those lost
/// (timed out: 2 s for DNS, 5 s for HTTP).
fn probe(ns: &str, mode: &str, secs: u32) -> Result<(f64, f64, usize, usize)> {
    let out = in_ns(ns, secs + 15, "python3")
        .args(["-c", PROBE])
        .env("SECS", secs.to_string())
        .env("PACE_MS", PACE_MS.to_string())
        .env("MODE", mode)
        .output()
        .context("running the probe")?;
    let mut v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if v.is_empty() {
        anyhow::bail!(
            "the {mode} probe measured nothing: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let n = v.len();
    let lost = v.iter().filter(|x| **x >= 2e6).count();
    Ok((percentile(&mut v, 0.5), percentile(&mut v, 0.99), n, lost))
}

pub(crate) fn run(bed: &IBed, reps: usize, deadline: Instant) -> Result<Vec<Comparison>> {
    let neighbour = bed.neighbour()?;
    let quiet = bed.sandbox_netns().to_owned();
    let names = vec![
        "quiet sandbox alone".to_owned(),
        format!("beside a sandbox holding {HOLD} connections (cap 1,024) and flooding DNS"),
    ];
    let noise = |i: usize, secs: u32| -> Result<Option<Noise>> {
        if i == 1 {
            Noise::start(&neighbour.net.netns, secs + 2).map(Some)
        } else {
            Ok(None)
        }
    };
    let mut comparisons = Vec::new();
    for (mode, scenario) in [
        ("dns", "11a. DNS latency p99 beside a noisy neighbour"),
        ("http", "11b. HTTP latency p99 beside a noisy neighbour"),
    ] {
        let mut p50 = Vec::new();
        let mut lost = [(0usize, 0usize); 2];
        let samples = interleave(2, reps, deadline, |i, warm| {
            let secs = if warm { 1 } else { SECS };
            let _n = noise(i, secs)?;
            let (m, p99, n, l) = probe(&quiet, mode, secs)?;
            if !warm {
                p50.push((i, m));
                lost[i].0 += l;
                lost[i].1 += n;
            }
            tracing::info!(mode, config = i, p50 = m, p99, n, "noisy");
            Ok(Sample {
                value: p99,
                ..Sample::default()
            })
        })?;
        let median = |i: usize| {
            let mut x: Vec<f64> = p50
                .iter()
                .filter(|(c, _)| *c == i)
                .map(|(_, p)| *p)
                .collect();
            percentile(&mut x, 0.5)
        };
        comparisons.push(Comparison {
            scenario: scenario.into(),
            unit: "p99 µs".into(),
            goal:
                "reported, not asserted: the neighbour must not stop it (crates/cli/tests/churn.rs)"
                    .into(),
            rows: rows(&names, &samples, ""),
            notes: vec![format!(
                "one {mode} probe at a time from the quiet sandbox, {PACE_MS} ms apart, {SECS} s \
                 per run, the neighbour on the same client CPU; p50 alone {:.0} µs, beside the \
                 neighbour {:.0} µs; lost (timed out) {} of {} alone, {} of {} beside it",
                median(0),
                median(1),
                lost[0].0,
                lost[0].1,
                lost[1].0,
                lost[1].1
            )],
        });
    }
    Ok(comparisons)
}
