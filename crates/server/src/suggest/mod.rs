//! Policy suggestions (issue 14): the smallest `custom` policy that would have allowed
//! everything a sandbox did, built from the egress events the daemon keeps for it.
//!
//! Pure: events and the current (redacted) policy in, a [`Suggestion`] out. The rules:
//! - every name the sandbox used (allowed, by the lists or by a person in the approval queue;
//!   denied or would-deny by the lists) becomes an exact `allow_domains` entry, except names a
//!   transform already covers (transforms are kept);
//! - [`WILDCARD_MIN`] or more distinct names below one registrable domain (public suffix list,
//!   ICANN and private sections, embedded in the `psl` crate at build time) collapse into
//!   `*.<registrable domain>`, so `*.co.uk` or `*.github.io` can never be suggested: those are
//!   suffixes, and a wildcard is only ever put one level below a registrable domain;
//! - name-less traffic to a public address becomes a `/32` (`/128`) `allow_cidrs` entry;
//!   internal addresses (private, loopback, CGNAT, link-local, metadata …) are never suggested;
//! - the current policy's `allow_cidrs`, transforms and budgets are kept (UDP and ICMP to
//!   `allow_cidrs` pass in the kernel and leave no event, so an unseen CIDR may still be used).
//!
//! Denials that a wider list would not lift (internal addresses, malformed input, budgets,
//! limits, L7 rules) and names a person refused or nobody decided are reported in
//! `not_suggested`, never turned into entries. What an event's rule says is read with
//! [`Bearing::of_text`]; a rule this build cannot read counts for nothing.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use palisade_firewall::decision::Bearing;
use palisade_policy::{
    AddressClass, CanonicalName, Mode, NameVerdict, NetworkPolicySpec, Policy, canonicalize,
    classify,
};
use palisade_store::{EgressEventFields, EgressEventRecord};
use serde::Serialize;
use utoipa::ToSchema;

/// Distinct names under one registrable domain from which a `*.` wildcard is suggested. Two
/// names cost nothing to list; a third is the first sign of a pattern (CDN shards, regional
/// endpoints, per-tenant hosts), and below it a wildcard would open names never seen for no
/// saving.
pub const WILDCARD_MIN: usize = 3;

/// What the events say about one suggested entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Evidence {
    /// Events behind the entry.
    pub count: u64,
    /// Unix milliseconds of the first and last of them.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Destination ports of connections (DNS queries carry none).
    pub ports: Vec<u16>,
    /// Bytes the sandbox sent and received on those connections, where known.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Events by verdict: `allow`, `deny`, `would-deny`.
    pub verdicts: BTreeMap<String, u64>,
}

impl Evidence {
    fn add(&mut self, e: &EgressEventFields) {
        if self.count == 0 || e.at_ms < self.first_seen_ms {
            self.first_seen_ms = e.at_ms;
        }
        self.last_seen_ms = self.last_seen_ms.max(e.at_ms);
        self.count += 1;
        if e.protocol != "dns"
            && let Some(port) = e.dst_port.and_then(|p| u16::try_from(p).ok())
            && !self.ports.contains(&port)
        {
            self.ports.push(port);
            self.ports.sort_unstable();
        }
        self.bytes_sent += u64::try_from(e.bytes_up).unwrap_or(0);
        self.bytes_received += u64::try_from(e.bytes_down).unwrap_or(0);
        *self.verdicts.entry(e.verdict.clone()).or_default() += 1;
    }

    fn merge(&mut self, other: &Evidence) {
        if self.count == 0 || (other.count > 0 && other.first_seen_ms < self.first_seen_ms) {
            self.first_seen_ms = other.first_seen_ms;
        }
        self.last_seen_ms = self.last_seen_ms.max(other.last_seen_ms);
        self.count += other.count;
        for p in &other.ports {
            if !self.ports.contains(p) {
                self.ports.push(*p);
            }
        }
        self.ports.sort_unstable();
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        for (k, v) in &other.verdicts {
            *self.verdicts.entry(k.clone()).or_default() += v;
        }
    }
}

/// One suggested `allow_domains` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DomainEntry {
    /// An exact name or `*.registrable.domain`.
    pub domain: String,
    /// The names seen that it stands for (one for an exact name).
    pub names: Vec<String>,
    pub evidence: Evidence,
}

/// One suggested `allow_cidrs` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CidrEntry {
    pub cidr: String,
    /// `seen` for an address the sandbox used without a name, `kept` for the current policy's.
    pub source: String,
    pub evidence: Evidence,
}

/// Something the sandbox did that no list entry would allow, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NotSuggested {
    /// The name or address.
    pub what: String,
    pub reason: String,
    pub evidence: Evidence,
}

/// The answer of `GET /v1/sandbox/{id}/network-policy/suggestion`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Suggestion {
    pub sandbox_id: String,
    /// The suggested policy (`custom`, audit off), transform values redacted.
    pub network_policy: NetworkPolicySpec,
    pub domains: Vec<DomainEntry>,
    pub cidrs: Vec<CidrEntry>,
    /// Current `allow_domains` entries no event used: left out of the suggestion.
    pub unused: Vec<String>,
    pub not_suggested: Vec<NotSuggested>,
    /// Events read.
    pub events: u64,
    /// Why the suggested policy would not validate (too many entries for the limits), if so.
    pub problems: Vec<crate::error::FieldProblem>,
}

