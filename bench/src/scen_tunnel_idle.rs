//! Scenario 8 for tunnels: memory per idle connection at 1k, 5k and 9.5k open tunnels (below
//! the 20,000 open-files limit: each tunnel holds two descriptors in the firewall), idle CPU,
//! and one bulk flow beside the 9,500.
//!
//! An echo server in its own process in the internet namespace takes the connections (its
//! sockets must not count against the firewall's process); idle clients in the client
//! namespaces open them in steps and hold them. Memory is the firewall process's RSS growth over
//! a baseline taken before the first step, and the kernel's slab growth (/proc/meminfo, whole
//! machine) over the same baseline, for the direct path and through Palisade.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use palisade_testbed::addrs;
use serde::Serialize;

use crate::bed::FW_THREAD;
use crate::measure::thread_cpu_secs;
use crate::scenarios::{CLIENT_CPU, Runner};

const ECHO_PORT: u16 = 9007;
/// The open-files limit the firewall process and the clients raise themselves to.
const NOFILE: &str = "--nofile=20000:20000";
/// Steps of open connections (cumulative).
pub(crate) const LEVELS: [usize; 3] = [1_000, 5_000, 9_500];
/// How long idle CPU is measured.
const IDLE_SECS: u64 = 5;

/// One level's measurements.
#[derive(Debug, Serialize)]
pub(crate) struct IdleLevel {
    pub(crate) conns: usize,
    /// Firewall RSS growth per tunnel (KiB).
    pub(crate) rss_kib_per_conn: f64,
    /// Kernel slab growth per connection through Palisade and direct (KiB, whole machine).
    pub(crate) slab_kib_per_conn: f64,
    pub(crate) slab_kib_per_conn_direct: f64,
    /// Firewall CPU while the tunnels sit idle (% of one core).
    pub(crate) idle_cpu_pct: f64,
    /// GB/s of one bulk flow through Palisade beside the open tunnels (last level only).
    pub(crate) bulk_beside: Option<f64>,
}

/// The scenario's outcome: the levels, and the bulk flow beside the last one against the same
/// flow through Palisade with no tunnels open, measured just before.
#[derive(Debug, Serialize)]
pub(crate) struct IdleOutcome {
    pub(crate) levels: Vec<IdleLevel>,
    pub(crate) bulk_alone: Option<f64>,
    pub(crate) bulk_ratio: Option<f64>,
    pub(crate) goal: &'static str,
}

