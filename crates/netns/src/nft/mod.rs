//! nftables: the `inet palisade` table rendered as text by pure code ([`render_base`],
//! [`render_sandbox`], [`render_remove_sandbox`], [`render_full`]) and applied by a thin shell
//! (`nft -f -`, one atomic transaction per script).
//!
//! Everything from a sandbox interface (`plh-*`): IPv6 and spoofed sources dropped before
//! conntrack; DNS (UDP/TCP 53, any address) redirected to the firewall's resolver and every other
//! TCP to its transparent proxy; UDP and ICMP forwarded only to the sandbox's `allow_cidrs`;
//! anything else rejected at once. The rules outlive the daemon: with nobody listening on the
//! redirect ports, connections are refused, never let through.

mod render;

use ipnet::Ipv4Net;

pub use render::{
    MAP_FWD, MAP_PRE, TABLE, fwd_chain, pre_chain, render_base, render_full, render_remove_sandbox,
    render_sandbox, validate_ports, validate_rules,
};

use crate::sandbox::{exec_in, validate_id, validate_netns_name};
use crate::{NetPlatform, NetnsError, SandboxAddrs, SandboxNet};

/// Where the firewall listens in the host namespace (on every address, or on each sandbox's
/// host-side address: the redirect sends to the address of the interface the packet came in on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirewallPorts {
    /// Transparent proxy (TCP).
    pub proxy: u16,
    /// Filtering resolver (UDP and TCP).
    pub dns: u16,
}

/// What one sandbox's chains need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRules {
    /// Sandbox id.
    pub id: String,
    /// Host-side interface, `plh-<id>`.
    pub host_if: String,
    /// Its addresses (the sandbox side is the only source accepted from `host_if`).
    pub addrs: SandboxAddrs,
    /// Destinations UDP and ICMP may reach (TCP always goes to the proxy).
    pub allow_cidrs_v4: Vec<Ipv4Net>,
    /// Ceiling on the sandbox's UDP DNS queries; `None`: no ceiling.
    pub dns_limit: Option<DnsPacketLimit>,
}

/// A per-sandbox ceiling on UDP packets to port 53, enforced in the sandbox's raw-prerouting
/// chain, before conntrack: a flood past it is dropped by the kernel and never reaches the
/// resolver's socket, whose one receive queue every sandbox's queries share (a sender faster
/// than the resolver's receive loop would otherwise fill it and the others' queries be lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsPacketLimit {
    /// Packets per second, sustained (at least 1).
    pub per_second: u32,
    /// Packets at once above that rate (at least 1).
    pub burst: u32,
}

impl SandboxRules {
    /// The rules for a sandbox network as built by [`crate::create_sandbox_net`].
    pub fn for_net(net: &SandboxNet, allow_cidrs_v4: Vec<Ipv4Net>) -> Self {
        Self {
            id: net.id.clone(),
            host_if: net.host_if.clone(),
            addrs: net.addrs,
            allow_cidrs_v4,
            dns_limit: None,
        }
    }
}

/// Applies `script` with `nft -f -` in the host namespace: one transaction, all or nothing.
pub fn apply(
    p: &dyn NetPlatform,
    host_netns: Option<&str>,
    script: &str,
) -> Result<(), NetnsError> {
    nft_stdin(p, host_netns, &["-f", "-"], script)
}

/// Checks `script` with `nft -c -f -` (the kernel validates the batch, nothing changes).
pub fn check(
    p: &dyn NetPlatform,
    host_netns: Option<&str>,
    script: &str,
) -> Result<(), NetnsError> {
    nft_stdin(p, host_netns, &["-c", "-f", "-"], script)
}

fn nft_stdin(
    p: &dyn NetPlatform,
    host_netns: Option<&str>,
    args: &[&str],
    script: &str,
) -> Result<(), NetnsError> {
    if let Some(ns) = host_netns {
        validate_netns_name(ns)?;
    }
    if let Some(reason) = script.strip_prefix(render::INVALID_MARKER) {
        return Err(NetnsError::InvalidRules(
            reason.lines().next().unwrap_or_default().to_owned(),
        ));
    }
    exec_in(p, host_netns, "nft", args, Some(script)).map(drop)
}

/// Whether the `inet palisade` table exists in the host namespace.
pub fn table_exists(p: &dyn NetPlatform, host_netns: Option<&str>) -> Result<bool, NetnsError> {
    if let Some(ns) = host_netns {
        validate_netns_name(ns)?;
    }
    let out = exec_in(p, host_netns, "nft", &["list", "tables", "inet"], None)?;
    Ok(out.lines().any(|l| l.trim() == "table inet palisade"))
}

/// Ids of the sandboxes whose chains are in the kernel (empty when the table is absent).
pub fn list_sandbox_ids(
    p: &dyn NetPlatform,
    host_netns: Option<&str>,
) -> Result<Vec<String>, NetnsError> {
    if !table_exists(p, host_netns)? {
        return Ok(Vec::new());
    }
    let out = exec_in(
        p,
        host_netns,
        "nft",
        &["-t", "list", "table", "inet", "palisade"],
        None,
    )?;
    let mut ids: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain sb_")?.strip_suffix(" {"))
        .filter_map(|name| {
            let id = name
                .strip_suffix("_pre")
                .or_else(|| name.strip_suffix("_fwd"))?;
            validate_id(id).ok().map(|()| id.to_owned())
        })
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

#[cfg(test)]
mod tests;
