//! The filtering DNS resolver: a view per sandbox.
//!
//! Every query is decided by the policy of the sandbox it came from:
//! - not a sandbox address: REFUSED; `deny-all`: REFUSED at once;
//! - a name the policy does not allow (or cannot be canonicalised): NXDOMAIN with a 5 s negative
//!   TTL, and no upstream query, whatever the type or transport (threat 14);
//! - an allowed name, type A: resolved upstream, internal addresses outside `allow_cidrs`
//!   removed (threat 11), TTL capped; the view says what the sandbox is told: in `custom` mode
//!   a synthetic address of its own that the proxy maps back to the name (`crate::synthetic`);
//! - an allowed name, any other type (AAAA, HTTPS, SVCB, MX, TXT, …): NOERROR with no records
//!   and no upstream query. The sandbox is IPv4-only, and not relaying other types keeps what a
//!   sandbox can learn or carry out through DNS to addresses of allowed names.
//!
//! Each query yields one egress event. A source over its query rate (`rate`) has its queries
//! dropped (UDP) or refused (TCP) before they are parsed, with one event a second counting them.

mod answer;
mod batch;
mod limits;
mod query;
mod rate;
mod server;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use palisade_policy::{CanonicalName, CompiledPolicy};

use crate::events::EventLog;

pub use limits::DnsLimits;
pub use server::{DnsServer, DnsServerHandle};

/// What the DNS server needs to know about sandboxes.
pub trait DnsView: std::fmt::Debug + Send + Sync + 'static {
    /// The sandbox id and current policy for a source address; `None`: not a sandbox (REFUSED).
    fn policy_for(&self, src: IpAddr) -> Option<(Arc<str>, Arc<CompiledPolicy>)>;
    /// The addresses this sandbox is told for an allowed name that resolved to `resolved`
    /// (internal addresses already removed): the real ones, or a synthetic address that binds
    /// name-less connections to the name. An error is answered SERVFAIL.
    fn answer_addrs(
        &self,
        src: IpAddr,
        name: &CanonicalName,
        resolved: &[Ipv4Addr],
    ) -> Result<Vec<Ipv4Addr>, String>;
    /// Where the events of every query go.
    fn events(&self) -> &EventLog;
    /// The approval queue, where queries for names a `hold` policy does not list wait; `None`:
    /// such queries are refused like any unlisted name.
    fn approvals(&self) -> Option<&Arc<crate::hold::Approvals>> {
        None
    }
}

#[cfg(test)]
mod flood_tests;
#[cfg(test)]
mod tests;
