//! Scenario 4f (`--only scrub` alone or part of `intercept`): what response scrubbing costs. The
//! same sandbox, client and upstream as 4a, its policy switched between two transforms of the
//! same domain before each run, interleaved: one that strips a header and injects nothing
//! (nothing to scrub: the response streams through untouched) and the measured one that injects
//! the secret, so every response is scanned. Two paths: the echo, which quotes the request
//! headers (with the secret injected every response holds it and has it replaced: the worst
//! case), and `/bytes/512`, which holds no secret (the common case).

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

/// A header injected whose value is too short to scrub (under `palisade_scrub::MIN_PATTERN`):
/// what injection costs without scrubbing, so the scrubbing row can be told apart from it.
fn injected_unscrubbed() -> String {
    format!(
        r#"{{"mode":"custom","allow_domains":["{HOST}","alpha.test"],
            "transforms":[{{"domain":"{HOST}","strip_headers":["X-Debug"],
                            "inject_headers":{{"X-Tag":"ab"}}}}]}}"#
    )
}

pub(crate) fn run(bed: &IBed, reps: usize, deadline: Instant) -> Result<Comparison> {
    bed.redirect_https(None)?;
    let policies = [strip_only(), injected(), injected_unscrubbed()];
    // (policy, path): the echo quotes the request headers, so with the secret injected every
    // response holds it (the worst case: a replacement in each); /bytes/512 holds none (the
    // common case: every response is still scanned).
    let configs = [
        (0, "/"),
        (1, "/"),
        (0, "/bytes/512"),
        (1, "/bytes/512"),
        (2, "/bytes/512"),
    ];
    let netns = bed.sandbox_netns().to_owned();
    let mut version = 100;
    let samples = interleave(configs.len(), reps, deadline, |i, warm| {
        let (policy, path) = configs[i];
        version += 1;
        bed.sandbox.set_policy(&policies[policy], version)?;
        let url = format!("https://{HOST}{path}");
        let cpu0 = thread_cpu_secs(FW_THREAD)?;
        let w = wrk(&netns, &url, CONNS, if warm { 1 } else { SECS }, false)
            .with_context(|| format!("scrub cost, policy {policy}, {path}"))?;
        let cpu = (thread_cpu_secs(FW_THREAD)? - cpu0) * 1e6 / w.requests;
        tracing::info!(policy, path, rps = w.rps, cpu, "scrub cost");
        Ok(Sample {
            value: w.rps,
            cpu: Some(cpu),
            rss_mib: None,
        })
    })?;
    // Back to the bed's own policy (injected secret), for the scenarios after this one.
    bed.sandbox.set_policy(&injected(), version + 1)?;
    let names = vec![
        "Palisade, echo: transform without injected secrets (strip only: nothing to scrub)"
            .to_owned(),
        "Palisade, echo: injected secret (every response scrubbed, the echoed secret replaced)"
            .to_owned(),
        "Palisade, /bytes/512: strip only (nothing to scrub)".to_owned(),
        "Palisade, /bytes/512: injected secret (every response scanned, none holds it)".to_owned(),
        "Palisade, /bytes/512: a header injected too short to scrub (injection, no scrubbing)"
            .to_owned(),
    ];
    let rows = rows(&names, &samples, "CPU-µs/req");
    let median = |r: usize| rows.get(r).map_or(f64::NAN, |r| r.value.median);
    let cpu = |r: usize| {
        rows.get(r)
            .and_then(|r| r.cpu.as_ref())
            .map_or(f64::NAN, |c: &Summary| c.median)
    };
    let ratio = |a: usize, b: usize| median(b) / median(a);
    let notes = vec![
        "wrk -t1 -c16 (HTTP/1.1 keep-alive) on CPU 1 against https://api.example.test/ (an echo \
         of the request) and /bytes/512 through the same sandbox; the policy is switched by a \
         live update before each run, rows interleaved after a warm-up each; the ratio column \
         is against the first row, the pairs below are the fair ones"
            .to_owned(),
        format!(
            "secret echoed in every response (worst case): throughput scrubbed / not scrubbed \
             {:.3} (goal >= 0.90); proxy CPU-µs/req {:.1} against {:.1}: {:+.1} %",
            ratio(0, 1),
            cpu(1),
            cpu(0),
            (cpu(1) / cpu(0) - 1.0) * 100.0
        ),
        format!(
            "no secret in the response (common case): throughput scanned / not scanned {:.3} \
             (goal >= 0.90); proxy CPU-µs/req {:.1} against {:.1}: {:+.1} %",
            ratio(2, 3),
            cpu(3),
            cpu(2),
            (cpu(3) / cpu(2) - 1.0) * 100.0
        ),
        format!(
            "scrubbing alone (scanned against injected but not scrubbed, /bytes/512): throughput \
             {:.3}, proxy CPU-µs/req {:+.1} %; injection alone against strip only: {:.3}, \
             {:+.1} %",
            ratio(4, 3),
            (cpu(3) / cpu(4) - 1.0) * 100.0,
            ratio(2, 4),
            (cpu(4) / cpu(2) - 1.0) * 100.0
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
