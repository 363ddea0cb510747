//! Scenarios 4, 5, 6 and 9 of issue 7: interception with header injection against HAProxy,
//! Squid and mitmproxy; HTTP/2; DNS against Unbound; sandbox start-up against bare runc. Each
//! compares several configurations ("rows") interleaved after a warm-up, first row the baseline.

pub(crate) mod bed;
mod dns;
mod h2;
mod hudsucker;
mod intercept;
mod load;
mod noisy;
mod peers;
mod sandbox;
mod scrub_cost;
mod splice;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::measure::Summary;

/// All of these scenarios together must finish within this. Nine minutes were enough until
/// 4f (scrubbing, five configurations) joined them; on a slower day the last three scenarios
/// then ran out of time.
const LIMIT: Duration = Duration::from_secs(14 * 60);

/// One scenario: several configurations measured the same way.
#[derive(Debug, Serialize)]
pub(crate) struct Comparison {
    pub(crate) scenario: String,
    pub(crate) unit: String,
    pub(crate) goal: String,
    /// First row is the baseline the ratios are against.
    pub(crate) rows: Vec<Row>,
    /// Derived numbers and caveats (cache hit rate, reuse, goals met or not).
    pub(crate) notes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) config: String,
    pub(crate) value: Summary,
    /// Median of this row / median of the baseline row.
    pub(crate) ratio: f64,
    /// Range of the per-repetition ratios.
    pub(crate) ratio_min: f64,
    pub(crate) ratio_max: f64,
    /// Proxy CPU per unit of work (e.g. µs per request), if a proxy is in the path.
    pub(crate) cpu: Option<Summary>,
    pub(crate) cpu_unit: &'static str,
    /// The proxy's resident memory after the runs, MiB (peers only: Palisade shares its
    /// process with the testbed's servers).
    pub(crate) rss_mib: Option<f64>,
}

/// One timed run of one configuration.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    pub(crate) value: f64,
    /// Proxy CPU per unit of work, if measured.
    pub(crate) cpu: Option<f64>,
    pub(crate) rss_mib: Option<f64>,
}

/// Runs the scenarios in `only` (all of them when it names none of ours).
/// `workers`: the firewall runtime's worker threads (`--fw-workers`), as for the tunnel bed.
pub(crate) fn run(only: &[String], reps: usize, workers: usize) -> Result<Vec<Comparison>> {
    let want = |n: &str| only.is_empty() || only.iter().any(|o| o == n || o == "all");
    let deadline = Instant::now() + LIMIT;
    let mut out = Vec::new();
    // `scrub` (4f, issue 15) is part of `intercept`; named alone it runs without the peers.
    let scrub_alone = !want("intercept") && only.iter().any(|o| o == "scrub");
    if want("intercept") || want("h2") || want("dns") || want("hudsucker") || scrub_alone {
        let bed = bed::IBed::new(false, workers)?;
        if scrub_alone {
            out.extend(report_err(
                "scrub",
                scrub_cost::run(&bed, reps, deadline).map(|c| vec![c]),
            ));
        }
        if want("intercept") {
            out.extend(report_err(
                "intercept",
                intercept::run(&bed, reps, deadline),
            ));
        }
        if want("hudsucker") {
            out.extend(report_err(
                "hudsucker",
                hudsucker::run(&bed, reps, deadline),
            ));
        }
        if want("h2") {
            out.extend(report_err("h2", h2::run(&bed, reps, deadline)));
        }
        if want("dns") {
            out.extend(report_err("dns", dns::run(&bed, reps, deadline)));
        }
    }
    if want("splice") {
        let r = bed::IBed::new(false, workers).and_then(|bed| splice::run(&bed, reps, deadline));
        out.extend(report_err("splice", r));
    }
    if want("noisy") {
        let r = bed::IBed::new(true, workers).and_then(|bed| noisy::run(&bed, reps, deadline));
        out.extend(report_err("noisy", r));
    }
    if want("sandbox") {
        out.extend(report_err("sandbox", sandbox::run(deadline)));
    }
    Ok(out)
}

