//! The data plane under test: a testbed world, the firewall running inside its `fw` namespace,
//! and sandboxes made by the real `palisade-netns` code with the real nftables rules.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "each test binary uses a different part"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a harness that cannot build its world is a failed test"
)]

use std::net::Ipv4Addr;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use palisade_firewall::Firewall;
use palisade_netns::SandboxNet;
use palisade_policy::Policy;
use palisade_testbed::World;
use palisade_testbed::firewall::{self as bed, NetOptions, SandboxNetBed, SandboxNets};

pub use palisade_testbed::firewall::{DNS_PORT, PROXY_PORT};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A world with the firewall running in its `fw` namespace (the shared test bed of
/// `palisade-testbed`, feature `firewall`).
pub struct Bed {
    nets: SandboxNets,
    pub fw: Firewall,
    rt: tokio::runtime::Runtime,
    pub world: World,
}

impl Bed {
    pub fn new() -> Bed {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let world = World::new().expect("testbed world");
        let rt = world.fw.runtime().expect("runtime in fw namespace");
        let mut config = bed::config(&world);
        config.limits.peek_timeout_ms = 2_000;
        let fw = bed::start(&world, &rt, config).expect("firewall and base rules");
        let nets = SandboxNets::new(&world, &fw).expect("address pool");
        Bed {
            nets,
            fw,
            rt,
            world,
        }
    }

    /// A sandbox network with the given policy (JSON as the API takes it).
    pub fn sandbox(&self, policy_json: &str) -> Sandbox<'_> {
        let policy = parse_policy(policy_json);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}t{:x}", std::process::id() % 0xffff, n);
        let inner = self
            .nets
            .create(&id, &policy, NetOptions::default())
            .expect("sandbox net");
        Sandbox {
            bed: self,
            net: inner.net.clone(),
            id,
            inner,
        }
    }
}

pub fn parse_policy(json: &str) -> Policy {
    bed::parse_policy(json).expect("valid policy")
}

pub struct Sandbox<'a> {
    bed: &'a Bed,
    pub net: SandboxNet,
    pub id: String,
    inner: SandboxNetBed,
}

impl Sandbox<'_> {
    pub fn addr(&self) -> Ipv4Addr {
        self.net.addrs.sandbox
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.net.addrs.host
    }

    /// Replaces the policy live, as the control plane does: rules first, then the data plane.
    pub fn set_policy(&self, json: &str, version: u64) {
        self.inner
            .set_policy(&parse_policy(json), version)
            .expect("policy update");
    }

    /// Runs `sh -c script` inside the sandbox's namespace, with a hard time limit.
    pub fn sh(&self, script: &str) -> Output {
        std::process::Command::new("timeout")
            .args([
                "-s",
                "KILL",
                "20",
                "ip",
                "netns",
                "exec",
                &self.net.netns,
                "sh",
                "-c",
                script,
            ])
            .output()
            .expect("run in sandbox")
    }

    /// Like `sh`, and also how long it took.
    pub fn timed(&self, script: &str) -> (Output, Duration) {
        let start = Instant::now();
        let out = self.sh(script);
        (out, start.elapsed())
    }

    /// curl with the test CA and short timeouts; `args` are appended.
    pub fn curl(&self, args: &str) -> Output {
        let ca = self.bed.world.test_ca_path().display().to_string();
        self.sh(&format!(
            "curl -sS --max-time 5 --connect-timeout 3 --cacert {ca} {args}"
        ))
    }

    pub fn ca_path(&self) -> String {
        self.bed.world.test_ca_path().display().to_string()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}
