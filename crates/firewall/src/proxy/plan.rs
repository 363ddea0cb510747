//! What to do with a connection, decided from the policy and what the sandbox sent.
//!
//! Pure: the shell resolves names, dials and relays; this module only says which.

use std::fmt;
use std::net::{IpAddr, SocketAddrV4};

use palisade_policy::{CanonicalName, CompiledPolicy, Mode, NameVerdict, canonicalize};

/// A decision about where (or whether) to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Resolve `name` with the firewall's own resolver and dial it on the original port.
    /// `transform` is set when the name has a transform (TLS interception / header rewriting).
    DialName {
        name: CanonicalName,
        transform: Option<usize>,
        rule: String,
    },
    /// Dial the original destination: a name-less protocol that an address rule allows.
    DialAddr { rule: String },
    /// Refuse.
    Deny { rule: String, reason: String },
}

impl Plan {
    pub fn deny(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Plan::Deny {
            rule: rule.into(),
            reason: reason.into(),
        }
    }
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
            rule: rule.to_string(),
        },
        NameVerdict::Intercept { transform, rule } => Plan::DialName {
            name: name.clone(),
            transform: Some(transform),
            rule: rule.to_string(),
        },
        NameVerdict::Deny { rule, reason } => Plan::deny(rule.to_string(), reason.to_string()),
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
    what: &str,
) -> Plan {
    let ip = IpAddr::V4(*orig.ip());
    if let Some(name) = synthetic {
        return match policy.decide_name(name) {
            NameVerdict::Deny { rule, .. } => Plan::deny(
                rule.to_string(),
                format!(
                    "{what} to {ip}, the sandbox's address for {name}, which the policy does not allow",
                    name = name.as_str()
                ),
            ),
            _ => Plan::DialAddr {
                rule: format!("dns-bound:{}", name.as_str()),
            },
        };
    }
    let addr = policy.check_addr(ip);
    if addr.in_allow_cidrs {
        return Plan::DialAddr {
            rule: "allow_cidrs".into(),
        };
    }
    match policy.mode() {
        Mode::DenyAll => Plan::deny("deny-all", "the sandbox policy denies all traffic"),
        Mode::AllowAll => Plan::DialAddr {
            rule: "allow-all".into(),
        },
        Mode::Custom => Plan::deny(
            "default",
            format!(
                "{what} to {ip} is outside allow_cidrs; without a name, an allowed name is \
                 reached only through the address the sandbox's DNS answered for it"
            ),
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
        return Plan::deny("deny-all", "the sandbox policy denies all traffic");
    }
    if ech && matches!(policy.mode(), Mode::Custom) {
        // The real name is encrypted: the outer SNI says nothing about where it goes.
        return plan_unnamed_tls(policy, orig, "TLS with Encrypted Client Hello");
    }
    let Some(raw) = sni else {
        return plan_unnamed_tls(policy, orig, "TLS without SNI");
    };
    match canonicalize(raw) {
        Ok(name) => plan_named(policy, &name, orig),
        Err(err) => match policy.mode() {
            Mode::Custom => plan_unnamed_tls(
                policy,
                orig,
                &format!("TLS with an unusable server name ({err})"),
            ),
            _ => plan_unnamed_tls(policy, orig, "TLS without a usable server name"),
        },
    }
}

/// A name the sandbox sent on a connection to `orig`: the name decides, except that an address
/// inside `allow_cidrs` is reachable whatever name is sent to it.
pub fn plan_named(policy: &CompiledPolicy, name: &CanonicalName, orig: SocketAddrV4) -> Plan {
    let plan = plan_name(policy, name);
    if matches!(plan, Plan::Deny { .. }) && policy.check_addr(IpAddr::V4(*orig.ip())).in_allow_cidrs
    {
        return Plan::DialAddr {
            rule: "allow_cidrs".into(),
        };
    }
    plan
}

fn plan_unnamed_tls(policy: &CompiledPolicy, orig: SocketAddrV4, what: &str) -> Plan {
    let addr = policy.check_addr(IpAddr::V4(*orig.ip()));
    if addr.in_allow_cidrs {
        return Plan::DialAddr {
            rule: "allow_cidrs".into(),
        };
    }
    match policy.mode() {
        Mode::AllowAll => Plan::DialAddr {
            rule: "allow-all".into(),
        },
        _ => Plan::deny(
            "default",
            format!("{what} to {} outside allow_cidrs", orig.ip()),
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
                (audit || !matches!(plan_name(policy, name), Plan::Deny { .. }))
                    && check_dial_addr(policy, *ip, is_own).is_ok()
            }
            Recheck::Addr { orig } => {
                (audit
                    || !matches!(
                        plan_nameless(policy, *orig, None, "connection"),
                        Plan::Deny { .. }
                    ))
                    && check_dial_addr(policy, IpAddr::V4(*orig.ip()), is_own).is_ok()
            }
        }
    }
}
