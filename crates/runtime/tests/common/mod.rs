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
use std::time::{Duration, Instant};

use palisade_firewall::Firewall;
use palisade_netns::SandboxNet;
use palisade_policy::Policy;
use palisade_runtime::{
    ExecRequest, ExecResult, HOST_TEMPLATE, Runtime, RuntimeConfig, SandboxSpec,
};
use palisade_testbed::World;
use palisade_testbed::firewall::{self as fwbed, NetOptions, SandboxNetBed, SandboxNets};

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
    pub(crate) nets: SandboxNets,
    pub(crate) fw: Firewall,
    pub(crate) _fw_rt: tokio::runtime::Runtime,
    pub(crate) host_rt: tokio::runtime::Runtime,
    pub(crate) runtime: Runtime,
    pub(crate) data: PathBuf,
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
        let mut config = fwbed::config(&world);
        config.limits.peek_timeout_ms = 2_000;
        let fw = fwbed::start(&world, &fw_rt, config).unwrap();
        let nets = SandboxNets::new(&world, &fw).unwrap();
        let data = PathBuf::from(format!(
            "/var/tmp/pt-rtfw-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let runtime = Runtime::new(RuntimeConfig::new(&data)).unwrap();
        let host_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Bed {
            nets,
            fw,
            _fw_rt: fw_rt,
            host_rt,
            runtime,
            data,
            world,
        }
    }

    pub(crate) fn sandbox(&self, policy_json: &str) -> Sbx<'_> {
        let policy = parse_policy(policy_json);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}r{:x}", std::process::id() % 0xffff, n);
        // The sandbox's user namespace first: its network namespace is made inside it.
        let userns = self
            .host_rt
            .block_on(self.runtime.prepare_userns(&id))
            .unwrap();
        let inner = self
            .nets
            .create(
                &id,
                &policy,
                NetOptions {
                    owner_userns: userns.as_deref(),
                    ca: true,
                    ..NetOptions::default()
                },
            )
            .unwrap();
        let ca_pem = inner.ca.as_ref().unwrap().cert_pem().to_owned();
        let mut sbx = Sbx {
            bed: self,
            net: inner.net.clone(),
            id,
            container: false,
            inner: Some(inner),
        };

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
    fwbed::parse_policy(json).unwrap()
}

pub(crate) struct Sbx<'a> {
    pub(crate) bed: &'a Bed,
    pub(crate) net: SandboxNet,
    pub(crate) id: String,
    pub(crate) container: bool,
    /// Network, rules, registry entry and CA; removed after the container.
    inner: Option<SandboxNetBed>,
}

impl Sbx<'_> {
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        self.net.addrs.host
    }

    pub(crate) fn apply_rules(&self, policy: &Policy) {
        if let Some(inner) = &self.inner {
            inner.apply_rules(policy).unwrap();
        }
    }

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
        // The container first: its network goes after it.
        drop(self.inner.take());
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
