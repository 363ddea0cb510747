//! Byte budgets (beyond Leap0): how many bytes a sandbox may send and receive per window, in
//! all and per domain. The policy only carries and checks the numbers; the data plane counts.
//!
//! ```json
//! "budgets": {
//!   "sandbox": {"sent_bytes": 10000000, "received_bytes": 100000000, "window_secs": 3600},
//!   "domains": [{"domain": "api.example.com", "sent_bytes": 1000000, "window_secs": 60}]
//! }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::error::Errors;
use crate::name::{CanonicalName, DomainPattern};
use crate::validate::quote;
use crate::wire::ROOT;

/// The longest window: 30 days.
pub const MAX_WINDOW_SECS: u64 = 30 * 24 * 3600;
/// The most domain budgets in one policy.
pub const MAX_DOMAIN_BUDGETS: usize = 50;

/// `budgets` as sent.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetsSpec {
    /// Everything the sandbox sends and receives, whatever the destination.
    pub sandbox: Option<ByteBudgetSpec>,
    /// Traffic to names matching each domain pattern.
    pub domains: Option<Vec<DomainBudgetSpec>>,
}

/// One budget as sent; at least one limit and the window are required.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ByteBudgetSpec {
    /// Bytes the sandbox may send per window.
    pub sent_bytes: Option<u64>,
    /// Bytes the sandbox may receive per window.
    pub received_bytes: Option<u64>,
    /// The window's length in seconds.
    pub window_secs: Option<u64>,
}

/// A domain's budget as sent.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainBudgetSpec {
    /// Exact name or wildcard (`*.example.com`).
    pub domain: String,
    /// Bytes the sandbox may send to it per window.
    pub sent_bytes: Option<u64>,
    /// Bytes the sandbox may receive from it per window.
    pub received_bytes: Option<u64>,
    /// The window's length in seconds.
    pub window_secs: Option<u64>,
}

/// A checked budget: at least one limit, a window of 1 s to 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteBudget {
    pub(crate) sent: Option<u64>,
    pub(crate) received: Option<u64>,
    pub(crate) window_secs: u64,
}

impl ByteBudget {
    /// Bytes the sandbox may send per window (`None`: no limit).
    pub fn sent(&self) -> Option<u64> {
        self.sent
    }

    /// Bytes the sandbox may receive per window (`None`: no limit).
    pub fn received(&self) -> Option<u64> {
        self.received
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }

    fn to_spec(self) -> ByteBudgetSpec {
        ByteBudgetSpec {
            sent_bytes: self.sent,
            received_bytes: self.received,
            window_secs: Some(self.window_secs),
        }
    }
}

/// The checked budgets of a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budgets {
    pub(crate) sandbox: Option<ByteBudget>,
    pub(crate) domains: Vec<(DomainPattern, ByteBudget)>,
}

impl Budgets {
    /// The sandbox-wide budget.
    pub fn sandbox(&self) -> Option<&ByteBudget> {
        self.sandbox.as_ref()
    }

    /// Domain budgets in the order given.
    pub fn domains(&self) -> &[(DomainPattern, ByteBudget)] {
        &self.domains
    }

    /// `true` when nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.sandbox.is_none() && self.domains.is_empty()
    }

    /// The index in [`domains`](Self::domains) of the most specific budget covering `name`
    /// (exact before wildcard, longer wildcard base before shorter), as the matcher picks rules.
    pub fn domain_for(&self, name: &CanonicalName) -> Option<usize> {
        self.domains
            .iter()
            .enumerate()
            .filter(|(_, (p, _))| p.matches(name))
            .max_by_key(|(_, (p, _))| (!p.is_wildcard(), p.base().len()))
            .map(|(i, _)| i)
    }

    pub(crate) fn to_spec(&self) -> Option<BudgetsSpec> {
        if self.is_empty() {
            return None;
        }
        let domains = (!self.domains.is_empty()).then(|| {
            self.domains
                .iter()
                .map(|(p, b)| {
                    let s = b.to_spec();
                    DomainBudgetSpec {
                        domain: p.to_string(),
                        sent_bytes: s.sent_bytes,
                        received_bytes: s.received_bytes,
                        window_secs: s.window_secs,
                    }
                })
                .collect()
        });
        Some(BudgetsSpec {
            sandbox: self.sandbox.map(ByteBudget::to_spec),
            domains,
        })
    }
}

/// Checks `budgets`; every problem is reported with its field path.
pub(crate) fn parse(spec: Option<&BudgetsSpec>, errs: &mut Errors) -> Budgets {
    let Some(spec) = spec else {
        return Budgets::default();
    };
    let at = format!("{ROOT}.budgets");
    let sandbox = spec.sandbox.as_ref().and_then(|b| {
        parse_one(
            &format!("{at}.sandbox"),
            b.sent_bytes,
            b.received_bytes,
            b.window_secs,
            errs,
        )
    });
    let raw = spec.domains.as_deref().unwrap_or_default();
    if raw.len() > MAX_DOMAIN_BUDGETS {
        errs.push(
            format!("{at}.domains"),
            format!(
                "has {} entries; the limit is {MAX_DOMAIN_BUDGETS}",
                raw.len()
            ),
        );
    }
    let mut domains: Vec<(DomainPattern, ByteBudget)> = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let field = format!("{at}.domains[{i}]");
        let pattern = match DomainPattern::parse(&d.domain) {
            Ok(p) => match domains.iter().position(|(q, _)| q == &p) {
                Some(j) => {
                    errs.push(
                        format!("{field}.domain"),
                        format!(
                            "{} already has a budget (domains[{j}]); combine them into one",
                            quote(p.as_str())
                        ),
                    );
                    None
                }
                None => Some(p),
            },
            Err(e) => {
                errs.push(
                    format!("{field}.domain"),
                    format!("{} {e}", quote(&d.domain)),
                );
                None
            }
        };
        let budget = parse_one(&field, d.sent_bytes, d.received_bytes, d.window_secs, errs);
        if let (Some(p), Some(b)) = (pattern, budget) {
            domains.push((p, b));
        }
    }
    Budgets { sandbox, domains }
}

fn parse_one(
    at: &str,
    sent: Option<u64>,
    received: Option<u64>,
    window: Option<u64>,
    errs: &mut Errors,
) -> Option<ByteBudget> {
    let mut ok = true;
    for (name, v) in [("sent_bytes", sent), ("received_bytes", received)] {
        if v == Some(0) {
            errs.push(
                format!("{at}.{name}"),
                "must be at least 1 byte; leave it out for no limit",
            );
            ok = false;
        }
    }
    if sent.is_none() && received.is_none() {
        errs.push(
            at.to_owned(),
            "sets no limit; give sent_bytes, received_bytes or both",
        );
        ok = false;
    }
    match window {
        None => {
            errs.push(
                format!("{at}.window_secs"),
                "is required: the number of seconds after which the counts start again",
            );
            ok = false;
        }
        Some(w) if w == 0 || w > MAX_WINDOW_SECS => {
            errs.push(
                format!("{at}.window_secs"),
                format!("must be 1 to {MAX_WINDOW_SECS} seconds (30 days)"),
            );
            ok = false;
        }
        Some(_) => {}
    }
    match (ok, window) {
        (true, Some(window_secs)) => Some(ByteBudget {
            sent,
            received,
            window_secs,
        }),
        _ => None,
    }
}
