//! The sandboxes the data plane knows, found by source address.
//!
//! Each entry holds the sandbox's compiled policy behind an atomic pointer: a policy update is one
//! swap, seen by the next connection and DNS query, and announced to open connections so they
//! can check themselves against it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use palisade_ca::SandboxCa;
use palisade_policy::{CanonicalName, CompiledPolicy};
use tokio::sync::watch;

use crate::budget::{Meters, Tally};
use crate::dns::DnsView;
use crate::events::EventLog;

/// How many DNS answers a sandbox's binding table keeps; the oldest expire first.
const MAX_DNS_BINDINGS: usize = 4096;

/// One sandbox as the data plane sees it.
#[derive(Debug)]
pub struct SandboxEntry {
    id: Arc<str>,
    addr: Ipv4Addr,
    policy: ArcSwap<CompiledPolicy>,
    /// Byte budget meters, rebuilt from the old ones on a policy update so counts carry over.
    meters: ArcSwap<Meters>,
    version: watch::Sender<u64>,
    bindings: Mutex<HashMap<Ipv4Addr, Binding>>,
    connections: AtomicUsize,
    /// The sandbox's CA, for interception of transform domains; none means such connections
    /// are refused (fail closed) rather than passed through without their transform.
    ca: ArcSwapOption<SandboxCa>,
    /// The TLS server configuration minting leaves from `ca`, built once per CA.
    tls: Mutex<Option<(Arc<SandboxCa>, Arc<rustls::ServerConfig>)>>,
    /// The pooled upstream client of intercepted requests.
    pub(crate) upstream: std::sync::OnceLock<crate::proxy::UpstreamClient>,
}

#[derive(Debug, Clone)]
struct Binding {
    name: CanonicalName,
    expires: Instant,
}

impl SandboxEntry {
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn policy(&self) -> Arc<CompiledPolicy> {
        self.policy.load_full()
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// The byte-budget tally of a connection to `name` (or to no name); `None` when no budget
    /// covers it.
    pub(crate) fn tally(&self, name: Option<&CanonicalName>) -> Option<Arc<Tally>> {
        self.meters.load().tally(name)
    }

    /// A tally for plain HTTP, whose domain meter is chosen per request; `None` without budgets.
    pub(crate) fn switchable_tally(&self) -> Option<Arc<Tally>> {
        self.meters.load().switchable_tally()
    }

    /// The meter of `name`'s domain budget, if any.
    pub(crate) fn domain_meter(&self, name: &CanonicalName) -> Option<Arc<crate::budget::Meter>> {
        self.meters.load().domain(name)
    }

    /// Installs a policy: its budgets first (keeping the counts of budgets it keeps), so a
    /// connection that sees the new policy also sees its budgets.
    fn install(&self, policy: CompiledPolicy) {
        let meters = self.meters.load().update(policy.budgets());
        self.meters.store(Arc::new(meters));
        self.policy.store(Arc::new(policy));
    }

    /// A receiver that changes whenever the policy is replaced.
    pub fn watch_policy(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The allowed name this sandbox was told `addr` for, while that answer's TTL lasts.
    pub fn dns_binding(&self, addr: Ipv4Addr) -> Option<CanonicalName> {
        let bindings = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        bindings
            .get(&addr)
            .filter(|b| b.expires > Instant::now())
            .map(|b| b.name.clone())
    }

    fn bind(&self, name: &CanonicalName, addrs: &[Ipv4Addr], ttl: Duration) {
        let now = Instant::now();
        // A short grace period: clients connect right after the answer, and round TTLs down.
        let expires = now + ttl.max(Duration::from_secs(5)) + Duration::from_secs(5);
        let mut bindings = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        if bindings.len() + addrs.len() > MAX_DNS_BINDINGS {
            bindings.retain(|_, b| b.expires > now);
        }
        for addr in addrs {
            if bindings.len() >= MAX_DNS_BINDINGS && !bindings.contains_key(addr) {
                break;
            }
            bindings.insert(
                *addr,
                Binding {
                    name: name.clone(),
                    expires,
                },
            );
        }
    }

    /// Counts a connection against the sandbox's cap; `None` when the cap is reached.
    pub fn try_acquire_connection(self: &Arc<Self>, cap: usize) -> Option<ConnectionSlot> {
        let previous = self.connections.fetch_add(1, Ordering::AcqRel);
        if previous >= cap {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot {
            entry: Arc::clone(self),
        })
    }

    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    pub fn ca(&self) -> Option<Arc<SandboxCa>> {
        self.ca.load_full()
    }

    /// The TLS server configuration for intercepted connections, if the sandbox has a CA.
    pub fn tls_server_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        let ca = self.ca.load_full()?;
        let mut slot = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached_ca, config)) = slot.as_ref()
            && Arc::ptr_eq(cached_ca, &ca)
        {
            return Some(Arc::clone(config));
        }
        let config = ca.server_config(&[b"h2", b"http/1.1"]);
        *slot = Some((ca, Arc::clone(&config)));
        Some(config)
    }
}

