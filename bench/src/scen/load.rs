//! The load generators (wrk, oha, h2load, dnsperf, curl) run in a client namespace pinned to
//! the client CPU under a hard time limit, with their reports parsed; and the CPU and memory
//! of peer processes from /proc.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::bed::CLIENT_CPU;

/// Path of oha as `make bench-deps` installs it.
pub(crate) const OHA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tools/bin/oha");

/// `timeout -s KILL <secs> ip netns exec <ns> taskset -c 1 <program>`.
pub(crate) fn in_ns(ns: &str, secs: u32, program: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", &secs.to_string(), "ip", "netns", "exec", ns])
        .args(["taskset", "-c", CLIENT_CPU, program])
        .stdin(Stdio::null());
    cmd
}

fn output(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({:?}): {} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.chars().take(400).collect::<String>()
        );
    }
    Ok(stdout)
}

/// What wrk reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wrk {
    pub(crate) requests: f64,
    pub(crate) rps: f64,
}

/// `wrk -t1 -c<conns> -d<secs>s url`; with `close`, every request asks for a new connection.
pub(crate) fn wrk(ns: &str, url: &str, conns: u32, secs: u32, close: bool) -> Result<Wrk> {
    let mut cmd = in_ns(ns, secs + 15, "wrk");
    cmd.args([
        "-t1",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--timeout",
        "5s",
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url);
    let out = output(cmd, "wrk")?;
    parse_wrk(&out)
}

fn parse_wrk(out: &str) -> Result<Wrk> {
    let mut requests = None;
    let mut rps = None;
    for line in out.lines().map(str::trim) {
        if let Some((n, _)) = line.split_once(" requests in ") {
            requests = n.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            tracing::warn!("wrk socket errors:{v}");
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            bail!("wrk: {} responses were not 2xx: {out}", v.trim());
        }
    }
    match (requests, rps) {
        (Some(requests), Some(rps)) if requests > 0.0 => Ok(Wrk { requests, rps }),
        _ => bail!("wrk made no request or printed no rate: {out}"),
    }
}

/// Latency at a fixed rate, corrected for coordinated omission.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) rps: f64,
}

/// `oha -q rate -z secs --latency-correction` over `conns` keep-alive connections.
pub(crate) fn oha(
    ns: &str,
    url: &str,
    ca: &str,
    rate: f64,
    conns: u32,
    secs: u32,
) -> Result<Latency> {
    let mut cmd = in_ns(ns, secs + 15, OHA);
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--latency-correction",
    ])
    .args(["--worker-threads", "1", "-c", &conns.to_string()])
    .args(["-q", &format!("{rate:.0}"), "-z", &format!("{secs}s")])
    .args(["--cacert", ca, "-t", "5s", url]);
    let out = output(cmd, "oha (make bench-deps builds it)")?;
    let json: serde_json::Value = serde_json::from_str(&out).context("oha JSON")?;
    let success = json["summary"]["successRate"].as_f64().unwrap_or(0.0);
    if success < 0.999 {
        bail!("oha: success rate {success}: {}", json["errorDistribution"]);
    }
    let pct = |p: &str| json["latencyPercentiles"][p].as_f64().map(|s| s * 1e6);
    let (Some(p50_us), Some(p99_us)) = (pct("p50"), pct("p99")) else {
        bail!("oha JSON lacks latencyPercentiles");
    };
    Ok(Latency {
        p50_us,
        p99_us,
        rps: json["summary"]["requestsPerSec"]
            .as_f64()
            .unwrap_or(f64::NAN),
    })
}

/// What h2load reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct H2load {
    pub(crate) rps: f64,
    pub(crate) requests: f64,
}

/// `h2load -c conns -m streams -D secs url` (h2 over TLS).
pub(crate) fn h2load(ns: &str, url: &str, conns: u32, streams: u32, secs: u32) -> Result<H2load> {
    let mut cmd = in_ns(ns, secs + 15, "h2load");
    cmd.args(["-c", &conns.to_string(), "-m", &streams.to_string()])
        .args(["-D", &secs.to_string(), "-t", "1", url]);
    let out = output(cmd, "h2load")?;
    let mut rps = None;
    let mut done = None;
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            rps = rest
                .split(", ")
                .find_map(|p| p.strip_suffix(" req/s"))
                .and_then(|v| v.trim().parse::<f64>().ok());
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            let field = |name: &str| {
                rest.split(", ")
                    .find_map(|p| p.strip_suffix(name))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            };
            let (ok, failed) = (field(" succeeded"), field(" failed"));
            if failed.unwrap_or(0.0) > 0.0 || field(" errored").unwrap_or(0.0) > 0.0 {
                bail!("h2load: requests failed: {line}");
            }
            done = ok;
        } else if line.starts_with("status codes:") && !line.contains(" 0 3xx") {
            // Only 2xx are expected; anything else is a broken path, not a fast one.
        }
    }
    if out.contains("No protocol negotiated") {
        bail!("h2load: h2 was not negotiated");
    }
    match (rps, done) {
        (Some(rps), Some(requests)) if requests > 0.0 => Ok(H2load { rps, requests }),
        _ => bail!("h2load made no request: {out}"),
    }
}

/// One `curl` fetch in `ns`; returns (body, effective HTTP version).
pub(crate) fn curl(ns: &str, url: &str, ca: &str, extra: &[&str]) -> Result<String> {
    let mut cmd = in_ns(ns, 20, "curl");
    cmd.args(["-sS", "--fail", "-m", "15", "--cacert", ca])
        .args(extra)
        .arg(url);
    output(cmd, "curl")
}

/// CPU seconds (user + system, with reaped children) of process `pid`.
pub(crate) fn proc_cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (did the peer exit?)"))?;
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no ')' in stat")?;
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse::<u64>().unwrap_or(0))
        .collect();
    Ok(f.iter().sum::<u64>() as f64 / 100.0)
}

/// Resident memory of process `pid`, MiB.
pub(crate) fn proc_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_report_parsed_and_bad_statuses_refused() {
        let out = "Running 3s test @ https://x/\n  1 threads and 16 connections\n  \
                   12345 requests in 3.00s, 4.50MB read\nRequests/sec:   4115.00\n";
        let w = parse_wrk(out).unwrap();
        assert_eq!((w.requests, w.rps), (12345.0, 4115.0));
        assert!(parse_wrk(&format!("{out}  Non-2xx or 3xx responses: 7\n")).is_err());
        assert!(parse_wrk("garbage").is_err());
    }
}
