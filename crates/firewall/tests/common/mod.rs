//! The data plane under test: a testbed world, the firewall running inside its `fw` namespace,
//! and sandboxes made by the real `palisade-netns` code with the real nftables rules.

#![allow(
    dead_code,
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
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use palisade_firewall::{Firewall, FirewallConfig};
use palisade_netns::nft::{self, FirewallPorts, SandboxRules};
use palisade_netns::{AddressPool, RealPlatform, SandboxNet, SandboxNetSpec};
use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_testbed::{World, addrs};

pub const PROXY_PORT: u16 = 15001;
pub const DNS_PORT: u16 = 15053;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A world with the firewall running in its `fw` namespace.
pub struct Bed {
    pub fw: Firewall,
    rt: tokio::runtime::Runtime,
    pool: Mutex<AddressPool>,
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
        let mut config = FirewallConfig {
            proxy_listen: format!("0.0.0.0:{PROXY_PORT}").parse().unwrap(),
            dns_listen: format!("0.0.0.0:{DNS_PORT}").parse().unwrap(),
            ..FirewallConfig::default()
        };
        config.resolver.upstreams = vec![format!("{}:53", addrs::DNS_V4).parse().unwrap()];
        config.resolver.timeout = Duration::from_secs(1);
        // Intercepted connections verify the upstreams, which the testbed's CA signs.
        config.extra_roots = vec![world.test_ca_path().to_owned()];
        config.limits.peek_timeout_ms = 2_000;
        // Spawned, not run on this thread: only the runtime's threads are inside `fw`, and the
        // listening sockets must be created there.
        let fw = rt
            .block_on(rt.spawn(async move { Firewall::start(&config).await }))
            .expect("start task")
            .expect("firewall starts");
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
        .expect("base rules");
        Bed {
            fw,
            rt,
            pool: Mutex::new(AddressPool::new(pool_net).unwrap()),
            world,
        }
    }

    /// A sandbox network with the given policy (JSON as the API takes it).
    pub fn sandbox(&self, policy_json: &str) -> Sandbox<'_> {
        let policy = parse_policy(policy_json);
        let addrs = self.pool.lock().unwrap().allocate().expect("pool has room");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}t{:x}", std::process::id() % 0xffff, n);
        let net = palisade_netns::create_sandbox_net(
            &RealPlatform,
            &SandboxNetSpec {
                id: &id,
                host_netns: Some(self.world.fw.name()),
                addrs,
                owner_userns: None,
            },
        )
        .expect("sandbox net");
        let sandbox = Sandbox { bed: self, net, id };
        sandbox.apply_rules(&policy);
        self.fw
            .registry()
            .upsert(&sandbox.id, addrs.sandbox, policy.compile(), 1);
        sandbox
    }
}

pub fn parse_policy(json: &str) -> Policy {
    let spec: NetworkPolicySpec = serde_json::from_str(json).expect("policy JSON");
    spec.validate().expect("valid policy")
}

pub struct Sandbox<'a> {
    bed: &'a Bed,
    pub net: SandboxNet,
    pub id: String,
}

impl Sandbox<'_> {
    pub fn addr(&self) -> Ipv4Addr {
        self.net.addrs.sandbox
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.net.addrs.host
    }

    fn apply_rules(&self, policy: &Policy) {
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
        .expect("sandbox rules");
    }

    /// Replaces the policy live, as the control plane does: rules first, then the data plane.
    pub fn set_policy(&self, json: &str, version: u64) {
        let policy = parse_policy(json);
        self.apply_rules(&policy);
        assert!(
            self.bed
                .fw
                .registry()
                .update_policy(&self.id, policy.compile(), version)
        );
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

impl Drop for Sandbox<'_> {
    fn drop(&mut self) {
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
        self.bed.pool.lock().unwrap().release(self.net.addrs);
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
