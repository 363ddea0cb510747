//! The proxies a user would pick instead of Palisade for tunnels (issue 7, scenarios 1 and 3):
//! HAProxy (mode tcp with splice, and with an SNI peek) and nginx stream (`ssl_preread`). Each
//! runs in the testbed's `fw` namespace, pinned to the firewall's CPU with one thread, from a
//! template in bench/peers/<name>/, as an explicit proxy with fixed upstreams: clients in the
//! `direct` namespace dial the gateway address on the peer's port, so bytes take the same veths
//! and hops as through Palisade. Squid peek+splice is not run here (its intercept port needs the
//! original destination of a transparent redirect): it is scenario 3b, bench/src/scen/splice.rs,
//! on the interception bed's nftables redirect (`--only splice`).

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use palisade_testbed::addrs;

use crate::bed::Bed;

const HAPROXY_CFG: &str = include_str!("../peers/haproxy-tunnel/haproxy.cfg");
const NGINX_CONF: &str = include_str!("../peers/nginx-stream/nginx.conf");

/// Ports are `base + 1` (bulk), `+ 2` (TLS, no peek), `+ 3` (TLS, SNI); a base per process.
const HAPROXY_BASE: u16 = 16_100;
const NGINX_BASE: u16 = 16_200;
const PORT_BULK: u16 = 1;
const PORT_TLS_TCP: u16 = 2;
const PORT_TLS_SNI: u16 = 3;

/// What a peer is asked to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerUse {
    /// iperf3 bulk (plain TCP relay).
    Bulk,
    /// New TLS connections relayed without looking at them.
    TlsBlind,
    /// New TLS connections decided on the SNI.
    TlsSni,
}

/// One peer configuration as a column of the report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerRoute {
    pub(crate) label: &'static str,
    /// Index into [`Peers::procs`].
    pub(crate) proc: usize,
    pub(crate) addr: SocketAddrV4,
}

/// The running peer processes; killed and their files removed on drop.
#[derive(Debug)]
pub(crate) struct Peers {
    procs: Vec<Child>,
    dir: PathBuf,
    gateway: std::net::Ipv4Addr,
}

impl Peers {
    pub(crate) fn start(bed: &Bed) -> Result<Peers> {
        let dir = std::env::temp_dir().join(format!("palisade-bench-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut peers = Peers {
            procs: Vec::new(),
            dir,
            gateway: bed.direct.gateway,
        };
        let haproxy = peers.render("haproxy.cfg", HAPROXY_CFG, HAPROXY_BASE)?;
        let nginx = peers.render("nginx.conf", NGINX_CONF, NGINX_BASE)?;
        let dir = peers.dir.display().to_string();
        let mut spawn = |program: &str, args: &[&str]| -> Result<()> {
            let child = bed
                .world
                .fw
                .command("taskset")
                .args(["-c", bed.fw_cpu_list().as_str(), program])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(
                    peers.dir.join(format!("{program}.err")),
                )?)
                .spawn()
                .with_context(|| format!("starting {program} (make bench-deps installs it)"))?;
            peers.procs.push(child);
            Ok(())
        };
        spawn("haproxy", &["-db", "-f", &haproxy])?;
        spawn("nginx", &["-p", &dir, "-c", &nginx])?;
        peers.wait_listening(bed)?;
        Ok(peers)
    }

    /// The routes each scenario compares, in report order.
    pub(crate) fn routes(&self, what: PeerUse) -> Vec<PeerRoute> {
        let at = |base: u16, port: u16| SocketAddrV4::new(self.gateway, base + port);
        match what {
            PeerUse::Bulk => vec![
                PeerRoute {
                    label: "HAProxy tcp+splice",
                    proc: 0,
                    addr: at(HAPROXY_BASE, PORT_BULK),
                },
                PeerRoute {
                    label: "nginx stream",
                    proc: 1,
                    addr: at(NGINX_BASE, PORT_BULK),
                },
            ],
            PeerUse::TlsBlind => vec![PeerRoute {
                label: "HAProxy tcp (no peek)",
                proc: 0,
                addr: at(HAPROXY_BASE, PORT_TLS_TCP),
            }],
            PeerUse::TlsSni => vec![
                PeerRoute {
                    label: "HAProxy req.ssl_sni",
                    proc: 0,
                    addr: at(HAPROXY_BASE, PORT_TLS_SNI),
                },
                PeerRoute {
                    label: "nginx ssl_preread",
                    proc: 1,
                    addr: at(NGINX_BASE, PORT_TLS_SNI),
                },
            ],
        }
    }

    /// CPU seconds (user + system, all threads) of a peer process so far.
    pub(crate) fn cpu_secs(&self, proc: usize) -> Result<f64> {
        let child = self.procs.get(proc).context("no such peer")?;
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
            .context("reading a peer's /proc stat (did it exit?)")?;
        crate::measure::stat_cpu_secs(&stat)
    }

    fn render(&self, file: &str, template: &str, base: u16) -> Result<String> {
        let text = template
            .replace("{{BIND}}", &self.gateway.to_string())
            .replace("{{PORT_BULK}}", &(base + PORT_BULK).to_string())
            .replace("{{PORT_TLS_TCP}}", &(base + PORT_TLS_TCP).to_string())
            .replace("{{PORT_TLS_SNI}}", &(base + PORT_TLS_SNI).to_string())
            .replace("{{TCP_HOST}}", &addrs::TCP_V4.to_string())
            .replace("{{IPERF_PORT}}", &crate::scenarios::IPERF_PORT.to_string())
            .replace("{{GOOD_HOST}}", &addrs::GOOD_V4.to_string())
            .replace("{{GOOD_NAME}}", crate::scenarios::TLS_NAME)
            .replace("{{MODULES}}", "/usr/lib/nginx/modules")
            .replace("{{DIR}}", &self.dir.display().to_string());
        if let Some(at) = text.find("{{") {
            bail!("{file}: unfilled placeholder at byte {at}");
        }
        let path = self.dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path.display().to_string())
    }

    /// Waits (bounded) until every peer port listens in `fw`, and every peer is still running.
    fn wait_listening(&mut self, bed: &Bed) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for (child, program) in self.procs.iter_mut().zip(["haproxy", "nginx"]) {
                if let Some(status) = child.try_wait()? {
                    let err = std::fs::read_to_string(self.dir.join(format!("{program}.err")))
                        .unwrap_or_default();
                    bail!("{program} exited at start ({status}): {}", err.trim());
                }
            }
            let out = bed.world.fw.run("ss", ["-Htln"])?;
            let text = String::from_utf8_lossy(&out.stdout);
            let listening = |port: u16| text.contains(&format!("{}:{port} ", self.gateway));
            let wanted = [
                HAPROXY_BASE + PORT_BULK,
                HAPROXY_BASE + PORT_TLS_TCP,
                HAPROXY_BASE + PORT_TLS_SNI,
                NGINX_BASE + PORT_BULK,
                NGINX_BASE + PORT_TLS_SNI,
            ];
            if wanted.into_iter().all(listening) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("peer proxies did not start listening: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        for child in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
