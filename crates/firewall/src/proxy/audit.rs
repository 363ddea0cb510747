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
use crate::events::{EgressEvent, EventVerdict};

/// What the policy would have denied, kept for the event of the traffic it let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WouldDeny {
    pub(crate) rule: String,
    pub(crate) reason: String,
}

impl WouldDeny {
    /// Marks an event of let-through traffic as a would-be denial. A denial for another reason
    /// (an address refused, a budget spent) stays a denial.
    pub(crate) fn mark(would: Option<&WouldDeny>, ev: &mut EgressEvent) {
        if let Some(w) = would
            && ev.verdict == EventVerdict::Allow
        {
            ev.verdict = EventVerdict::WouldDeny;
            ev.reason = format!("{} (audit: let through; {})", w.reason, ev.reason);
            ev.rule.clone_from(&w.rule);
        }
    }
}

/// Under audit, lets a denied plan through: to `name` (dialled where the firewall resolves it,
/// never where the sandbox pointed) when the connection names one, else to the original
/// destination, whose address is still checked when it is dialled. Without audit, or for an
/// allowed plan, the plan is returned as it is.
pub(crate) fn relax(
    policy: &CompiledPolicy,
    plan: Plan,
    name: Option<&CanonicalName>,
) -> (Plan, Option<WouldDeny>) {
    match plan {
        Plan::Deny { rule, reason } if policy.audit() => {
            let next = match name {
                Some(name) => Plan::DialName {
                    name: name.clone(),
                    transform: None,
                    rule: "audit".into(),
                },
                None => Plan::DialAddr {
                    rule: "audit".into(),
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

        let (plan, would) = relax(&audit, plan_name(&audit, &name), Some(&name));
        assert!(
            matches!(plan, Plan::DialName { ref name, transform: None, .. } if name.as_str() == "other.example.com"),
            "{plan:?}"
        );
        let would = would.unwrap();
        assert_eq!(would.rule, "default");
        assert!(
            would
                .reason
                .contains("not in the sandbox's allowed domains")
        );

        // An allowed name: no would-deny.
        let (plan, would) = relax(&audit, plan_name(&audit, &listed), Some(&listed));
        assert!(matches!(plan, Plan::DialName { .. }));
        assert!(would.is_none());

        // Not in audit: the denial stands.
        let (plan, would) = relax(&enforce, plan_name(&enforce, &name), Some(&name));
        assert!(matches!(plan, Plan::Deny { .. }));
        assert!(would.is_none());

        // Name-less to an unlisted address: dial the original destination (checked on dial).
        let orig = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 22);
        let (plan, would) = relax(&audit, plan_nameless(&audit, orig, None, "SSH"), None);
        assert!(matches!(plan, Plan::DialAddr { .. }), "{plan:?}");
        assert!(would.is_some());
    }

    #[test]
    fn mark_turns_allows_into_would_deny_and_keeps_denials() {
        let w = WouldDeny {
            rule: "default".into(),
            reason: "not listed".into(),
        };
        let mut ev = EgressEvent::new("s", EventKind::Tcp, EventVerdict::Allow);
        ev.reason = "tunnel closed".into();
        WouldDeny::mark(Some(&w), &mut ev);
        assert_eq!(ev.verdict, EventVerdict::WouldDeny);
        assert_eq!(ev.rule, "default");
        assert!(ev.reason.starts_with("not listed"), "{}", ev.reason);
        let mut denied = EgressEvent::new("s", EventKind::Tcp, EventVerdict::Deny);
        denied.rule = "address".into();
        WouldDeny::mark(Some(&w), &mut denied);
        assert_eq!(denied.verdict, EventVerdict::Deny);
        assert_eq!(denied.rule, "address");
        assert_eq!(
            serde_json::to_value(EventVerdict::WouldDeny).unwrap(),
            serde_json::json!("would-deny")
        );
    }
}
