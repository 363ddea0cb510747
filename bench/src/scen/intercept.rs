//! Scenario 4: TLS interception with header injection, HTTP/1.1. The same wrk/oha client in
//! a namespace talks to https://api.example.test/: directly (forwarded by `fw`, no proxy);
//! through Palisade (a sandbox whose policy injects Authorization there); and through HAProxy,
//! Squid ssl-bump and mitmproxy, each reached transparently by an nftables redirect in `fw`.
//! Every path is first checked to really inject (or, direct, not inject) the header.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::bed::{FW_THREAD, HOST, IBed, SECRET};
use super::load::{curl, oha, wrk};
use super::peers::{self, Peer};
use super::{Comparison, Sample, interleave, rows};
use crate::measure::thread_cpu_secs;

const SECS: u32 = 3;
const CONNS: u32 = 16;
const LAT_CONNS: u32 = 8;
const LAT_RATE_CAP: f64 = 2000.0;

/// Where one configuration's client runs and what it goes through.
pub(crate) enum Via<'a> {
    Direct,
    Palisade,
    Peer(&'a mut Peer),
}

pub(crate) struct Config<'a> {
    pub(crate) name: String,
    pub(crate) via: Via<'a>,
}

impl Config<'_> {
    pub(crate) fn netns<'b>(&self, bed: &'b IBed) -> &'b str {
        match self.via {
            Via::Palisade => bed.sandbox_netns(),
            Via::Direct | Via::Peer(_) => bed.direct.netns.name(),
        }
    }

    /// Points the redirect at this configuration's peer (or nowhere).
    pub(crate) fn route(&mut self, bed: &IBed) -> Result<()> {
        match &mut self.via {
            Via::Peer(p) => {
                p.check_alive()?;
                bed.redirect_https(Some(p.port))
            }
            Via::Direct | Via::Palisade => bed.redirect_https(None),
        }
    }

    /// CPU seconds the proxy of this path has used so far.
    pub(crate) fn cpu(&self) -> Result<Option<f64>> {
        Ok(match &self.via {
            Via::Direct => None,
            Via::Palisade => Some(thread_cpu_secs(FW_THREAD)?),
            Via::Peer(p) => Some(p.cpu_secs()?),
        })
    }

    pub(crate) fn rss(&self) -> Option<f64> {
        match &self.via {
            Via::Peer(p) => p.rss_mib(),
            Via::Direct | Via::Palisade => None,
        }
    }
}

/// Starts the peers that start; a peer that fails is noted, not fatal.
pub(crate) fn start_peers(bed: &IBed, notes: &mut Vec<String>) -> Vec<Peer> {
    let mut out = Vec::new();
    for (name, start) in [
        ("HAProxy", peers::haproxy as fn(&IBed) -> Result<Peer>),
        ("Squid ssl-bump", peers::squid),
        ("mitmproxy", peers::mitmproxy),
    ] {
        match start(bed) {
            Ok(p) => out.push(p),
            Err(e) => notes.push(format!("{name} not measured: {e:#}")),
        }
    }
    out
}

fn label(p: &Peer) -> String {
    match p.name {
        "haproxy" => "HAProxy 2.6 terminating, set-header (transparent, nft redirect)".into(),
        "squid" => "Squid 5.7 ssl-bump, request_header_add (transparent, nft redirect)".into(),
        "mitmproxy" => "mitmproxy 11 mitmdump + addon (transparent, nft redirect)".into(),
        other => other.into(),
    }
}

