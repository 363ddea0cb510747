//! What to do with a connection, decided from the policy and what the sandbox sent.
//!
//! Pure: the shell resolves names, dials and relays; this module only says which. Rules and
//! reasons are values ([`crate::decision`]); the shell renders them into the event.

use std::fmt;
use std::net::{IpAddr, SocketAddrV4};

use palisade_policy::{CanonicalName, CompiledPolicy, Mode, NameVerdict, Rule, canonicalize};

pub use crate::decision::{Carrier, Reason, RuleRef};

/// A decision about where (or whether) to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Resolve `name` with the firewall's own resolver and dial it on the original port.
    /// `transform` is set when the name has a transform (TLS interception / header rewriting).
    DialName {
        name: CanonicalName,
        transform: Option<usize>,
        rule: RuleRef,
    },
    /// Dial the original destination: a name-less protocol that an address rule allows.
    DialAddr { rule: RuleRef },
    /// Refuse.
    Deny { rule: RuleRef, reason: Reason },
}

impl Plan {
    pub fn deny(rule: RuleRef, reason: impl Into<Reason>) -> Self {
        Plan::Deny {
            rule,
            reason: reason.into(),
        }
    }

    /// `true` for [`Plan::Deny`].
    pub fn is_deny(&self) -> bool {
        matches!(self, Plan::Deny { .. })
    }

    /// The rule that decided.
    pub fn rule(&self) -> &RuleRef {
        match self {
            Plan::DialName { rule, .. } | Plan::DialAddr { rule } | Plan::Deny { rule, .. } => rule,
        }
    }
}

/// `deny-all` mode: everything is refused, named or not.
fn deny_all() -> Plan {
    Plan::deny(RuleRef::Policy(Rule::DenyAll), Reason::DenyAll)
}

/// Why an address may not be dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrRefusal {
    /// An internal class (loopback, private, metadata…) outside `allow_cidrs`.
    Internal,
    /// The firewall host's own address or another sandbox's.
    OwnOrSandbox,
}

impl fmt::Display for AddrRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrRefusal::Internal => f.write_str("internal address outside allow_cidrs"),
            AddrRefusal::OwnOrSandbox => f.write_str("address of the firewall host or a sandbox"),
        }
    }
}

/// Checks one address a connection would be dialled to, in every mode (threats 11-12).
pub fn check_dial_addr(
    policy: &CompiledPolicy,
    ip: IpAddr,
    is_own: bool,
) -> Result<(), AddrRefusal> {
    let verdict = policy.check_addr(ip);
    if is_own && !verdict.in_allow_cidrs {
        return Err(AddrRefusal::OwnOrSandbox);
    }
    if verdict.internal_refused() {
        return Err(AddrRefusal::Internal);
    }
    Ok(())
}

/// Decides on a name the sandbox sent (SNI or Host), already canonical.
pub fn plan_name(policy: &CompiledPolicy, name: &CanonicalName) -> Plan {
    match policy.decide_name(name) {
        NameVerdict::Allow { rule } => Plan::DialName {
            name: name.clone(),
            transform: None,
            rule: RuleRef::Policy(rule),
        },
        NameVerdict::Intercept { transform, rule } => Plan::DialName {
            name: name.clone(),
            transform: Some(transform),
            rule: RuleRef::Policy(rule),
        },
        NameVerdict::Deny { rule, reason } => {
            Plan::deny(RuleRef::Policy(rule), Reason::Name(reason))
        }
    }
}

/// Decides on a connection that carries no usable name. `synthetic` is the name the original
/// destination stands for when it is one of the sandbox's synthetic addresses: then that name
/// alone decides, in every mode (the address is the name; `DialAddr` dials where it resolves).
/// Otherwise the connection is allowed when the destination is inside `allow_cidrs`, or in
/// allow-all mode for a non-internal address; a real address in custom mode is refused, so a
/// shared address never opens services of names the policy does not allow.
pub fn plan_nameless(
    policy: &CompiledPolicy,
    orig: SocketAddrV4,
    synthetic: Option<&CanonicalName>,
    carrier: Carrier,
) -> Plan {
    let ip = *orig.ip();
    if let Some(name) = synthetic {
        return match policy.decide_name(name) {
            NameVerdict::Deny { rule, .. } => Plan::deny(
                RuleRef::Policy(rule),
                Reason::SyntheticNotAllowed {
                    carrier,
                    ip,
                    name: name.clone(),
                },
            ),
            NameVerdict::Allow { .. } | NameVerdict::Intercept { .. } => Plan::DialAddr {
                rule: RuleRef::DnsBound(name.clone()),
            },
        };
    }
    if policy.check_addr(IpAddr::V4(ip)).in_allow_cidrs {
        return Plan::DialAddr {
            rule: RuleRef::AllowCidrs,
        };
    }
    match policy.mode() {
        Mode::DenyAll => deny_all(),
        Mode::AllowAll => Plan::DialAddr {
            rule: RuleRef::Policy(Rule::AllowAll),
        },
        Mode::Custom => Plan::deny(
            RuleRef::Policy(Rule::NoMatch),
            Reason::NamelessOutsideCidrs { carrier, ip },
        ),
    }
}

