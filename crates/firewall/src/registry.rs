//! The sandboxes the data plane knows, found by source address.
//!
//! Each entry holds the sandbox's compiled policy behind an atomic pointer: a policy update is one
//! swap, seen by the next connection and DNS query, and announced to open connections so they
//! can check themselves against it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use ipnet::Ipv4Net;
use palisade_ca::SandboxCa;
use palisade_policy::{CanonicalName, CompiledPolicy, Mode};
use tokio::sync::watch;

use crate::budget::{Meters, Tally};
use crate::config::SyntheticConfig;
use crate::dns::DnsView;
use crate::events::EventLog;
use crate::hold::{Approvals, ApprovalsConfig};
use crate::synthetic::{SynthTable, SyntheticError, journal_path};

/// One sandbox as the data plane sees it.
#[derive(Debug)]
pub struct SandboxEntry {
    id: Arc<str>,
    addr: Ipv4Addr,
    policy: ArcSwap<CompiledPolicy>,
    /// Byte budget meters, rebuilt from the old ones on a policy update so counts carry over.
    meters: ArcSwap<Meters>,
    version: watch::Sender<u64>,
    /// Synthetic addresses handed to this sandbox for allowed names (see `synthetic`).
    synthetic: Mutex<SynthTable>,
    connections: AtomicUsize,
    /// The sandbox's CA, for interception of transform domains; none means such connections
    /// are refused (fail closed) rather than passed through without their transform.
    ca: ArcSwapOption<SandboxCa>,
    /// The TLS server configuration minting leaves from `ca`, built once per CA.
    tls: Mutex<Option<(Arc<SandboxCa>, Arc<rustls::ServerConfig>)>>,
    /// The pooled upstream client of intercepted requests.
    pub(crate) upstream: std::sync::OnceLock<crate::proxy::UpstreamClient>,
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

    /// The name a synthetic address stands for in this sandbox, if it was handed out.
    pub fn synthetic_name(&self, addr: Ipv4Addr) -> Option<CanonicalName> {
        self.synthetic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .name_of(addr)
    }

    /// The synthetic address that stands for `name` in this sandbox, handed out (and
    /// journaled) now if it has none yet.
    pub fn synthetic_addr(&self, name: &CanonicalName) -> Result<Ipv4Addr, SyntheticError> {
        self.synthetic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .addr_for(name)
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
    synthetic: SyntheticConfig,
    approvals: Arc<Approvals>,
}

impl Registry {
    /// A registry with the default synthetic range and no journal.
    pub fn new(events: Arc<EventLog>) -> Self {
        Self::with_synthetic(events, SyntheticConfig::default())
    }

    pub fn with_synthetic(events: Arc<EventLog>, synthetic: SyntheticConfig) -> Self {
        Self {
            by_addr: RwLock::new(HashMap::new()),
            approvals: Arc::new(Approvals::new(
                Arc::clone(&events),
                ApprovalsConfig::default(),
            )),
            events,
            synthetic,
        }
    }

    /// The approval queue of `on_unknown: "hold"` policies.
    pub fn approvals(&self) -> &Arc<Approvals> {
        &self.approvals
    }

    /// The range synthetic addresses come from.
    pub fn synthetic_range(&self) -> Ipv4Net {
        self.synthetic.range
    }

    /// Whether `ip` lies in the synthetic range.
    pub fn is_synthetic(&self, ip: Ipv4Addr) -> bool {
        self.synthetic.range.contains(&ip)
    }

