//! The firewall's decisions as values: which rule decided ([`RuleRef`]) and why a connection or
//! request was refused ([`Reason`]). Plans, refusals and budget cuts carry these; they become text
//! only where an event is recorded or a line is logged, so every rule name an event can carry is
//! spelled in this file: written by `Display`, and read back only by [`Bearing::of_text`], which
//! is tested against it.
//!
//! New kinds of decision (an audit "would deny", a hold awaiting approval) add a variant here, an
//! arm of [`RuleRef::bearing`], and a branch where plans are carried out. The policy suggestions,
//! the one thing that decides from recorded rule text, ask [`Bearing::of_text`].

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::LazyLock;

use palisade_policy::{CanonicalName, DenyReason, DomainPattern, NameError, Rule};

use crate::hold::HoldRule;

/// The rule behind a decision, as the event's `rule` field names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleRef {
    /// A rule of the policy's name matcher: `allow-all`, `deny-all`, `domain:<pattern>`,
    /// `transform:<pattern>`, or `default` when nothing matched.
    Policy(Rule),
    /// `allow_cidrs`: the destination lies inside one of the policy's networks.
    AllowCidrs,
    /// `dns-bound:<name>`: a synthetic address the sandbox's DNS served for an allowed name.
    DnsBound(CanonicalName),
    /// `budget:sandbox` or `budget:domain:<pattern>`: a byte budget.
    Budget(BudgetScope),
    /// `http-rule:<index>`: one of a transform's `http_rules`.
    HttpRule(usize),
    /// `http-rules`: no rule of a transform's `http_rules` allows the request, or its path
    /// cannot be compared.
    HttpRules,
    /// `protocol`: a request shape the proxy does not pass on (framing, method, upgrade, target).
    Protocol,
    /// `authority`: a request on an intercepted connection for another host than the SNI.
    Authority,
    /// `address`: the original destination failed the address checks.
    Address,
    /// `transform`: TLS interception for a transform domain could not be set up.
    Interception,
    /// `scrub`: the response from a transform domain (an injected secret replaced, or a response
    /// that cannot be inspected).
    Scrub,
    /// `limit`: a limit of the proxy (open connections, peek size or time, handshake time).
    Limit,
    /// `malformed`: first bytes that claim TLS or HTTP but break the format.
    Malformed,
    /// `synthetic`: an address in the synthetic range never handed to this sandbox.
    Synthetic,
    /// `address-class`: a DNS answer whose every address is of a refused class.
    AddressClass,
    /// `dns-rate-limit`: DNS queries over their source's rate.
    DnsRateLimit,
    /// `audit`: let through under audit mode (the event names the rule that would have denied).
    Audit,
    /// The approval queue's rule that ended a held name (`approval:<decision>`, `hold-limit`…).
    Held(HoldRule),
    /// `approval:<id>`: the queue's approval of that id, on the events of a name being held and
    /// of its approval ending.
    Approval(String),
}

/// Which byte budget a [`RuleRef::Budget`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetScope {
    /// The sandbox's own budget.
    Sandbox,
    /// The budget of a domain pattern.
    Domain(DomainPattern),
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Policy(rule) => rule.fmt(f),
            RuleRef::AllowCidrs => f.write_str("allow_cidrs"),
            RuleRef::DnsBound(name) => write!(f, "dns-bound:{}", name.as_str()),
            RuleRef::Budget(BudgetScope::Sandbox) => f.write_str("budget:sandbox"),
            RuleRef::Budget(BudgetScope::Domain(p)) => write!(f, "budget:domain:{p}"),
            RuleRef::HttpRule(i) => write!(f, "http-rule:{i}"),
            RuleRef::HttpRules => f.write_str("http-rules"),
            RuleRef::Protocol => f.write_str("protocol"),
            RuleRef::Authority => f.write_str("authority"),
            RuleRef::Address => f.write_str("address"),
            RuleRef::Interception => f.write_str("transform"),
            RuleRef::Scrub => f.write_str("scrub"),
            RuleRef::Limit => f.write_str("limit"),
            RuleRef::Malformed => f.write_str("malformed"),
            RuleRef::Synthetic => f.write_str("synthetic"),
            RuleRef::AddressClass => f.write_str("address-class"),
            RuleRef::DnsRateLimit => f.write_str("dns-rate-limit"),
            RuleRef::Audit => f.write_str("audit"),
            RuleRef::Held(rule) => rule.fmt(f),
            RuleRef::Approval(id) => write!(f, "approval:{id}"),
        }
    }
}

