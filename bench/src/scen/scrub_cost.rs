//! Scenario 4f (issue 15, `--only scrub` alone or part of `intercept`): what response scrubbing costs. The same sandbox, client and upstream
//! as 4a, its policy switched between two transforms of the same domain before each run,
//! interleaved: one that strips a header and injects nothing (nothing to scrub: the response
//! streams through untouched) and the measured one that injects the secret, so every response
//! — the echo quotes the request headers — is scrubbed and has the secret replaced.

use std::time::Instant;

use anyhow::{Context, Result};

use super::bed::{FW_THREAD, HOST, IBed, SECRET};
use super::load::wrk;
use super::{Comparison, Sample, Summary, interleave, rows};
use crate::measure::thread_cpu_secs;

const SECS: u32 = 3;
const CONNS: u32 = 16;

fn strip_only() -> String {
    format!(
        r#"{{"mode":"custom","allow_domains":["{HOST}","alpha.test"],
            "transforms":[{{"domain":"{HOST}","strip_headers":["X-Debug"]}}]}}"#
    )
}

fn injected() -> String {
    format!(
        r#"{{"mode":"custom","allow_domains":["{HOST}","alpha.test"],
            "transforms":[{{"domain":"{HOST}","strip_headers":["X-Debug"],
                            "inject_headers":{{"Authorization":"{SECRET}"}}}}]}}"#
    )
}

pub(crate) fn run(bed: &IBed, reps: usize, deadline: Instant) -> Result<Comparison> {
    bed.redirect_https(None)?;
    let policies = [strip_only(), injected()];
    let url = format!("https://{HOST}/");
    let netns = bed.sandbox_netns().to_owned();
    let mut version = 100;
    let samples = interleave(2, reps, deadline, |i, warm| {
        version += 1;
        bed.sandbox.set_policy(&policies[i], version)?;
        let cpu0 = thread_cpu_secs(FW_THREAD)?;
        let w = wrk(&netns, &url, CONNS, if warm { 1 } else { SECS }, false)
            .with_context(|| format!("scrub cost, policy {i}"))?;
        let cpu = (thread_cpu_secs(FW_THREAD)? - cpu0) * 1e6 / w.requests;
        tracing::info!(policy = i, rps = w.rps, cpu, "scrub cost");
        Ok(Sample {
            value: w.rps,
            cpu: Some(cpu),
            rss_mib: None,
        })
    })?;
    // Back to the bed's own policy (injected secret), for the scenarios after this one.
    bed.sandbox.set_policy(&injected(), version + 1)?;
    let names = vec![
        "Palisade, transform without injected secrets (strip only: nothing to scrub)".to_owned(),
        "Palisade, injected secret (every response scrubbed, the echoed secret replaced)"
            .to_owned(),
    ];
    let rows = rows(&names, &samples, "CPU-µs/req");
    let cpu = |r: usize| {
        rows.get(r)
            .and_then(|r| r.cpu.as_ref())
            .map_or(f64::NAN, |c: &Summary| c.median)
    };
    let ratio = rows.get(1).map_or(f64::NAN, |r| r.ratio);
    let notes = vec![
        "wrk -t1 -c16 (HTTP/1.1 keep-alive) on CPU 1 against https://api.example.test/ through \
         the same sandbox; the policy is switched by a live update before each run, rows \
         interleaved after a warm-up each"
            .to_owned(),
        format!(
            "throughput ratio scrubbed / not scrubbed: {ratio:.3} (goal >= 0.90); proxy \
             CPU-µs/req {:.1} against {:.1}: {:+.1} %",
            cpu(1),
            cpu(0),
            (cpu(1) / cpu(0) - 1.0) * 100.0
        ),
    ];
    Ok(Comparison {
        scenario: "4f. response scrubbing cost, interception HTTP/1.1 keep-alive".into(),
        unit: "req/s".into(),
        goal: "scrubbed >= 0.9x the same path without scrubbing (ratio)".into(),
        rows,
        notes,
    })
}
