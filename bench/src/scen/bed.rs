//! The world of the interception, HTTP/2 and DNS scenarios: a testbed, the firewall in `fw`
//! trusting the testbed CA upstream, one palisade-netns sandbox under a transform policy with its
//! own CA, one direct namespace `fw` forwards without rules, and a NAT table of our own in `fw`
//! that redirects the direct namespace's HTTPS to whichever peer proxy is being measured.
//! Everything is removed on drop.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use palisade_ca::SandboxCa;
use palisade_firewall::Firewall;
use palisade_netns::SandboxNet;
use palisade_netns::nft;
use palisade_testbed::firewall::{self as fwbed, NetOptions, SandboxNetBed, SandboxNets};
use palisade_testbed::{Netns, RuntimeOptions, SandboxLike, World, addrs};
/// Name of every thread of this firewall's runtime (how its CPU time is found in /proc).
pub(crate) const FW_THREAD: &str = "benchb-fw";
/// The CPU the firewall and every peer proxy run on; load generators run on CPU 1.
pub(crate) const PROXY_CPU: usize = 0;
pub(crate) const CLIENT_CPU: &str = "1";
/// The secret every interceptor injects.
pub(crate) const SECRET: &str = "Bearer sk-bench-SECRET";
/// The intercepted name (a transform applies to it) and its upstream.
pub(crate) const HOST: &str = "api.example.test";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The transform policy of the measured sandbox.
fn policy_json() -> String {
    format!(
        r#"{{"mode":"custom","allow_domains":["{HOST}","alpha.test"],
            "transforms":[{{"domain":"{HOST}","inject_headers":{{"Authorization":"{SECRET}"}}}}]}}"#
    )
}

/// Field order is drop order: our NAT table, hosts files and the sandbox first, then the
/// firewall and its runtime, then the world.
#[derive(Debug)]
pub(crate) struct IBed {
    /// The kernel's ceiling on each sandbox's DNS queries, as `palisade serve` sets it.
    dns_limit: Option<nft::DnsPacketLimit>,
    nat: NatTable,
    _hosts: Vec<HostsFile>,
    nets: SandboxNets,
    pub(crate) sandbox: ISandbox,
    pub(crate) direct: SandboxLike,
    _fw: Firewall,
    rt: Option<tokio::runtime::Runtime>,
    pub(crate) world: World,
    /// Scratch files: CA files, peer configs, the peers' certificate.
    pub(crate) dir: tempfile::TempDir,
    /// The firewall runtime's worker threads (for the tables' notes).
    pub(crate) workers: usize,
}

/// The transform sandbox: network, registry entry, rules, CA (all removed on drop).
#[derive(Debug)]
pub(crate) struct ISandbox {
    pub(crate) net: SandboxNet,
    pub(crate) ca: Arc<SandboxCa>,
    inner: SandboxNetBed,
}

impl IBed {
    /// `dns_rate_limit`: keep the per-sandbox DNS query rate of the default configuration.
    /// Scenario 6 measures the resolver's own throughput from one sandbox, which that limit
    /// (500/s by default) would cap, so it runs without it; scenario 11 (noisy) keeps it.
    /// `workers`: the firewall runtime's worker threads, all pinned to [`PROXY_CPU`].
    pub(crate) fn new(dns_rate_limit: bool, workers: usize) -> Result<IBed> {
        let world = World::new().context("testbed world")?;
        let dir = tempfile::Builder::new()
            .prefix("palisade-benchb-")
            .tempdir()?;
        let rt = world.fw.runtime_with(&RuntimeOptions {
            workers,
            thread_name: Some(FW_THREAD.to_owned()),
            cpu: Some(PROXY_CPU),
        })?;
        let mut config = fwbed::config(&world);
        if !dns_rate_limit {
            config.dns.queries_per_second_per_source = 0;
        }
        // As `palisade serve` does: twice the resolver's rate and burst.
        let dns_limit = dns_rate_limit.then(|| nft::DnsPacketLimit {
            per_second: config.dns.queries_per_second_per_source * 2,
            burst: config.dns.query_burst_per_source * 2,
        });
        let fw = fwbed::start(&world, &rt, config)?;
        let nets = SandboxNets::new(&world, &fw)?;
        let sandbox = ISandbox::new(&nets, dns_limit)?;
        let direct = world.sandbox_like().context("direct namespace")?;
        let nat = NatTable::new(world.fw.name(), direct.addr)?;
        let hosts = vec![
            HostsFile::new(&sandbox.net.netns)?,
            HostsFile::new(direct.netns.name())?,
        ];
        let bed = IBed {
            workers,
            dns_limit,
            nat,
            _hosts: hosts,
            nets,
            sandbox,
            direct,
            _fw: fw,
            rt: Some(rt),
            world,
            dir,
        };
        bed.tune()?;
        bed.write_certs()?;
        Ok(bed)
    }

    fn tune(&self) -> Result<()> {
        let sandbox = Netns::open(&self.sandbox.net.netns)?;
        for ns in [&sandbox, &self.direct.netns, &self.world.fw] {
            ns.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
            ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        }
        Ok(())
    }

