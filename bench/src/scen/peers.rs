//! The proxies Palisade is compared with, started in `fw` from the configs in bench/peers/,
//! pinned to the proxy CPU like the firewall's runtime, and killed on drop.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use palisade_testbed::addrs;

use super::bed::{HOST, IBed, PROXY_CPU, SECRET};
use super::load::{proc_cpu_secs, proc_rss_mib};

const HAPROXY: &str = include_str!("../../peers/haproxy-tls/haproxy.cfg");
const SQUID: &str = include_str!("../../peers/squid-bump/squid.conf");
const MITM_ADDON: &str = include_str!("../../peers/mitmproxy/inject.py");
const UNBOUND: &str = include_str!("../../peers/unbound/unbound.conf");
const MITMDUMP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv-bench/bin/mitmdump");

/// A running peer proxy.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    child: Child,
}

impl Peer {
    pub(crate) fn cpu_secs(&self) -> Result<f64> {
        proc_cpu_secs(self.child.id())
    }

    pub(crate) fn rss_mib(&self) -> Option<f64> {
        proc_rss_mib(self.child.id())
    }

    /// Fails if the peer has exited (a crashed peer must not be measured as a fast one).
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status})", self.name);
        }
        Ok(())
    }

    fn start(
        bed: &IBed,
        name: &'static str,
        port: u16,
        udp: bool,
        argv: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Peer> {
        let log = std::fs::File::create(bed.path(&format!("{name}.log")))?;
        let child = bed
            .world
            .fw
            .command("taskset")
            .args(["-c", &PROXY_CPU.to_string()])
            .args(argv)
            .envs(envs.iter().copied())
            .current_dir(bed.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name} (make bench-deps installs it)"))?;
        let mut peer = Peer { name, port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        let (flag, proto) = if udp {
            ("-Huln", "udp")
        } else {
            ("-Htln", "tcp")
        };
        loop {
            let out = bed
                .world
                .fw
                .run("ss", [flag, &format!("sport = :{port}")])?;
            if !out.stdout.is_empty() {
                return Ok(peer);
            }
            if let Err(e) = peer.check_alive() {
                let log =
                    std::fs::read_to_string(bed.path(&format!("{name}.log"))).unwrap_or_default();
                bail!("{e}: {}", tail(&log));
            }
            if Instant::now() > deadline {
                bail!("{name} did not listen on {proto} port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

fn render(template: &str, bed: &IBed, port: u16) -> String {
    template
        .replace("{{DIR}}", &bed.dir.path().display().to_string())
        .replace("{{PORT}}", &port.to_string())
        .replace("{{PORT2}}", &(port + 1).to_string())
        .replace("{{SECRET}}", SECRET)
        .replace("{{HOST}}", HOST)
        .replace("{{UPSTREAM}}", &addrs::GOOD_V4.to_string())
        .replace("{{DNS}}", &addrs::DNS_V4.to_string())
}

fn write(bed: &IBed, file: &str, text: &str) -> Result<String> {
    let p = bed.path(file);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p.display().to_string())
}

/// HAProxy terminating TLS with `http-request set-header`.
pub(crate) fn haproxy(bed: &IBed) -> Result<Peer> {
    let port = 18443;
    let cfg = write(bed, "haproxy.cfg", &render(HAPROXY, bed, port))?;
    Peer::start(
        bed,
        "haproxy",
        port,
        false,
        &["haproxy", "-db", "-f", &cfg],
        &[],
    )
}

/// Squid ssl-bump (`bump all`) with `request_header_add`, transparent.
pub(crate) fn squid(bed: &IBed) -> Result<Peer> {
    let port = 18444;
    let dir = bed.path("squid");
    std::fs::create_dir_all(&dir)?;
    chown_proxy(&dir)?;
    let cfg = write(bed, "squid.conf", &render(SQUID, bed, port))?;
    Peer::start(bed, "squid", port, false, &["squid", "-N", "-f", &cfg], &[])
}

fn chown_proxy(dir: &Path) -> Result<()> {
    let out = std::process::Command::new("chown")
        .args(["-R", "proxy:proxy"])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "chown proxy {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// mitmdump, transparent mode, a one-line addon setting the header.
pub(crate) fn mitmproxy(bed: &IBed) -> Result<Peer> {
    let port = 18446;
    let addon = write(bed, "inject.py", MITM_ADDON)?;
    let confdir = bed.path("mitm");
    std::fs::create_dir_all(&confdir)?;
    let certs = format!("*={}", bed.path("leaf.pem").display());
    let upstream_ca = format!(
        "ssl_verify_upstream_trusted_ca={}",
        bed.path("upstream-ca.pem").display()
    );
    let confdir = format!("confdir={}", confdir.display());
    Peer::start(
        bed,
        "mitmproxy",
        port,
        false,
        &[
            MITMDUMP,
            "-q",
            "--mode",
            "transparent",
            "--listen-port",
            &port.to_string(),
            "--certs",
            &certs,
            "--set",
            &upstream_ca,
            "--set",
            &confdir,
            "-s",
            &addon,
        ],
        &[("BENCH_SECRET", SECRET)],
    )
}

/// Unbound allowing exactly `allow` (forwarded to the testbed DNS, cached), NXDOMAIN else.
pub(crate) fn unbound(bed: &IBed, allow: &[&str]) -> Result<Peer> {
    let port = 18453;
    let zones: String = allow
        .iter()
        .map(|n| format!("    local-zone: \"{n}.\" transparent\n"))
        .collect();
    let cfg = write(
        bed,
        "unbound.conf",
        &render(UNBOUND, bed, port).replace("{{ALLOW}}", zones.trim_end()),
    )?;
    Peer::start(
        bed,
        "unbound",
        port,
        true,
        &["unbound", "-d", "-c", &cfg],
        &[],
    )
}
