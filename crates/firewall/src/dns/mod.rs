//! The filtering DNS resolver: a view per sandbox.
//!
//! Every query is decided by the policy of the sandbox it came from:
//! - not a sandbox address: REFUSED; `deny-all`: REFUSED at once;
//! - a name the policy does not allow (or cannot be canonicalised): NXDOMAIN with a 5 s negative
//!   TTL, and no upstream query, whatever the type or transport (threat 14);
//! - an allowed name, type A: resolved upstream, internal addresses outside `allow_cidrs`
//!   removed (threat 11), TTL capped; the answer is reported to the view for DNS-bound allows;
//! - an allowed name, any other type (AAAA, HTTPS, SVCB, MX, TXT, …): NOERROR with no records
//!   and no upstream query. The sandbox is IPv4-only, and not relaying other types keeps what a
//!   sandbox can learn or carry out through DNS to addresses of allowed names.
//!
//! Each query yields one egress event. A source over its query rate (`rate`) has its queries
//! dropped (UDP) or refused (TCP) before they are parsed, with one event a second counting them.

mod answer;
mod limits;
mod query;
mod rate;
mod server;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use palisade_policy::{CanonicalName, CompiledPolicy};

use crate::events::EventLog;

pub use limits::DnsLimits;
pub use server::{DnsServer, DnsServerHandle};

/// What the DNS server needs to know about sandboxes.
pub trait DnsView: Send + Sync + 'static {
    /// The sandbox id and current policy for a source address; `None`: not a sandbox (REFUSED).
    fn policy_for(&self, src: IpAddr) -> Option<(Arc<str>, Arc<CompiledPolicy>)>;
    /// Remember that this sandbox was just told these addresses for an allowed name (DNS-bound
    /// allows in the proxy).
    fn record_answer(&self, src: IpAddr, name: &CanonicalName, addrs: &[Ipv4Addr], ttl: Duration);
    /// Where the events of every query go.
    fn events(&self) -> &EventLog;
}

#[cfg(test)]
mod flood_tests;
#[cfg(test)]
mod tests;
