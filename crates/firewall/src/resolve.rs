//! Upstream resolution for allowed names, with a cache.
//!
//! Only the nameservers named in [`ResolverConfig`] are ever asked: never the system
//! configuration, no hosts file, no search list. Names are sent fully qualified, in their
//! canonical spelling, so what was decided is exactly what is resolved.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use palisade_policy::CanonicalName;
use serde::Deserialize;
use smart_default::SmartDefault;

/// How to reach upstream resolvers.
#[derive(Clone, Debug, PartialEq, Eq, SmartDefault, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverConfig {
    /// Upstream recursive resolvers, asked over UDP first and TCP on truncation or error.
    pub upstreams: Vec<SocketAddr>,
    /// Time allowed for one attempt against one upstream (`"2s"`, `"500ms"`).
    #[default(Duration::from_secs(2))]
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per query before giving up (1..=5).
    #[default(2)]
    pub attempts: usize,
    /// Cached responses kept (0 disables the cache).
    #[default(4096)]
    pub cache_size: usize,
    /// The longest time an upstream answer is cached and handed to a sandbox.
    #[default(Duration::from_secs(60))]
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl ResolverConfig {
    /// Checks the bounds that keep a query from hanging or caching for too long.
    pub fn validate(&self) -> Result<(), ResolveError> {
        if self.upstreams.is_empty() {
            return Err(ResolveError::Config(
                "no upstream resolver configured".into(),
            ));
        }
        if let Some(bad) = self.upstreams.iter().find(|a| a.port() == 0) {
            return Err(ResolveError::Config(format!("upstream {bad} has port 0")));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(30) {
            return Err(ResolveError::Config(
                "timeout must be between 1ms and 30s".into(),
            ));
        }
        if !(1..=5).contains(&self.attempts) {
            return Err(ResolveError::Config("attempts must be 1..=5".into()));
        }
        if self.max_ttl < Duration::from_secs(1) || self.max_ttl > Duration::from_secs(86_400) {
            return Err(ResolveError::Config(
                "max_ttl must be between 1s and 1d".into(),
            ));
        }
        Ok(())
    }
}

/// Why an upstream lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The configuration is unusable (internal side).
    #[error("resolver config: {0}")]
    Config(String),
    /// The name could not be turned into a DNS name (should not happen for canonical names).
    #[error("name not resolvable: {0}")]
    Name(String),
    /// The upstream resolver failed, timed out or refused (upstream side).
    #[error("upstream resolver: {0}")]
    Upstream(String),
}

/// The IPv4 addresses of a name, after following CNAMEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Empty when the name does not exist or has no A records.
    pub addrs: Vec<Ipv4Addr>,
    /// How long the answer may be used (capped at `max_ttl`).
    pub ttl: Duration,
}

/// TTL used for negative answers when the upstream gave no SOA.
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// The longest an upstream negative answer is cached.
const NEGATIVE_CACHE_MAX: Duration = Duration::from_secs(30);

/// A caching resolver that asks only the configured upstreams.
pub struct UpstreamResolver {
    inner: TokioResolver,
    max_ttl: Duration,
    upstreams: Vec<SocketAddr>,
    /// Answers by canonical name, until they expire: a hit is answered without building a
    /// hickory query or entering its resolver (which may not complete on its first poll).
    answers: Mutex<HashMap<CanonicalName, (Vec<Ipv4Addr>, Instant)>>,
    cache_size: usize,
}

impl std::fmt::Debug for UpstreamResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResolver")
            .field("upstreams", &self.upstreams)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

