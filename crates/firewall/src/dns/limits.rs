//! Bounds on what one client can make the resolver do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use smart_default::SmartDefault;

/// Limits of the DNS server. Every field has a default; durations are written `"10s"`.
#[derive(Debug, Clone, PartialEq, Eq, SmartDefault, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsLimits {
    /// Largest UDP response sent to a client that advertises a bigger EDNS buffer (512 without
    /// EDNS, as RFC 1035 says; 1232 is the DNS flag day value).
    #[default(1232)]
    pub max_udp_payload: u16,
    /// Largest query accepted over TCP, in bytes; a longer one closes the connection.
    #[default(4096)]
    pub max_tcp_message: u16,
    /// Open TCP connections, all sources together.
    #[default(512)]
    pub max_tcp_connections: usize,
    /// Open TCP connections from one source.
    #[default(32)]
    pub max_tcp_connections_per_source: usize,
    /// A TCP connection with no complete query for this long is closed.
    #[default(Duration::from_secs(10))]
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// Queries being answered for one source at once; more are dropped (UDP) or close the
    /// connection (TCP).
    #[default(64)]
    pub max_inflight_per_source: usize,
    /// Queries being answered at once, all sources together.
    #[default(2048)]
    pub max_inflight: usize,
    /// Queries one source (sandbox) may send per second, sustained; past it (and the burst)
    /// UDP queries are dropped unread and TCP ones answered REFUSED, with one event a second
    /// counting them. It keeps a flooding sandbox from taking the server from the others.
    /// 0 turns the limit off.
    #[default(500)]
    pub queries_per_second_per_source: u32,
    /// Queries one source may send at once above that rate (the bucket's size).
    #[default(2_000)]
    pub query_burst_per_source: u32,
    /// The longest one query may take, upstream included, before it is answered SERVFAIL.
    #[default(Duration::from_secs(5))]
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Negative TTL (SOA minimum) of synthesised answers: short, so a policy update is seen at once.
    #[default(Duration::from_secs(5))]
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
}

/// Counts of things held per source, with a total; a slot is released when its guard drops.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    inner: Arc<Mutex<SlotState>>,
    per_source: usize,
    total: usize,
}

#[derive(Debug, Default)]
struct SlotState {
    by_source: HashMap<IpAddr, usize>,
    total: usize,
}

impl Slots {
    pub(crate) fn new(per_source: usize, total: usize) -> Self {
        Self {
            inner: Arc::default(),
            per_source,
            total,
        }
    }

    /// A slot for `src`, or `None` when it or everyone together is at the limit.
    pub(crate) fn try_acquire(&self, src: IpAddr) -> Option<SlotGuard> {
        let mut state = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.total >= self.total {
            return None;
        }
        let count = state.by_source.entry(src).or_insert(0);
        if *count >= self.per_source {
            return None;
        }
        *count += 1;
        state.total += 1;
        Some(SlotGuard {
            slots: Arc::clone(&self.inner),
            src,
        })
    }
}

/// One held slot.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    slots: Arc<Mutex<SlotState>>,
    src: IpAddr,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut state = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.total = state.total.saturating_sub(1);
        if let Some(count) = state.by_source.get_mut(&self.src) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.by_source.remove(&self.src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_per_source_and_total() {
        let slots = Slots::new(2, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.try_acquire(a).unwrap();
        let _a2 = slots.try_acquire(a).unwrap();
        assert!(slots.try_acquire(a).is_none(), "per-source cap");
        let _b1 = slots.try_acquire(b).unwrap();
        assert!(slots.try_acquire(b).is_none(), "total cap");
        drop(a1);
        assert!(slots.try_acquire(b).is_some(), "released on drop");
    }

    #[test]
    fn limits_parse_with_defaults() {
        let l: DnsLimits = toml::from_str("tcp_idle_timeout = \"3s\"").unwrap();
        assert_eq!(l.tcp_idle_timeout, Duration::from_secs(3));
        assert_eq!(l.max_udp_payload, 1232);
        assert!(toml::from_str::<DnsLimits>("nope = 1").is_err());
    }
}
