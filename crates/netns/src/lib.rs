//! Network namespaces, veth pairs, addresses and the per-sandbox nftables chain: rendering is
//! pure, applying is a thin shell.
//!
//! Every sandbox gets a namespace `pls-<id>` joined to the host by a veth pair (`plh-<id>` on the
//! host, `eth0` inside) carrying a /30 from an [`AddressPool`]; inside, IPv4 only, a default route
//! and `resolv.conf` pointing at the host side. The firewall's rules live in the nftables table
//! `inet palisade` of the host namespace ([`nft`]). All effects go through [`NetPlatform`]: the real
//! one runs `ip`, `nft` and `sysctl`; [`RecordingNetPlatform`] records calls for tests.
//!
//! Everything takes an optional host namespace: `None` in production (the daemon's own), a
//! test-made namespace in tests, so tests never touch the real host's links or rules.
//!
//! [`create_sandbox_net`] sets `net.ipv4.ip_forward=1` in the host namespace: UDP and ICMP to a
//! sandbox's `allow_cidrs` are forwarded (and masqueraded), not proxied.

#![forbid(unsafe_code)]

mod error;
pub mod nft;
mod platform;
mod pool;
mod reconcile;
mod redirect;
mod sandbox;

pub use error::NetnsError;
pub use platform::{Call, HostNetPlatform, NetPlatform, RecordingNetPlatform};
pub use pool::{AddressPool, DEFAULT_POOL, SandboxAddrs};
pub use reconcile::remove_stale_sandbox_nets;
pub use redirect::original_dst;
pub use sandbox::{
    HOST_IF_PREFIX, NETNS_ETC_DIR, NETNS_PREFIX, NETNS_RUN_DIR, SANDBOX_IF, SandboxNet,
    SandboxNetSpec, add_netns, create_sandbox_net, exec_in, host_if_name, list_sandbox_netns,
    netns_name, remove_sandbox_net, resolv_conf_path, validate_id, validate_netns_name,
};
