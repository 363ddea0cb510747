//! The approval queue's part of a policy (beyond Leap0): what happens to a name the policy does
//! not list, and the names a person already refused for good.
//!
//! ```json
//! {"mode": "custom", "allow_domains": ["pypi.org"], "on_unknown": "hold",
//!  "deny_domains": ["telemetry.example.com"]}
//! ```
//!
//! `on_unknown: "hold"` (custom mode only) makes the data plane hold a DNS query or a named
//! connection for an unlisted name until someone decides; `deny_domains` are exact names refused
//! without asking (what "deny always" writes). The policy only carries and checks these; the
//! holding is the firewall's.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::name::{CanonicalName, canonicalize};
use crate::validate::{parse_word, quote};
use crate::wire::{Mode, ROOT};

/// The most entries in `deny_domains`.
pub const MAX_DENY_DOMAINS: usize = 256;

/// What happens to a name no rule of a `custom` policy matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OnUnknown {
    /// Refused at once (NXDOMAIN, reset, 403): Leap0's behaviour and the default.
    #[default]
    Deny,
    /// Held until a person allows or denies it through the approval queue, or it times out.
    Hold,
}

impl OnUnknown {
    /// The wire spelling: `deny` or `hold`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnUnknown::Deny => "deny",
            OnUnknown::Hold => "hold",
        }
    }
}

impl fmt::Display for OnUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for OnUnknown {
    type Error = String;
    fn try_from(s: String) -> Result<OnUnknown, String> {
        let all = [OnUnknown::Deny, OnUnknown::Hold];
        parse_word("on_unknown", &s, &all, OnUnknown::as_str)
    }
}

impl From<OnUnknown> for String {
    fn from(o: OnUnknown) -> String {
        o.as_str().to_owned()
    }
}

/// The checked hold settings of a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldPolicy {
    pub(crate) on_unknown: OnUnknown,
    /// Canonical exact names, first occurrence order, no duplicates.
    pub(crate) deny_domains: Vec<CanonicalName>,
}

impl HoldPolicy {
    /// What happens to unlisted names.
    pub fn on_unknown(&self) -> OnUnknown {
        self.on_unknown
    }

    /// Names refused without asking.
    pub fn deny_domains(&self) -> &[CanonicalName] {
        &self.deny_domains
    }

    /// The wire fields: `on_unknown` only when it is `hold` (so a Leap0 policy reads back
    /// unchanged), `deny_domains` only when not empty.
    pub(crate) fn to_spec(&self) -> (Option<OnUnknown>, Option<Vec<String>>) {
        (
            (self.on_unknown == OnUnknown::Hold).then_some(OnUnknown::Hold),
            (!self.deny_domains.is_empty())
                .then(|| self.deny_domains.iter().map(ToString::to_string).collect()),
        )
    }
}

/// Checks `on_unknown` and `deny_domains`; both belong to `custom` mode only.
pub(crate) fn parse(
    mode: Mode,
    on_unknown: Option<OnUnknown>,
    deny_domains: Option<&[String]>,
    errs: &mut Errors,
) -> HoldPolicy {
    let on_unknown = on_unknown.unwrap_or_default();
    if on_unknown == OnUnknown::Hold && mode != Mode::Custom {
        errs.push(
            format!("{ROOT}.on_unknown"),
            format!(
                "\"hold\" needs mode \"custom\" (in {mode} mode no name is unknown); use mode \"custom\" with the names to allow"
            ),
        );
    }
    let raw = deny_domains.unwrap_or_default();
    if !raw.is_empty() && mode != Mode::Custom {
        errs.push(
            format!("{ROOT}.deny_domains"),
            format!("must be empty in {mode} mode; it belongs to mode \"custom\""),
        );
    }
    if raw.len() > MAX_DENY_DOMAINS {
        errs.push(
            format!("{ROOT}.deny_domains"),
            format!("has {} entries; the limit is {MAX_DENY_DOMAINS}", raw.len()),
        );
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let at = format!("{ROOT}.deny_domains[{i}]");
        if d.starts_with("*.") {
            errs.push(
                at,
                format!("{} is a wildcard; deny_domains takes exact names", quote(d)),
            );
            continue;
        }
        match canonicalize(d.as_bytes()) {
            Ok(name) => {
                if seen.insert(name.clone()) {
                    out.push(name);
                }
            }
            Err(e) => errs.push(at, format!("{}: {e}", quote(d))),
        }
    }
    HoldPolicy {
        on_unknown,
        deny_domains: out,
    }
}
