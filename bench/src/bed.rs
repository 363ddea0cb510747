//! The bench's world: a testbed, the firewall running in its `fw` namespace on a runtime whose
//! threads are named and (optionally) pinned, one real sandbox made by palisade-netns under an
//! allow-all policy, and one "direct" sandbox-like namespace that `fw` forwards without rules.
//! Built like crates/firewall/tests/common/mod.rs; everything is torn down on drop.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use ipnet::{IpNet, Ipv4Net};
use nix::sched::{CloneFlags, CpuSet, sched_setaffinity, setns};
use nix::unistd::Pid;
use palisade_firewall::{Firewall, FirewallConfig};
use palisade_netns::nft::{self, FirewallPorts, SandboxRules};
use palisade_netns::{AddressPool, RealPlatform, SandboxNet, SandboxNetSpec};
use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_testbed::{Netns, SandboxLike, World, addrs};

const PROXY_PORT: u16 = 15001;
const DNS_PORT: u16 = 15053;
/// Name of every thread of the firewall's runtime (how its CPU time is found in /proc).
pub(crate) const FW_THREAD: &str = "bench-fw";

/// Where the firewall's runtime threads may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FwPinning {
    Cpu(usize),
    Unpinned,
}

/// The world with the firewall running. Field order is drop order: sandbox rules and netns
/// first, then the firewall and its runtime, then the world's namespaces.
#[derive(Debug)]
pub(crate) struct Bed {
    pub(crate) sandbox: Sandbox,
    pub(crate) direct: SandboxLike,
    fw: Firewall,
    rt: Option<tokio::runtime::Runtime>,
    pinning: FwPinning,
    pub(crate) world: World,
}

/// The palisade sandbox's network; removed (rules, registry entry, namespace) on drop.
#[derive(Debug)]
pub(crate) struct Sandbox {
    pub(crate) net: SandboxNet,
    fw_netns: String,
    registry: Arc<palisade_firewall::Registry>,
}

impl Bed {
    pub(crate) fn new(pinning: FwPinning, fw_workers: usize, splice: bool) -> Result<Bed> {
        let world = World::new().context("testbed world")?;
        let rt = fw_runtime(world.fw.path(), pinning, fw_workers)?;
        let mut config = FirewallConfig {
            proxy_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, PROXY_PORT)),
            dns_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DNS_PORT)),
            ..FirewallConfig::default()
        };
        config.limits.relay_splice = splice;
        // Scenario 8 holds 9,500 idle tunnels from the one sandbox (the default cap is 1,024).
        config.limits.max_connections_per_sandbox = 10_000;
        config.resolver.upstreams = vec![SocketAddr::from((addrs::DNS_V4, 53))];
        config.resolver.timeout = Duration::from_secs(1);
        // Spawned, not run on this thread: only the runtime's threads are inside `fw`, and the
        // listening sockets must be created there.
        let fw = rt
            .block_on(rt.spawn(async move { Firewall::start(&config).await }))
            .context("firewall start task")?
            .context("firewall starts")?;
        let pool_net = Ipv4Net::new(addrs::SANDBOX_POOL_V4, 20)?;
        let ports = FirewallPorts {
            proxy: PROXY_PORT,
            dns: DNS_PORT,
        };
        nft::apply(
            &RealPlatform,
            Some(world.fw.name()),
            &nft::render_base(&ports, pool_net),
        )
        .context("base nftables rules")?;
        let mut pool = AddressPool::new(pool_net)?;
        let sandbox = Sandbox::new(&world, &fw, &mut pool, r#"{"mode":"allow-all"}"#)?;
        let direct = world.sandbox_like().context("direct namespace")?;
        let bed = Bed {
            sandbox,
            direct,
            fw,
            rt: Some(rt),
            pinning,
            world,
        };
        bed.tune()?;
        Ok(bed)
    }

    /// Load-generator settings, the same on both paths: a wide ephemeral port range and
    /// TIME_WAIT reuse in both client namespaces and in `fw` (the proxy's upstream dials), so
    /// thousands of short connections per second do not run out of ports.
    fn tune(&self) -> Result<()> {
        let sandbox = Netns::open(&self.sandbox.net.netns)?;
        for ns in [&sandbox, &self.direct.netns, &self.world.fw] {
            ns.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
            ns.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        }
        Ok(())
    }

    /// The firewall's CPUs as `taskset -c` takes them; peers are pinned the same way.
    pub(crate) fn fw_cpu_list(&self) -> String {
        match self.pinning {
            FwPinning::Cpu(n) => n.to_string(),
            FwPinning::Unpinned => {
                let n = std::thread::available_parallelism().map_or(1, usize::from);
                format!("0-{}", n.saturating_sub(1))
            }
        }
    }

    /// The firewall's event log (the idle scenario counts open tunnels there).
    pub(crate) fn firewall(&self) -> &Firewall {
        &self.fw
    }

    /// Name of the palisade sandbox's namespace.
    pub(crate) fn sandbox_netns(&self) -> &str {
        &self.sandbox.net.netns
    }

    /// Connections the proxy recorded for the sandbox since `since`, and the bytes they moved
    /// up and down: proof that the palisade path really went through the proxy. (The ring keeps
    /// the last 10,000 events, so counts past that are lower bounds.)
    pub(crate) fn proxied_since(&self, since: SystemTime) -> Proxied {
        let mut p = Proxied::default();
        for e in self.fw.events().recent(Some(&self.sandbox.net.id), 10_000) {
            if e.time >= since {
                p.conns += 1;
                p.bytes_up += e.bytes_up;
                p.bytes_down += e.bytes_down;
            }
        }
        p
    }
}