fn is_public(ip: IpAddr) -> bool {
    matches!(
        classify(ip),
        AddressClass::Public | AddressClass::Documentation
    )
}

/// What one event contributes.
enum Seen {
    Name(CanonicalName),
    Addr(IpAddr),
    Unliftable(String, String),
    Nothing,
}

fn classify_event(e: &EgressEventFields) -> Seen {
    let rule = e.rule.as_deref().unwrap_or("");
    // A rule this build cannot read is never turned into an entry.
    let bearing = Bearing::of_text(rule).unwrap_or(Bearing::Beyond);
    let counts = match e.verdict.as_str() {
        "allow" => bearing == Bearing::Allows,
        "deny" | "would-deny" => bearing == Bearing::Lists,
        _ => false,
    };
    let name = e.name.as_deref().filter(|n| !n.is_empty());
    if !counts {
        // A denial the lists cannot lift: worth saying, once per name or address.
        if matches!(e.verdict.as_str(), "deny" | "would-deny") {
            let what = name
                .map(str::to_owned)
                .or_else(|| e.dst_addr.clone())
                .unwrap_or_default();
            if !what.is_empty() {
                let why = match e.reason.as_deref() {
                    Some(r) if !r.is_empty() => format!("{rule}: {r}"),
                    _ => rule.to_owned(),
                };
                return Seen::Unliftable(what, why);
            }
        }
        return Seen::Nothing;
    }
    if let Some(n) = name {
        if let Ok(canon) = canonicalize(n.as_bytes()) {
            return Seen::Name(canon);
        }
        // An IP literal in a Host header: the address is what was used.
        if let Ok(ip) = n.trim_start_matches('[').trim_end_matches(']').parse() {
            return Seen::Addr(ip);
        }
        return Seen::Nothing;
    }
    if e.protocol == "dns" {
        return Seen::Nothing;
    }
    match e.dst_addr.as_deref().and_then(|a| a.parse::<IpAddr>().ok()) {
        Some(ip) => Seen::Addr(ip),
        None => Seen::Nothing,
    }
}

