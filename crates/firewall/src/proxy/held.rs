//! The hold step: a connection the policy would refuse for its name waits in the approval queue
//! (`on_unknown: "hold"`), before anything is dialled, and goes on with the outcome.

use std::net::IpAddr;

use palisade_policy::canonicalize;

use super::Conn;
use super::plan::{Plan, RuleRef, plan_name};
use crate::hold::HoldKind;

/// `plan` unchanged unless it refuses a name the sandbox's policy holds; then the approval's
/// outcome: a refusal naming the approval, or a dial of the name. Connections aimed at an
/// internal address or the firewall's own, and name-less ones, are never held: they are decided
/// as before, at once.
pub(super) async fn settle(
    conn: &Conn,
    plan: Plan,
    raw_name: Option<&[u8]>,
    kind: HoldKind,
) -> Plan {
    if !plan.is_deny() {
        return plan;
    }
    let Some(name) = raw_name.and_then(|raw| canonicalize(raw).ok()) else {
        return plan;
    };
    let policy = conn.entry.policy();
    if !policy.holds(&name) {
        return plan;
    }
    if conn.synthetic.is_none() {
        let ip = IpAddr::V4(*conn.orig.ip());
        if policy.check_addr(ip).internal_refused() || conn.shared.is_own(ip) {
            return plan;
        }
    }
    let approvals = conn.shared.registry.approvals();
    let outcome = approvals
        .hold(conn.entry.id(), &name, Some(conn.orig.port()), kind)
        .outcome()
        .await;
    if !outcome.allowed {
        return Plan::deny(RuleRef::Held(outcome.rule), outcome.reason);
    }
    // Allow-always has changed the policy by now: take its plan (a transform may apply).
    match plan_name(&conn.entry.policy(), &name) {
        allowed @ Plan::DialName { .. } => allowed,
        _ => Plan::DialName {
            name,
            transform: None,
            rule: RuleRef::Held(outcome.rule),
        },
    }
}
