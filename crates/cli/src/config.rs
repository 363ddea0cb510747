//! The daemon's configuration: one TOML file, every setting with a default, flags on top.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use palisade_firewall::FirewallConfig;
use serde::Deserialize;
use smart_default::SmartDefault;

#[derive(Debug, Clone, SmartDefault, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerSection {
    /// The Leap0-compatible API.
    #[default(SocketAddr::from(([127, 0, 0, 1], 8080)))]
    pub listen: SocketAddr,
    /// Prometheus metrics; keep it on loopback.
    #[default(SocketAddr::from(([127, 0, 0, 1], 9090)))]
    pub admin: SocketAddr,
    /// Store, seal key, templates, sandboxes, snapshots.
    #[default(PathBuf::from("/var/lib/palisade"))]
    pub data_dir: PathBuf,
    /// Most sandboxes alive at once per organisation when the organisation sets none.
    pub default_quota: Option<i64>,
    /// How often sandbox deadlines are checked, in seconds.
    #[default(5)]
    pub sweep_interval_s: u64,
    /// First host uid/gid of the sandboxes' user namespace ranges (65536 ids each); the ids
    /// from here on must belong to no one on the host.
    #[default(palisade_runtime::UsernsConfig::default().first_host_id)]
    pub sandbox_first_host_id: u32,
    /// How many id ranges (sandboxes at once on this host).
    #[default(palisade_runtime::UsernsConfig::default().slots)]
    pub sandbox_id_ranges: u32,
    /// The Debian mirror the `system/debian:bookworm` template is built from (unset: the
    /// mirror of the host's own APT sources).
    pub debian_mirror: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub server: ServerSection,
    pub firewall: FirewallConfig,
}

impl Config {
    pub(crate) fn from_toml(text: &str) -> anyhow::Result<Self> {
        let c: Config = toml::from_str(text).context("invalid configuration")?;
        // The firewall checks its own limits; round-trip its section through its parser.
        let root: toml::Table = toml::from_str(text)?;
        if let Some(fw) = root.get("firewall") {
            FirewallConfig::from_toml(&toml::to_string(fw)?)
                .context("invalid [firewall] configuration")?;
        }
        Ok(c)
    }

    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                Self::from_toml(&text)
            }
            None => Ok(Self::default()),
        }
    }

    /// The host's resolvers when the configuration names none.
    pub(crate) fn fill_resolvers(&mut self) -> anyhow::Result<()> {
        if self.firewall.resolver.upstreams.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            self.firewall.resolver.upstreams = resolv_conf_nameservers(&text);
            anyhow::ensure!(
                !self.firewall.resolver.upstreams.is_empty(),
                "no upstream resolver: set [firewall.resolver] upstreams (none in /etc/resolv.conf)"
            );
        }
        Ok(())
    }
}

/// `nameserver` lines of a resolv.conf, as port-53 addresses.
pub(crate) fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses() {
        let c = Config::from_toml(include_str!("../../../config/palisade.example.toml")).unwrap();
        assert_eq!(c.server.listen.port(), 8080);
        assert!(c.server.admin.ip().is_loopback());
        assert_eq!(c.firewall.dns.queries_per_second_per_source, 500);
        assert_eq!(c.firewall.dns.query_burst_per_source, 2000);
    }

    #[test]
    fn unknown_keys_and_bad_limits_are_errors() {
        assert!(Config::from_toml("[server]\nlisten_typo = \"1.2.3.4:1\"").is_err());
        assert!(Config::from_toml("[firewall.limits]\npeek_max_bytes = 1").is_err());
        assert!(Config::from_toml("[server]\nlisten = \"nonsense\"").is_err());
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.server.data_dir, PathBuf::from("/var/lib/palisade"));
    }

    #[test]
    fn resolv_conf_parsing() {
        let got = resolv_conf_nameservers(
            "# x\nnameserver 10.0.0.2\nsearch a\nnameserver fe80::1%eth0\nnameserver bogus\n",
        );
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], "10.0.0.2:53".parse().unwrap());
    }
}