/// Decides on a TLS connection from its ClientHello.
pub fn plan_tls(
    policy: &CompiledPolicy,
    sni: Option<&[u8]>,
    ech: bool,
    orig: SocketAddrV4,
) -> Plan {
    if matches!(policy.mode(), Mode::DenyAll) {
        return deny_all();
    }
    if ech && matches!(policy.mode(), Mode::Custom) {
        // The real name is encrypted: the outer SNI says nothing about where it goes.
        return plan_unnamed_tls(policy, orig, Carrier::TlsEch);
    }
    let Some(raw) = sni else {
        return plan_unnamed_tls(policy, orig, Carrier::TlsNoSni);
    };
    match canonicalize(raw) {
        Ok(name) => plan_named(policy, &name, orig),
        Err(err) => match policy.mode() {
            Mode::Custom => plan_unnamed_tls(policy, orig, Carrier::TlsBadSni(err)),
            _ => plan_unnamed_tls(policy, orig, Carrier::TlsNoUsableName),
        },
    }
}

/// A name the sandbox sent on a connection to `orig`: the name decides, except that an address
/// inside `allow_cidrs` is reachable whatever name is sent to it.
pub fn plan_named(policy: &CompiledPolicy, name: &CanonicalName, orig: SocketAddrV4) -> Plan {
    let plan = plan_name(policy, name);
    if plan.is_deny() && policy.check_addr(IpAddr::V4(*orig.ip())).in_allow_cidrs {
        return Plan::DialAddr {
            rule: RuleRef::AllowCidrs,
        };
    }
    plan
}

/// Decides on one plain HTTP request from its authority's host (`request_authority`): a name
/// decides as [`plan_named`]; an address literal is a request without a name (a synthetic one
/// stands for its name); a host that is not a usable name is refused, except in allow-all mode,
/// where the address rules apply.
pub fn plan_http(
    policy: &CompiledPolicy,
    host: &str,
    orig: SocketAddrV4,
    synthetic: Option<&CanonicalName>,
) -> Plan {
    match canonicalize(host.as_bytes()) {
        Ok(name) => plan_named(policy, &name, orig),
        Err(_) if host.parse::<IpAddr>().is_ok() || host.starts_with('[') => {
            plan_nameless(policy, orig, synthetic, Carrier::Http)
        }
        Err(_) if matches!(policy.mode(), Mode::AllowAll) => {
            plan_nameless(policy, orig, None, Carrier::Http)
        }
        Err(e) => Plan::deny(RuleRef::Policy(Rule::NoMatch), Reason::UnusableHost(e)),
    }
}

fn plan_unnamed_tls(policy: &CompiledPolicy, orig: SocketAddrV4, carrier: Carrier) -> Plan {
    if policy.check_addr(IpAddr::V4(*orig.ip())).in_allow_cidrs {
        return Plan::DialAddr {
            rule: RuleRef::AllowCidrs,
        };
    }
    match policy.mode() {
        Mode::AllowAll => Plan::DialAddr {
            rule: RuleRef::Policy(Rule::AllowAll),
        },
        _ => Plan::deny(
            RuleRef::Policy(Rule::NoMatch),
            Reason::UnnamedOutsideCidrs {
                carrier,
                ip: *orig.ip(),
            },
        ),
    }
}

/// Whether a connection that was allowed is still allowed under a new policy.
#[derive(Debug, Clone)]
pub enum Recheck {
    /// Dialled by name to `ip`.
    Name { name: CanonicalName, ip: IpAddr },
    /// Dialled to the original address under an address rule.
    Addr { orig: SocketAddrV4 },
}

impl Recheck {
    pub fn still_allowed(&self, policy: &CompiledPolicy, is_own: bool) -> bool {
        // Under audit the lists only observe; the address checks still hold.
        let audit = policy.audit();
        match self {
            Recheck::Name { name, ip } => {
                (audit || !plan_name(policy, name).is_deny())
                    && check_dial_addr(policy, *ip, is_own).is_ok()
            }
            Recheck::Addr { orig } => {
                (audit || !plan_nameless(policy, *orig, None, Carrier::Connection).is_deny())
                    && check_dial_addr(policy, IpAddr::V4(*orig.ip()), is_own).is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests;
