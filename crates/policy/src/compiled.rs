//! The compiled matcher: one decision per connection, no allocation, cost independent of the
//! number of rules.
//!
//! Exact patterns live in one hash map keyed by name, wildcards in another keyed by their base.
//! A decision looks the name up once, then each proper suffix from longest to shortest, so the
//! first hit is the most specific rule and the cost grows with the labels of the name, not with
//! the size of the policy.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use foldhash::fast::RandomState;
use ipnet::IpNet;
use palisade_scrub::Patterns;

use crate::addr::{AddrVerdict, classify};
use crate::budget::Budgets;
use crate::hold::OnUnknown;
use crate::name::{CanonicalName, DomainPattern};
use crate::policy::{Policy, Transform};
use crate::wire::Mode;

/// What to do with a connection to a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameVerdict {
    /// Allowed: pass through as an opaque tunnel.
    Allow {
        /// The rule that allowed it.
        rule: Rule,
    },
    /// Allowed through TLS interception, applying the transform at this index of
    /// [`CompiledPolicy::transform`].
    Intercept {
        /// Index into the policy's transforms.
        transform: usize,
        /// The rule that matched (always [`Rule::Transform`]).
        rule: Rule,
    },
    /// Refused.
    Deny {
        /// The rule that decided it.
        rule: Rule,
        /// Why.
        reason: DenyReason,
    },
}

impl NameVerdict {
    /// `true` for `Allow` and `Intercept`.
    pub fn is_allowed(&self) -> bool {
        !matches!(self, NameVerdict::Deny { .. })
    }

    /// The deciding rule.
    pub fn rule(&self) -> &Rule {
        match self {
            NameVerdict::Allow { rule }
            | NameVerdict::Intercept { rule, .. }
            | NameVerdict::Deny { rule, .. } => rule,
        }
    }

    /// `allow`, `intercept` or `deny`, for events and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            NameVerdict::Allow { .. } => "allow",
            NameVerdict::Intercept { .. } => "intercept",
            NameVerdict::Deny { .. } => "deny",
        }
    }
}

/// The rule behind a verdict. `Display` gives `allow-all`, `deny-all`, `domain:*.example.com`,
/// `transform:api.example.com` or `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Mode `allow-all`.
    AllowAll,
    /// Mode `deny-all`.
    DenyAll,
    /// An `allow_domains` pattern.
    Domain(DomainPattern),
    /// A transform's domain pattern.
    Transform {
        /// Index into the policy's transforms.
        index: usize,
        /// Its pattern.
        pattern: DomainPattern,
    },
    /// No rule matched in `custom` mode.
    NoMatch,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::AllowAll => f.write_str("allow-all"),
            Rule::DenyAll => f.write_str("deny-all"),
            Rule::Domain(p) => write!(f, "domain:{p}"),
            Rule::Transform { pattern, .. } => write!(f, "transform:{pattern}"),
            Rule::NoMatch => f.write_str("default"),
        }
    }
}

/// Why a name was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The policy is `deny-all`.
    DenyAll,
    /// `custom` mode and no domain or transform matches.
    NotAllowed,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenyReason::DenyAll => "the sandbox's network policy denies all traffic",
            DenyReason::NotAllowed => "the name is not in the sandbox's allowed domains",
        })
    }
}

type Map = HashMap<Box<str>, NameVerdict, RandomState>;

/// An immutable matcher built from a [`Policy`]; `Send + Sync`, share it in an `Arc` and swap
/// the `Arc` on update.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    mode: Mode,
    exact: Map,
    /// Keyed by the wildcard's base (`example.com` for `*.example.com`).
    wildcard: Map,
    /// Label counts of the shortest and longest wildcard base, to skip hopeless lookups.
    wild_labels: (usize, usize),
    transforms: Vec<Transform>,
    allow_cidrs: Vec<IpNet>,
    fallback: NameVerdict,
    scrub: Scrub,
    budgets: Budgets,
    audit: bool,
    on_unknown: OnUnknown,
    /// `deny_domains`: unlisted names that are refused without being held.
    deny_always: std::collections::HashSet<Box<str>, RandomState>,
}

/// What intercepted responses are scrubbed of: every form of every injected value, compiled once
/// per policy.
#[derive(Debug, Clone)]
pub enum Scrub {
    /// The policy injects no value long enough to scrub.
    Nothing,
    /// Scrub these.
    Patterns(Arc<Patterns>),
    /// The patterns could not be built: intercepted responses must be refused (fail closed).
    Unavailable,
}

