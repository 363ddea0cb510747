//! The data plane: the transparent proxy that every TCP connection from a sandbox is redirected
//! to, the filtering DNS resolver, and the egress events that record every decision.
//!
//! [`Firewall::start`] binds both listeners; the control plane then adds sandboxes to the
//! [`registry::Registry`] and swaps their policies there. nftables (crate `palisade-netns`) sends
//! the traffic here.

#![forbid(unsafe_code)]

mod budget;
pub mod config;
pub mod decision;
mod delegate;
pub mod dns;
pub mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod hold;
pub mod proxy;
pub mod registry;
pub mod resolve;
pub mod synthetic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub use config::{FirewallConfig, Limits};
pub use dns::DnsLimits;
pub use events::{EgressEvent, EventLog};
pub use registry::Registry;

/// How many events the in-memory ring keeps.
const EVENT_RING: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot listen for proxied connections on {addr}: {source}")]
    ProxyBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for DNS on {addr}: {source}")]
    DnsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream resolver: {0}")]
    Resolver(String),
    #[error("cannot create the synthetic address journal directory {path}: {source}")]
    SyntheticDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("upstream TLS: {0}")]
    UpstreamTls(#[from] proxy::TlsConfigError),
}

/// A running data plane: the proxy and the DNS server, sharing one registry of sandboxes.
#[derive(Debug)]
pub struct Firewall {
    registry: Arc<Registry>,
    proxy_addr: SocketAddr,
    dns_udp: SocketAddr,
    dns_tcp: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Firewall {
    /// Binds the proxy and the DNS server and starts serving. Must run inside the tokio runtime
    /// (and network namespace) the data plane lives in.
    pub async fn start(config: &FirewallConfig) -> Result<Self, FirewallError> {
        let events = Arc::new(EventLog::new(EVENT_RING));
        if let Some(dir) = &config.synthetic.state_dir {
            create_private_dir(dir).map_err(|source| FirewallError::SyntheticDir {
                path: dir.clone(),
                source,
            })?;
        }
        let registry = Arc::new(Registry::with_synthetic(events, config.synthetic.clone()));
        registry.approvals().configure(config.approvals.clone());
        let resolver = Arc::new(
            resolve::UpstreamResolver::new(&config.resolver)
                .map_err(|e| FirewallError::Resolver(e.to_string()))?,
        );
        let upstream_tls = proxy::upstream_tls_config(&config.extra_roots)?;
        let (local, local_task) = proxy::LocalAddrs::start(Duration::from_secs(2));
        let proxy = proxy::Proxy::bind(
            config.proxy_listen,
            Arc::clone(&registry),
            Arc::clone(&resolver),
            config.limits.clone(),
            local,
            upstream_tls,
        )
        .await
        .map_err(|source| FirewallError::ProxyBind {
            addr: config.proxy_listen,
            source,
        })?;
        let proxy_addr = proxy
            .local_addr()
            .map_err(|source| FirewallError::ProxyBind {
                addr: config.proxy_listen,
                source,
            })?;
        let view: Arc<dyn dns::DnsView> = registry.clone();
        let dns = dns::DnsServer::bind(config.dns_listen, view, resolver, config.dns.clone())
            .await
            .map_err(|source| FirewallError::DnsBind {
                addr: config.dns_listen,
                source,
            })?;
        let (dns_udp, dns_tcp) = (dns.udp_addr(), dns.tcp_addr());
        let tasks = vec![
            local_task,
            tokio::spawn(proxy.run()),
            tokio::spawn(dns.run()),
        ];
        tracing::info!(proxy = %proxy_addr, dns = %dns_udp, "firewall data plane listening");
        Ok(Self {
            registry,
            proxy_addr,
            dns_udp,
            dns_tcp,
            tasks,
        })
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn events(&self) -> &Arc<EventLog> {
        self.registry.event_log()
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    pub fn dns_udp_addr(&self) -> SocketAddr {
        self.dns_udp
    }

    pub fn dns_tcp_addr(&self) -> SocketAddr {
        self.dns_tcp
    }
}

/// The journals name the sandboxes' allowed names: readable by root only.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Drop for Firewall {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
