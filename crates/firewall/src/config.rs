//! The firewall's daemon-level configuration: listen addresses, the sandbox address pool, the
//! upstream resolver, extra trusted roots and limits. Read from TOML; every field has a default.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Deserialize;
use smart_default::SmartDefault;

use crate::dns::DnsLimits;
use crate::resolve::ResolverConfig;

#[derive(Debug, Clone, SmartDefault, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// Where the transparent proxy listens; nftables redirects sandbox TCP here.
    #[default(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 15001)))]
    pub proxy_listen: SocketAddr,
    /// Where the filtering DNS server listens (UDP and TCP); sandbox port 53 is redirected here.
    #[default(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 15053)))]
    pub dns_listen: SocketAddr,
    /// Addresses handed to sandboxes, a /30 each.
    #[default(Ipv4Net::new(Ipv4Addr::new(100, 96, 0, 0), 16).unwrap_or_default())]
    pub address_pool: Ipv4Net,
    pub resolver: ResolverConfig,
    /// PEM files of roots trusted for upstream TLS, beside the system roots.
    pub extra_roots: Vec<PathBuf>,
    pub limits: Limits,
    /// Bounds of the filtering DNS server (`[firewall.dns]`), per sandbox and in total.
    pub dns: DnsLimits,
    pub synthetic: SyntheticConfig,
    /// The approval queue of `on_unknown: "hold"` policies (`[firewall.approvals]`).
    pub approvals: crate::hold::ApprovalsConfig,
}

/// Per-sandbox synthetic addresses, which bind name-less protocols to a name (`custom` mode).
#[derive(Debug, Clone, SmartDefault, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Where the addresses come from. It must not be a range the sandboxes need to reach
    /// directly: a connection into it is never dialled as such. The default is RFC 2544's
    /// benchmarking range, never routed on the internet.
    #[default(Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15).unwrap_or_default())]
    pub range: Ipv4Net,
    /// Names per sandbox with an address at once; beyond that, addresses unused for 15 minutes
    /// are reused.
    #[default(4096)]
    pub max_names_per_sandbox: usize,
    /// Where each sandbox's mappings are journaled, so they survive a restart; `palisade
    /// serve` uses `<data_dir>/synthetic` when unset. Unset elsewhere: kept in memory only.
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, SmartDefault, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// How long the proxy waits for the first bytes that name the destination.
    #[default(5_000)]
    pub peek_timeout_ms: u64,
    /// How many bytes it reads at most to find them; a larger ClientHello or head is denied.
    #[default(16 * 1024)]
    pub peek_max_bytes: usize,
    /// Open connections per sandbox; more are reset.
    #[default(1_024)]
    pub max_connections_per_sandbox: usize,
    /// Dialling an upstream gives up after this long.
    #[default(5_000)]
    pub connect_timeout_ms: u64,
    /// A connection with no traffic either way for this long is closed.
    #[default(600)]
    pub idle_timeout_s: u64,
    /// Relay buffer (and splice pipe) per direction, taken only while data moves.
    #[default(256 * 1024)]
    pub relay_buffer_bytes: usize,
    /// Move tunnel bytes with splice(2) through a pipe instead of copying them through a buffer.
    #[default(true)]
    pub relay_splice: bool,
}

impl Limits {
    pub fn peek_timeout(&self) -> Duration {
        Duration::from_millis(self.peek_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl FirewallConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.peek_max_bytes < 512 || l.peek_max_bytes > 1 << 20 {
            return Err(ConfigError::Invalid(
                "limits.peek_max_bytes must be between 512 and 1048576".into(),
            ));
        }
        if l.max_connections_per_sandbox == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_connections_per_sandbox must be at least 1".into(),
            ));
        }
        if l.relay_buffer_bytes < 4096 || l.relay_buffer_bytes > 16 << 20 {
            return Err(ConfigError::Invalid(
                "limits.relay_buffer_bytes must be between 4096 and 16777216".into(),
            ));
        }
        self.approvals.check().map_err(ConfigError::Invalid)?;
        let syn = &self.synthetic;
        if syn.range.prefix_len() > 24 || syn.range.prefix_len() < 8 {
            return Err(ConfigError::Invalid(
                "synthetic.range must be between a /8 and a /24".into(),
            ));
        }
        if syn.range.contains(&self.address_pool) || self.address_pool.contains(&syn.range) {
            return Err(ConfigError::Invalid(
                "synthetic.range must not overlap address_pool".into(),
            ));
        }
        if syn.max_names_per_sandbox == 0 {
            return Err(ConfigError::Invalid(
                "synthetic.max_names_per_sandbox must be at least 1".into(),
            ));
        }
        if self.address_pool.prefix_len() > 29 {
            return Err(ConfigError::Invalid(
                "address_pool must hold at least two /30 blocks (a prefix of /29 or shorter)"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_defaults() {
        let c = FirewallConfig::from_toml("").unwrap();
        assert_eq!(c.proxy_listen.port(), 15001);
        assert_eq!(c.address_pool.to_string(), "100.96.0.0/16");
    }

    #[test]
    fn unknown_fields_and_bad_limits_are_rejected() {
        assert!(FirewallConfig::from_toml("proxy_lisen = \"0.0.0.0:1\"").is_err());
        let e = FirewallConfig::from_toml("[limits]\npeek_max_bytes = 1").unwrap_err();
        assert!(e.to_string().contains("peek_max_bytes"), "{e}");
    }

    #[test]
    fn synthetic_range_is_checked() {
        let c = FirewallConfig::from_toml("").unwrap();
        assert_eq!(c.synthetic.range.to_string(), "198.18.0.0/15");
        let e = FirewallConfig::from_toml("[synthetic]\nrange = \"100.96.0.0/12\"").unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
        let e = FirewallConfig::from_toml("[synthetic]\nrange = \"198.18.0.0/30\"").unwrap_err();
        assert!(e.to_string().contains("synthetic.range"), "{e}");
    }

    #[test]
    fn approvals_bounds_are_checked() {
        let c = FirewallConfig::from_toml("[approvals]\ntimeout = \"5s\"").unwrap();
        assert_eq!(c.approvals.timeout, Duration::from_secs(5));
        assert_eq!(c.approvals.max_pending_per_sandbox, 16);
        for bad in [
            "timeout = \"0s\"",
            "timeout = \"1h\"",
            "max_pending_per_org = 0",
            "max_held_per_sandbox = 100000",
            "grant_ttl = \"10m\"",
        ] {
            let e = FirewallConfig::from_toml(&format!("[approvals]\n{bad}")).unwrap_err();
            assert!(e.to_string().contains("approvals."), "{bad}: {e}");
        }
        assert!(FirewallConfig::from_toml("[approvals]\nhold = 1").is_err());
    }

    #[test]
    fn sample_config_parses() {
        let text = include_str!("../../../config/palisade.example.toml");
        let root: toml::Table = toml::from_str(text).unwrap();
        let fw = root.get("firewall").cloned().unwrap();
        let c: FirewallConfig = fw.try_into().unwrap();
        c.check().unwrap();
    }
}
