//! The data plane in a [`World`] (feature `firewall`): the real firewall started inside `fw`,
//! the real base nftables table there, and sandbox networks made by the real `palisade-netns`
//! code with their rules and registry entries, as the control plane makes them. Shared by the
//! firewall's tests, the runtime's firewall tests and `bench/`; each adds its own clients (a
//! bare namespace, a runc sandbox, a load generator). Everything is removed on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ipnet::{IpNet, Ipv4Net};
use palisade_ca::SandboxCa;
use palisade_firewall::{Firewall, FirewallConfig, Registry};
use palisade_netns::nft::{self, DnsPacketLimit, FirewallPorts, SandboxRules};
use palisade_netns::{AddressPool, HostNetPlatform, SandboxNet, SandboxNetSpec};
use palisade_policy::{NetworkPolicySpec, Policy};

use crate::{World, addrs};

/// Where the firewall listens in `fw` (the nftables redirect targets).
pub const PROXY_PORT: u16 = 15001;
pub const DNS_PORT: u16 = 15053;

/// The addresses sandboxes get.
pub fn sandbox_pool() -> Ipv4Net {
    Ipv4Net::new_assert(addrs::SANDBOX_POOL_V4, 20)
}

/// A firewall configuration for the world: the ports above, the world's DNS server as the
/// only upstream with a short timeout, and the world's test CA trusted upstream.
pub fn config(world: &World) -> FirewallConfig {
    let mut config = FirewallConfig {
        proxy_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, PROXY_PORT)),
        dns_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DNS_PORT)),
        extra_roots: vec![world.test_ca_path().to_owned()],
        ..FirewallConfig::default()
    };
    config.resolver.upstreams = vec![SocketAddr::from((addrs::DNS_V4, 53))];
    config.resolver.timeout = Duration::from_secs(1);
    config
}

/// Starts the firewall on `rt` (a runtime inside `fw`: the listening sockets must be made
/// there) and installs the base nftables table in `fw`.
pub fn start(
    world: &World,
    rt: &tokio::runtime::Runtime,
    config: FirewallConfig,
) -> Result<Firewall> {
    // Spawned, not run on this thread: only the runtime's threads are inside `fw`.
    let fw = rt
        .block_on(rt.spawn(async move { Firewall::start(&config).await }))
        .context("firewall start task")?
        .context("firewall starts")?;
    let ports = FirewallPorts {
        proxy: PROXY_PORT,
        dns: DNS_PORT,
    };
    nft::apply(
        &HostNetPlatform,
        Some(world.fw.name()),
        &nft::render_base(&ports, sandbox_pool()),
    )
    .context("base nftables rules")?;
    Ok(fw)
}

/// A policy as the API takes it, validated.
pub fn parse_policy(json: &str) -> Result<Policy> {
    let spec: NetworkPolicySpec = serde_json::from_str(json).context("policy JSON")?;
    spec.validate().map_err(|e| anyhow!("invalid policy: {e}"))
}

/// Makes sandbox networks in `fw` from one address pool.
#[derive(Debug, Clone)]
pub struct SandboxNets {
    fw_netns: String,
    registry: Arc<Registry>,
    pool: Arc<Mutex<AddressPool>>,
}

/// What else a sandbox network may need.
#[derive(Debug, Default)]
pub struct NetOptions<'a> {
    /// The user namespace the network namespace is made in (a runc sandbox's).
    pub owner_userns: Option<&'a Path>,
    /// The kernel's ceiling on its DNS queries.
    pub dns_limit: Option<DnsPacketLimit>,
    /// Give it its own CA in the registry (for interception).
    pub ca: bool,
}

impl SandboxNets {
    pub fn new(world: &World, fw: &Firewall) -> Result<Self> {
        Ok(Self {
            fw_netns: world.fw.name().to_owned(),
            registry: Arc::clone(fw.registry()),
            pool: Arc::new(Mutex::new(AddressPool::new(sandbox_pool())?)),
        })
    }

