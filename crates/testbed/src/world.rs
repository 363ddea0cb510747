//! The world: namespaces, the uplink between them, the test CA, the servers, teardown.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::runtime::Runtime;

use crate::addrs::*;
use crate::ca::TestCa;
use crate::dns::DnsZone;
use crate::log::{LogEntry, ServerLog};
use crate::netns::{Netns, ip};
use crate::servers;

/// Most sandbox-like namespaces per world (/30s in 100.96.250.0/24).
const MAX_SANDBOX_LIKE: u8 = 64;

/// The test world. Dropping it stops the servers and deletes both namespaces (and with them
/// every veth into them), also during a panic's unwinding.
#[derive(Debug)]
pub struct World {
    runtime: Option<Runtime>,
    /// The firewall host namespace: one veth to `net`, default routes through it, forwarding on.
    pub fw: Netns,
    /// "The internet": every upstream server lives here.
    pub net: Netns,
    dns: DnsZone,
    log: ServerLog,
    ca: Arc<TestCa>,
    ca_pem: String,
    ca_path: PathBuf,
    _ca_dir: tempfile::TempDir,
    sandboxes: AtomicU8,
}

/// Where [`World::build`] can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Linked,
    Serving,
}

/// A namespace joined to `fw` by a veth, addressed like a sandbox (no firewall rules: that is
/// the product's job). Dropping it deletes the namespace and the veth pair.
#[derive(Debug)]
pub struct SandboxLike {
    /// The namespace; run clients with `netns.command(..)`.
    pub netns: Netns,
    /// The sandbox's address (inside `netns`, on `eth0`).
    pub addr: Ipv4Addr,
    /// The host side's address in `fw`, the sandbox's default gateway.
    pub gateway: Ipv4Addr,
    /// The host side interface's name inside `fw`.
    pub host_if: String,
}

impl World {
    /// Builds the namespaces, the uplink, the CA and every server. On error everything made so
    /// far is removed again.
    pub fn new() -> Result<World> {
        Self::build(None, &mut Vec::new())
    }

    /// Builds the world; `fault` makes it fail on purpose at one stage (for the test that proves
    /// a half-built world cleans up). Names of namespaces made are pushed to `made`.
    fn build(fault: Option<Stage>, made: &mut Vec<String>) -> Result<World> {
        let fw = Netns::new("f")?;
        made.push(fw.name().to_owned());
        let net = Netns::new("n")?;
        made.push(net.name().to_owned());
        link(&fw, &net).context("wiring fw <-> net")?;
        if fault == Some(Stage::Linked) {
            bail!("injected fault after linking");
        }

        let ca = Arc::new(TestCa::new().context("creating test CA")?);
        let ca_pem = ca.pem();
        let ca_dir = tempfile::Builder::new()
            .prefix("palisade-testbed-")
            .tempdir()?;
        let ca_path = ca_dir.path().join("test-ca.pem");
        std::fs::write(&ca_path, &ca_pem).context("writing test CA")?;

        let dns = DnsZone::new();
        default_zone(&dns);
        let log = ServerLog::new();
        let runtime = net.runtime()?;
        let world = World {
            runtime: Some(runtime),
            fw,
            net,
            dns,
            log,
            ca,
            ca_pem,
            ca_path,
            _ca_dir: ca_dir,
            sandboxes: AtomicU8::new(0),
        };
        // From here on, dropping `world` on error also stops the runtime first.
        if let Some(rt) = &world.runtime {
            servers::start(rt, &world.ca, &world.dns, &world.log)?;
        }
        if fault == Some(Stage::Serving) {
            bail!("injected fault after starting servers");
        }
        Ok(world)
    }

    /// The `test.` zone the DNS server answers from.
    pub fn dns(&self) -> &DnsZone {
        &self.dns
    }

    /// The log every server writes to.
    pub fn log(&self) -> &ServerLog {
        &self.log
    }

