//! Scenario 5: HTTP/2 through interception. h2load with 100 streams per connection, and one
//! 1 GiB download on a single stream (curl --http2 to the testbed's /bytes/<n>), direct against
//! Palisade (and HAProxy terminating h2 for the multiplexed case).

use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::bed::{HOST, IBed};
use super::intercept::{Config, Via};
use super::load::{curl, h2load};
use super::{Comparison, Sample, interleave, peers, rows};

const SECS: u32 = 3;
const GIB: u64 = 1 << 30;

pub(crate) fn run(bed: &IBed, reps: usize, deadline: Instant) -> Result<Vec<Comparison>> {
    let mut notes = vec![
        "h2load -t1 -c4 -m100 (h2 over TLS, 400 streams in flight) on CPU 1, 3 s per run".into(),
    ];
    let mut haproxy = match peers::haproxy(bed) {
        Ok(p) => Some(p),
        Err(e) => {
            notes.push(format!("HAProxy not measured: {e:#}"));
            None
        }
    };
    let mut configs = vec![
        Config {
            name: "direct h2 (no proxy)".into(),
            via: Via::Direct,
        },
        Config {
            name: "Palisade (transform policy)".into(),
            via: Via::Palisade,
        },
    ];
    if let Some(p) = haproxy.as_mut() {
        configs.push(Config {
            name: "HAProxy 2.6 terminating h2, set-header (transparent)".into(),
            via: Via::Peer(p),
        });
    }
    let url = format!("https://{HOST}/");
    let samples = interleave(configs.len(), reps, deadline, |i, warm| {
        let c = &mut configs[i];
        c.route(bed)?;
        let cpu0 = c.cpu()?;
        let h = h2load(c.netns(bed), &url, 4, 100, if warm { 1 } else { SECS })
            .with_context(|| c.name.clone())?;
        let cpu = match (cpu0, c.cpu()?) {
            (Some(a), Some(b)) => Some((b - a) * 1e6 / h.requests),
            _ => None,
        };
        tracing::info!(config = %c.name, rps = h.rps, "h2 multiplexed");
        Ok(Sample {
            value: h.rps,
            cpu,
            rss_mib: c.rss(),
        })
    })?;
    let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    let mut out = vec![Comparison {
        scenario: "5a. HTTP/2, 100 streams per connection, through interception".into(),
        unit: "req/s".into(),
        goal: ">= 0.5x direct".into(),
        rows: rows(&names, &samples, "CPU-µs/req"),
        notes,
    }];
    configs.truncate(2);
    out.push(bulk(bed, &mut configs, reps, deadline)?);
    bed.redirect_https(None)?;
    Ok(out)
}

/// One 1 GiB response on one h2 stream.
fn bulk(
    bed: &IBed,
    configs: &mut [Config<'_>],
    reps: usize,
    deadline: Instant,
) -> Result<Comparison> {
    let ca = bed.path("clients-ca.pem").display().to_string();
    let samples = interleave(configs.len(), reps, deadline, |i, warm| {
        let c = &mut configs[i];
        c.route(bed)?;
        let n = if warm { GIB / 8 } else { GIB };
        let cpu0 = c.cpu()?;
        let out = curl(
            c.netns(bed),
            &format!("https://{HOST}/bytes/{n}"),
            &ca,
            &[
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{size_download} %{time_total}",
            ],
        )
        .with_context(|| c.name.clone())?;
        let f: Vec<&str> = out.split_whitespace().collect();
        let (Some(&"2"), Some(size), Some(secs)) = (
            f.first(),
            f.get(1).and_then(|v| v.parse::<f64>().ok()),
            f.get(2).and_then(|v| v.parse::<f64>().ok()),
        ) else {
            bail!("{}: not an h2 download: {out}", c.name);
        };
        if size as u64 != n || secs <= 0.0 {
            bail!("{}: downloaded {size} of {n} bytes", c.name);
        }
        let gb = size / 1e9;
        let cpu = match (cpu0, c.cpu()?) {
            (Some(a), Some(b)) => Some((b - a) / gb),
            _ => None,
        };
        tracing::info!(config = %c.name, gbps = gb / secs, "h2 bulk");
        Ok(Sample {
            value: gb / secs,
            cpu,
            rss_mib: None,
        })
    })?;
    let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    Ok(Comparison {
        scenario: "5b. HTTP/2, one 1 GiB download on a single stream".into(),
        unit: "GB/s".into(),
        goal: ">= 0.7x direct".into(),
        rows: rows(&names, &samples, "CPU-s/GB"),
        notes: vec![
            "curl --http2 -o /dev/null https://api.example.test/bytes/1073741824 on CPU 1 (the \
             testbed's in-process server generates the bytes)"
                .into(),
        ],
    })
}
