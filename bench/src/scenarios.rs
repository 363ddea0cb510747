//! The tunnel scenarios: bulk TCP with 1 and 8 flows (iperf3), new plain TCP connections per
//! second, new TLS connections per second (ClientHello + SNI peek), and the round trip of a small
//! message through an open tunnel. Each runs on the direct path, through Palisade and through the
//! peers that apply (bench/src/scen_tunnel_peers.rs), interleaved, after a warm-up.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use palisade_testbed::addrs;
use serde::Serialize;

use crate::bed::{Bed, FW_THREAD};
use crate::clients::{ClientReport, RttReport};
use crate::measure::{Summary, thread_cpu_secs};
use crate::scen_tunnel_idle::IdleOutcome;
use crate::scen_tunnel_peers::{PeerRoute, PeerUse, Peers};

/// Where load generators run.
pub(crate) const CLIENT_CPU: &str = "1";
pub(crate) const IPERF_PORT: u16 = 5201;
/// The name the TLS clients send (the testbed's good host serves it).
pub(crate) const TLS_NAME: &str = "alpha.test";

/// The paths a scenario compares.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path {
    Direct,
    Palisade,
    Peer(PeerRoute),
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
    /// Firewall (or peer) CPU seconds during the run.
    fw_cpu: f64,
    /// GB moved, connections made, or round trips.
    amount: f64,
    /// The p99 of a round-trip run (µs).
    p99: f64,
}

/// A peer's column in a scenario.
#[derive(Debug, Serialize)]
pub(crate) struct PeerOutcome {
    pub(crate) name: &'static str,
    pub(crate) value: Summary,
    /// Peer median / direct median.
    pub(crate) ratio: f64,
    /// The peer's CPU per unit (same unit as the firewall's).
    pub(crate) cpu: Summary,
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
    /// The same runs through the peer proxies.
    pub(crate) peers: Vec<PeerOutcome>,
}

/// What a scenario measures.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Bulk,
    Bulk8,
    Conns,
    Tls,
    Rtt,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bulk => "1 bulk: one TCP flow, iperf3",
            Kind::Bulk8 => "1 bulk: 8 TCP flows, iperf3 -P 8",
            Kind::Conns => "3 new TCP connections/s (connect, 64 B echo, close)",
            Kind::Tls => "3 new TLS connections/s (full handshake with SNI, one GET)",
            Kind::Rtt => "2 round trip, 64 B echo on an open tunnel, p50",
        }
    }

    /// Which peers carry this scenario too.
    fn peers(self) -> &'static [PeerUse] {
        match self {
            Kind::Bulk => &[PeerUse::Bulk],
            Kind::Tls => &[PeerUse::TlsSni, PeerUse::TlsBlind],
            Kind::Bulk8 | Kind::Conns | Kind::Rtt => &[],
        }
    }
}

pub(crate) struct Runner<'a> {
    pub(crate) bed: &'a Bed,
    /// Peer proxies, when the run compares them.
    pub(crate) peers: Option<&'a Peers>,
    pub(crate) durations: Durations,
    pub(crate) exe: std::path::PathBuf,
    pub(crate) deadline: Instant,
}