    /// Removes the journals of sandboxes not in `live` (deleted while the daemon was down);
    /// returns their ids.
    pub fn remove_stale_synthetic(&self, live: &[&str]) -> Vec<String> {
        match &self.synthetic.state_dir {
            Some(dir) => crate::synthetic::remove_stale_journals(dir, live),
            None => Vec::new(),
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
            // A sandbox registered again after a restart finds its mappings in the journal.
            synthetic: Mutex::new(SynthTable::new(
                self.synthetic.range,
                self.synthetic.max_names_per_sandbox,
                self.synthetic
                    .state_dir
                    .as_deref()
                    .and_then(|dir| journal_path(dir, id)),
            )),
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

    /// Forgets a sandbox; its open connections see a deny-all policy and close, and whatever
    /// it had held is refused.
    pub fn remove(&self, id: &str) -> Option<Arc<SandboxEntry>> {
        self.approvals.forget_sandbox(id);
        let mut map = self.by_addr.write().unwrap_or_else(|p| p.into_inner());
        let addr = map.values().find(|e| &*e.id == id).map(|e| e.addr)?;
        let entry = map.remove(&addr)?;
        entry
            .policy
            .store(Arc::new(palisade_policy::Policy::deny_all().compile()));
        entry.version.send_modify(|v| *v = v.wrapping_add(1));
        entry
            .synthetic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .discard();
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

    fn answer_addrs(
        &self,
        src: IpAddr,
        name: &CanonicalName,
        resolved: &[Ipv4Addr],
    ) -> Result<Vec<Ipv4Addr>, String> {
        let Some(entry) = self.by_addr(src) else {
            return Err("not a sandbox".into());
        };
        let policy = entry.policy();
        // allow-all lets name-less protocols reach any public address, so a synthetic address
        // would bind nothing; addresses all inside allow_cidrs are reachable as they are (UDP
        // included, which a synthetic address would lose).
        // A real address inside the synthetic range would be taken for a synthetic one, so such
        // a name is always answered with a synthetic address of its own.
        let collides = resolved.iter().any(|ip| self.is_synthetic(*ip));
        let bind = collides
            || matches!(policy.mode(), Mode::Custom)
                && !resolved
                    .iter()
                    .all(|ip| policy.check_addr(IpAddr::V4(*ip)).in_allow_cidrs);
        if !bind {
            return Ok(resolved.to_vec());
        }
        entry
            .synthetic_addr(name)
            .map(|addr| vec![addr])
            .map_err(|e| e.to_string())
    }

    fn events(&self) -> &EventLog {
        &self.events
    }

    fn approvals(&self) -> Option<&Arc<Approvals>> {
        Some(&self.approvals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_with(json: &str) -> (Registry, IpAddr) {
        let reg = Registry::new(Arc::new(EventLog::new(16)));
        let policy = palisade_policy::Policy::from_json(json.as_bytes()).unwrap();
        let addr = Ipv4Addr::new(100, 96, 0, 2);
        reg.upsert("sb", addr, policy.compile(), 1);
        (reg, IpAddr::V4(addr))
    }

    #[test]
    fn custom_names_get_synthetic_addresses_and_other_modes_real_ones() {
        let real = [Ipv4Addr::new(203, 0, 113, 80)];
        let a: CanonicalName = "shared-a.test".parse().unwrap();
        let b: CanonicalName = "shared-b.test".parse().unwrap();
        let (reg, src) =
            registry_with(r#"{"mode":"custom","allow_domains":["shared-a.test","shared-b.test"]}"#);
        let told_a = reg.answer_addrs(src, &a, &real).unwrap();
        let told_b = reg.answer_addrs(src, &b, &real).unwrap();
        assert_eq!(told_a.len(), 1);
        assert!(reg.is_synthetic(told_a[0]), "{told_a:?}");
        // One address per name, even when the names share their real address.
        assert_ne!(told_a, told_b);
        assert_eq!(reg.answer_addrs(src, &a, &real).unwrap(), told_a);
        let entry = reg.by_addr(src).unwrap();
        assert_eq!(entry.synthetic_name(told_a[0]), Some(a.clone()));
        assert_eq!(entry.synthetic_name(told_b[0]), Some(b));
        // Forgotten with the sandbox.
        reg.remove("sb");
        assert_eq!(entry.synthetic_name(told_a[0]), None);

        let (reg, src) = registry_with(r#"{"mode":"allow-all"}"#);
        assert_eq!(reg.answer_addrs(src, &a, &real).unwrap(), real);
        // A real address inside the synthetic range is never handed out as it is.
        let (reg, src) = registry_with(r#"{"mode":"allow-all","allow_cidrs":["198.18.0.0/15"]}"#);
        let inside = [Ipv4Addr::new(198, 18, 0, 1)];
        let told = reg.answer_addrs(src, &a, &inside).unwrap();
        assert_eq!(
            reg.by_addr(src).unwrap().synthetic_name(told[0]),
            Some(a.clone())
        );
        let (reg, src) = registry_with(
            r#"{"mode":"custom","allow_domains":["shared-a.test"],"allow_cidrs":["203.0.113.0/24"]}"#,
        );
        assert_eq!(reg.answer_addrs(src, &a, &real).unwrap(), real);
    }

    fn compiled(json: &str) -> CompiledPolicy {
        palisade_policy::Policy::from_json(json.as_bytes())
            .unwrap()
            .compile()
    }

    #[test]
    fn sandboxes_are_found_by_address_and_id_only() {
        let (reg, src) = registry_with(r#"{"mode":"allow-all"}"#);
        assert_eq!(reg.len(), 1);
        assert_eq!(&**reg.by_addr(src).unwrap().id(), "sb");
        assert_eq!(
            reg.by_id("sb").unwrap().addr(),
            Ipv4Addr::new(100, 96, 0, 2)
        );
        assert!(
            reg.by_addr(IpAddr::V4(Ipv4Addr::new(100, 96, 0, 3)))
                .is_none()
        );
        assert!(reg.by_addr("::1".parse().unwrap()).is_none());
        assert!(reg.by_id("other").is_none());
    }

    #[test]
    fn a_policy_update_is_seen_at_once_and_told_to_watchers() {
        let (reg, src) = registry_with(r#"{"mode":"allow-all"}"#);
        let entry = reg.by_addr(src).unwrap();
        let watch = entry.watch_policy();
        assert!(reg.update_policy("sb", compiled(r#"{"mode":"deny-all"}"#), 2));
        assert_eq!(entry.policy().mode(), palisade_policy::Mode::DenyAll);
        assert_eq!(entry.version(), 2);
        assert!(watch.has_changed().unwrap());
        assert!(!reg.update_policy("other", compiled(r#"{"mode":"allow-all"}"#), 3));
        // The same sandbox registered again keeps its entry (and its open connections).
        let again = reg.upsert("sb", entry.addr(), compiled(r#"{"mode":"allow-all"}"#), 4);
        assert!(Arc::ptr_eq(&again, &entry));
        assert_eq!(entry.policy().mode(), palisade_policy::Mode::AllowAll);
    }

    #[test]
    fn a_sandbox_removed_or_replaced_leaves_its_connections_a_deny_all_policy() {
        let (reg, src) = registry_with(r#"{"mode":"allow-all"}"#);
        let old = reg.by_addr(src).unwrap();
        let watch = old.watch_policy();
        let new = reg.upsert("sb2", old.addr(), compiled(r#"{"mode":"allow-all"}"#), 1);
        assert!(!Arc::ptr_eq(&new, &old));
        assert_eq!(old.policy().mode(), palisade_policy::Mode::DenyAll);
        assert!(watch.has_changed().unwrap());
        assert!(reg.by_id("sb").is_none());
        let watch = new.watch_policy();
        assert!(reg.remove("sb2").is_some());
        assert_eq!(new.policy().mode(), palisade_policy::Mode::DenyAll);
        assert!(watch.has_changed().unwrap());
        assert!(reg.is_empty());
        assert!(reg.remove("sb2").is_none());
    }

    #[test]
    fn the_connection_cap_counts_open_slots() {
        let (reg, src) = registry_with(r#"{"mode":"allow-all"}"#);
        let entry = reg.by_addr(src).unwrap();
        let a = entry.try_acquire_connection(2).unwrap();
        let b = entry.try_acquire_connection(2).unwrap();
        assert!(entry.try_acquire_connection(2).is_none());
        assert_eq!(entry.open_connections(), 2);
        drop(a);
        assert_eq!(entry.open_connections(), 1);
        assert!(entry.try_acquire_connection(2).is_some());
        drop(b);
        assert_eq!(entry.open_connections(), 0);
    }
}
