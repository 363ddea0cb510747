//! The firewall testbed shared by the runtime's privileged tests with real runc sandboxes: a
//! testbed world, the firewall in its `fw` namespace with the real nftables rules, and sandboxes
//! made by `palisade-runtime` on the host template, each joined to a `palisade-netns` namespace
//! and trusting its own CA. Every namespace, chain, container and data directory is removed on
//! drop, also on panic.

#![allow(dead_code, reason = "each test file uses the part of the bed it needs")]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use palisade_firewall::{Firewall, FirewallConfig};
use palisade_netns::nft::{self, FirewallPorts, SandboxRules};
use palisade_netns::{AddressPool, RealPlatform, SandboxNet, SandboxNetSpec};
use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_runtime::{
    ExecRequest, ExecResult, HOST_TEMPLATE, Runtime, RuntimeConfig, SandboxSpec,
};
use palisade_testbed::{World, addrs};

pub(crate) const PROXY_PORT: u16 = 15001;
pub(crate) const DNS_PORT: u16 = 15053;
/// Where each sandbox finds the testbed CA (for passthrough HTTPS, which is not intercepted).
pub(crate) const TESTBED_CA_IN_BOX: &str = "/tmp/testbed-ca.pem";
/// curl's "Operation timed out": a denial must never look like this.
pub(crate) const CURL_TIMED_OUT: i32 = 28;
/// curl's "Could not resolve host".
pub(crate) const CURL_NO_HOST: i32 = 6;

pub(crate) static NEXT: AtomicU32 = AtomicU32::new(0);

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: privileged test needs root");
            return;
        }
    };
}

/// Kills every container of a data directory and unmounts its roots without the runtime, then
/// removes the directory: the backstop when a test dies between create and delete.
pub(crate) fn scrub(data: &Path) {
    let runc_root = data.join("runc");
    if let Ok(rd) = std::fs::read_dir(data.join("sandboxes")) {
        for e in rd.flatten() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "--force"])
                .arg(e.file_name())
                .output();
            for m in ["rootfs", "lower"] {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(e.path().join(m))
                    .output();
            }
            // Where the sandbox's root reached its bundle (`/run/palisade/sandboxes-*/<id>`).
            for r in std::fs::read_dir("/run/palisade")
                .into_iter()
                .flatten()
                .flatten()
            {
                let at = r.path().join(e.file_name());
                if at.exists() {
                    let _ = Command::new("umount").arg("-l").arg(&at).output();
                    let _ = std::fs::remove_dir(&at);
                    // Its runtime's directory too, once empty (a runtime making a sandbox retries).
                    let _ = std::fs::remove_dir(r.path());
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(data.join("userns")) {
        for e in rd.flatten() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(e.path().join("ns"))
                .output();
        }
    }
    let _ = std::fs::remove_dir_all(data);
}

/// A testbed world, the firewall in its `fw` namespace, and a sandbox runtime over a data
/// directory of its own. Fields drop in order: data directory scrubbed (in `Drop`), firewall,
/// runtimes, then the world's namespaces.
pub(crate) struct Bed {
    pub(crate) fw: Firewall,
    pub(crate) _fw_rt: tokio::runtime::Runtime,
    pub(crate) host_rt: tokio::runtime::Runtime,
    pub(crate) runtime: Runtime,
    pub(crate) data: PathBuf,
    pub(crate) pool: Mutex<AddressPool>,
    pub(crate) world: World,
}

impl Bed {
    pub(crate) fn new() -> Bed {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let world = World::new().unwrap();
        let fw_rt = world.fw.runtime().unwrap();
        let mut config = FirewallConfig {
            proxy_listen: format!("0.0.0.0:{PROXY_PORT}").parse().unwrap(),
            dns_listen: format!("0.0.0.0:{DNS_PORT}").parse().unwrap(),
            ..FirewallConfig::default()
        };
        config.resolver.upstreams = vec![format!("{}:53", addrs::DNS_V4).parse().unwrap()];
        config.resolver.timeout = Duration::from_secs(1);
        config.limits.peek_timeout_ms = 2_000;
        // Intercepted (transform) connections verify the upstream against the testbed CA.
        config.extra_roots = vec![world.test_ca_path().to_owned()];
        // Spawned so the listening sockets are made on the runtime's threads, inside `fw`.
        let fw = fw_rt
            .block_on(fw_rt.spawn(async move { Firewall::start(&config).await }))
            .unwrap()
            .unwrap();
        let pool_net = Ipv4Net::new(addrs::SANDBOX_POOL_V4, 20).unwrap();
        let ports = FirewallPorts {
            proxy: PROXY_PORT,
            dns: DNS_PORT,
        };
        nft::apply(
            &RealPlatform,
            Some(world.fw.name()),
            &nft::render_base(&ports, pool_net),
        )
        .unwrap();
        // A disk file system (overlay upper directories cannot live on overlayfs).
        let data = PathBuf::from(format!(
            "/var/tmp/pt-rtfw-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // Private, as the daemon's data directory is (the store lives there): sandboxes'
        // roots must not need to traverse it.
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let runtime = Runtime::new(RuntimeConfig::new(&data)).unwrap();
        let host_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Bed {
            fw,
            _fw_rt: fw_rt,
            host_rt,
            runtime,
            data,
            pool: Mutex::new(AddressPool::new(pool_net).unwrap()),
            world,
        }
    }

    /// A runc sandbox on the host template behind the firewall, with the given policy (JSON as
    /// the API takes it) and a CA of its own.
    pub(crate) fn sandbox(&self, policy_json: &str) -> Sbx<'_> {
        let policy = parse_policy(policy_json);
        let addrs = self.pool.lock().unwrap().allocate().unwrap();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}r{:x}", std::process::id() % 0xffff, n);
        // The sandbox's user namespace first: its network namespace is made inside it.
        let userns = self
            .host_rt
            .block_on(self.runtime.prepare_userns(&id))
            .unwrap();
        let net = palisade_netns::create_sandbox_net(
            &RealPlatform,
            &SandboxNetSpec {
                id: &id,
                host_netns: Some(self.world.fw.name()),
                addrs,
                owner_userns: userns.as_deref(),
            },
        )
        .unwrap();
        // From here on the guard owns what exists, so a failure below still cleans up.
        let mut sbx = Sbx {
            bed: self,
            net,
            id,
            container: false,
        };
        sbx.apply_rules(&policy);
        let registry = self.fw.registry();
        registry.upsert(&sbx.id, addrs.sandbox, policy.compile(), 1);
        let ca = palisade_ca::SandboxCa::generate(&sbx.id).unwrap();
        let ca_pem = ca.cert_pem().to_owned();
        assert!(registry.set_ca(&sbx.id, Arc::new(ca)));

        let spec = SandboxSpec {
            id: sbx.id.clone(),
            template: HOST_TEMPLATE.into(),
            netns_path: Some(sbx.net.netns_path.clone()),
            dns_server: Some(sbx.net.addrs.host),
            ca_pem: Some(ca_pem),
            // As the control plane decides it: raw sockets only where ICMP may go somewhere.
            net_raw: !policy.allow_cidrs().is_empty(),
            ..Default::default()
        };
        let start = Instant::now();
        sbx.container = true;
        self.host_rt.block_on(self.runtime.create(spec)).unwrap();
        // The passthrough upstreams' CA, written from inside (exec has no stdin: a here-doc).
        let r = sbx.sh(&format!(
            "cat > {TESTBED_CA_IN_BOX} <<'PALISADE_EOF'\n{}PALISADE_EOF\n",
            self.world.test_ca_pem()
        ));
        assert_eq!(r.exit_code, 0, "{}", show(&r));
        eprintln!(
            "sandbox {}: create to first exec {:?}",
            sbx.id,
            start.elapsed()
        );
        sbx
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        scrub(&self.data);
    }
}

