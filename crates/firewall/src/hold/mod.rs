//! The approval queue: DNS queries and named connections for names a `custom` policy with
//! `on_unknown: "hold"` does not list wait here until a person decides, or the hold times out.
//!
//! One pending approval per (sandbox, name); every further query or connection for that name
//! joins it. The DNS server and the proxy call [`Approvals::hold`] and await the [`Waiter`]
//! before anything leaves the host: a held DNS name reaches no upstream resolver until it is
//! allowed. Everything here lives in memory on purpose: a daemon that restarts drops the held
//! connections with its sockets, and the approvals with them, so nothing is ever let through
//! because a decision was lost (fail closed). Allow-always and deny-always are written into the
//! sandbox's policy by the control plane, which outlives this queue.

mod config;
mod rule;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use palisade_policy::CanonicalName;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

pub use config::ApprovalsConfig;
pub use rule::{Decision, HoldRule};

use crate::decision::RuleRef;
use crate::events::{EgressEvent, EventKind, EventLog, EventVerdict};

/// What was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldKind {
    /// A DNS query.
    Dns,
    /// A TLS connection, named by its SNI.
    Tls,
    /// A plain HTTP request, named by its Host.
    Http,
}

impl HoldKind {
    fn event_kind(self) -> EventKind {
        match self {
            HoldKind::Dns => EventKind::Dns,
            HoldKind::Tls => EventKind::Tcp,
            HoldKind::Http => EventKind::Http,
        }
    }
}

/// How a held request ends: allowed or refused, with the rule and reason its event records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub rule: HoldRule,
    pub reason: String,
}

impl Outcome {
    fn deny(rule: HoldRule, reason: impl Into<String>) -> Outcome {
        Outcome {
            allowed: false,
            rule,
            reason: reason.into(),
        }
    }
}

/// A pending approval as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalView {
    pub id: String,
    pub sandbox: String,
    #[serde(skip)]
    pub org: String,
    pub name: String,
    /// Destination ports of the held connections (none for DNS alone).
    pub ports: Vec<u16>,
    /// What is held: `dns`, `tls`, `http`.
    pub kinds: Vec<HoldKind>,
    /// Queries and connections waiting on it now.
    pub held: usize,
    pub first_seen_ms: i64,
    pub expires_ms: i64,
}

/// A change in the queue, for live subscribers (the SSE stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalUpdate {
    /// New, or joined by another query or connection.
    Pending(ApprovalView),
    /// Decided, timed out, or gone with its sandbox: `decision` says which (`allow-once`,
    /// `allow-always`, `deny`, `deny-always`, `timeout`, `removed`).
    Resolved {
        approval: ApprovalView,
        decision: String,
    },
}

impl ApprovalUpdate {
    pub fn approval(&self) -> &ApprovalView {
        match self {
            ApprovalUpdate::Pending(a) | ApprovalUpdate::Resolved { approval: a, .. } => a,
        }
    }
}

/// What [`Approvals::hold`] says: decided now (a recent decision, or a limit), or wait.
#[derive(Debug)]
pub enum Hold {
    Now(Outcome),
    Wait(Waiter),
}

impl Hold {
    /// The outcome, waiting for it if needed.
    pub async fn outcome(self) -> Outcome {
        match self {
            Hold::Now(o) => o,
            Hold::Wait(w) => w.wait().await,
        }
    }
}

/// The approval a [`Approvals::resolve`] could not find: unknown, decided already, expired, or
/// another organisation's (they all look the same from outside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no such pending approval")]
pub struct NoSuchApproval;

type Key = (Arc<str>, CanonicalName);

#[derive(Debug)]
struct Entry {
    view: ApprovalView,
    key: Key,
    ports: BTreeSet<u16>,
    kinds: BTreeSet<HoldKind>,
    deadline: Instant,
    tx: watch::Sender<Option<Outcome>>,
}

impl Entry {
    fn snapshot(&self) -> ApprovalView {
        let mut v = self.view.clone();
        v.ports = self.ports.iter().copied().collect();
        v.kinds = self.kinds.iter().copied().collect();
        v
    }
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<String, Entry>,
    by_key: HashMap<Key, String>,
    /// The organisation of each sandbox, told by the control plane; a sandbox without one
    /// cannot have anything held (its owner could never see the approval).
    owners: HashMap<Arc<str>, Arc<str>>,
    /// Recent allow-once and deny decisions, by (sandbox, name), until they lapse.
    grants: HashMap<Key, (Instant, Outcome)>,
    /// Waiting queries and connections per sandbox.
    held: HashMap<Arc<str>, usize>,
}

