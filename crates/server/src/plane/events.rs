//! Egress events: the firewall's ring is the live source; a pump copies every event into the
//! store's batched writer for history. Neither ever holds a secret (header names only).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use futures_util::stream::{self, BoxStream, StreamExt};
use palisade_firewall::events::EventKind;
use palisade_firewall::{EgressEvent, EventLog};
use palisade_store::{EgressEventFields, EgressEventRecord, EventSink};
use tokio::sync::broadcast::error::RecvError;

use super::{Plane, Result};
use crate::control::{EventFilter, OrgId};

pub(super) fn to_record(e: &EgressEvent) -> EgressEventRecord {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    EgressEventRecord {
        id: 0,
        sandbox_id: e.sandbox.clone(),
        event: EgressEventFields {
            at_ms: e.time.duration_since(UNIX_EPOCH).map(ms).unwrap_or(0),
            verdict: e.verdict.as_str().to_owned(),
            protocol: match e.kind {
                EventKind::Tcp => "tcp",
                EventKind::Http => "http",
                EventKind::Dns => "dns",
            }
            .to_owned(),
            dst_addr: e.dst.map(|d| d.ip().to_string()),
            dst_port: e.dst.map(|d| i64::from(d.port())),
            name: e.name.clone(),
            rule: Some(e.rule.to_string()),
            reason: Some(e.reason.clone()),
            bytes_up: i64::try_from(e.bytes_up).unwrap_or(i64::MAX),
            bytes_down: i64::try_from(e.bytes_down).unwrap_or(i64::MAX),
            duration_ms: ms(e.duration),
        },
        detail: e.http.as_ref().and_then(|h| serde_json::to_string(h).ok()),
    }
}

/// Copies the ring into the store until the ring goes away. A lagging pump loses events
/// (counted in the log), never slows the data plane.
pub(super) fn spawn_pump(log: Arc<EventLog>, sink: EventSink) {
    let mut rx = log.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    sink.record(to_record(&e));
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "event pump lagged; events not stored");
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

fn matches(f: &EventFilter, r: &EgressEventRecord) -> bool {
    f.verdict.as_deref().is_none_or(|v| v == r.event.verdict)
        && f.name
            .as_deref()
            .is_none_or(|n| r.event.name.as_deref() == Some(n))
}

impl Plane {
    pub async fn list_events(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        f: EventFilter,
    ) -> Result<Vec<EgressEventRecord>> {
        let rec = self.store.get_sandbox(&org.0, sandbox_id).await?;
        self.sink.flush().await;
        Ok(self.store.list_events(&rec.sandbox.id, &f).await?)
    }

    /// Live events of a sandbox as they happen (filters applied), until the client goes away.
    pub async fn subscribe_events(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        f: EventFilter,
    ) -> Result<BoxStream<'static, EgressEventRecord>> {
        let rec = self.store.get_sandbox(&org.0, sandbox_id).await?;
        let rx = self.events.subscribe();
        let id = rec.sandbox.id;
        let s = stream::unfold(rx, move |mut rx| {
            let id = id.clone();
            let f = f.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(e) if e.sandbox == id => {
                            let r = to_record(&e);
                            if matches(&f, &r) {
                                return Some((r, rx));
                            }
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(s.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_firewall::decision::RuleRef;
    use palisade_firewall::events::{EventVerdict, HttpInfo};

    #[test]
    fn record_carries_the_decision_and_header_names_only() {
        let default = RuleRef::Policy(palisade_policy::Rule::NoMatch);
        let mut e = EgressEvent::new("sb1", EventKind::Http, EventVerdict::Deny, default.clone());
        e.dst = Some("198.51.100.10:443".parse().unwrap());
        e.name = Some("alpha.test".into());
        e.http = Some(HttpInfo {
            method: "GET".into(),
            host: "alpha.test".into(),
            path: "/".into(),
            status: 403,
            injected: vec!["authorization".into()],
            stripped: vec![],
        });
        let r = to_record(&e);
        assert_eq!(r.event.verdict, "deny");
        assert_eq!(r.event.rule.as_deref(), Some("default"));
        assert_eq!(r.event.protocol, "http");
        assert_eq!(r.event.dst_port, Some(443));
        assert!(r.detail.unwrap().contains("authorization"));
        assert!(r.event.at_ms > 0);
        let f = EventFilter {
            verdict: Some("allow".into()),
            ..EventFilter::default()
        };
        assert!(!matches(&f, &to_record(&e)));
        let w = EgressEvent::new("sb1", EventKind::Tcp, EventVerdict::WouldDeny, default);
        let f = EventFilter {
            verdict: Some("would-deny".into()),
            ..EventFilter::default()
        };
        assert_eq!(to_record(&w).event.verdict, "would-deny");
        assert!(matches(&f, &to_record(&w)));
    }
}