/// Events are serialised with their rule as its text.
impl serde::Serialize for RuleRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a rule says about the policy's lists: would a longer `allow_domains` or `allow_cidrs`
/// have changed the decision? Readers of recorded events (the policy suggestions) ask this of the
/// stored `rule` text; [`RuleRef::bearing`] says it of the value, so a new rule cannot be added
/// without saying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearing {
    /// A rule that let the traffic through: the mode, a list entry, a transform, an address the
    /// sandbox's DNS served for an allowed name, audit, or a person in the approval queue.
    Allows,
    /// Nothing in the lists matched (`default`), or the mode is `deny-all`: the lists decided.
    Lists,
    /// A check the lists do not change (addresses, limits, budgets, L7 rules, framing), a
    /// person's refusal, or a hold nobody decided.
    Beyond,
}

impl RuleRef {
    /// See [`Bearing`].
    pub fn bearing(&self) -> Bearing {
        match self {
            RuleRef::Policy(Rule::NoMatch | Rule::DenyAll) => Bearing::Lists,
            RuleRef::Policy(Rule::AllowAll | Rule::Domain(_) | Rule::Transform { .. })
            | RuleRef::AllowCidrs
            | RuleRef::DnsBound(_)
            | RuleRef::Audit => Bearing::Allows,
            RuleRef::Held(HoldRule::Decided(decision)) if decision.allows() => Bearing::Allows,
            RuleRef::Held(_)
            | RuleRef::Approval(_)
            | RuleRef::Budget(_)
            | RuleRef::HttpRule(_)
            | RuleRef::HttpRules
            | RuleRef::Protocol
            | RuleRef::Authority
            | RuleRef::Address
            | RuleRef::Interception
            | RuleRef::Scrub
            | RuleRef::Limit
            | RuleRef::Malformed
            | RuleRef::Synthetic
            | RuleRef::AddressClass
            | RuleRef::DnsRateLimit => Bearing::Beyond,
        }
    }

    /// Every rule whose text is its name alone (the approval rules are [`HoldRule::ALL`]). A new
    /// rule of that kind goes here, or its events read back as nothing (the test that renders
    /// every variant says so).
    const NAMED: [RuleRef; 17] = [
        RuleRef::Policy(Rule::AllowAll),
        RuleRef::Policy(Rule::DenyAll),
        RuleRef::Policy(Rule::NoMatch),
        RuleRef::AllowCidrs,
        RuleRef::Budget(BudgetScope::Sandbox),
        RuleRef::HttpRules,
        RuleRef::Protocol,
        RuleRef::Authority,
        RuleRef::Address,
        RuleRef::Interception,
        RuleRef::Scrub,
        RuleRef::Limit,
        RuleRef::Malformed,
        RuleRef::Synthetic,
        RuleRef::AddressClass,
        RuleRef::DnsRateLimit,
        RuleRef::Audit,
    ];

    /// The rule carrying a payload (a pattern, a name, an index) that `text` spells, parsed from
    /// what follows its head. A transform's index is not in its text; the rule read back has 0.
    fn with_payload(text: &str) -> Option<RuleRef> {
        let (head, payload) = text.split_once(':')?;
        let pattern = |p: &str| DomainPattern::parse(p).ok();
        Some(match head {
            "domain" => RuleRef::Policy(Rule::Domain(pattern(payload)?)),
            "transform" => RuleRef::Policy(Rule::Transform {
                index: 0,
                pattern: pattern(payload)?,
            }),
            "dns-bound" => {
                RuleRef::DnsBound(palisade_policy::canonicalize(payload.as_bytes()).ok()?)
            }
            "budget" => RuleRef::Budget(BudgetScope::Domain(pattern(
                payload.strip_prefix("domain:")?,
            )?)),
            "http-rule" => RuleRef::HttpRule(payload.parse().ok()?),
            "approval" if crate::hold::is_approval_id(payload) => {
                RuleRef::Approval(payload.to_owned())
            }
            _ => return None,
        })
    }
}