impl Runner<'_> {
    /// Runs scenario 8. The bulk flow beside the open tunnels is compared with the same flow
    /// through Palisade just before they open (this machine's load moves too much between
    /// scenarios for scenario 1's number to be the reference).
    pub(crate) fn idle(&self) -> Result<IdleOutcome> {
        raise_own_nofile()?;
        let _echo = EchoServer::start(self)?;
        let bulk_alone = Some(self.bulk_beside(self.bed.sandbox_netns())?);
        let direct = self.levels(self.bed.direct.netns.name(), false)?;
        let palisade = self.levels(self.bed.sandbox_netns(), true)?;
        let levels: Vec<IdleLevel> = palisade
            .into_iter()
            .zip(direct)
            .map(|(mut p, d)| {
                p.slab_kib_per_conn_direct = d.slab_kib_per_conn;
                p
            })
            .collect();
        let beside = levels.last().and_then(|l| l.bulk_beside);
        Ok(IdleOutcome {
            bulk_ratio: beside.zip(bulk_alone).map(|(b, a)| b / a),
            bulk_alone,
            levels,
            goal: "<= 8 KiB/tunnel, idle CPU < 1%, bulk beside 9,500 >= 0.95x scenario 1",
        })
    }

    fn levels(&self, netns: &str, palisade: bool) -> Result<Vec<IdleLevel>> {
        let rss0 = rss_kib()?;
        let slab0 = slab_kib()?;
        let mut holders = Vec::new();
        let mut out = Vec::new();
        let mut open = 0;
        for level in LEVELS {
            if Instant::now() > self.deadline {
                bail!("the whole run took longer than its time limit");
            }
            holders.push(Holder::start(self, netns, level - open)?);
            open = level;
            // Let the last tunnels settle (events, task states) before reading memory.
            std::thread::sleep(Duration::from_millis(500));
            let rss = rss_kib()? - rss0;
            let slab = slab_kib()? - slab0;
            let cpu0 = thread_cpu_secs(FW_THREAD)?;
            if palisade {
                std::thread::sleep(Duration::from_secs(IDLE_SECS));
            }
            let idle_cpu = (thread_cpu_secs(FW_THREAD)? - cpu0) * 100.0 / IDLE_SECS as f64;
            let bulk_beside = if palisade && level == LEVELS[LEVELS.len() - 1] {
                Some(self.bulk_beside(netns)?)
            } else {
                None
            };
            tracing::info!(level, palisade, rss, slab, idle_cpu, ?bulk_beside, "idle");
            out.push(IdleLevel {
                conns: level,
                rss_kib_per_conn: rss / level as f64,
                slab_kib_per_conn: slab / level as f64,
                slab_kib_per_conn_direct: f64::NAN,
                idle_cpu_pct: if palisade { idle_cpu } else { f64::NAN },
                bulk_beside,
            });
        }
        drop(holders);
        if palisade {
            self.wait_tunnels_closed()?;
        }
        Ok(out)
    }

    fn bulk_beside(&self, netns: &str) -> Result<f64> {
        let _iperf = crate::scenarios::IperfServer::start(self.bed)?;
        let (gb, secs) = self.iperf(
            netns,
            crate::scenarios::Path::Palisade,
            self.durations.bulk_secs,
            1,
        )?;
        Ok(gb / secs)
    }

    fn wait_tunnels_closed(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let id = &self.bed.sandbox.net.id;
        while let Some(entry) = self.bed.firewall().registry().by_id(id) {
            if entry.open_connections() == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} tunnels still open", entry.open_connections());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

/// An idle client holding connections; closing its stdin (drop) ends it.
#[derive(Debug)]
struct Holder {
    child: Child,
}

impl Holder {
    fn start(runner: &Runner<'_>, netns: &str, count: usize) -> Result<Holder> {
        let mut child = std::process::Command::new("timeout")
            .args(["-s", "KILL", "240", "ip", "netns", "exec", netns])
            .args(["prlimit", NOFILE, "taskset", "-c", CLIENT_CPU])
            .arg(&runner.exe)
            .args(["client", "idle", "--addr"])
            .arg(format!("{}:{ECHO_PORT}", addrs::TCP_V4))
            .args(["--count", &count.to_string(), "--hold-secs", "200"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the idle client")?;
        let stdout = child.stdout.take().context("idle client stdout")?;
        let holder = Holder { child };
        let line = first_line(stdout)?;
        if !line.starts_with("ready") {
            bail!("idle client did not get its connections: {line:?}");
        }
        Ok(holder)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The echo server process in the internet namespace; killed on drop.
#[derive(Debug)]
struct EchoServer {
    child: Child,
}

impl EchoServer {
    fn start(runner: &Runner<'_>) -> Result<EchoServer> {
        let mut child = runner
            .bed
            .world
            .net
            .command("prlimit")
            .args([NOFILE, "timeout", "-s", "KILL", "600"])
            .arg(&runner.exe)
            .args(["client", "echo-server", "--listen"])
            .arg(format!("{}:{ECHO_PORT}", addrs::TCP_V4))
            .args(["--secs", "590"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the echo server")?;
        let stdout = child.stdout.take().context("echo server stdout")?;
        let server = EchoServer { child };
        let line = first_line(stdout)?;
        if line != "listening" {
            bail!("echo server did not start: {line:?}");
        }
        Ok(server)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line a child prints (its own timeouts bound the wait).
fn first_line(stdout: ChildStdout) -> Result<String> {
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading a child's first line")?;
    Ok(line.trim().to_owned())
}

/// The firewall lives in this process: let it hold 2 × 9,500 sockets.
fn raise_own_nofile() -> Result<()> {
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), NOFILE])
        .output()
        .context("running prlimit")?;
    if !out.status.success() {
        bail!(
            "prlimit failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn rss_kib() -> Result<f64> {
    field_kib("/proc/self/status", "VmRSS:")
}

fn slab_kib() -> Result<f64> {
    field_kib("/proc/meminfo", "Slab:")
}

fn field_kib(path: &str, key: &str) -> Result<f64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("{key} not in {path}"))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .with_context(|| format!("parsing {key} in {path}"))
}