impl CompiledPolicy {
    pub(crate) fn new(policy: &Policy) -> CompiledPolicy {
        let mut exact = Map::default();
        let mut wildcard = Map::default();
        let mut insert = |p: &DomainPattern, v: NameVerdict| {
            let map = if p.is_wildcard() {
                &mut wildcard
            } else {
                &mut exact
            };
            map.insert(p.base().into(), v);
        };
        if policy.mode != Mode::DenyAll {
            // Domains first, transforms after: on the same pattern the transform wins.
            for p in &policy.allow_domains {
                insert(
                    p,
                    NameVerdict::Allow {
                        rule: Rule::Domain(p.clone()),
                    },
                );
            }
            for (index, t) in policy.transforms.iter().enumerate() {
                let rule = Rule::Transform {
                    index,
                    pattern: t.pattern.clone(),
                };
                insert(
                    &t.pattern,
                    NameVerdict::Intercept {
                        transform: index,
                        rule,
                    },
                );
            }
        }
        let labels = wildcard.keys().map(|k| k.split('.').count());
        let wild_labels = (labels.clone().min().unwrap_or(0), labels.max().unwrap_or(0));
        let fallback = match policy.mode {
            Mode::AllowAll => NameVerdict::Allow {
                rule: Rule::AllowAll,
            },
            Mode::DenyAll => NameVerdict::Deny {
                rule: Rule::DenyAll,
                reason: DenyReason::DenyAll,
            },
            Mode::Custom => NameVerdict::Deny {
                rule: Rule::NoMatch,
                reason: DenyReason::NotAllowed,
            },
        };
        let secrets = policy.transforms.iter().flat_map(|t| {
            t.inject
                .iter()
                .map(|(_, v)| v.expose().as_bytes())
                .chain(t.placeholders.iter().map(|p| p.value.expose().as_bytes()))
        });
        let scrub = match Patterns::new(secrets) {
            Ok(Some(p)) => Scrub::Patterns(p),
            Ok(None) => Scrub::Nothing,
            Err(_) => Scrub::Unavailable,
        };
        CompiledPolicy {
            mode: policy.mode,
            exact,
            wildcard,
            wild_labels,
            transforms: policy.transforms.clone(),
            allow_cidrs: policy.allow_cidrs.clone(),
            fallback,
            scrub,
            budgets: policy.budgets.clone(),
            audit: policy.audit && policy.mode == Mode::Custom,
            on_unknown: policy.hold.on_unknown,
            deny_always: policy
                .hold
                .deny_domains
                .iter()
                .map(|n| Box::from(n.as_str()))
                .collect(),
        }
    }

    /// Audit mode: the data plane lets a denial by this policy's lists or L7 rules through and
    /// records it as `would-deny`. Address classes, the firewall's own addresses, malformed
    /// input, budgets and limits stay enforced.
    pub fn audit(&self) -> bool {
        self.audit
    }

    /// What happens to names no rule matches.
    pub fn on_unknown(&self) -> OnUnknown {
        self.on_unknown
    }

    /// Whether a DNS query or a named connection for `name` waits in the approval queue rather
    /// than being refused: `custom` mode with `on_unknown: hold`, no rule matches the name, and
    /// it is not in `deny_domains`. Addresses are the caller's business (internal ones are
    /// never held).
    pub fn holds(&self, name: &CanonicalName) -> bool {
        self.on_unknown == OnUnknown::Hold
            && self.mode == Mode::Custom
            && self.lookup(name.as_str()).is_none()
            && !self.deny_always.contains(name.as_str())
    }

    /// Whether `name` is in `deny_domains` (refused for good by a person).
    pub fn denied_always(&self, name: &CanonicalName) -> bool {
        self.deny_always.contains(name.as_str())
    }

    /// The byte budgets the data plane enforces (empty: no limit).
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Decides a connection to `name`: the most specific pattern wins (exact before wildcard,
    /// longer wildcard base before shorter; a transform before an allow_domains entry with the
    /// same pattern). Allocation-free; the verdict shares the rule's text.
    pub fn decide_name(&self, name: &CanonicalName) -> NameVerdict {
        self.lookup(name.as_str()).unwrap_or(&self.fallback).clone()
    }

    fn lookup(&self, name: &str) -> Option<&NameVerdict> {
        if let Some(v) = self.exact.get(name) {
            return Some(v);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let (min, max) = self.wild_labels;
        // Labels of the suffix after each dot, longest suffix first.
        let mut labels = name.bytes().filter(|b| *b == b'.').count();
        for (i, b) in name.bytes().enumerate() {
            if b != b'.' {
                continue;
            }
            if labels < min {
                break;
            }
            if labels <= max
                && let Some(v) = name
                    .get(i + 1..)
                    .and_then(|suffix| self.wildcard.get(suffix))
            {
                return Some(v);
            }
            labels -= 1;
        }
        None
    }

    /// Classifies `ip` and tells whether `allow_cidrs` covers it (an IPv4-mapped IPv6 address
    /// also counts as its IPv4 address). Allocation-free.
    pub fn check_addr(&self, ip: IpAddr) -> AddrVerdict {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let in_allow_cidrs = self
            .allow_cidrs
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)));
        AddrVerdict {
            class: classify(ip),
            in_allow_cidrs,
        }
    }

    /// The transform an [`NameVerdict::Intercept`] refers to.
    pub fn transform(&self, index: usize) -> Option<&Transform> {
        self.transforms.get(index)
    }

    /// What intercepted responses are scrubbed of.
    pub fn scrub(&self) -> &Scrub {
        &self.scrub
    }

    /// The masked `allow_cidrs`.
    pub fn allow_cidrs(&self) -> &[IpNet] {
        &self.allow_cidrs
    }

    /// Whether some name can be allowed at all: `allow-all`, or `custom` with at least one
    /// domain or transform. The DNS view uses it to answer nothing when nothing is allowed.
    pub fn allows_any_name(&self) -> bool {
        match self.mode {
            Mode::AllowAll => true,
            Mode::DenyAll => false,
            // Audit lets every name resolve, so its would-be denial can be seen; a held name
            // may still be allowed by a person.
            Mode::Custom => {
                self.audit
                    || self.on_unknown == OnUnknown::Hold
                    || !self.exact.is_empty()
                    || !self.wildcard.is_empty()
            }
        }
    }
}