    /// The test CA certificate (PEM) in a file, for `curl --cacert`, `SSL_CERT_FILE`, …
    pub fn test_ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The test CA certificate, PEM.
    pub fn test_ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The test CA certificate, DER (for a rustls `RootCertStore`).
    pub fn test_ca_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.ca.der()
    }

    /// Panics with the server's log unless it received nothing.
    pub fn assert_untouched(&self, server: &str) {
        self.log.assert_untouched(server);
    }

    /// Waits (polling, at most `timeout`) until `pred` holds over the log; returns whether it did.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[LogEntry]) -> bool) -> bool {
        self.log.wait_for(timeout, pred)
    }

    /// A sandbox-like namespace joined to `fw` by a veth: `100.96.250.(4k+2)/30` inside with a
    /// default route to `.(4k+1)` on the `fw` side. `fw` forwards, and `net` routes the pool
    /// back, so without a firewall it reaches every server directly.
    pub fn sandbox_like(&self) -> Result<SandboxLike> {
        let k = self.sandboxes.fetch_add(1, Ordering::Relaxed);
        if k >= MAX_SANDBOX_LIKE {
            bail!("at most {MAX_SANDBOX_LIKE} sandbox-like namespaces per world");
        }
        let base = u32::from(SANDBOX_LIKE_BASE) + 4 * u32::from(k);
        let gateway = Ipv4Addr::from(base + 1);
        let addr = Ipv4Addr::from(base + 2);
        let netns = Netns::new("s")?;
        let host_if = format!("sbl{k}");
        ip([
            "link",
            "add",
            &host_if,
            "netns",
            self.fw.name(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        self.fw
            .ip(["addr", "add", &format!("{gateway}/30"), "dev", &host_if])?;
        self.fw.ip(["link", "set", &host_if, "up"])?;
        netns.ip(["addr", "add", &format!("{addr}/30"), "dev", "eth0"])?;
        netns.ip(["link", "set", "eth0", "up"])?;
        netns.ip(["route", "add", "default", "via", &gateway.to_string()])?;
        netns.set_resolv_conf(&format!("nameserver {DNS_V4}\n"))?;
        Ok(SandboxLike {
            netns,
            addr,
            gateway,
            host_if,
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Inside an async context a blocking shutdown would panic; let it finish alone.
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
        // The namespaces are deleted as the fields drop, after the runtime has stopped.
    }
}

/// The uplink: a veth made directly inside both namespaces, addresses, routes, forwarding.
fn link(fw: &Netns, net: &Netns) -> Result<()> {
    ip([
        "link",
        "add",
        FW_UPLINK_IF,
        "netns",
        fw.name(),
        "type",
        "veth",
        "peer",
        "name",
        NET_UPLINK_IF,
        "netns",
        net.name(),
    ])?;
    let v4 = |a: Ipv4Addr| format!("{a}/{UPLINK_V4_PREFIX}");
    let v6 = |a: std::net::Ipv6Addr| format!("{a}/{UPLINK_V6_PREFIX}");

    fw.ip(["addr", "add", &v4(FW_UPLINK_V4), "dev", FW_UPLINK_IF])?;
    fw.ip([
        "-6",
        "addr",
        "add",
        &v6(FW_UPLINK_V6),
        "dev",
        FW_UPLINK_IF,
        "nodad",
    ])?;
    fw.ip(["link", "set", FW_UPLINK_IF, "up"])?;
    fw.ip(["route", "add", "default", "via", &NET_UPLINK_V4.to_string()])?;
    fw.ip([
        "-6",
        "route",
        "add",
        "default",
        "via",
        &NET_UPLINK_V6.to_string(),
    ])?;
    fw.sysctl("net.ipv4.ip_forward", "1")?;
    fw.sysctl("net.ipv6.conf.all.forwarding", "1")?;

    net.ip(["addr", "add", &v4(NET_UPLINK_V4), "dev", NET_UPLINK_IF])?;
    net.ip([
        "-6",
        "addr",
        "add",
        &v6(NET_UPLINK_V6),
        "dev",
        NET_UPLINK_IF,
        "nodad",
    ])?;
    net.ip(["link", "set", NET_UPLINK_IF, "up"])?;
    for a in [
        GOOD_V4,
        ATTACKER_V4,
        ECHO_V4,
        TCP_V4,
        DNS_V4,
        PRIVATE_V4,
        METADATA_V4,
        SHARED_V4,
    ] {
        net.ip(["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
    }
    net.ip([
        "-6",
        "addr",
        "add",
        &format!("{V6_HOST}/128"),
        "dev",
        "lo",
        "nodad",
    ])?;
    net.ip([
        "route",
        "add",
        &format!("{SANDBOX_POOL_V4}/{SANDBOX_POOL_PREFIX}"),
        "via",
        &FW_UPLINK_V4.to_string(),
    ])?;
    // Our IPv6 addresses cannot be bound while tentative; wait (bounded) until none are.
    // (Link-local ones still run DAD; nothing binds them.)
    for ns in [fw, net] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ns
            .ip(["-6", "addr", "show", "tentative"])?
            .contains("inet6 2001:db8:")
        {
            if std::time::Instant::now() >= deadline {
                bail!("IPv6 addresses in {} stayed tentative", ns.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The zone every world starts with.
fn default_zone(dns: &DnsZone) {
    for name in [
        "alpha.test",
        "beta.test",
        "api.example.test",
        "x.wild.test",
        "a.b.wild.test",
    ] {
        dns.set_a(name, &[GOOD_V4]);
    }
    dns.set_a("evil.test", &[ATTACKER_V4]);
    for name in SHARED_NAMES {
        dns.set_a(name, &[SHARED_V4]);
    }
    dns.set_a("echo.test", &[ECHO_V4]);
    dns.set_a("tcp.test", &[TCP_V4]);
    dns.set_a("private.test", &[PRIVATE_V4]);
    dns.set_a("metadata.test", &[METADATA_V4]);
    dns.set_a("loop.test", &[Ipv4Addr::LOCALHOST]);
    dns.set_a("cgnat.test", &[Ipv4Addr::new(100, 96, 0, 2)]);
    dns.set_aaaa("v6only.test", &[V6_HOST]);
    dns.set_cname("alias.test", "alpha.test");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists(name: &str) -> bool {
        Path::new("/var/run/netns").join(name).exists()
    }

    #[test]
    fn a_half_built_world_removes_what_it_made() {
        for stage in [Stage::Linked, Stage::Serving] {
            let mut made = Vec::new();
            let result = World::build(Some(stage), &mut made);
            assert!(result.is_err(), "{stage:?}");
            assert_eq!(made.len(), 2);
            for name in &made {
                assert!(
                    !exists(name),
                    "{name} left behind after a fault at {stage:?}"
                );
            }
        }
    }
}