/// Builds the suggestion from the current policy (redacted is enough: its transforms are kept
/// as they are) and the events, in any order.
pub fn suggest(
    sandbox_id: &str,
    current: &NetworkPolicySpec,
    events: &[EgressEventRecord],
) -> Suggestion {
    // Names the kept transforms already allow need no allow_domains entry.
    let transforms_only = NetworkPolicySpec {
        mode: Mode::Custom,
        transforms: current.transforms.clone(),
        ..NetworkPolicySpec::default()
    }
    .validate()
    .map(|p| p.compile())
    .ok();
    let kept_cidrs: Vec<IpNet> = current
        .allow_cidrs
        .iter()
        .flatten()
        .filter_map(|c| {
            c.parse::<IpNet>()
                .ok()
                .or_else(|| c.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect();

    let mut names: BTreeMap<String, Evidence> = BTreeMap::new();
    let mut addrs: BTreeMap<IpAddr, Evidence> = BTreeMap::new();
    let mut kept: BTreeMap<usize, Evidence> = BTreeMap::new();
    let mut not: BTreeMap<(String, String), Evidence> = BTreeMap::new();
    for EgressEventRecord { event: e, .. } in events {
        match classify_event(e) {
            Seen::Name(n) => {
                let covered = transforms_only
                    .as_ref()
                    .is_some_and(|c| matches!(c.decide_name(&n), NameVerdict::Intercept { .. }));
                if !covered {
                    names.entry(n.as_str().to_owned()).or_default().add(e);
                }
            }
            Seen::Addr(ip) => {
                if let Some(i) = kept_cidrs.iter().position(|net| net.contains(&ip)) {
                    kept.entry(i).or_default().add(e);
                } else if is_public(ip) {
                    addrs.entry(ip).or_default().add(e);
                } else {
                    let why = format!(
                        "{} address; internal addresses are never suggested",
                        classify(ip)
                    );
                    not.entry((ip.to_string(), why)).or_default().add(e);
                }
            }
            Seen::Unliftable(what, why) => {
                not.entry((what, why)).or_default().add(e);
            }
            Seen::Nothing => {}
        }
    }

    let domains = group(names);
    let mut cidrs: Vec<CidrEntry> = kept_cidrs
        .iter()
        .enumerate()
        .map(|(i, net)| CidrEntry {
            cidr: net.to_string(),
            source: "kept".into(),
            evidence: kept.remove(&i).unwrap_or_default(),
        })
        .collect();
    cidrs.extend(addrs.into_iter().map(|(ip, evidence)| CidrEntry {
        cidr: IpNet::from(ip).to_string(),
        source: "seen".into(),
        evidence,
    }));

    let suggested: BTreeSet<&str> = domains.iter().map(|d| d.domain.as_str()).collect();
    let unused = current
        .allow_domains
        .iter()
        .flatten()
        .filter(|d| !suggested.contains(d.as_str()))
        .cloned()
        .collect();
    let spec = NetworkPolicySpec {
        mode: Mode::Custom,
        allow_domains: (!domains.is_empty())
            .then(|| domains.iter().map(|d| d.domain.clone()).collect()),
        allow_cidrs: (!cidrs.is_empty()).then(|| cidrs.iter().map(|c| c.cidr.clone()).collect()),
        transforms: current.transforms.clone(),
        budgets: current.budgets.clone(),
        audit: false,
        on_unknown: current.on_unknown,
        deny_domains: current.deny_domains.clone(),
    };
    let problems = match spec.validate() {
        Ok(_) => Vec::new(),
        Err(errs) => errs
            .0
            .into_iter()
            .map(|f| crate::error::FieldProblem {
                field: f.field,
                error: f.message,
            })
            .collect(),
    };
    Suggestion {
        sandbox_id: sandbox_id.to_owned(),
        network_policy: spec,
        domains,
        cidrs,
        unused,
        not_suggested: not
            .into_iter()
            .map(|((what, reason), evidence)| NotSuggested {
                what,
                reason,
                evidence,
            })
            .collect(),
        events: events.len() as u64,
        problems,
    }
}

/// Exact names, with [`WILDCARD_MIN`] or more names below one registrable domain collapsed into
/// its wildcard. The registrable domain itself stays an exact entry (a wildcard does not match
/// its base).
fn group(names: BTreeMap<String, Evidence>) -> Vec<DomainEntry> {
    let mut below: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in names.keys() {
        if let Some(reg) = registrable(name)
            && reg != name.as_str()
        {
            below.entry(reg.to_owned()).or_default().push(name.clone());
        }
    }
    let mut out = Vec::new();
    let mut covered = BTreeSet::new();
    for (reg, members) in below {
        let pattern = format!("*.{reg}");
        if members.len() < WILDCARD_MIN || palisade_policy::DomainPattern::parse(&pattern).is_err()
        {
            continue;
        }
        let mut evidence = Evidence::default();
        for m in &members {
            if let Some(ev) = names.get(m) {
                evidence.merge(ev);
            }
            covered.insert(m.clone());
        }
        out.push(DomainEntry {
            domain: pattern,
            names: members,
            evidence,
        });
    }
    for (name, evidence) in names {
        if !covered.contains(&name) {
            out.push(DomainEntry {
                domain: name.clone(),
                names: vec![name],
                evidence,
            });
        }
    }
    // By base name, the exact name before its wildcard.
    out.sort_by(|a, b| {
        let key = |d: &DomainEntry| {
            (
                d.domain.trim_start_matches("*.").to_owned(),
                d.domain.starts_with("*."),
            )
        };
        key(a).cmp(&key(b))
    });
    out
}

/// The registrable domain of a canonical (A-label) name by the public suffix list: one label
/// below its public suffix (ICANN or private section; unknown TLDs take the list's default
/// `*` rule). `None` when the name is itself a public suffix.
pub fn registrable(name: &str) -> Option<&str> {
    let d = psl::domain(name.as_bytes())?;
    std::str::from_utf8(d.as_bytes()).ok()
}

/// The most events read for one suggestion: the store keeps at most this many per sandbox
/// (its default retention), read newest first in pages of 1000.
pub const MAX_EVENTS: usize = 10_000;

/// Reads the sandbox's current policy and kept events through the plane's public calls and
/// builds the suggestion.
pub async fn gather(
    cp: &crate::plane::Plane,
    org: &crate::control::OrgId,
    sandbox_id: &str,
) -> Result<Suggestion, crate::plane::PlaneError> {
    let current = cp.get_network_policy(org, sandbox_id).await?;
    let mut events = Vec::new();
    let mut before = None;
    while events.len() < MAX_EVENTS {
        let page = cp
            .list_events(
                org,
                sandbox_id,
                crate::control::EventFilter {
                    before_id: before,
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .await?;
        let full = page.len() == 1000;
        before = page.iter().map(|e| e.id).min();
        events.extend(page);
        if !full || before.is_none() {
            break;
        }
    }
    Ok(suggest(
        &current.sandbox_id,
        &current.network_policy,
        &events,
    ))
}

/// Applies a suggestion to the full current policy: its lists replace the current ones, and
/// the rest (transforms with their secrets, budgets) is kept. Audit is off unless `keep_audit`.
pub fn apply_to(
    full: &Policy,
    suggestion: &Suggestion,
    keep_audit: bool,
) -> Result<Policy, palisade_policy::ValidationErrors> {
    let mut spec = full.to_spec();
    spec.mode = Mode::Custom;
    spec.allow_domains = suggestion.network_policy.allow_domains.clone();
    spec.allow_cidrs = suggestion.network_policy.allow_cidrs.clone();
    spec.audit = keep_audit;
    spec.validate()
}
