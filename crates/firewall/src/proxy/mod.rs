//! The transparent proxy. nftables redirects every TCP connection from a sandbox here. A
//! connection goes through the stages in this order, one module each:
//!
//! 1. `accept`: the listener; the sandbox by source address, the original destination
//!    (`palisade_netns::original_dst`), a synthetic address's name, a slot under the cap;
//! 2. `conn`: the connection's context, which every later stage uses to record events, refuse,
//!    and resolve and dial under the address checks;
//! 3. `dispatch`: a bounded peek at the first bytes, the decision (`plan`), and the hand-off;
//! 4. `tunnel` (opaque relay), `http` (plain HTTP per request), `intercept` (TLS termination for
//!    transform domains); the two HTTP paths share `pipeline`.

mod accept;
mod audit;
mod budgeted;
mod conn;
mod dispatch;
mod drain;
mod framing;
mod held;
mod http;
mod intercept;
mod local;
mod peek;
mod pipeline;
pub mod plan;
mod relay;
mod rewrite;
mod scrub;
mod tunnel;
mod upstream;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Limits;
use crate::registry::Registry;
use crate::resolve::UpstreamResolver;

pub use accept::Proxy;
pub(crate) use conn::Conn;
pub use local::LocalAddrs;
use relay::BufferPool;
pub(crate) use upstream::UpstreamClient;
pub use upstream::{TlsConfigError, upstream_tls_config};

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    registry: Arc<Registry>,
    resolver: Arc<UpstreamResolver>,
    limits: Limits,
    local: Arc<LocalAddrs>,
    pool: BufferPool,
    upstream_tls: Arc<rustls::ClientConfig>,
}

impl Shared {
    /// The firewall host's own addresses and sandbox addresses are never dialled on a
    /// sandbox's behalf unless `allow_cidrs` says so.
    fn is_own(&self, ip: IpAddr) -> bool {
        self.local.contains(ip) || self.registry.by_addr(ip).is_some()
    }
}

/// Runs arbitrary client bytes through the intercepted request path (the fuzz target's body);
/// panics if a forwarded request breaks an invariant. Returns how many requests were forwarded.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn intercept_harness_run(data: &[u8]) -> usize {
    intercept::harness::run(data).len()
}
