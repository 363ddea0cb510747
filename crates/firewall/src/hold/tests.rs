//! The queue on its own: joining, decisions, grants, deadlines and bounds.

use std::sync::Arc;
use std::time::Duration;

use palisade_policy::CanonicalName;

use super::*;
use crate::decision::Bearing;
use crate::events::{EventLog, EventVerdict};

fn name(s: &str) -> CanonicalName {
    s.parse().unwrap()
}

fn queue(config: ApprovalsConfig) -> (Arc<Approvals>, Arc<EventLog>) {
    let events = Arc::new(EventLog::new(256));
    let q = Arc::new(Approvals::new(Arc::clone(&events), config));
    q.set_owner("sb1", "org-a");
    q.set_owner("sb2", "org-a");
    q.set_owner("sb3", "org-b");
    (q, events)
}

fn wait(h: Hold) -> Waiter {
    match h {
        Hold::Wait(w) => w,
        Hold::Now(o) => panic!("expected a hold, got {o:?}"),
    }
}

fn now(h: Hold) -> Outcome {
    match h {
        Hold::Now(o) => o,
        Hold::Wait(w) => panic!("expected an immediate outcome, waiting on {}", w.id()),
    }
}

#[tokio::test(start_paused = true)]
async fn requests_for_one_name_join_one_approval_and_allow_once_releases_them() {
    let (q, events) = queue(ApprovalsConfig::default());
    let mut updates = q.subscribe();
    let a = wait(q.hold("sb1", &name("x.test"), None, HoldKind::Dns));
    let b = wait(q.hold("sb1", &name("x.test"), Some(443), HoldKind::Tls));
    assert_eq!(a.id(), b.id());
    // Another sandbox, or another organisation, gets its own.
    let other = wait(q.hold("sb2", &name("x.test"), None, HoldKind::Dns));
    assert_ne!(other.id(), a.id());
    let list = q.list("org-a");
    assert_eq!(list.len(), 2);
    let first = list.iter().find(|v| v.id == a.id()).unwrap();
    assert_eq!(
        (first.sandbox.as_str(), first.name.as_str()),
        ("sb1", "x.test")
    );
    assert_eq!(first.ports, [443]);
    assert_eq!(first.kinds, [HoldKind::Dns, HoldKind::Tls]);
    assert_eq!(first.held, 2);
    assert_eq!(first.expires_ms - first.first_seen_ms, 30_000);
    assert!(q.list("org-b").is_empty());
    assert!(matches!(updates.try_recv(), Ok(ApprovalUpdate::Pending(_))));

    // Another organisation cannot see or decide it.
    let id = a.id().to_owned();
    assert_eq!(q.get("org-b", &id), Err(NoSuchApproval));
    assert_eq!(
        q.resolve("org-b", &id, Decision::AllowOnce),
        Err(NoSuchApproval)
    );
    q.resolve("org-a", &id, Decision::AllowOnce).unwrap();
    for w in [a, b] {
        let o = w.wait().await;
        assert!(o.allowed, "{o:?}");
        assert_eq!(o.rule.to_string(), "approval:allow-once");
    }
    // Decided once: a second decision finds nothing.
    assert_eq!(q.resolve("org-a", &id, Decision::Deny), Err(NoSuchApproval));
    // What follows within grant_ttl is let through without asking; after it, held again.
    assert!(now(q.hold("sb1", &name("x.test"), Some(443), HoldKind::Tls)).allowed);
    tokio::time::advance(Duration::from_secs(11)).await;
    let again = wait(q.hold("sb1", &name("x.test"), Some(443), HoldKind::Tls));
    assert_ne!(again.id(), id);
    drop(other);

    let verdicts: Vec<(EventVerdict, String)> = events
        .recent(None, 100)
        .into_iter()
        .filter(|e| e.sandbox == "sb1")
        .map(|e| (e.verdict, e.rule.to_string()))
        .collect();
    let text = format!("approval:{id}");
    assert_eq!(verdicts[0], (EventVerdict::Hold, text.clone()));
    assert!(
        verdicts.contains(&(EventVerdict::Allow, text.clone())),
        "{verdicts:?}"
    );
    // The id in that text is read back as the approval it names.
    assert_eq!(Bearing::of_text(&text), Some(Bearing::Beyond));
}

