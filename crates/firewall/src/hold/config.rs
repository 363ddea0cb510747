//! `[firewall.approvals]`: how long a request may be held and how many may wait.

use std::time::Duration;

use serde::Deserialize;
use smart_default::SmartDefault;

/// Bounds of the approval queue. Every field has a default; durations are written `"30s"`.
#[derive(Debug, Clone, PartialEq, Eq, SmartDefault, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// How long a held DNS query or connection waits for a decision before it is denied.
    #[default(Duration::from_secs(30))]
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// After allow-once (or deny), new queries and connections for the same name from the same
    /// sandbox are decided the same way for this long without asking again: the DNS answer a
    /// person released is followed at once by the connection to it.
    #[default(Duration::from_secs(10))]
    #[serde(with = "humantime_serde")]
    pub grant_ttl: Duration,
    /// Pending approvals (distinct names) of one sandbox at once; more are denied at once.
    #[default(16)]
    pub max_pending_per_sandbox: usize,
    /// Pending approvals of one organisation at once; more are denied at once.
    #[default(64)]
    pub max_pending_per_org: usize,
    /// Held DNS queries and connections of one sandbox at once (several may wait on one
    /// approval); more are denied at once.
    #[default(64)]
    pub max_held_per_sandbox: usize,
}

impl ApprovalsConfig {
    /// Checks the bounds; the error names the field as the configuration file spells it.
    pub fn check(&self) -> Result<(), String> {
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(600) {
            return Err("approvals.timeout must be between 1s and 600s".into());
        }
        if self.grant_ttl > Duration::from_secs(300) {
            return Err("approvals.grant_ttl must be at most 300s".into());
        }
        for (field, value, max) in [
            (
                "max_pending_per_sandbox",
                self.max_pending_per_sandbox,
                1_000,
            ),
            ("max_pending_per_org", self.max_pending_per_org, 10_000),
            ("max_held_per_sandbox", self.max_held_per_sandbox, 10_000),
        ] {
            if value == 0 || value > max {
                return Err(format!("approvals.{field} must be between 1 and {max}"));
            }
        }
        Ok(())
    }
}