/// Releases its connection count when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    entry: Arc<SandboxEntry>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.entry.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every sandbox the data plane serves, by source address.
#[derive(Debug)]
pub struct Registry {
    by_addr: RwLock<HashMap<Ipv4Addr, Arc<SandboxEntry>>>,
    events: Arc<EventLog>,
}

impl Registry {
    pub fn new(events: Arc<EventLog>) -> Self {
        Self {
            by_addr: RwLock::new(HashMap::new()),
            events,
        }
    }

    pub fn event_log(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// Adds a sandbox, or replaces the policy of one already known at that address.
    pub fn upsert(
        &self,
        id: &str,
        addr: Ipv4Addr,
        policy: CompiledPolicy,
        version: u64,
    ) -> Arc<SandboxEntry> {
        let mut map = self.by_addr.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(&addr)
            && &*existing.id == id
        {
            existing.install(policy);
            existing.version.send_replace(version);
            return Arc::clone(existing);
        }
        let (tx, _) = watch::channel(version);
        let meters = Meters::empty().update(policy.budgets());
        let entry = Arc::new(SandboxEntry {
            id: Arc::from(id),
            addr,
            policy: ArcSwap::from_pointee(policy),
            meters: ArcSwap::from_pointee(meters),
            version: tx,
            bindings: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            ca: ArcSwapOption::empty(),
            tls: Mutex::new(None),
            upstream: std::sync::OnceLock::new(),
        });
        // A different sandbox at this address replaces the old one; its watchers see the
        // version move and close their connections.
        if let Some(old) = map.insert(addr, Arc::clone(&entry)) {
            old.policy
                .store(Arc::new(palisade_policy::Policy::deny_all().compile()));
            old.version.send_modify(|v| *v = v.wrapping_add(1));
        }
        entry
    }

    /// Replaces a sandbox's policy. The swap is visible to the next connection and DNS query
    /// when this returns; open connections are told and re-check themselves.
    pub fn update_policy(&self, id: &str, policy: CompiledPolicy, version: u64) -> bool {
        let map = self.by_addr.read().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = map.values().find(|e| &*e.id == id) else {
            return false;
        };
        entry.install(policy);
        entry.version.send_replace(version);
        true
    }

    /// Gives a sandbox its CA for interception (at creation, and after a daemon restart).
    pub fn set_ca(&self, id: &str, ca: Arc<SandboxCa>) -> bool {
        match self.by_id(id) {
            Some(entry) => {
                entry.ca.store(Some(ca));
                true
            }
            None => false,
        }
    }

    /// Forgets a sandbox; its open connections see a deny-all policy and close.
    pub fn remove(&self, id: &str) -> Option<Arc<SandboxEntry>> {
        let mut map = self.by_addr.write().unwrap_or_else(|p| p.into_inner());
        let addr = map.values().find(|e| &*e.id == id).map(|e| e.addr)?;
        let entry = map.remove(&addr)?;
        entry
            .policy
            .store(Arc::new(palisade_policy::Policy::deny_all().compile()));
        entry.version.send_modify(|v| *v = v.wrapping_add(1));
        Some(entry)
    }

    pub fn by_addr(&self, addr: IpAddr) -> Option<Arc<SandboxEntry>> {
        let IpAddr::V4(v4) = addr else {
            return None;
        };
        let map = self.by_addr.read().unwrap_or_else(|p| p.into_inner());
        map.get(&v4).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<SandboxEntry>> {
        let map = self.by_addr.read().unwrap_or_else(|p| p.into_inner());
        map.values().find(|e| &*e.id == id).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_addr.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DnsView for Registry {
    fn policy_for(&self, src: IpAddr) -> Option<(Arc<str>, Arc<CompiledPolicy>)> {
        self.by_addr(src).map(|e| (Arc::clone(&e.id), e.policy()))
    }

    fn record_answer(&self, src: IpAddr, name: &CanonicalName, addrs: &[Ipv4Addr], ttl: Duration) {
        if let Some(entry) = self.by_addr(src) {
            entry.bind(name, addrs, ttl);
        }
    }

    fn events(&self) -> &EventLog {
        &self.events
    }
}