#[tokio::test(start_paused = true)]
async fn deny_and_timeout_refuse_and_nothing_is_left_behind() {
    let (q, _) = queue(ApprovalsConfig {
        timeout: Duration::from_secs(5),
        ..ApprovalsConfig::default()
    });
    let w = wait(q.hold("sb1", &name("d.test"), Some(80), HoldKind::Http));
    q.resolve("org-a", w.id(), Decision::Deny).unwrap();
    let o = w.wait().await;
    assert!(!o.allowed);
    assert_eq!(o.rule.to_string(), "approval:deny");
    // A deny is remembered for grant_ttl too, so a retry does not ask again at once.
    assert!(!now(q.hold("sb1", &name("d.test"), Some(80), HoldKind::Http)).allowed);

    let w = wait(q.hold("sb1", &name("t.test"), None, HoldKind::Dns));
    let started = tokio::time::Instant::now();
    let o = w.wait().await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(!o.allowed);
    assert_eq!(o.rule.to_string(), "approval:timeout");
    assert!(q.list("org-a").is_empty());
    assert!(q.lock().held.is_empty(), "every waiter released its count");
}

#[tokio::test(start_paused = true)]
async fn bounds_deny_at_once_with_an_event() {
    let (q, events) = queue(ApprovalsConfig {
        max_pending_per_sandbox: 2,
        max_pending_per_org: 3,
        max_held_per_sandbox: 3,
        ..ApprovalsConfig::default()
    });
    let _a = wait(q.hold("sb1", &name("a.test"), None, HoldKind::Dns));
    let _b = wait(q.hold("sb1", &name("b.test"), None, HoldKind::Dns));
    let o = now(q.hold("sb1", &name("c.test"), None, HoldKind::Dns));
    assert_eq!(o.rule.to_string(), "hold-limit");
    assert!(o.reason.contains("max_pending_per_sandbox"), "{o:?}");
    let _c = wait(q.hold("sb2", &name("c.test"), None, HoldKind::Dns));
    let o = now(q.hold("sb2", &name("d.test"), None, HoldKind::Dns));
    assert!(o.reason.contains("max_pending_per_org"), "{o:?}");
    // Another organisation has its own count.
    let _d = wait(q.hold("sb3", &name("d.test"), None, HoldKind::Dns));
    // Joining an approval still counts as a held request.
    let _a2 = wait(q.hold("sb1", &name("a.test"), None, HoldKind::Dns));
    let o = now(q.hold("sb1", &name("a.test"), None, HoldKind::Dns));
    assert!(o.reason.contains("max_held_per_sandbox"), "{o:?}");
    let limits = events
        .recent(None, 100)
        .into_iter()
        .filter(|e| e.rule.to_string() == "hold-limit" && e.verdict == EventVerdict::Deny)
        .count();
    assert_eq!(limits, 3);
}

#[tokio::test(start_paused = true)]
async fn unknown_owners_and_removed_sandboxes_fail_closed() {
    let (q, _) = queue(ApprovalsConfig::default());
    let o = now(q.hold("nobody", &name("a.test"), None, HoldKind::Dns));
    assert!(!o.allowed);
    let w = wait(q.hold("sb1", &name("a.test"), Some(443), HoldKind::Tls));
    q.forget_sandbox("sb1");
    let o = w.wait().await;
    assert!(!o.allowed, "{o:?}");
    assert!(q.list("org-a").is_empty());
    assert!(!now(q.hold("sb1", &name("a.test"), None, HoldKind::Dns)).allowed);
}

#[test]
fn decisions_parse_from_their_wire_spelling_only() {
    for d in [
        Decision::AllowOnce,
        Decision::AllowAlways,
        Decision::Deny,
        Decision::DenyAlways,
    ] {
        assert_eq!(d.as_str().parse(), Ok(d));
    }
    assert!("allow".parse::<Decision>().is_err());
    assert!("Allow-Once".parse::<Decision>().is_err());
}

#[test]
fn every_hold_rule_has_its_own_event_text() {
    let texts: std::collections::BTreeSet<String> =
        HoldRule::ALL.iter().map(ToString::to_string).collect();
    // Distinct, so reading a text back finds the one rule that wrote it. That ALL holds every
    // rule is checked where the text is read (decision::tests, which renders each rule).
    assert_eq!(texts.len(), HoldRule::ALL.len(), "{texts:?}");
}