/// See the module doc.
#[derive(Debug)]
pub struct Approvals {
    state: Mutex<State>,
    config: RwLock<ApprovalsConfig>,
    updates: broadcast::Sender<ApprovalUpdate>,
    events: Arc<EventLog>,
    /// Ids differ between daemon runs, so an id from before a restart never matches.
    boot: u32,
    next: AtomicU64,
}

/// An approval's id: `apr-<boot, 8 hex digits>-<counter>`.
fn approval_id(boot: u32, n: u64) -> String {
    format!("apr-{boot:08x}-{n}")
}

/// Whether `s` has the form [`approval_id`] writes, so that an event's `approval:<id>` reads back.
pub(crate) fn is_approval_id(s: &str) -> bool {
    s.strip_prefix("apr-")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(boot, n)| {
            boot.len() == 8
                && boot.bytes().all(|b| b.is_ascii_hexdigit())
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        })
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Approvals {
    pub fn new(events: Arc<EventLog>, config: ApprovalsConfig) -> Approvals {
        let (updates, _) = broadcast::channel(1024);
        let boot = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0);
        Approvals {
            state: Mutex::new(State::default()),
            config: RwLock::new(config),
            updates,
            events,
            boot,
            next: AtomicU64::new(1),
        }
    }

    /// Replaces the bounds (the daemon's `[firewall.approvals]`); holds already waiting keep
    /// their deadline.
    pub fn configure(&self, config: ApprovalsConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    pub fn config(&self) -> ApprovalsConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records which organisation owns a sandbox (at creation and after a restart).
    pub fn set_owner(&self, sandbox: &str, org: &str) {
        self.lock()
            .owners
            .insert(Arc::from(sandbox), Arc::from(org));
    }

    /// Forgets a sandbox: its pending approvals end as denied (`removed`), its grants go.
    pub fn forget_sandbox(&self, sandbox: &str) {
        let mut st = self.lock();
        st.owners.remove(sandbox);
        st.grants.retain(|(s, _), _| &**s != sandbox);
        let ids: Vec<String> = st
            .pending
            .iter()
            .filter(|(_, e)| e.view.sandbox == sandbox)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let outcome = Outcome::deny(
                HoldRule::Queue,
                "the sandbox was removed while this was held",
            );
            self.finish(&mut st, &id, outcome, "removed");
        }
    }

    /// Subscribes to changes of the queue (all organisations: filter by `org`).
    pub fn subscribe(&self) -> broadcast::Receiver<ApprovalUpdate> {
        self.updates.subscribe()
    }

    /// The pending approvals of `org`, oldest first.
    pub fn list(&self, org: &str) -> Vec<ApprovalView> {
        let mut st = self.lock();
        self.sweep(&mut st, Instant::now());
        let mut out: Vec<ApprovalView> = st
            .pending
            .values()
            .filter(|e| e.view.org == org)
            .map(Entry::snapshot)
            .collect();
        out.sort_by(|a, b| (a.first_seen_ms, &a.id).cmp(&(b.first_seen_ms, &b.id)));
        out
    }

    /// One pending approval of `org`.
    pub fn get(&self, org: &str, id: &str) -> Result<ApprovalView, NoSuchApproval> {
        let mut st = self.lock();
        self.sweep(&mut st, Instant::now());
        st.pending
            .get(id)
            .filter(|e| e.view.org == org)
            .map(Entry::snapshot)
            .ok_or(NoSuchApproval)
    }

    /// Holds a DNS query (`port` none) or a connection for `name` from `sandbox`, whose policy
    /// said it [holds](palisade_policy::CompiledPolicy::holds) the name.
    pub fn hold(
        self: &Arc<Self>,
        sandbox: &str,
        name: &CanonicalName,
        port: Option<u16>,
        kind: HoldKind,
    ) -> Hold {
        let cfg = self.config();
        let now = Instant::now();
        let mut st = self.lock();
        self.sweep(&mut st, now);
        let Some((sandbox, org)) = st
            .owners
            .get_key_value(sandbox)
            .map(|(s, o)| (Arc::clone(s), Arc::clone(o)))
        else {
            return Hold::Now(Outcome::deny(
                HoldRule::Queue,
                "nothing can be held for a sandbox whose organisation is unknown",
            ));
        };
        let key: Key = (Arc::clone(&sandbox), name.clone());
        if let Some((_, outcome)) = st.grants.get(&key) {
            return Hold::Now(outcome.clone());
        }
        let held = st.held.get(&sandbox).copied().unwrap_or(0);
        if held >= cfg.max_held_per_sandbox {
            let why =
                format!("{held} requests of this sandbox are already held (max_held_per_sandbox)");
            return Hold::Now(self.limit(&sandbox, name, kind, why));
        }
        let id = match st.by_key.get(&key) {
            Some(id) => id.clone(),
            None => {
                let of_sandbox = st.pending.values().filter(|e| e.key.0 == sandbox).count();
                if of_sandbox >= cfg.max_pending_per_sandbox {
                    let why = format!(
                        "{of_sandbox} approvals of this sandbox are already pending (max_pending_per_sandbox)"
                    );
                    return Hold::Now(self.limit(&sandbox, name, kind, why));
                }
                let of_org = st.pending.values().filter(|e| e.view.org == *org).count();
                if of_org >= cfg.max_pending_per_org {
                    let why = format!(
                        "{of_org} approvals of this organisation are already pending (max_pending_per_org)"
                    );
                    return Hold::Now(self.limit(&sandbox, name, kind, why));
                }
                let id = approval_id(self.boot, self.next.fetch_add(1, Ordering::Relaxed));
                let first = SystemTime::now();
                let entry = Entry {
                    view: ApprovalView {
                        id: id.clone(),
                        sandbox: sandbox.to_string(),
                        org: org.to_string(),
                        name: name.to_string(),
                        ports: Vec::new(),
                        kinds: Vec::new(),
                        held: 0,
                        first_seen_ms: unix_ms(first),
                        expires_ms: unix_ms(first + cfg.timeout),
                    },
                    key: key.clone(),
                    ports: BTreeSet::new(),
                    kinds: BTreeSet::new(),
                    deadline: now + cfg.timeout,
                    tx: watch::channel(None).0,
                };
                let mut ev = EgressEvent::new(
                    &*sandbox,
                    kind.event_kind(),
                    EventVerdict::Hold,
                    RuleRef::Approval(id.clone()),
                );
                ev.name = Some(name.to_string());
                ev.reason = format!(
                    "not in the policy; held for approval for up to {} s",
                    cfg.timeout.as_secs()
                );
                self.events.record(ev);
                st.by_key.insert(key, id.clone());
                st.pending.insert(id.clone(), entry);
                id
            }
        };
        *st.held.entry(Arc::clone(&sandbox)).or_insert(0) += 1;
        let Some(entry) = st.pending.get_mut(&id) else {
            return Hold::Now(Outcome::deny(HoldRule::Queue, "the approval vanished"));
        };
        entry.view.held += 1;
        entry.kinds.insert(kind);
        if let Some(p) = port {
            entry.ports.insert(p);
        }
        let view = entry.snapshot();
        let waiter = Waiter {
            approvals: Arc::clone(self),
            sandbox,
            id,
            rx: entry.tx.subscribe(),
            deadline: entry.deadline,
        };
        drop(st);
        let _ = self.updates.send(ApprovalUpdate::Pending(view));
        Hold::Wait(waiter)
    }

    /// Decides a pending approval of `org`. The control plane writes allow-always and
    /// deny-always into the policy first, so what is released meets the new policy.
    pub fn resolve(
        &self,
        org: &str,
        id: &str,
        decision: Decision,
    ) -> Result<ApprovalView, NoSuchApproval> {
        let mut st = self.lock();
        if st.pending.get(id).is_none_or(|e| e.view.org != org) {
            return Err(NoSuchApproval);
        }
        let outcome = Outcome {
            allowed: decision.allows(),
            rule: HoldRule::Decided(decision),
            reason: format!(
                "{} by a person through the approval queue",
                decision.as_str()
            ),
        };
        self.finish(&mut st, id, outcome, decision.as_str())
            .ok_or(NoSuchApproval)
    }

    /// A request refused at once because a bound of the queue is reached.
    fn limit(&self, sandbox: &str, name: &CanonicalName, kind: HoldKind, why: String) -> Outcome {
        let reason = format!("not held: {why}");
        let rule = RuleRef::Held(HoldRule::Limit);
        let mut ev = EgressEvent::new(sandbox, kind.event_kind(), EventVerdict::Deny, rule);
        ev.name = Some(name.to_string());
        ev.reason = reason.clone();
        self.events.record(ev);
        tracing::warn!(%sandbox, name = name.as_str(), %reason, "approval queue limit");
        Outcome::deny(HoldRule::Limit, reason)
    }

    /// Ends approvals past their deadline and lapsed grants.
    fn sweep(&self, st: &mut State, now: Instant) {
        st.grants.retain(|_, (until, _)| *until > now);
        let expired: Vec<String> = st
            .pending
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let secs = self.config().timeout.as_secs();
        for id in expired {
            let outcome = Outcome::deny(
                HoldRule::Timeout,
                format!("no decision within {secs} s; denied"),
            );
            self.finish(st, &id, outcome, "timeout");
        }
    }

    /// Removes a pending approval, tells its waiters, remembers allow-once and deny decisions
    /// for `grant_ttl`, and records the decision.
    fn finish(
        &self,
        st: &mut State,
        id: &str,
        outcome: Outcome,
        decision: &str,
    ) -> Option<ApprovalView> {
        let entry = st.pending.remove(id)?;
        st.by_key.remove(&entry.key);
        let ttl = self.config().grant_ttl;
        if decision != "removed" && !ttl.is_zero() {
            st.grants
                .insert(entry.key.clone(), (Instant::now() + ttl, outcome.clone()));
        }
        let view = entry.snapshot();
        let verdict = if outcome.allowed {
            EventVerdict::Allow
        } else {
            EventVerdict::Deny
        };
        let kind = entry.kinds.first().copied().unwrap_or(HoldKind::Dns);
        let rule = RuleRef::Approval(id.to_owned());
        let mut ev = EgressEvent::new(view.sandbox.clone(), kind.event_kind(), verdict, rule);
        ev.name = Some(view.name.clone());
        ev.reason = format!("{decision}: {}", outcome.reason);
        ev.duration = Duration::from_millis(
            u64::try_from(unix_ms(SystemTime::now()) - view.first_seen_ms).unwrap_or(0),
        );
        self.events.record(ev);
        entry.tx.send_replace(Some(outcome));
        let _ = self.updates.send(ApprovalUpdate::Resolved {
            approval: view.clone(),
            decision: decision.to_owned(),
        });
        Some(view)
    }

    /// A waiter's deadline passed: end its approval (and any other due) if nobody decided.
    fn expire_due(&self) {
        let mut st = self.lock();
        self.sweep(&mut st, Instant::now());
    }

    fn release(&self, sandbox: &str, id: &str) {
        let mut st = self.lock();
        if let Some(n) = st.held.get_mut(sandbox) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.held.remove(sandbox);
            }
        }
        if let Some(e) = st.pending.get_mut(id) {
            e.view.held = e.view.held.saturating_sub(1);
        }
    }
}

/// One held query or connection, waiting for its approval's outcome.
#[derive(Debug)]
pub struct Waiter {
    approvals: Arc<Approvals>,
    sandbox: Arc<str>,
    id: String,
    rx: watch::Receiver<Option<Outcome>>,
    deadline: Instant,
}

impl Waiter {
    /// The approval's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits for a decision, or the deadline (then denied).
    pub async fn wait(mut self) -> Outcome {
        let decided = tokio::time::timeout_at(self.deadline, self.rx.wait_for(Option::is_some))
            .await
            .map(|r| r.map(|o| o.clone()));
        match decided {
            Ok(Ok(Some(outcome))) => outcome,
            // The queue itself went away: nothing decided, nothing let through.
            Ok(Ok(None) | Err(_)) => Outcome::deny(HoldRule::Queue, "the approval queue went away"),
            Err(_) => {
                self.approvals.expire_due();
                match self.rx.borrow().clone() {
                    Some(outcome) => outcome,
                    None => Outcome::deny(HoldRule::Timeout, "no decision in time; denied"),
                }
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.approvals.release(&self.sandbox, &self.id);
    }
}