pub(crate) fn parse_policy(json: &str) -> Policy {
    let spec: NetworkPolicySpec = serde_json::from_str(json).unwrap();
    spec.validate().unwrap()
}

/// One runc sandbox and its network; dropping it deletes the container, the firewall's entry,
/// the nftables chain and the namespace, in that order.
pub(crate) struct Sbx<'a> {
    pub(crate) bed: &'a Bed,
    pub(crate) net: SandboxNet,
    pub(crate) id: String,
    pub(crate) container: bool,
}

impl Sbx<'_> {
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        self.net.addrs.host
    }

    pub(crate) fn apply_rules(&self, policy: &Policy) {
        let cidrs: Vec<Ipv4Net> = policy
            .allow_cidrs()
            .iter()
            .filter_map(|c| match c {
                IpNet::V4(v4) => Some(*v4),
                IpNet::V6(_) => None,
            })
            .collect();
        let rules = SandboxRules::for_net(&self.net, cidrs);
        nft::apply(
            &RealPlatform,
            Some(self.bed.world.fw.name()),
            &nft::render_sandbox(&rules),
        )
        .unwrap();
    }

    /// `/bin/sh -c script` inside the container, as the API's exec runs it: no extra
    /// environment, a hard time limit.
    pub(crate) fn sh(&self, script: &str) -> ExecResult {
        let req = ExecRequest {
            command: script.into(),
            timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        self.bed
            .host_rt
            .block_on(self.bed.runtime.exec(&self.id, req))
            .unwrap()
    }

    /// curl trusting the testbed CA (for passthrough HTTPS), with short timeouts.
    pub(crate) fn curl(&self, args: &str) -> ExecResult {
        self.sh(&format!(
            "curl -sS --max-time 5 --connect-timeout 3 --cacert {TESTBED_CA_IN_BOX} {args}"
        ))
    }

    /// The sandbox's directory on the host (upper layer, spec, bind-mounted etc files).
    pub(crate) fn dir(&self) -> PathBuf {
        self.bed.data.join("sandboxes").join(&self.id)
    }
}

impl Drop for Sbx<'_> {
    fn drop(&mut self) {
        if self.container
            && let Err(e) = self.bed.host_rt.block_on(self.bed.runtime.delete(&self.id))
        {
            eprintln!("deleting sandbox {}: {e}", self.id);
        }
        self.bed.fw.registry().remove(&self.id);
        let _ = nft::apply(
            &RealPlatform,
            Some(self.bed.world.fw.name()),
            &nft::render_remove_sandbox(&self.id, &self.net.host_if),
        );
        let _ = palisade_netns::remove_sandbox_net(
            &RealPlatform,
            &self.id,
            Some(self.bed.world.fw.name()),
        );
        if let Ok(mut pool) = self.bed.pool.lock() {
            pool.release(self.net.addrs);
        }
    }
}

pub(crate) fn show(r: &ExecResult) -> String {
    format!(
        "exit {} (timed out: {})\nstdout: {}\nstderr: {}",
        r.exit_code, r.timed_out, r.stdout, r.stderr
    )
}

/// The client failed quickly and definitely (refused, reset, unresolvable), not by timing out.
pub(crate) fn assert_refused(r: &ExecResult, what: &str) {
    assert!(
        r.exit_code != 0 && r.exit_code != CURL_TIMED_OUT && !r.timed_out,
        "{what}: {}",
        show(r)
    );
    assert!(
        !r.stderr.contains("timed out"),
        "{what} timed out: {}",
        show(r)
    );
}