impl Runner<'_> {
    /// Warm-up, then `reps` interleaved rounds (direct, Palisade, each peer, direct, …). A
    /// round-trip run reports two outcomes (p50 and p99).
    pub(crate) fn scenario(&self, kind: Kind) -> Result<Vec<Outcome>> {
        let _iperf = match kind {
            Kind::Bulk | Kind::Bulk8 => Some(IperfServer::start(self.bed)?),
            Kind::Conns | Kind::Tls | Kind::Rtt => None,
        };
        let mut paths = vec![Path::Direct, Path::Palisade];
        if let Some(peers) = self.peers {
            for what in kind.peers() {
                paths.extend(peers.routes(*what).into_iter().map(Path::Peer));
            }
        }
        for path in &paths {
            let s = self
                .sample(kind, *path, true)
                .with_context(|| format!("warm-up {}", label(*path)))?;
            tracing::info!(
                scenario = kind.name(),
                path = label(*path),
                amount = s.amount,
                "warm-up"
            );
        }
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); paths.len()];
        for rep in 0..self.durations.reps {
            for (i, path) in paths.iter().enumerate() {
                if Instant::now() > self.deadline {
                    bail!("the whole run took longer than its time limit");
                }
                let s = self
                    .sample(kind, *path, false)
                    .with_context(|| format!("{} run {rep} {}", kind.name(), label(*path)))?;
                tracing::info!(
                    scenario = kind.name(),
                    path = label(*path),
                    rep,
                    value = s.value,
                    amount = s.amount,
                    fw_cpu = s.fw_cpu,
                    "run"
                );
                samples[i].push(s);
            }
        }
        let mut out = vec![outcome(kind, &paths, &samples, false)];
        if matches!(kind, Kind::Rtt) {
            out.push(outcome(kind, &paths, &samples, true));
        }
        Ok(out)
    }

    fn sample(&self, kind: Kind, path: Path, warm_up: bool) -> Result<Sample> {
        let netns = match path {
            Path::Direct | Path::Peer(_) => self.bed.direct.netns.name(),
            Path::Palisade => self.bed.sandbox_netns(),
        };
        let cpu = || -> Result<f64> {
            match (path, self.peers) {
                (Path::Peer(route), Some(peers)) => peers.cpu_secs(route.proc),
                _ => thread_cpu_secs(FW_THREAD),
            }
        };
        let since = SystemTime::now();
        let cpu0 = cpu()?;
        let mut p99 = f64::NAN;
        let (value, amount) = match kind {
            Kind::Bulk | Kind::Bulk8 => {
                let secs = if warm_up { 1 } else { self.durations.bulk_secs };
                let flows = if matches!(kind, Kind::Bulk8) { 8 } else { 1 };
                let gb = self.iperf(netns, path, secs, flows)?;
                (gb.0 / gb.1, gb.0)
            }
            Kind::Conns | Kind::Tls => {
                let secs = if warm_up {
                    0.5
                } else {
                    self.durations.conn_secs
                };
                let r = self.conns(kind, netns, path, secs)?;
                (r.conns as f64 / r.secs, r.conns as f64)
            }
            Kind::Rtt => {
                let secs = if warm_up {
                    0.5
                } else {
                    self.durations.conn_secs
                };
                let r = self.rtt(netns, secs)?;
                p99 = r.p99_us;
                (r.p50_us, r.trips as f64)
            }
        };
        let fw_cpu = cpu()? - cpu0;
        if matches!(path, Path::Palisade) {
            // Prove the traffic went through the proxy (events are written at close; give the
            // last tunnel a moment to finish).
            std::thread::sleep(Duration::from_millis(100));
            let p = self.bed.proxied_since(since);
            let ok = match kind {
                Kind::Bulk | Kind::Bulk8 => p.bytes_up as f64 >= amount * 1e9 * 0.99,
                Kind::Conns | Kind::Tls => p.conns as f64 >= amount.min(9_000.0) * 0.99,
                Kind::Rtt => p.bytes_up as f64 >= amount * 64.0,
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
            p99,
        })
    }

    /// One client run of round trips on an open tunnel to the testbed's TCP echo host.
    fn rtt(&self, netns: &str, secs: f64) -> Result<RttReport> {
        let out = bounded(secs as u32 + 15)
            .args(["ip", "netns", "exec", netns, "taskset", "-c", CLIENT_CPU])
            .arg(&self.exe)
            .args(["client", "rtt", "--addr", &format!("{}:7", addrs::TCP_V4)])
            .args(["--secs", &format!("{secs}"), "--max", "200000"])
            .output()
            .context("running the round-trip client")?;
        if !out.status.success() {
            bail!(
                "round-trip client failed (status {:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("round-trip client output")
    }

    /// One iperf3 run of `secs` with `flows` parallel flows from `netns`; returns (GB received,
    /// seconds).
    pub(crate) fn iperf(
        &self,
        netns: &str,
        path: Path,
        secs: u32,
        flows: u32,
    ) -> Result<(f64, f64)> {
        let (host, port) = match path {
            Path::Peer(route) => (route.addr.ip().to_string(), route.addr.port()),
            Path::Direct | Path::Palisade => (addrs::TCP_V4.to_string(), IPERF_PORT),
        };
        let out = bounded(secs + 15)
            .args([
                "ip", "netns", "exec", netns, "taskset", "-c", CLIENT_CPU, "iperf3",
            ])
            .args(["-c", &host, "-p", &port.to_string()])
            .args(["-P", &flows.to_string()])
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
    fn conns(&self, kind: Kind, netns: &str, path: Path, secs: f64) -> Result<ClientReport> {
        let tls_addr = match path {
            Path::Peer(route) => route.addr.to_string(),
            Path::Direct | Path::Palisade => format!("{}:443", addrs::GOOD_V4),
        };
        let secs_arg = format!("{secs}");
        let mut cmd = bounded(secs as u32 + 15);
        cmd.args(["ip", "netns", "exec", netns, "taskset", "-c", CLIENT_CPU])
            .arg(&self.exe)
            .arg("client");
        match kind {
            Kind::Tls => {
                cmd.args(["tls", "--addr", &tls_addr])
                    .args(["--name", TLS_NAME, "--ca"])
                    .arg(self.bed.world.test_ca_path());
            }
            Kind::Conns | Kind::Bulk | Kind::Bulk8 | Kind::Rtt => {
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

/// Runs the tunnel scenarios `only` selects (`core`, `tunnel`, `idle`; none selected = all).
pub(crate) fn run_tunnel(
    bed: &Bed,
    durations: Durations,
    exe: std::path::PathBuf,
    deadline: Instant,
    only: &[String],
) -> Result<(Vec<Outcome>, Option<IdleOutcome>)> {
    let named = |name: &str| only.iter().any(|o| o == name || o == "all");
    let wants = |name: &str| only.is_empty() || named(name);
    // Single scenarios can be picked by kind too (`conns`, `tls`…), without peers unless
    // `peers` is named as well (the callgrind script runs `--only conns`).
    let peers = if wants("core") || named("peers") {
        Some(Peers::start(bed)?)
    } else {
        None
    };
    let runner = Runner {
        bed,
        peers: peers.as_ref(),
        durations,
        exe,
        deadline,
    };
    let kinds: Vec<Kind> = [
        (Kind::Bulk, "core", "bulk"),
        (Kind::Conns, "core", "conns"),
        (Kind::Tls, "core", "tls"),
        (Kind::Bulk8, "tunnel", "bulk8"),
        (Kind::Rtt, "tunnel", "rtt"),
    ]
    .into_iter()
    .filter(|(_, group, single)| wants(group) || named(single))
    .map(|(kind, _, _)| kind)
    .collect();
    let mut out = Vec::new();
    for kind in kinds {
        out.extend(runner.scenario(kind)?);
    }
    let idle = if wants("idle") {
        Some(runner.idle()?)
    } else {
        None
    };
    Ok((out, idle))
}

/// `timeout -s KILL <secs> …`: every child is killed if it overstays.
fn bounded(secs: u32) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", &secs.to_string()]);
    cmd.stdin(Stdio::null());
    cmd
}

fn label(path: Path) -> &'static str {
    match path {
        Path::Direct => "direct",
        Path::Palisade => "Palisade",
        Path::Peer(route) => route.label,
    }
}

/// The outcome of one scenario; `p99` picks the round trips' p99 instead of their p50.
fn outcome(kind: Kind, paths: &[Path], samples: &[Vec<Sample>], p99: bool) -> Outcome {
    let pick = |x: &Sample| if p99 { x.p99 } else { x.value };
    let values = |s: &[Sample]| s.iter().map(pick).collect::<Vec<_>>();
    let empty = Vec::new();
    let direct = samples.first().unwrap_or(&empty);
    let palisade = samples.get(1).unwrap_or(&empty);
    let (d, p) = (Summary::of(&values(direct)), Summary::of(&values(palisade)));
    let pair: Vec<f64> = direct
        .iter()
        .zip(palisade)
        .map(|(d, p)| pick(p) / pick(d))
        .collect();
    let pair = Summary::of(&pair);
    let per_unit = |s: &[Sample]| -> Vec<f64> {
        match kind {
            Kind::Bulk | Kind::Bulk8 => s.iter().map(|x| x.fw_cpu / x.amount).collect(),
            Kind::Conns | Kind::Tls | Kind::Rtt => {
                s.iter().map(|x| x.fw_cpu * 1e6 / x.amount).collect()
            }
        }
    };
    let (cpu_unit, goal, unit) = match kind {
        Kind::Bulk | Kind::Bulk8 => ("CPU-s/GB", ">= 0.9x direct, <= 0.4 CPU-s/GB", "GB/s"),
        Kind::Conns => ("CPU-us/conn", ">= 0.8x direct", "conn/s"),
        Kind::Tls => (
            "CPU-us/conn",
            ">= 0.8x direct, <= 50 us proxy CPU/conn",
            "conn/s",
        ),
        Kind::Rtt => ("CPU-us/trip", "<= +20 us at p50", "us"),
    };
    let peers = paths
        .iter()
        .zip(samples)
        .filter_map(|(path, s)| match path {
            Path::Peer(route) => {
                let v = Summary::of(&values(s));
                Some(PeerOutcome {
                    name: route.label,
                    ratio: v.median / d.median,
                    value: v,
                    cpu: Summary::of(&per_unit(s)),
                })
            }
            Path::Direct | Path::Palisade => None,
        })
        .collect();
    Outcome {
        name: if p99 {
            "2 round trip, 64 B echo on an open tunnel, p99"
        } else {
            kind.name()
        },
        unit,
        goal: if p99 { "(p99 reported)" } else { goal },
        ratio: p.median / d.median,
        ratio_min: pair.min,
        ratio_max: pair.max,
        direct: d,
        palisade: p,
        proxy_cpu: Summary::of(&per_unit(palisade)),
        proxy_cpu_unit: cpu_unit,
        peers,
    }
}

/// `iperf3 -s` in the internet namespace, on the TCP host's address; killed on drop.
#[derive(Debug)]
pub(crate) struct IperfServer {
    child: Child,
}

impl IperfServer {
    pub(crate) fn start(bed: &Bed) -> Result<IperfServer> {
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
