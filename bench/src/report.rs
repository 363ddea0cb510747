//! The table on the terminal, bench/RESULTS.md and bench/results.json.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::scen_tunnel_idle::IdleOutcome;
use crate::scenarios::Outcome;

/// Everything one run measured, and under which conditions.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) date_utc: String,
    pub(crate) machine: String,
    pub(crate) cpus: usize,
    pub(crate) pinning: String,
    pub(crate) method: String,
    pub(crate) scenarios: Vec<Outcome>,
    /// Scenario 8 for tunnels (memory and CPU of idle tunnels).
    pub(crate) idle: Option<IdleOutcome>,
    /// Scenarios with peers (interception, HTTP/2, DNS, sandbox start-up): bench/src/scen.
    pub(crate) comparisons: Vec<crate::scen::Comparison>,
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

/// The results as Markdown tables (also what the terminal shows).
pub(crate) fn table(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| scenario | unit | direct median (range) | Palisade median (range) | ratio (per-pair range) | proxy CPU median (range) | peers: median, ratio to direct, CPU | goal |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for o in &r.scenarios {
        let peers: Vec<String> = o
            .peers
            .iter()
            .map(|p| {
                format!(
                    "{}: {} ({}×, {} {})",
                    p.name,
                    fmt(p.value.median),
                    fmt(p.ratio),
                    fmt(p.cpu.median),
                    o.proxy_cpu_unit
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} ({}–{}) | {} ({}–{}) | **{}×** ({}–{}) | {} {} ({}–{}) | {} | {} |",
            o.name,
            o.unit,
            fmt(o.direct.median),
            fmt(o.direct.min),
            fmt(o.direct.max),
            fmt(o.palisade.median),
            fmt(o.palisade.min),
            fmt(o.palisade.max),
            fmt(o.ratio),
            fmt(o.ratio_min),
            fmt(o.ratio_max),
            fmt(o.proxy_cpu.median),
            o.proxy_cpu_unit,
            fmt(o.proxy_cpu.min),
            fmt(o.proxy_cpu.max),
            if peers.is_empty() {
                "–".to_owned()
            } else {
                peers.join("; ")
            },
            o.goal,
        );
    }
    if let Some(idle) = &r.idle {
        s.push_str(&idle_table(idle));
    }
    s.push_str(&crate::scen::table(&r.comparisons));
    s
}

/// Scenario 8 for tunnels.
fn idle_table(idle: &IdleOutcome) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n8 idle tunnels (goal: {}):\n\n| open tunnels | firewall RSS KiB/tunnel | kernel slab KiB/conn, Palisade | kernel slab KiB/conn, direct | firewall idle CPU % | 1 bulk flow beside, GB/s |",
        idle.goal
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for l in &idle.levels {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            l.conns,
            fmt(l.rss_kib_per_conn),
            fmt(l.slab_kib_per_conn),
            fmt(l.slab_kib_per_conn_direct),
            fmt(l.idle_cpu_pct),
            l.bulk_beside.map_or("–".to_owned(), fmt),
        );
    }
    if let (Some(alone), Some(ratio)) = (idle.bulk_alone, idle.bulk_ratio) {
        let _ = writeln!(
            s,
            "\nBulk beside the open tunnels: **{}×** of the same flow through Palisade with none open, measured just before ({} GB/s).",
            fmt(ratio),
            fmt(alone)
        );
    }
    s
}

pub(crate) fn write(dir: &Path, r: &Results) -> Result<()> {
    let json = serde_json::to_string_pretty(r)?;
    let json_path = dir.join("results.json");
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let mut md = String::new();
    let _ = writeln!(md, "# Palisade whole-system benchmark results\n");
    let _ = writeln!(
        md,
        "Written by `make bench` (`cargo run --release -p palisade-bench`); do not edit by hand.\n"
    );
    let _ = writeln!(md, "- Date (UTC): {}", r.date_utc);
    let _ = writeln!(md, "- Machine: {} ({} CPUs)", r.machine, r.cpus);
    let _ = writeln!(md, "- CPU pinning: {}", r.pinning);
    let _ = writeln!(md, "- Method: {}\n", r.method);
    md.push_str(&table(r));
    let md_path = dir.join("RESULTS.md");
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    Ok(())
}
