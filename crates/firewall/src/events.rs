//! Egress events: one record per decision, kept in a bounded ring for a live tail.
//!
//! Events never carry secrets: transforms are named by header name only.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::decision::RuleRef;

/// What kind of traffic an event describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A TCP connection, decided once (tunnel, name-less protocol, denial before any request).
    Tcp,
    /// One HTTP request on a plain or intercepted connection.
    Http,
    /// One DNS query.
    Dns,
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventVerdict {
    Allow,
    Deny,
    /// Audit mode: the policy would have denied this, and it was let through.
    #[serde(rename = "would-deny")]
    WouldDeny,
    /// Waiting in the approval queue (`on_unknown: "hold"`); a later event says how it ended.
    Hold,
}

impl EventVerdict {
    /// `allow`, `deny`, `would-deny` or `hold`, as the API and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventVerdict::Allow => "allow",
            EventVerdict::Deny => "deny",
            EventVerdict::WouldDeny => "would-deny",
            EventVerdict::Hold => "hold",
        }
    }
}

/// Per-request details for intercepted or plain HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HttpInfo {
    pub method: String,
    pub host: String,
    pub path: String,
    /// The status returned to the sandbox (0 when the request never got one).
    pub status: u16,
    /// Names of headers injected (never values).
    pub injected: Vec<String>,
    /// Names of headers stripped.
    pub stripped: Vec<String>,
}

/// One egress decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EgressEvent {
    pub sandbox: String,
    pub time: SystemTime,
    pub kind: EventKind,
    /// The destination the sandbox asked for (original destination, or the DNS server).
    pub dst: Option<SocketAddr>,
    /// The canonical name the decision was made on, if any.
    pub name: Option<String>,
    pub verdict: EventVerdict,
    /// The rule that decided; text only where the event is logged, stored or serialised
    /// (`allow-all`, `domain:*.example.com`, `dns-bound:<name>`, `default`, `http-rule:0`…).
    pub rule: RuleRef,
    /// Why, in a few words a person understands.
    pub reason: String,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration: Duration,
    pub http: Option<HttpInfo>,
}

impl EgressEvent {
    /// A new event with no traffic counted yet.
    pub fn new(
        sandbox: impl Into<String>,
        kind: EventKind,
        verdict: EventVerdict,
        rule: RuleRef,
    ) -> Self {
        Self {
            sandbox: sandbox.into(),
            time: SystemTime::now(),
            kind,
            dst: None,
            name: None,
            verdict,
            rule,
            reason: String::new(),
            bytes_up: 0,
            bytes_down: 0,
            duration: Duration::ZERO,
            http: None,
        }
    }
}

/// A bounded ring of recent events with a broadcast for live subscribers.
///
/// Recording never blocks on a slow subscriber: a lagging receiver loses the oldest events.
#[derive(Debug)]
pub struct EventLog {
    ring: Mutex<VecDeque<EgressEvent>>,
    capacity: usize,
    live: broadcast::Sender<EgressEvent>,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (live, _) = broadcast::channel(capacity.min(4096));
        Self {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            live,
        }
    }

    pub fn record(&self, event: EgressEvent) {
        tracing::debug!(
            sandbox = %event.sandbox,
            kind = ?event.kind,
            verdict = ?event.verdict,
            name = event.name.as_deref().unwrap_or(""),
            rule = %event.rule,
            reason = %event.reason,
            "egress"
        );
        // Clone only for live subscribers; a send error only means the last one just left.
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(event.clone());
        }
        let mut ring = self
            .ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The most recent events, oldest first, optionally for one sandbox.
    pub fn recent(&self, sandbox: Option<&str>, limit: usize) -> Vec<EgressEvent> {
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out: Vec<EgressEvent> = ring
            .iter()
            .rev()
            .filter(|e| sandbox.is_none_or(|s| e.sandbox == s))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EgressEvent> {
        self.live.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_filters_by_sandbox() {
        let log = EventLog::new(3);
        for i in 0..5 {
            let e = EgressEvent::new(
                if i % 2 == 0 { "a" } else { "b" },
                EventKind::Tcp,
                EventVerdict::Deny,
                RuleRef::HttpRule(i),
            );
            log.record(e);
        }
        let rule = |e: EgressEvent| e.rule;
        let all: Vec<_> = log.recent(None, 10).into_iter().map(rule).collect();
        assert_eq!(all, [2, 3, 4].map(RuleRef::HttpRule));
        let a: Vec<_> = log.recent(Some("a"), 10).into_iter().map(rule).collect();
        assert_eq!(a, [2, 4].map(RuleRef::HttpRule));
    }

    #[tokio::test]
    async fn subscribers_see_live_events() {
        let log = EventLog::new(8);
        let mut rx = log.subscribe();
        log.record(EgressEvent::new(
            "a",
            EventKind::Dns,
            EventVerdict::Allow,
            RuleRef::AllowCidrs,
        ));
        let got = rx.recv().await.unwrap();
        assert_eq!(got.kind, EventKind::Dns);
    }
}
