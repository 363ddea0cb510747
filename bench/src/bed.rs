//! The bench's world: a testbed, the firewall running in its `fw` namespace on a runtime whose
//! threads are named and (optionally) pinned, one real sandbox made by palisade-netns under an
//! allow-all policy, and one "direct" sandbox-like namespace that `fw` forwards without rules.
//! Built like crates/firewall/tests/common/mod.rs; everything is torn down on drop.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use palisade_firewall::Firewall;
use palisade_testbed::firewall::{self as fwbed, NetOptions, SandboxNetBed, SandboxNets};
use palisade_testbed::{Netns, RuntimeOptions, SandboxLike, World};

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
pub(crate) type Sandbox = SandboxNetBed;

impl Bed {
    pub(crate) fn new(pinning: FwPinning, fw_workers: usize, splice: bool) -> Result<Bed> {
        let world = World::new().context("testbed world")?;
        let rt = world.fw.runtime_with(&RuntimeOptions {
            workers: fw_workers,
            thread_name: Some(FW_THREAD.to_owned()),
            cpu: match pinning {
                FwPinning::Cpu(n) => Some(n),
                FwPinning::Unpinned => None,
            },
        })?;
        let mut config = fwbed::config(&world);
        // Passthrough only here: no upstream CA to trust.
        config.extra_roots.clear();
        config.limits.relay_splice = splice;
        // Scenario 8 holds 9,500 idle tunnels from the one sandbox (the default cap is 1,024).
        config.limits.max_connections_per_sandbox = 10_000;
        let fw = fwbed::start(&world, &rt, config)?;
        let nets = SandboxNets::new(&world, &fw)?;
        let id = format!("b{:x}", std::process::id() % 0xff_ffff);
        let sandbox = nets.create(
            &id,
            &fwbed::parse_policy(r#"{"mode":"allow-all"}"#)?,
            NetOptions::default(),
        )?;
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