/// What the proxy's events say about a run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Proxied {
    pub(crate) conns: u64,
    pub(crate) bytes_up: u64,
    pub(crate) bytes_down: u64,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Sandbox {
    fn new(world: &World, fw: &Firewall, pool: &mut AddressPool, policy: &str) -> Result<Self> {
        let policy = parse_policy(policy)?;
        let addrs = pool.allocate().context("address pool is full")?;
        let id = format!("b{:x}", std::process::id() % 0xff_ffff);
        let net = palisade_netns::create_sandbox_net(
            &RealPlatform,
            &SandboxNetSpec {
                id: &id,
                host_netns: Some(world.fw.name()),
                addrs,
                owner_userns: None,
            },
        )
        .context("sandbox network")?;
        let sandbox = Sandbox {
            net,
            fw_netns: world.fw.name().to_owned(),
            registry: Arc::clone(fw.registry()),
        };
        let cidrs: Vec<Ipv4Net> = policy
            .allow_cidrs()
            .iter()
            .filter_map(|c| match c {
                IpNet::V4(v4) => Some(*v4),
                IpNet::V6(_) => None,
            })
            .collect();
        let rules = SandboxRules::for_net(&sandbox.net, cidrs);
        nft::apply(
            &RealPlatform,
            Some(&sandbox.fw_netns),
            &nft::render_sandbox(&rules),
        )
        .context("sandbox nftables rules")?;
        sandbox
            .registry
            .upsert(&sandbox.net.id, addrs.sandbox, policy.compile(), 1);
        Ok(sandbox)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.registry.remove(&self.net.id);
        let _ = nft::apply(
            &RealPlatform,
            Some(&self.fw_netns),
            &nft::render_remove_sandbox(&self.net.id, &self.net.host_if),
        );
        let _ =
            palisade_netns::remove_sandbox_net(&RealPlatform, &self.net.id, Some(&self.fw_netns));
    }
}

fn parse_policy(json: &str) -> Result<Policy> {
    let spec: NetworkPolicySpec = serde_json::from_str(json).context("policy JSON")?;
    spec.validate()
        .map_err(|e| anyhow!("invalid policy: {e:?}"))
}

/// A runtime whose threads all live in the namespace at `path`, named [`FW_THREAD`] and pinned
/// as asked. Like the testbed's namespace runtime, plus the name and the pinning.
fn fw_runtime(
    path: &std::path::Path,
    pinning: FwPinning,
    workers: usize,
) -> Result<tokio::runtime::Runtime> {
    let file = Arc::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
    let cpus = match pinning {
        FwPinning::Cpu(cpu) => {
            let mut set = CpuSet::new();
            set.set(cpu).context("CPU number")?;
            Some(set)
        }
        FwPinning::Unpinned => None,
    };
    {
        // Prove setns and the pinning work before handing them to threads that cannot report.
        let file = Arc::clone(&file);
        std::thread::spawn(move || -> Result<()> {
            setns(&*file, CloneFlags::CLONE_NEWNET)?;
            if let Some(set) = cpus {
                sched_setaffinity(Pid::from_raw(0), &set)?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow!("setns probe thread panicked"))?
        .context("entering the fw namespace / pinning")?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name(FW_THREAD)
        .on_thread_start(move || {
            if let Err(e) = setns(&*file, CloneFlags::CLONE_NEWNET) {
                // A firewall thread left in the real namespace could reach the real network.
                tracing::error!("setns into the fw namespace failed ({e}); aborting");
                std::process::abort();
            }
            if let Some(set) = cpus
                && let Err(e) = sched_setaffinity(Pid::from_raw(0), &set)
            {
                tracing::error!("pinning a firewall thread failed ({e}); aborting");
                std::process::abort();
            }
        })
        .build()
        .context("building the firewall runtime")
}