/// The digests of the Authorization values the upstream saw for one request on this path.
fn seen_authorization(bed: &IBed, c: &mut Config<'_>) -> Result<Vec<String>> {
    c.route(bed)?;
    let ca = bed.path("clients-ca.pem").display().to_string();
    let body = curl(
        c.netns(bed),
        &format!("https://{HOST}/"),
        &ca,
        &["--http1.1", "-H", "Authorization: from-the-sandbox"],
    )
    .with_context(|| format!("{}: one request", c.name))?;
    let json: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{}: echo JSON: {body}", c.name))?;
    // Digests: Palisade scrubs the injected value from the echo the client reads.
    Ok(json["header_sha256"]["authorization"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

pub(crate) fn run(bed: &IBed, reps: usize, deadline: Instant) -> Result<Vec<Comparison>> {
    let mut notes = vec![format!(
        "client: wrk -t1 -c16 (HTTP/1.1 keep-alive, small echo response) on CPU 1; every proxy \
         pinned to CPU 0 (Palisade's runtime: {} worker(s); HAProxy nbthread 2); the upstream \
         is the testbed's in-process HTTPS server, unpinned",
        bed.workers
    )];
    let mut started = start_peers(bed, &mut notes);
    let mut configs = vec![
        Config {
            name: "direct HTTPS (no proxy)".into(),
            via: Via::Direct,
        },
        Config {
            name: "Palisade (transform policy, transparent)".into(),
            via: Via::Palisade,
        },
    ];
    for p in started.iter_mut() {
        configs.push(Config {
            name: label(p),
            via: Via::Peer(p),
        });
    }
    // Prove each path: the upstream sees exactly the injected secret (direct: the client's).
    let mut checked = Vec::new();
    for mut c in configs {
        let want = match c.via {
            Via::Direct => "from-the-sandbox",
            Via::Palisade | Via::Peer(_) => SECRET,
        };
        match seen_authorization(bed, &mut c) {
            Ok(seen) if seen == [palisade_testbed::sha256_hex(want.as_bytes())] => checked.push(c),
            Ok(seen) => {
                if matches!(c.via, Via::Direct | Via::Palisade) {
                    bail!("{}: upstream saw Authorization {seen:?}", c.name);
                }
                notes.push(format!(
                    "{} dropped: upstream saw Authorization {seen:?}",
                    c.name
                ));
            }
            Err(e) => {
                if matches!(c.via, Via::Direct | Via::Palisade) {
                    return Err(e);
                }
                notes.push(format!("{} dropped: {e:#}", c.name));
            }
        }
    }
    let mut configs = checked;
    let url = format!("https://{HOST}/");
    let samples = interleave(configs.len(), reps, deadline, |i, warm| {
        let c = &mut configs[i];
        c.route(bed)?;
        let cpu0 = c.cpu()?;
        let w = wrk(
            c.netns(bed),
            &url,
            CONNS,
            if warm { 1 } else { SECS },
            false,
        )
        .with_context(|| c.name.clone())?;
        let cpu = match (cpu0, c.cpu()?) {
            (Some(a), Some(b)) => Some((b - a) * 1e6 / w.requests),
            _ => None,
        };
        tracing::info!(config = %c.name, rps = w.rps, ?cpu, "intercept keep-alive");
        Ok(Sample {
            value: w.rps,
            cpu,
            rss_mib: c.rss(),
        })
    })?;
    let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    let throughput = rows(&names, &samples, "CPU-µs/req");
    let direct_max = throughput.first().map_or(f64::NAN, |r| r.value.median);
    let palisade = throughput.get(1).map_or(f64::NAN, |r| r.value.median);
    for r in throughput.iter().skip(2) {
        notes.push(format!(
            "Palisade / {}: {:.2}×",
            r.config,
            palisade / r.value.median
        ));
    }
    let mut out = vec![Comparison {
        scenario: "4a. interception + header injection, HTTP/1.1 keep-alive, saturation".into(),
        unit: "req/s".into(),
        goal: ">= 0.5x direct, >= 0.9x HAProxy terminating, >= 3x Squid ssl-bump".into(),
        rows: throughput,
        notes,
    }];
    match latency(bed, &mut configs, reps, deadline, direct_max, &samples) {
        Ok(l) => out.extend(l),
        Err(e) => out[0].notes.push(format!("latency not measured: {e:#}")),
    }
    match new_conns(bed, &mut configs, reps, deadline) {
        Ok(n) => out.push(n),
        Err(e) => out[0]
            .notes
            .push(format!("new-connection runs failed: {e:#}")),
    }
    match super::scrub_cost::run(bed, reps, deadline) {
        Ok(c) => out.push(c),
        Err(e) => out[0].notes.push(format!("scrub cost not measured: {e:#}")),
    }
    bed.redirect_https(None)?;
    Ok(out)
}

/// p50 and p99 at a fixed rate of half the direct maximum, for every path that sustained at
/// least 1.2× that rate at saturation.
fn latency(
    bed: &IBed,
    configs: &mut [Config<'_>],
    reps: usize,
    deadline: Instant,
    direct_max: f64,
    saturation: &[Vec<super::Sample>],
) -> Result<Vec<Comparison>> {
    // Half the direct maximum is more than oha (one thread on CPU 1, heavier per request than
    // wrk) can generate here; above its own limit it measures its own queue.
    let rate = (direct_max / 2.0).min(LAT_RATE_CAP).floor();
    let mut notes = vec![format!(
        "oha -q {rate} -c {LAT_CONNS} --latency-correction (keep-alive), {SECS} s per run; \
         rate = half the direct median maximum, capped at {LAT_RATE_CAP} req/s (what oha on \
         one CPU sustains here)"
    )];
    let mut idx = Vec::new();
    for (i, s) in saturation.iter().enumerate() {
        let max = super::Summary::of(&s.iter().map(|x| x.value).collect::<Vec<_>>()).median;
        if i < 2 || max >= rate * 1.2 {
            idx.push(i);
        } else {
            notes.push(format!(
                "{}: not measured at this rate (its maximum, {max:.0} req/s, is below 1.2× of it)",
                configs[i].name
            ));
        }
    }
    let ca = bed.path("clients-ca.pem").display().to_string();
    let url = format!("https://{HOST}/");
    let mut p99s: Vec<Vec<Sample>> = vec![Vec::new(); idx.len()];
    let p50s = interleave(idx.len(), reps, deadline, |k, warm| {
        let c = &mut configs[idx[k]];
        c.route(bed)?;
        let l = oha(
            c.netns(bed),
            &url,
            &ca,
            rate,
            LAT_CONNS,
            if warm { 1 } else { SECS },
        )
        .with_context(|| c.name.clone())?;
        tracing::info!(config = %c.name, p50 = l.p50_us, p99 = l.p99_us, rps = l.rps, "latency");
        if !warm {
            p99s[k].push(Sample {
                value: l.p99_us,
                ..Sample::default()
            });
        }
        Ok(Sample {
            value: l.p50_us,
            ..Sample::default()
        })
    })?;
    let names: Vec<String> = idx.iter().map(|&i| configs[i].name.clone()).collect();
    let p50 = rows(&names, &p50s, "");
    let p99 = rows(&names, &p99s, "");
    for (a, b) in p50.iter().zip(&p99).skip(1) {
        notes.push(format!(
            "{}: added latency p50 {:+.0} µs, p99 {:+.0} µs (medians)",
            a.config,
            a.value.median - p50[0].value.median,
            b.value.median - p99[0].value.median
        ));
    }
    Ok(vec![
        Comparison {
            scenario: "4b. interception latency p50 at a fixed rate".into(),
            unit: "p50 µs".into(),
            goal: "added p50 <= 150 µs over direct".into(),
            rows: p50,
            notes,
        },
        Comparison {
            scenario: "4c. interception latency p99 at a fixed rate".into(),
            unit: "p99 µs".into(),
            goal: "added p99 <= 1 ms over direct".into(),
            rows: p99,
            notes: Vec::new(),
        },
    ])
}

/// A new client connection per request (wrk, `Connection: close`), direct and Palisade: the
/// leaf cache hit rate and how many upstream connections the proxy opened per request.
fn new_conns(
    bed: &IBed,
    configs: &mut [Config<'_>],
    reps: usize,
    deadline: Instant,
) -> Result<Comparison> {
    let url = format!("https://{HOST}/");
    let cache0 = bed.sandbox.ca.cache_stats();
    let (mut reqs, mut accepts, mut overflow) = (0.0, 0usize, false);
    let (mut direct_reqs, mut direct_accepts) = (0.0, 0usize);
    let samples = interleave(2, reps, deadline, |i, warm| {
        let c = &mut configs[i];
        c.route(bed)?;
        let cpu0 = c.cpu()?;
        bed.world.log().clear();
        let dropped = bed.world.log().dropped();
        let w = wrk(c.netns(bed), &url, 8, if warm { 1 } else { SECS }, true)
            .with_context(|| c.name.clone())?;
        if matches!(c.via, Via::Palisade) && !warm {
            reqs += w.requests;
            accepts += bed.upstream_accepts();
            overflow |= bed.world.log().dropped() != dropped;
        } else if !warm {
            direct_reqs += w.requests;
            direct_accepts += bed.upstream_accepts();
            overflow |= bed.world.log().dropped() != dropped;
        }
        let cpu = match (cpu0, c.cpu()?) {
            (Some(a), Some(b)) => Some((b - a) * 1e6 / w.requests),
            _ => None,
        };
        Ok(Sample {
            value: w.rps,
            cpu,
            rss_mib: None,
        })
    })?;
    let cache = bed.sandbox.ca.cache_stats();
    let (hits, misses) = (cache.hits - cache0.hits, cache.misses - cache0.misses);
    let hit_rate = hits as f64 / (hits + misses).max(1) as f64;
    let reuse = 1.0 - accepts as f64 / reqs.max(1.0);
    let names: Vec<String> = configs.iter().take(2).map(|c| c.name.clone()).collect();
    Ok(Comparison {
        scenario: "4d. interception, a new client connection per request".into(),
        unit: "req/s".into(),
        goal: ">= 99% leaf-certificate cache hits, >= 95% upstream connection reuse".into(),
        rows: rows(&names, &samples, "CPU-µs/req"),
        notes: vec![
            "wrk -t1 -c8 -H 'Connection: close': every request is a new TCP + TLS handshake \
             from the client"
                .into(),
            format!(
                "leaf cache (SandboxCa::cache_stats, all Palisade runs incl. warm-up): \
                 {hits} hits, {misses} misses: hit rate {:.2}%",
                hit_rate * 100.0
            ),
            format!(
                "upstream reuse (TCP accepts logged by the testbed's good server during the \
                 measured Palisade runs): {accepts} upstream connections for {reqs:.0} requests: \
                 reuse {:.2}%{}",
                reuse * 100.0,
                if overflow {
                    " (INVALID: the testbed log overflowed)"
                } else {
                    ""
                }
            ),
            format!(
                "the same count on the direct path (a check of the counter): {direct_accepts} \
                 upstream connections for {direct_reqs:.0} requests"
            ),
        ],
    })
}