    /// `ca.pem` (the sandbox CA, which clients trust), `clients-ca.pem` (it plus the testbed CA,
    /// for the direct path), `upstream-ca.pem` (the testbed CA, which peers trust upstream) and
    /// `leaf.pem` (ECDSA P-256 certificate + key for api.example.test signed by the sandbox CA:
    /// what every peer presents).
    fn write_certs(&self) -> Result<()> {
        let d = self.dir.path();
        std::fs::write(d.join("ca.pem"), self.sandbox.ca.cert_pem())?;
        std::fs::write(d.join("ca.key"), self.sandbox.ca.key_pem())?;
        std::fs::write(
            d.join("clients-ca.pem"),
            format!("{}{}", self.sandbox.ca.cert_pem(), self.world.test_ca_pem()),
        )?;
        std::fs::copy(self.world.test_ca_path(), d.join("upstream-ca.pem"))?;
        let ext = d.join("leaf.ext");
        std::fs::write(&ext, format!("subjectAltName=DNS:{HOST}\n"))?;
        run_ok(
            std::process::Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-subj"])
                .arg(format!("/CN={HOST}"))
                .arg("-keyout")
                .arg(d.join("leaf.key"))
                .arg("-out")
                .arg(d.join("leaf.csr")),
            "openssl req",
        )?;
        run_ok(
            std::process::Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(d.join("leaf.csr"))
                .arg("-CA")
                .arg(d.join("ca.pem"))
                .arg("-CAkey")
                .arg(d.join("ca.key"))
                .arg("-CAcreateserial")
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(d.join("leaf.crt")),
            "openssl x509",
        )?;
        let crt = std::fs::read_to_string(d.join("leaf.crt"))?;
        let key = std::fs::read_to_string(d.join("leaf.key"))?;
        std::fs::write(d.join("leaf.pem"), format!("{crt}{key}"))?;
        // Peers drop privileges (squid runs as `proxy`): let them read what they need.
        for f in [
            "leaf.pem",
            "leaf.crt",
            "leaf.key",
            "upstream-ca.pem",
            "ca.pem",
        ] {
            set_mode(&d.join(f), 0o644)?;
        }
        set_mode(d, 0o755)?;
        Ok(())
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub(crate) fn sandbox_netns(&self) -> &str {
        &self.sandbox.net.netns
    }

    /// Sends the direct namespace's TCP to port 443 to a local `port` in `fw` (a peer), or
    /// nowhere (`None`: the plain forwarded path).
    pub(crate) fn redirect_https(&self, port: Option<u16>) -> Result<()> {
        self.nat.redirect(port)
    }

    /// A second sandbox under the same policy (its own address, rules and CA), removed on
    /// drop: the noisy neighbour of `noisy.rs`.
    pub(crate) fn neighbour(&self) -> Result<ISandbox> {
        ISandbox::new(&self.nets, self.dns_limit)
    }

    /// Upstream TCP connections the `good` server accepted so far.
    pub(crate) fn upstream_accepts(&self) -> usize {
        self.world
            .log()
            .entries()
            .iter()
            .filter(|e| e.server == "good" && e.kind == palisade_testbed::Kind::TcpAccept)
            .count()
    }
}

impl Drop for IBed {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

pub(crate) fn run_ok(cmd: &mut std::process::Command, what: &str) -> Result<std::process::Output> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl ISandbox {
    fn new(nets: &SandboxNets, dns_limit: Option<nft::DnsPacketLimit>) -> Result<Self> {
        let policy = fwbed::parse_policy(&policy_json())?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("bb{:x}x{n}", std::process::id() % 0xff_ffff);
        let inner = nets.create(
            &id,
            &policy,
            NetOptions {
                dns_limit,
                ca: true,
                ..NetOptions::default()
            },
        )?;
        let ca = inner.ca.clone().context("the sandbox CA")?;
        Ok(ISandbox {
            net: inner.net.clone(),
            ca,
            inner,
        })
    }

    /// Replaces the sandbox's policy live (same rules: the policies swapped in have no CIDRs).
    pub(crate) fn set_policy(&self, json: &str, version: u64) -> Result<()> {
        self.inner.swap_policy(&fwbed::parse_policy(json)?, version)
    }
}

/// `/etc/netns/<ns>/hosts`, which `ip netns exec` mounts over /etc/hosts: the load generators
/// resolve api.example.test to the good server without DNS. Removed on drop.
#[derive(Debug)]
struct HostsFile {
    path: PathBuf,
    made_dir: Option<PathBuf>,
}

impl HostsFile {
    fn new(netns: &str) -> Result<HostsFile> {
        let dir = Path::new("/etc/netns").join(netns);
        let made_dir = if dir.exists() {
            None
        } else {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(dir.clone())
        };
        let path = dir.join("hosts");
        std::fs::write(
            &path,
            format!(
                "127.0.0.1 localhost\n{} {HOST} alpha.test\n",
                addrs::GOOD_V4
            ),
        )?;
        Ok(HostsFile { path, made_dir })
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(d) = &self.made_dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// An nftables table of our own in `fw` whose one rule redirects the direct namespace's HTTPS
/// to a peer. Deleted on drop.
#[derive(Debug)]
struct NatTable {
    fw: String,
    name: String,
    client: Ipv4Addr,
}

impl NatTable {
    fn new(fw: &str, client: Ipv4Addr) -> Result<NatTable> {
        let name = format!(
            "benchb{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let t = NatTable {
            fw: fw.to_owned(),
            name,
            client,
        };
        t.nft(&format!(
            "table ip {0} {{\n\tchain pre {{\n\t\ttype nat hook prerouting priority dstnat - 5; policy accept;\n\t}}\n}}\n",
            t.name
        ))?;
        Ok(t)
    }

    fn redirect(&self, port: Option<u16>) -> Result<()> {
        let mut script = format!("flush chain ip {} pre\n", self.name);
        if let Some(port) = port {
            script.push_str(&format!(
                "add rule ip {} pre ip saddr {} tcp dport 443 redirect to :{port}\n",
                self.name, self.client
            ));
        }
        self.nft(&script)
    }

    fn nft(&self, script: &str) -> Result<()> {
        use std::io::Write;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.fw, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running nft")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

impl Drop for NatTable {
    fn drop(&mut self) {
        let _ = self.nft(&format!("delete table ip {}\n", self.name));
    }
}