impl UpstreamResolver {
    pub fn new(cfg: &ResolverConfig) -> Result<Self, ResolveError> {
        cfg.validate()?;
        let servers = cfg
            .upstreams
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        // `from_name_servers` has no domain and no search list.
        let config = HickoryConfig::from_name_servers(servers);
        let mut opts = ResolverOpts::default();
        opts.ndots = 0;
        opts.timeout = cfg.timeout;
        opts.attempts = cfg.attempts;
        opts.cache_size = u64::try_from(cfg.cache_size).unwrap_or(u64::MAX);
        opts.use_hosts_file = ResolveHosts::Never;
        opts.positive_max_ttl = Some(cfg.max_ttl);
        // Negative answers are cached briefly so a name that appears upstream shows up soon.
        opts.negative_max_ttl = Some(cfg.max_ttl.min(NEGATIVE_CACHE_MAX));
        opts.try_tcp_on_error = true;
        opts.preserve_intermediates = true;
        opts.recursion_desired = true;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolveError::Config(e.to_string()))?;
        Ok(Self {
            inner,
            max_ttl: cfg.max_ttl,
            upstreams: cfg.upstreams.clone(),
            answers: Mutex::default(),
            cache_size: cfg.cache_size,
        })
    }

    /// The A records of `name`. A name that does not exist, or has no A records, is an empty
    /// answer rather than an error; only a failing upstream is an error.
    pub async fn lookup_ipv4(&self, name: &CanonicalName) -> Result<Resolved, ResolveError> {
        if let Some(hit) = self.cached(name) {
            return Ok(hit);
        }
        let resolved = self.lookup_upstream(name).await?;
        self.remember(name, &resolved);
        Ok(resolved)
    }

    fn cached(&self, name: &CanonicalName) -> Option<Resolved> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let (addrs, until) = answers.get(name)?;
        let ttl = until.saturating_duration_since(Instant::now());
        (!ttl.is_zero()).then(|| Resolved {
            addrs: addrs.clone(),
            ttl,
        })
    }

    fn remember(&self, name: &CanonicalName, resolved: &Resolved) {
        if self.cache_size == 0 || resolved.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.len() >= self.cache_size && !answers.contains_key(name) {
            answers.retain(|_, (_, until)| *until > now);
            if answers.len() >= self.cache_size {
                // Still full of live answers: start over rather than grow past the bound.
                answers.clear();
            }
        }
        answers.insert(name.clone(), (resolved.addrs.clone(), now + resolved.ttl));
    }

    async fn lookup_upstream(&self, name: &CanonicalName) -> Result<Resolved, ResolveError> {
        let fqdn = Name::from_ascii(format!("{}.", name.as_str()))
            .map_err(|e| ResolveError::Name(e.to_string()))?;
        match self.inner.lookup(fqdn, RecordType::A).await {
            Ok(lookup) => {
                let addrs: Vec<Ipv4Addr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(a.0),
                        _ => None,
                    })
                    .collect();
                let remaining = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                Ok(Resolved {
                    addrs,
                    ttl: remaining.min(self.max_ttl),
                })
            }
            Err(e) => match negative_ttl(&e) {
                Some(ttl) => Ok(Resolved {
                    addrs: Vec::new(),
                    ttl: ttl.min(self.max_ttl),
                }),
                None => Err(ResolveError::Upstream(e.to_string())),
            },
        }
    }
}

/// The negative TTL of an NXDOMAIN or NODATA answer; `None` for real failures.
fn negative_ttl(e: &NetError) -> Option<Duration> {
    use hickory_resolver::net::DnsError;
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => Some(
            nr.negative_ttl
                .map_or(DEFAULT_NEGATIVE_TTL, |s| Duration::from_secs(u64::from(s))),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_durations() {
        let cfg: ResolverConfig = toml::from_str(
            "upstreams = [\"127.0.0.1:5353\"]\ntimeout = \"500ms\"\nmax_ttl = \"30s\"",
        )
        .unwrap();
        assert_eq!(cfg.timeout, Duration::from_millis(500));
        assert_eq!(cfg.max_ttl, Duration::from_secs(30));
        assert_eq!(cfg.attempts, 2);
        cfg.validate().unwrap();
        assert!(toml::from_str::<ResolverConfig>("bogus = 1").is_err());
    }

    #[test]
    fn answer_cache_honours_ttl_and_bound() {
        // Nothing is ever sent: only the cache in front of the upstream is exercised.
        let cfg = ResolverConfig {
            upstreams: vec!["127.0.0.1:53".parse().unwrap()],
            cache_size: 2,
            ..ResolverConfig::default()
        };
        let r = UpstreamResolver::new(&cfg).unwrap();
        let name = |s: &str| palisade_policy::canonicalize(s.as_bytes()).unwrap();
        let one = |ip: [u8; 4], secs| Resolved {
            addrs: vec![Ipv4Addr::from(ip)],
            ttl: Duration::from_secs(secs),
        };
        assert!(r.cached(&name("a.test")).is_none());
        r.remember(&name("a.test"), &one([198, 51, 100, 1], 30));
        r.remember(&name("gone.test"), &one([198, 51, 100, 2], 0));
        let hit = r.cached(&name("a.test")).unwrap();
        assert_eq!(hit.addrs, [Ipv4Addr::new(198, 51, 100, 1)]);
        assert!(hit.ttl <= Duration::from_secs(30) && hit.ttl > Duration::from_secs(28));
        assert!(
            r.cached(&name("gone.test")).is_none(),
            "TTL 0 is not cached"
        );
        r.remember(&name("b.test"), &one([198, 51, 100, 3], 30));
        r.remember(&name("c.test"), &one([198, 51, 100, 4], 30));
        let held = r.answers.lock().unwrap().len();
        assert!(held <= 2, "cache bound kept: {held}");
        assert!(r.cached(&name("c.test")).is_some());
    }

    #[test]
    fn config_rejects_unusable_values() {
        assert!(ResolverConfig::default().validate().is_err());
        let ok = ResolverConfig {
            upstreams: vec!["127.0.0.1:53".parse().unwrap()],
            ..ResolverConfig::default()
        };
        ok.validate().unwrap();
        for bad in [
            ResolverConfig {
                attempts: 0,
                ..ok.clone()
            },
            ResolverConfig {
                timeout: Duration::ZERO,
                ..ok.clone()
            },
            ResolverConfig {
                max_ttl: Duration::ZERO,
                ..ok.clone()
            },
            ResolverConfig {
                upstreams: vec!["127.0.0.1:0".parse().unwrap()],
                ..ok.clone()
            },
        ] {
            assert!(UpstreamResolver::new(&bad).is_err(), "{bad:?}");
        }
    }
}
