//! Scenario 3b of issue 7: new TLS connections decided on the SNI and relayed untouched, with
//! Squid peek + splice in the comparison. Squid's intercept port needs the original destination
//! of a transparent redirect, so unlike the explicit tunnel peers (scen_tunnel_peers.rs) it runs
//! on the interception bed: the nftables redirect in `fw` sends the direct namespace's port 443
//! to it. Palisade's row is the bed's sandbox fetching alpha.test, a domain its policy allows
//! without a transform, so Palisade peeks at the SNI and tunnels. Every client is wrk with
//! `Connection: close` (a TCP + full TLS handshake + one GET per connection) on CPU 1.
//!
//! Before any load each path is checked: alpha.test verifies against the testbed CA alone (the
//! upstream's own certificate, so nothing was bumped), and through Squid a name off its
//! allowlist (api.example.test) is refused, which proves Squid is in the path and deciding.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use palisade_testbed::addrs;

use super::bed::{FW_THREAD, HOST, IBed, PROXY_CPU};
use super::load::{curl, proc_cpu_secs, proc_rss_mib, wrk};
use super::{Comparison, Sample, interleave, rows};
use crate::measure::thread_cpu_secs;

const SQUID: &str = include_str!("../../peers/squid-splice/squid.conf");
/// The name every client fetches: allowed by the sandbox policy (no transform) and by Squid.
const NAME: &str = "alpha.test";
/// Squid's intercept port (and `PORT + 1` its mandatory plain http_port on loopback).
const PORT: u16 = 18_450;
const SECS: u32 = 3;
const CONNS: u32 = 8;

/// Squid peek + splice in `fw`, killed on drop.
#[derive(Debug)]
struct Squid {
    child: Child,
}

