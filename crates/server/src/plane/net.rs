//! The kernel side of a sandbox: its network namespace and its nftables chains. Each call runs
//! `ip`/`nft` on a blocking thread; scripts are atomic, so a failure leaves the old rules.

use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use palisade_netns::nft::{self, DnsPacketLimit, SandboxRules};
use palisade_netns::{SandboxAddrs, SandboxNet, SandboxNetSpec};
use palisade_policy::Policy;
use palisade_store::SandboxRecord;

use super::{Plane, Result};

/// The IPv4 `allow_cidrs` of a policy (sandboxes have no IPv6).
pub(super) fn cidrs_v4(policy: &Policy) -> Vec<Ipv4Net> {
    policy
        .allow_cidrs()
        .iter()
        .filter_map(|c| match c {
            IpNet::V4(v4) => Some(*v4),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// The addresses of a stored sandbox, if it holds any.
pub(super) fn stored_addrs(rec: &SandboxRecord) -> Option<SandboxAddrs> {
    rec.sandbox.address.as_deref().and_then(addrs_of)
}

/// The /30 a stored sandbox address belongs to (host side is the address below it).
pub(super) fn addrs_of(sandbox: &str) -> Option<SandboxAddrs> {
    let ip: Ipv4Addr = sandbox.parse().ok()?;
    let host = Ipv4Addr::from(u32::from(ip).checked_sub(1)?);
    Some(SandboxAddrs {
        host,
        sandbox: ip,
        prefix_len: 30,
    })
}

pub(super) fn rules(
    id: &str,
    addrs: SandboxAddrs,
    policy: &Policy,
    dns_limit: Option<DnsPacketLimit>,
) -> SandboxRules {
    SandboxRules {
        id: id.to_owned(),
        host_if: palisade_netns::host_if_name(id),
        addrs,
        allow_cidrs_v4: cidrs_v4(policy),
        dns_limit,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, palisade_netns::NetnsError> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl Plane {
    /// The sandbox's network namespace, made inside its user namespace (`userns`, from the
    /// runtime) when it has one.
    pub(super) async fn net_create(
        &self,
        id: &str,
        addrs: SandboxAddrs,
        userns: Option<std::path::PathBuf>,
    ) -> Result<SandboxNet> {
        let host = self.cfg.host_netns.clone();
        let net = Arc::clone(&self.net);
        let id = id.to_owned();
        blocking(move || {
            palisade_netns::create_sandbox_net(
                net.as_ref(),
                &SandboxNetSpec {
                    id: &id,
                    host_netns: host.as_deref(),
                    addrs,
                    owner_userns: userns.as_deref(),
                },
            )
        })
        .await
    }

    /// Replaces the sandbox's chains (UDP/ICMP `allow_cidrs`) in one transaction.
    pub(super) async fn apply_rules(&self, r: SandboxRules) -> Result<()> {
        let host = self.cfg.host_netns.clone();
        let net = Arc::clone(&self.net);
        blocking(move || nft::apply(net.as_ref(), host.as_deref(), &nft::render_sandbox(&r))).await
    }

    /// Installs the base table and every given sandbox's chains at once (daemon start).
    pub(super) async fn apply_full(&self, all: Vec<SandboxRules>) -> Result<()> {
        let host = self.cfg.host_netns.clone();
        let net = Arc::clone(&self.net);
        let (ports, pool) = (self.cfg.ports, self.cfg.pool);
        blocking(move || {
            nft::apply(
                net.as_ref(),
                host.as_deref(),
                &nft::render_full(&ports, pool, &all),
            )
        })
        .await
    }

    /// Removes the chains and the namespace; both idempotent. Errors are logged: a half-removed
    /// sandbox has no rules left to let anything out (the base table rejects unknown sources).
    pub(super) async fn net_remove(&self, id: &str) {
        let host = self.cfg.host_netns.clone();
        let net = Arc::clone(&self.net);
        let id = id.to_owned();
        let res = blocking(move || {
            let script = nft::render_remove_sandbox(&id, &palisade_netns::host_if_name(&id));
            let nft_res = nft::apply(net.as_ref(), host.as_deref(), &script);
            let ns_res = palisade_netns::remove_sandbox_net(net.as_ref(), &id, host.as_deref());
            nft_res.and(ns_res)
        })
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "removing a sandbox network left something behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_address_gives_back_its_block() {
        let a = addrs_of("100.96.0.6").unwrap();
        assert_eq!(a.host, Ipv4Addr::new(100, 96, 0, 5));
        assert_eq!(a.prefix_len, 30);
        assert!(addrs_of("0.0.0.0").is_none());
        assert!(addrs_of("nonsense").is_none());
    }

    #[test]
    fn only_v4_cidrs_reach_the_rules() {
        let p = Policy::from_json(
            br#"{"mode":"custom","allow_cidrs":["10.0.0.0/24","2001:db8::/32"]}"#,
        )
        .unwrap();
        assert_eq!(
            cidrs_v4(&p),
            vec!["10.0.0.0/24".parse::<Ipv4Net>().unwrap()]
        );
        let r = rules("abc123", addrs_of("100.96.0.2").unwrap(), &p, None);
        assert_eq!(r.host_if, "plh-abc123");
    }
}