/// A failed scenario becomes a row-less comparison saying why, so one broken peer does not
/// lose the other scenarios' numbers.
fn report_err(name: &str, r: Result<Vec<Comparison>>) -> Vec<Comparison> {
    match r {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(scenario = name, "failed: {e:#}");
            vec![Comparison {
                scenario: format!("{name}: FAILED"),
                unit: String::new(),
                goal: String::new(),
                rows: Vec::new(),
                notes: vec![format!("{e:#}")],
            }]
        }
    }
}

/// Warm-up once per configuration, then `reps` rounds over all configurations in turn.
/// `sample(config, warm_up)` measures one run. Returns the samples per configuration.
pub(crate) fn interleave(
    configs: usize,
    reps: usize,
    deadline: Instant,
    mut sample: impl FnMut(usize, bool) -> Result<Sample>,
) -> Result<Vec<Vec<Sample>>> {
    for c in 0..configs {
        sample(c, true)?;
    }
    let mut out = vec![Vec::new(); configs];
    for _ in 0..reps {
        for (c, samples) in out.iter_mut().enumerate() {
            if Instant::now() > deadline {
                bail!("these scenarios took longer than their time limit");
            }
            samples.push(sample(c, false)?);
        }
    }
    Ok(out)
}

/// Rows from the samples of each configuration; ratios against the first.
pub(crate) fn rows(names: &[String], samples: &[Vec<Sample>], cpu_unit: &'static str) -> Vec<Row> {
    let values = |s: &[Sample]| s.iter().map(|x| x.value).collect::<Vec<_>>();
    let base = samples.first().map(|s| values(s)).unwrap_or_default();
    let base_median = Summary::of(&base).median;
    names
        .iter()
        .zip(samples)
        .map(|(name, s)| {
            let v = Summary::of(&values(s));
            let pairs: Vec<f64> = s.iter().zip(&base).map(|(x, b)| x.value / b).collect();
            let pairs = Summary::of(&pairs);
            let cpu: Vec<f64> = s.iter().filter_map(|x| x.cpu).collect();
            Row {
                config: name.clone(),
                ratio: v.median / base_median,
                ratio_min: pairs.min,
                ratio_max: pairs.max,
                value: v,
                cpu: (!cpu.is_empty()).then(|| Summary::of(&cpu)),
                cpu_unit,
                rss_mib: s.iter().filter_map(|x| x.rss_mib).reduce(f64::max),
            }
        })
        .collect()
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "n/a".to_owned()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// These scenarios as Markdown: one table per scenario, then its notes.
pub(crate) fn table(comparisons: &[Comparison]) -> String {
    let mut s = String::new();
    for c in comparisons {
        let _ = writeln!(s, "\n### {}\n", c.scenario);
        if !c.goal.is_empty() {
            let _ = writeln!(s, "Goal: {}\n", c.goal);
        }
        if !c.rows.is_empty() {
            let _ = writeln!(
                s,
                "| configuration | {} median (range) | × {} (per-run range) | proxy CPU median (range) | proxy RSS |",
                c.unit,
                c.rows.first().map_or("", |r| r.config.as_str())
            );
            let _ = writeln!(s, "|---|---|---|---|---|");
        }
        for r in &c.rows {
            let cpu = r.cpu.as_ref().map_or("–".to_owned(), |c| {
                format!(
                    "{} {} ({}–{})",
                    fmt(c.median),
                    r.cpu_unit,
                    fmt(c.min),
                    fmt(c.max)
                )
            });
            let rss = r
                .rss_mib
                .map_or("–".to_owned(), |m| format!("{} MiB", fmt(m)));
            let _ = writeln!(
                s,
                "| {} | {} ({}–{}) | **{}×** ({}–{}) | {cpu} | {rss} |",
                r.config,
                fmt(r.value.median),
                fmt(r.value.min),
                fmt(r.value.max),
                fmt(r.ratio),
                fmt(r.ratio_min),
                fmt(r.ratio_max),
            );
        }
        for n in &c.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}
