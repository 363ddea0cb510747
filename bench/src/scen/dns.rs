//! Scenario 6: DNS through Palisade's filtering resolver against Unbound holding the same
//! allowlist (allowed names forwarded to the testbed's DNS and cached, the rest NXDOMAIN).
//! dnsperf in the sandbox namespace (whose port 53 `fw` redirects to Palisade) and in the
//! direct namespace (to Unbound in `fw`); throughput at saturation, latency at a fixed rate.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::bed::{FW_THREAD, IBed};
use super::load::in_ns;
use super::peers::{self, Peer};
use super::{Comparison, Sample, interleave, rows};
use crate::measure::thread_cpu_secs;

const SECS: u32 = 3;
/// The policy's allowed names and two it does not allow (beta.test exists upstream).
const ALLOWED: [&str; 2] = ["api.example.test", "alpha.test"];
const DENIED: [&str; 2] = ["beta.test", "evil.test"];
const RATE: u32 = 5_000;

/// What dnsperf reports.
#[derive(Debug, Default)]
struct Perf {
    qps: f64,
    completed: f64,
    lost: f64,
    rcodes: String,
    latencies_us: Vec<f64>,
}

fn dnsperf(
    ns: &str,
    server: &str,
    port: u16,
    file: &str,
    rate: Option<u32>,
    secs: u32,
) -> Result<Perf> {
    let mut cmd = in_ns(ns, secs + 15, "dnsperf");
    cmd.args(["-s", server, "-p", &port.to_string(), "-d", file])
        .args(["-l", &secs.to_string(), "-c", "1", "-T", "1", "-t", "2"]);
    match rate {
        Some(q) => cmd.args(["-Q", &q.to_string(), "-v"]),
        None => cmd.args(["-q", "64"]),
    };
    let out = cmd.output().context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dnsperf failed: {} {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            text.chars().take(300).collect::<String>()
        );
    }
    let mut p = Perf::default();
    let num = |s: &str| {
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Queries per second:") {
            p.qps = num(v).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Queries completed:") {
            p.completed = num(v).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Queries lost:") {
            p.lost = num(v).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Response codes:") {
            v.trim().clone_into(&mut p.rcodes);
        } else if let Some(v) = t.strip_prefix("> ") {
            // `> NOERROR api.example.test A 0.000123`: the last field is seconds.
            if let Some(s) = v
                .split_whitespace()
                .last()
                .and_then(|s| s.parse::<f64>().ok())
            {
                p.latencies_us.push(s * 1e6);
            }
        }
    }
    if p.completed <= 0.0 {
        bail!("dnsperf completed no query: {text}");
    }
    Ok(p)
}

pub(super) fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Path<'a> {
    name: &'static str,
    unbound: Option<&'a Peer>,
    file: String,
    rcode: &'static str,
}

