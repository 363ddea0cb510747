//! A test world in network namespaces: a firewall host, an internet with upstream servers, and
//! sandboxes running real clients.
//!
//! [`World::new`] builds two namespaces: `fw`, the firewall host, whose only route leads to
//! `net`, "the internet", where in-process servers (HTTPS with a test CA, HTTP echo, TCP/UDP
//! echo and sinks, an authoritative DNS server for `test.`) log everything they receive into a
//! [`ServerLog`]. Everything is torn down on drop, also when a test panics. See README.md.

#![forbid(unsafe_code)]

pub mod addrs;
mod ca;
mod dns;
mod echo;
#[cfg(feature = "firewall")]
pub mod firewall;
mod http;
mod log;
mod netns;
mod reflect;
mod servers;
mod tcp;
mod world;

pub use dns::DnsZone;
pub use echo::{pattern, pattern_byte, sha256_hex};
pub use log::{DnsQuery, Kind, LogEntry, ServerLog, Transport};
pub use netns::{Netns, RuntimeOptions, cleanup_stale};
pub use world::{SandboxLike, World};