impl Squid {
    fn start(bed: &IBed) -> Result<Squid> {
        let dir = bed.path("squid-splice");
        std::fs::create_dir_all(&dir)?;
        let out = std::process::Command::new("chown")
            .args(["-R", "proxy:proxy"])
            .arg(&dir)
            .output()
            .context("running chown")?;
        if !out.status.success() {
            bail!(
                "chown proxy {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let conf = SQUID
            .replace("{{DIR}}", &bed.dir.path().display().to_string())
            .replace("{{PORT}}", &PORT.to_string())
            .replace("{{PORT2}}", &(PORT + 1).to_string())
            .replace("{{ALLOW}}", NAME)
            .replace("{{DNS}}", &addrs::DNS_V4.to_string());
        let cfg = bed.path("squid-splice.conf");
        std::fs::write(&cfg, conf).with_context(|| format!("writing {}", cfg.display()))?;
        let log_path = bed.path("squid-splice.log");
        let log = std::fs::File::create(&log_path)?;
        let child = bed
            .world
            .fw
            .command("taskset")
            .args(["-c", &PROXY_CPU.to_string(), "squid", "-N", "-f"])
            .arg(&cfg)
            .current_dir(bed.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting squid (make bench-deps installs squid-openssl)")?;
        let mut squid = Squid { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = bed
                .world
                .fw
                .run("ss", ["-Htln", &format!("sport = :{PORT}")])?;
            if !out.stdout.is_empty() {
                return Ok(squid);
            }
            if let Err(e) = squid.check_alive() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let cache = std::fs::read_to_string(dir.join("cache.log")).unwrap_or_default();
                bail!("{e}: {} | {}", tail(&log), tail(&cache));
            }
            if Instant::now() > deadline {
                bail!("squid did not listen on tcp port {PORT} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("squid peek+splice exited ({status})");
        }
        Ok(())
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Palisade,
    Squid,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct TLS (no proxy)",
            Path::Palisade => "Palisade (SNI allowlist, no transform: peek + tunnel, transparent)",
            Path::Squid => {
                "Squid 5.7 peek + splice, ssl::server_name allowlist (transparent, nft redirect)"
            }
        }
    }

    fn netns(self, bed: &IBed) -> &str {
        match self {
            Path::Palisade => bed.sandbox_netns(),
            Path::Direct | Path::Squid => bed.direct.netns.name(),
        }
    }

    /// Points the redirect at Squid for its row, nowhere otherwise.
    fn route(self, bed: &IBed, squid: &mut Squid) -> Result<()> {
        match self {
            Path::Squid => {
                squid.check_alive()?;
                bed.redirect_https(Some(PORT))
            }
            Path::Direct | Path::Palisade => bed.redirect_https(None),
        }
    }

    fn cpu(self, squid: &Squid) -> Result<Option<f64>> {
        Ok(match self {
            Path::Direct => None,
            Path::Palisade => Some(thread_cpu_secs(FW_THREAD)?),
            Path::Squid => Some(proc_cpu_secs(squid.child.id())?),
        })
    }
}

/// One fetch of `name` on `path`, trusting the testbed CA only.
fn fetch(bed: &IBed, squid: &mut Squid, path: Path, name: &str) -> Result<String> {
    path.route(bed, squid)?;
    let ca = bed.path("upstream-ca.pem").display().to_string();
    curl(
        path.netns(bed),
        &format!("https://{name}/"),
        &ca,
        &["--http1.1"],
    )
}

/// Proves each path before load (see the module doc).
fn check(bed: &IBed, squid: &mut Squid) -> Result<Vec<String>> {
    for path in [Path::Direct, Path::Palisade, Path::Squid] {
        fetch(bed, squid, path, NAME).with_context(|| {
            format!(
                "{}: https://{NAME}/ with only the testbed CA trusted (was it bumped?)",
                path.name()
            )
        })?;
    }
    if fetch(bed, squid, Path::Squid, HOST).is_ok() {
        bail!(
            "Squid relayed {HOST}, which is off its allowlist: it is not deciding (or not in the path)"
        );
    }
    Ok(vec![
        format!(
            "checked before load: on every path https://{NAME}/ verifies with only the testbed \
             CA trusted (the upstream's own certificate: spliced/tunnelled, not bumped); through \
             Squid https://{HOST}/ (off its allowlist) is refused"
        ),
        format!(
            "client: wrk -t1 -c{CONNS} -H 'Connection: close' https://{NAME}/ on CPU 1 (TCP + \
             full TLS handshake + one GET per connection), {SECS} s per run, interleaved after a \
             1 s warm-up each; Palisade's runtime ({} worker(s)) and Squid (-N, one worker) \
             pinned to CPU 0; the upstream is the testbed's in-process HTTPS server, unpinned",
            bed.workers
        ),
    ])
}

pub(crate) fn run(bed: &IBed, reps: usize, deadline: Instant) -> Result<Vec<Comparison>> {
    let mut squid = Squid::start(bed)?;
    let result = measure(bed, &mut squid, reps, deadline);
    bed.redirect_https(None)?;
    result
}

fn measure(
    bed: &IBed,
    squid: &mut Squid,
    reps: usize,
    deadline: Instant,
) -> Result<Vec<Comparison>> {
    let mut notes = check(bed, squid)?;
    let paths = [Path::Direct, Path::Palisade, Path::Squid];
    let url = format!("https://{NAME}/");
    let samples = interleave(paths.len(), reps, deadline, |i, warm| {
        let path = paths[i];
        path.route(bed, squid)?;
        let cpu0 = path.cpu(squid)?;
        let w = wrk(
            path.netns(bed),
            &url,
            CONNS,
            if warm { 1 } else { SECS },
            true,
        )
        .with_context(|| path.name())?;
        let cpu = match (cpu0, path.cpu(squid)?) {
            (Some(a), Some(b)) => Some((b - a) * 1e6 / w.requests),
            _ => None,
        };
        tracing::info!(config = path.name(), cps = w.rps, ?cpu, "sni peek + splice");
        Ok(Sample {
            value: w.rps,
            cpu,
            rss_mib: (path == Path::Squid)
                .then(|| proc_rss_mib(squid.child.id()))
                .flatten(),
        })
    })?;
    squid.check_alive()?;
    let names: Vec<String> = paths.iter().map(|p| p.name().to_owned()).collect();
    let rows = rows(&names, &samples, "CPU-µs/conn");
    if let (Some(p), Some(s)) = (rows.get(1), rows.get(2)) {
        notes.push(format!(
            "Palisade / Squid peek+splice: {:.2}× the connections/s",
            p.value.median / s.value.median
        ));
    }
    Ok(vec![Comparison {
        scenario: "3b. new TLS connections/s, SNI peek + splice, transparent".into(),
        unit: "conn/s".into(),
        goal: ">= 0.8x direct connections/s, <= 50 µs proxy CPU per connection".into(),
        rows,
        notes,
    }])
}