    /// A sandbox network `id` under `policy`, as the control plane makes one: namespace and
    /// veth, then its nftables chains, then the registry entry (version 1) and CA.
    pub fn create(&self, id: &str, policy: &Policy, opts: NetOptions<'_>) -> Result<SandboxNetBed> {
        let addrs = self
            .pool
            .lock()
            .map_err(|_| anyhow!("pool lock poisoned"))?
            .allocate()
            .context("address pool is full")?;
        let made = palisade_netns::create_sandbox_net(
            &HostNetPlatform,
            &SandboxNetSpec {
                id,
                host_netns: Some(&self.fw_netns),
                addrs,
                owner_userns: opts.owner_userns,
            },
        );
        let net = match made {
            Ok(net) => net,
            Err(e) => {
                if let Ok(mut pool) = self.pool.lock() {
                    pool.release(addrs);
                }
                return Err(e).context("sandbox network");
            }
        };
        // From here on, drop removes whatever was made.
        let sandbox = SandboxNetBed {
            net,
            nets: self.clone(),
            dns_limit: opts.dns_limit,
            ca: None,
        };
        sandbox.apply_rules(policy)?;
        self.registry.upsert(id, addrs.sandbox, policy.compile(), 1);
        let mut sandbox = sandbox;
        if opts.ca {
            let ca = Arc::new(SandboxCa::generate(id).context("sandbox CA")?);
            if !self.registry.set_ca(id, Arc::clone(&ca)) {
                bail!("the registry did not take the sandbox CA");
            }
            sandbox.ca = Some(ca);
        }
        Ok(sandbox)
    }
}

/// One sandbox network with its rules and registry entry; all removed on drop, and its
/// address given back.
#[derive(Debug)]
pub struct SandboxNetBed {
    pub net: SandboxNet,
    nets: SandboxNets,
    dns_limit: Option<DnsPacketLimit>,
    /// Its CA, when asked for.
    pub ca: Option<Arc<SandboxCa>>,
}

impl SandboxNetBed {
    pub fn id(&self) -> &str {
        &self.net.id
    }

    /// Replaces its nftables chains (UDP/ICMP to the policy's IPv4 `allow_cidrs`).
    pub fn apply_rules(&self, policy: &Policy) -> Result<()> {
        let cidrs: Vec<Ipv4Net> = policy
            .allow_cidrs()
            .iter()
            .filter_map(|c| match c {
                IpNet::V4(v4) => Some(*v4),
                IpNet::V6(_) => None,
            })
            .collect();
        let rules = SandboxRules {
            dns_limit: self.dns_limit,
            ..SandboxRules::for_net(&self.net, cidrs)
        };
        nft::apply(
            &HostNetPlatform,
            Some(&self.nets.fw_netns),
            &nft::render_sandbox(&rules),
        )
        .context("sandbox nftables rules")
    }

    /// Replaces the policy live, as the control plane does: rules first, then the data plane.
    pub fn set_policy(&self, policy: &Policy, version: u64) -> Result<()> {
        self.apply_rules(policy)?;
        self.swap_policy(policy, version)
    }

    /// Replaces the data plane's policy only (the kernel rules stay): for policies that differ
    /// in names and transforms, not in CIDRs, when only the swap is measured.
    pub fn swap_policy(&self, policy: &Policy, version: u64) -> Result<()> {
        if !self
            .nets
            .registry
            .update_policy(&self.net.id, policy.compile(), version)
        {
            bail!("the registry does not know sandbox {}", self.net.id);
        }
        Ok(())
    }
}

impl Drop for SandboxNetBed {
    fn drop(&mut self) {
        self.nets.registry.remove(&self.net.id);
        let _ = nft::apply(
            &HostNetPlatform,
            Some(&self.nets.fw_netns),
            &nft::render_remove_sandbox(&self.net.id, &self.net.host_if),
        );
        let _ = palisade_netns::remove_sandbox_net(
            &HostNetPlatform,
            &self.net.id,
            Some(&self.nets.fw_netns),
        );
        if let Ok(mut pool) = self.nets.pool.lock() {
            pool.release(self.net.addrs);
        }
    }
}