pub(crate) fn run(bed: &IBed, reps: usize, deadline: Instant) -> Result<Vec<Comparison>> {
    let unbound = peers::unbound(bed, &ALLOWED)?;
    let write = |name: &str, names: &[&str]| -> Result<String> {
        let p = bed.path(name);
        let text: String = names.iter().map(|n| format!("{n} A\n")).collect();
        std::fs::write(&p, text)?;
        Ok(p.display().to_string())
    };
    let allowed = write("dns-allowed.txt", &ALLOWED)?;
    let denied = write("dns-denied.txt", &DENIED)?;
    let paths = [
        Path {
            name: "Unbound 1.17, allowed (cached) names",
            unbound: Some(&unbound),
            file: allowed.clone(),
            rcode: "NOERROR",
        },
        Path {
            name: "Palisade, allowed (cached) names",
            unbound: None,
            file: allowed,
            rcode: "NOERROR",
        },
        Path {
            name: "Unbound 1.17, denied names (NXDOMAIN)",
            unbound: Some(&unbound),
            file: denied.clone(),
            rcode: "NXDOMAIN",
        },
        Path {
            name: "Palisade, denied names (NXDOMAIN)",
            unbound: None,
            file: denied,
            rcode: "NXDOMAIN",
        },
    ];
    let gateway = bed.direct.gateway.to_string();
    let upstream = palisade_testbed::addrs::DNS_V4.to_string();
    let one = |p: &Path<'_>, rate: Option<u32>, warm: bool| -> Result<(Perf, Option<f64>)> {
        let (ns, server, port) = match p.unbound {
            Some(u) => (bed.direct.netns.name(), gateway.as_str(), u.port),
            // Any address: `fw` redirects the sandbox's port 53 to the firewall's resolver.
            None => (bed.sandbox_netns(), upstream.as_str(), 53),
        };
        let cpu = |p: &Path<'_>| -> Result<f64> {
            match p.unbound {
                Some(u) => u.cpu_secs(),
                None => thread_cpu_secs(FW_THREAD),
            }
        };
        let c0 = cpu(p)?;
        let secs = if warm { 1 } else { SECS };
        let perf = dnsperf(ns, server, port, &p.file, rate, secs).with_context(|| p.name)?;
        let c = (cpu(p)? - c0) * 1e6 / perf.completed;
        if !perf.rcodes.starts_with(p.rcode) || perf.rcodes.contains(',') {
            bail!(
                "{}: answers were {} (expected only {})",
                p.name,
                perf.rcodes,
                p.rcode
            );
        }
        Ok((perf, Some(c)))
    };
    let samples = interleave(paths.len(), reps, deadline, |i, warm| {
        let (perf, cpu) = one(&paths[i], None, warm)?;
        tracing::info!(
            config = paths[i].name,
            qps = perf.qps,
            lost = perf.lost,
            completed = perf.completed,
            "dns"
        );
        Ok(Sample {
            value: perf.qps,
            cpu,
            rss_mib: paths[i].unbound.and_then(|u| u.rss_mib()),
        })
    })?;
    let names: Vec<String> = paths.iter().map(|p| p.name.to_owned()).collect();
    let qps = rows(&names, &samples, "CPU-µs/query");
    let mut notes = vec![
        "dnsperf -c1 -T1 -q64 (64 queries in flight), 3 s per run, on CPU 1; Unbound \
         num-threads 2 and Palisade's runtime both pinned to CPU 0; Unbound reached from the \
         direct namespace, Palisade from the sandbox (port 53 redirected)"
            .into(),
    ];
    if let [ua, pa, ud, pd] = &qps[..] {
        notes.push(format!(
            "allowed: Palisade / Unbound = {:.2}× (goal >= 0.7×); denied: Palisade / Unbound = \
             {:.2}×; Palisade denied / Palisade allowed = {:.2}× (goal >= 1×)",
            pa.value.median / ua.value.median,
            pd.value.median / ud.value.median,
            pd.value.median / pa.value.median
        ));
    }
    let lat = interleave(paths.len(), reps, deadline, |i, warm| {
        let (mut perf, _) = one(&paths[i], Some(RATE), warm)?;
        let p99 = percentile(&mut perf.latencies_us, 0.99);
        tracing::info!(
            config = paths[i].name,
            p99,
            completed = perf.completed,
            "dns latency"
        );
        Ok(Sample {
            value: p99,
            ..Sample::default()
        })
    })?;
    Ok(vec![
        Comparison {
            scenario: "6a. DNS through the filtering resolver, saturation".into(),
            unit: "queries/s".into(),
            goal: "allowed-cached >= 0.7x Unbound with the same allowlist; denied at least as fast"
                .into(),
            rows: qps,
            notes,
        },
        Comparison {
            scenario: "6b. DNS latency p99 at a fixed rate".into(),
            unit: "p99 µs".into(),
            goal: "p99 < 1 ms".into(),
            rows: rows(&names, &lat, ""),
            notes: vec![format!(
                "dnsperf -Q {RATE} -v, p99 of every query's latency as dnsperf printed it"
            )],
        },
    ])
}
