//! Audit mode on the proxy side: a denial by the policy's lists turns into the plan that lets the
//! connection through, and the event says `would-deny` with the rule and reason it would have
//! been denied for.
//!
//! Only plans from the policy's decision pass through here. Everything enforced regardless of
//! the lists (address classes and the firewall's own addresses when dialling, malformed input,
//! byte budgets, the connection cap) is refused before or after, by the same code as without
//! audit.

use palisade_policy::{CanonicalName, CompiledPolicy};

use super::plan::Plan;
use crate::decision::{Reason, RuleRef};
use crate::events::{EgressEvent, EventVerdict};

/// What the policy would have denied, kept for the event of the traffic it let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WouldDeny {
    pub(crate) rule: RuleRef,
    pub(crate) reason: Reason,
}

impl WouldDeny {
    /// Marks an event of let-through traffic as a would-be denial. A denial for another reason
    /// (an address refused, a budget spent) stays a denial.
    pub(crate) fn mark(would: Option<&WouldDeny>, ev: &mut EgressEvent) {
        if let Some(w) = would
            && ev.verdict == EventVerdict::Allow
        {
            ev.verdict = EventVerdict::WouldDeny;
            // The verdict says it was let through; the reason says why it would not have been,
            // then what happened to it.
            ev.reason = format!("{}; {}", w.reason, ev.reason);
            ev.rule = w.rule.clone();
        }
    }
}

/// Under audit, lets a denied plan through: to `name` (dialled where the firewall resolves it,
/// never where the sandbox pointed) when the connection names one, else to the original
/// destination, whose address is still checked when it is dialled. Without audit, or for an
/// allowed plan, the plan is returned as it is and `name` is never asked (it canonicalises,
/// which only a let-through denial needs).
pub(crate) fn relax(
    policy: &CompiledPolicy,
    plan: Plan,
    name: impl FnOnce() -> Option<CanonicalName>,
) -> (Plan, Option<WouldDeny>) {
    match plan {
        Plan::Deny { rule, reason } if policy.audit() => {
            let next = match name() {
                Some(name) => Plan::DialName {
                    name,
                    transform: None,
                    rule: RuleRef::Audit,
                },
                None => Plan::DialAddr {
                    rule: RuleRef::Audit,
                },
            };
            (next, Some(WouldDeny { rule, reason }))
        }
        other => (other, None),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use palisade_policy::{Policy, canonicalize};

    use super::*;
    use crate::events::EventKind;
    use crate::proxy::plan::{plan_name, plan_nameless};

    fn compiled(json: &str) -> CompiledPolicy {
        Policy::from_json(json.as_bytes())
            .map(|p| p.compile())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn audit_relaxes_only_policy_denials() {
        let name = canonicalize(b"other.example.com").unwrap();
        let listed = canonicalize(b"api.example.com").unwrap();
        let audit =
            compiled(r#"{"mode":"custom","allow_domains":["api.example.com"],"audit":true}"#);
        let enforce = compiled(r#"{"mode":"custom","allow_domains":["api.example.com"]}"#);

        let (plan, would) = relax(&audit, plan_name(&audit, &name), || Some(name.clone()));
        assert!(
            matches!(plan, Plan::DialName { ref name, transform: None, .. } if name.as_str() == "other.example.com"),
            "{plan:?}"
        );
        let would = would.unwrap();
        assert_eq!(would.rule.to_string(), "default");
        assert!(
            would
                .reason
                .to_string()
                .contains("not in the sandbox's allowed domains")
        );

        // An allowed name: no would-deny.
        let (plan, would) = relax(&audit, plan_name(&audit, &listed), || Some(listed.clone()));
        assert!(matches!(plan, Plan::DialName { .. }));
        assert!(would.is_none());

        // Not in audit: the denial stands.
        let (plan, would) = relax(&enforce, plan_name(&enforce, &name), || Some(name.clone()));
        assert!(matches!(plan, Plan::Deny { .. }));
        assert!(would.is_none());

        // Name-less to an unlisted address: dial the original destination (checked on dial).
        let orig = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 22);
        let (plan, would) = relax(
            &audit,
            plan_nameless(&audit, orig, None, crate::decision::Carrier::Connection),
            || None,
        );
        assert!(matches!(plan, Plan::DialAddr { .. }), "{plan:?}");
        assert!(would.is_some());
    }

    /// The intercepted path: a request an L7 rule denies is forwarded (with the transform) and
    /// reported as a would-deny under audit, refused without it.
    #[test]
    fn intercepted_l7_denials_are_forwarded_under_audit() {
        let sni = canonicalize(b"api.example.test").unwrap();
        for audit in [true, false] {
            let policy = compiled(&format!(
                r#"{{"mode":"custom","transforms":[{{"domain":"api.example.test",
                    "inject_headers":{{"Authorization":"Bearer s3cret-value"}},
                    "http_rules":[{{"action":"deny","method":"DELETE","path":"/v1/**"}}]}}],
                    "audit":{audit}}}"#
            ));
            let req = http::Request::builder()
                .method("DELETE")
                .uri("/v1/thing")
                .header("host", "api.example.test")
                .body(())
                .unwrap();
            let mut info = crate::events::HttpInfo {
                method: "DELETE".into(),
                host: "api.example.test".into(),
                path: "/v1/thing".into(),
                status: 0,
                injected: Vec::new(),
                stripped: Vec::new(),
            };
            match crate::proxy::intercept::prepare(req, Ok(()), &sni, 443, &policy, &mut info) {
                Ok((fwd, _rule, would)) => {
                    assert!(audit, "forwarded without audit");
                    assert_eq!(would.unwrap().rule.to_string(), "http-rule:0");
                    assert!(fwd.headers().contains_key("authorization"));
                }
                Err(_) => assert!(!audit, "refused under audit"),
            }
        }
    }

    #[test]
    fn mark_turns_allows_into_would_deny_and_keeps_denials() {
        let w = WouldDeny {
            rule: RuleRef::Policy(palisade_policy::Rule::NoMatch),
            reason: Reason::Said("not listed".into()),
        };
        let tunnel = RuleRef::Policy(palisade_policy::Rule::AllowAll);
        let mut ev = EgressEvent::new("s", EventKind::Tcp, EventVerdict::Allow, tunnel);
        ev.reason = "tunnel closed".into();
        WouldDeny::mark(Some(&w), &mut ev);
        assert_eq!(ev.verdict, EventVerdict::WouldDeny);
        assert_eq!(ev.rule.to_string(), "default");
        assert!(ev.reason.starts_with("not listed"), "{}", ev.reason);
        let mut denied =
            EgressEvent::new("s", EventKind::Tcp, EventVerdict::Deny, RuleRef::Address);
        WouldDeny::mark(Some(&w), &mut denied);
        assert_eq!(denied.verdict, EventVerdict::Deny);
        assert_eq!(denied.rule.to_string(), "address");
        assert_eq!(
            serde_json::to_value(EventVerdict::WouldDeny).unwrap(),
            serde_json::json!("would-deny")
        );
    }
}
