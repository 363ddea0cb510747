//! The scenarios: one bulk TCP flow (iperf3), new plain TCP connections per second, new TLS
//! connections per second (ClientHello + SNI peek). Each runs on the direct path and through
//! Palisade, interleaved, after a warm-up.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use palisade_testbed::addrs;
use serde::Serialize;

use crate::bed::{Bed, FW_THREAD};
use crate::clients::ClientReport;
use crate::measure::{Summary, thread_cpu_secs};

/// Where load generators run.
pub(crate) const CLIENT_CPU: &str = "1";
const IPERF_PORT: u16 = 5201;

/// The two paths every scenario compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    Direct,
    Palisade,
}

/// How long each timed run lasts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Durations {
    pub(crate) bulk_secs: u32,
    pub(crate) conn_secs: f64,
    pub(crate) reps: usize,
}

/// One timed run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// GB/s or connections/s.
    value: f64,
    /// Firewall CPU seconds during the run.
    fw_cpu: f64,
    /// GB moved, or connections made.
    amount: f64,
}

/// A scenario's outcome, as reported.
#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    pub(crate) name: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) goal: &'static str,
    pub(crate) direct: Summary,
    pub(crate) palisade: Summary,
    /// Palisade median / direct median.
    pub(crate) ratio: f64,
    /// Range of the per-repetition ratios (run i through Palisade / run i direct).
    pub(crate) ratio_min: f64,
    pub(crate) ratio_max: f64,
    /// Firewall CPU per unit through Palisade: CPU-s per GB, or µs per connection.
    pub(crate) proxy_cpu: Summary,
    pub(crate) proxy_cpu_unit: &'static str,
}

/// What a scenario measures.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Bulk,
    Conns,
    Tls,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bulk => "bulk: one TCP flow, iperf3, 3 s",
            Kind::Conns => "new TCP connections/s (connect, 64 B echo, close)",
            Kind::Tls => "new TLS connections/s (full handshake with SNI, one GET)",
        }
    }
}

pub(crate) struct Runner<'a> {
    pub(crate) bed: &'a Bed,
    pub(crate) durations: Durations,
    pub(crate) exe: std::path::PathBuf,
    pub(crate) deadline: Instant,
}

impl Runner<'_> {
    /// Warm-up, then `reps` interleaved pairs (direct, palisade, direct, …).
    pub(crate) fn scenario(&self, kind: Kind) -> Result<Outcome> {
        let _iperf = match kind {
            Kind::Bulk => Some(IperfServer::start(self.bed)?),
            Kind::Conns | Kind::Tls => None,
        };
        for path in [Path::Direct, Path::Palisade] {
            self.sample(kind, path, true)
                .with_context(|| format!("warm-up {path:?}"))?;
        }
        let (mut direct, mut palisade) = (Vec::new(), Vec::new());
        for rep in 0..self.durations.reps {
            for path in [Path::Direct, Path::Palisade] {
                if Instant::now() > self.deadline {
                    bail!("the whole run took longer than its time limit");
                }
                let s = self
                    .sample(kind, path, false)
                    .with_context(|| format!("{} run {rep} {path:?}", kind.name()))?;
                tracing::info!(
                    scenario = kind.name(),
                    ?path,
                    rep,
                    value = s.value,
                    fw_cpu = s.fw_cpu,
                    "run"
                );
                match path {
                    Path::Direct => direct.push(s),
                    Path::Palisade => palisade.push(s),
                }
            }
        }
        Ok(outcome(kind, &direct, &palisade))
    }

    fn sample(&self, kind: Kind, path: Path, warm_up: bool) -> Result<Sample> {
        let netns = match path {
            Path::Direct => self.bed.direct.netns.name(),
            Path::Palisade => self.bed.sandbox_netns(),
        };
        let since = SystemTime::now();
        let cpu0 = thread_cpu_secs(FW_THREAD)?;
        let (value, amount) = match kind {
            Kind::Bulk => {
                let secs = if warm_up { 1 } else { self.durations.bulk_secs };
                let gb = self.iperf(netns, secs)?;
                (gb.0 / gb.1, gb.0)
            }
            Kind::Conns | Kind::Tls => {
                let secs = if warm_up {
                    0.5
                } else {
                    self.durations.conn_secs
                };
                let r = self.conns(kind, netns, secs)?;
                (r.conns as f64 / r.secs, r.conns as f64)
            }
        };
        let fw_cpu = thread_cpu_secs(FW_THREAD)? - cpu0;
        if path == Path::Palisade {
            // Prove the traffic went through the proxy (events are written at close; give the
            // last tunnel a moment to finish).
            std::thread::sleep(Duration::from_millis(100));
            let p = self.bed.proxied_since(since);
            let ok = match kind {
                Kind::Bulk => p.bytes_up as f64 >= amount * 1e9 * 0.99,
                Kind::Conns | Kind::Tls => p.conns as f64 >= amount.min(9_000.0) * 0.99,
            };
            if !ok {
                bail!(
                    "the proxy recorded only {} connections / {} bytes up for this run",
                    p.conns,
                    p.bytes_up
                );
            }
        }
        Ok(Sample {
            value,
            fw_cpu,
            amount,
        })
    }

    /// One iperf3 run of `secs` from `netns`; returns (GB received, seconds).
    fn iperf(&self, netns: &str, secs: u32) -> Result<(f64, f64)> {
        let out = bounded(secs + 15)
            .args([
                "ip", "netns", "exec", netns, "taskset", "-c", CLIENT_CPU, "iperf3",
            ])
            .args([
                "-c",
                &addrs::TCP_V4.to_string(),
                "-p",
                &IPERF_PORT.to_string(),
            ])
            .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "3000"])
            .output()
            .context("running iperf3")?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "iperf3 output is not JSON (status {:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        if let Some(e) = json.get("error") {
            bail!("iperf3: {e}");
        }
        let recv = &json["end"]["sum_received"];
        let (Some(bytes), Some(seconds)) = (recv["bytes"].as_f64(), recv["seconds"].as_f64())
        else {
            bail!("iperf3 JSON lacks end.sum_received");
        };
        if seconds <= 0.0 || bytes <= 0.0 {
            bail!("iperf3 moved nothing");
        }
        Ok((bytes / 1e9, seconds))
    }

    /// One run of this binary's own connection client from `netns`.
    fn conns(&self, kind: Kind, netns: &str, secs: f64) -> Result<ClientReport> {
        let secs_arg = format!("{secs}");
        let mut cmd = bounded(secs as u32 + 15);
        cmd.args(["ip", "netns", "exec", netns, "taskset", "-c", CLIENT_CPU])
            .arg(&self.exe)
            .arg("client");
        match kind {
            Kind::Tls => {
                cmd.args(["tls", "--addr", &format!("{}:443", addrs::GOOD_V4)])
                    .args(["--name", "alpha.test", "--ca"])
                    .arg(self.bed.world.test_ca_path());
            }
            Kind::Conns | Kind::Bulk => {
                cmd.args(["conns", "--addr", &format!("{}:7", addrs::TCP_V4)]);
            }
        }
        let out = cmd
            .args(["--secs", &secs_arg, "--max", "50000"])
            .output()
            .context("running the connection client")?;
        if !out.status.success() {
            bail!(
                "connection client failed (status {:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report: ClientReport =
            serde_json::from_slice(&out.stdout).context("connection client output")?;
        if report.conns == 0 {
            bail!("connection client made no connection");
        }
        Ok(report)
    }
}

/// `timeout -s KILL <secs> …`: every child is killed if it overstays.
fn bounded(secs: u32) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", &secs.to_string()]);
    cmd.stdin(Stdio::null());
    cmd
}