impl Bearing {
    /// The bearing of the rule whose `Display` wrote an event's `rule` text: the rules that are
    /// their name alone are looked up by that name, the others parsed and rendered again, so
    /// only the text `Display` writes reads back. `None` for text no rule of this build writes
    /// (another version's, a damaged row); a reader never counts that as allowing anything.
    pub fn of_text(text: &str) -> Option<Bearing> {
        static NAMED: LazyLock<HashMap<String, Bearing>> = LazyLock::new(|| {
            let held = HoldRule::ALL.map(RuleRef::Held);
            (RuleRef::NAMED.iter().chain(&held))
                .map(|rule| (rule.to_string(), rule.bearing()))
                .collect()
        });
        // Earlier versions named an intercepted request that an allow_domains entry let through
        // so; their rows are still in the store.
        if text == "domain" {
            return Some(Bearing::Allows);
        }
        if let Some(bearing) = NAMED.get(text) {
            return Some(*bearing);
        }
        let rule = RuleRef::with_payload(text)?;
        (rule.to_string() == text).then(|| rule.bearing())
    }
}

/// What carried a connection that had no usable name, as a denial describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carrier {
    /// A connection whose protocol names nothing (or that stayed quiet).
    Connection,
    /// Plain HTTP whose Host is an address.
    Http,
    /// TLS with Encrypted Client Hello: the outer SNI says nothing about where it goes.
    TlsEch,
    /// TLS without an SNI.
    TlsNoSni,
    /// TLS whose SNI is not a valid name (custom mode says why).
    TlsBadSni(NameError),
    /// TLS whose SNI is not a valid name, in the other modes.
    TlsNoUsableName,
}

impl fmt::Display for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Carrier::Connection => f.write_str("connection"),
            Carrier::Http => f.write_str("HTTP"),
            Carrier::TlsEch => f.write_str("TLS with Encrypted Client Hello"),
            Carrier::TlsNoSni => f.write_str("TLS without SNI"),
            Carrier::TlsBadSni(err) => write!(f, "TLS with an unusable server name ({err})"),
            Carrier::TlsNoUsableName => f.write_str("TLS without a usable server name"),
        }
    }
}

/// Why a plan refuses a connection or request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The policy's matcher refused the name.
    Name(DenyReason),
    /// `deny-all` refuses everything, named or not.
    DenyAll,
    /// A synthetic address that stands for a name the policy does not allow.
    SyntheticNotAllowed {
        carrier: Carrier,
        ip: Ipv4Addr,
        name: CanonicalName,
    },
    /// `custom` mode: a real address outside `allow_cidrs`, reached without a name.
    NamelessOutsideCidrs { carrier: Carrier, ip: Ipv4Addr },
    /// TLS naming nothing usable, to an address outside `allow_cidrs`.
    UnnamedOutsideCidrs { carrier: Carrier, ip: Ipv4Addr },
    /// A Host header that is not a usable name.
    UnusableHost(NameError),
    /// What the I/O shell found (resolution, connection, limits, framing), already in words.
    Said(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Name(why) => why.fmt(f),
            Reason::DenyAll => f.write_str("the sandbox policy denies all traffic"),
            Reason::SyntheticNotAllowed { carrier, ip, name } => write!(
                f,
                "{carrier} to {ip}, the sandbox's address for {}, which the policy does not allow",
                name.as_str()
            ),
            Reason::NamelessOutsideCidrs { carrier, ip } => write!(
                f,
                "{carrier} to {ip} is outside allow_cidrs; without a name, an allowed name is \
                 reached only through the address the sandbox's DNS answered for it"
            ),
            Reason::UnnamedOutsideCidrs { carrier, ip } => {
                write!(f, "{carrier} to {ip} outside allow_cidrs")
            }
            Reason::UnusableHost(err) => write!(f, "unusable host name: {err}"),
            Reason::Said(words) => f.write_str(words),
        }
    }
}

impl From<String> for Reason {
    fn from(words: String) -> Self {
        Reason::Said(words)
    }
}

impl From<&str> for Reason {
    fn from(words: &str) -> Self {
        Reason::Said(words.to_owned())
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