fn outcome(kind: Kind, direct: &[Sample], palisade: &[Sample]) -> Outcome {
    let values = |s: &[Sample]| s.iter().map(|x| x.value).collect::<Vec<_>>();
    let (d, p) = (Summary::of(&values(direct)), Summary::of(&values(palisade)));
    let pair: Vec<f64> = direct
        .iter()
        .zip(palisade)
        .map(|(d, p)| p.value / d.value)
        .collect();
    let pair = Summary::of(&pair);
    let (cpu, cpu_unit, goal) = match kind {
        Kind::Bulk => (
            palisade
                .iter()
                .map(|s| s.fw_cpu / s.amount)
                .collect::<Vec<_>>(),
            "CPU-s/GB",
            ">= 0.9x direct, <= 0.4 CPU-s/GB",
        ),
        Kind::Conns => (
            palisade.iter().map(|s| s.fw_cpu * 1e6 / s.amount).collect(),
            "CPU-us/conn",
            ">= 0.8x direct",
        ),
        Kind::Tls => (
            palisade.iter().map(|s| s.fw_cpu * 1e6 / s.amount).collect(),
            "CPU-us/conn",
            ">= 0.8x direct, <= 50 us proxy CPU/conn",
        ),
    };
    Outcome {
        name: kind.name(),
        unit: match kind {
            Kind::Bulk => "GB/s",
            Kind::Conns | Kind::Tls => "conn/s",
        },
        goal,
        ratio: p.median / d.median,
        ratio_min: pair.min,
        ratio_max: pair.max,
        direct: d,
        palisade: p,
        proxy_cpu: Summary::of(&cpu),
        proxy_cpu_unit: cpu_unit,
    }
}

/// `iperf3 -s` in the internet namespace, on the TCP host's address; killed on drop.
#[derive(Debug)]
struct IperfServer {
    child: Child,
}

impl IperfServer {
    fn start(bed: &Bed) -> Result<IperfServer> {
        let child = bed
            .world
            .net
            .command("iperf3")
            .args([
                "-s",
                "-B",
                &addrs::TCP_V4.to_string(),
                "-p",
                &IPERF_PORT.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (apt-get install iperf3)")?;
        let server = IperfServer { child };
        // Wait (bounded) until it listens.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = bed
                .world
                .net
                .run("ss", ["-Htln", &format!("sport = :{IPERF_PORT}")])?;
            if !out.stdout.is_empty() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("iperf3 -s did not start listening");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
