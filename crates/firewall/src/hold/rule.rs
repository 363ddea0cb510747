//! A person's decision, and the approval rule that ended a held request: typed here, spelled
//! as text only where an event or a log line records it.

use std::fmt;

/// A person's decision on a pending approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Release what is held, and what follows for the name within `grant_ttl`.
    AllowOnce,
    /// Release, and the control plane adds the name to the sandbox's `allow_domains`.
    AllowAlways,
    /// Refuse what is held, and what follows within `grant_ttl`.
    Deny,
    /// Refuse, and the control plane adds the name to the sandbox's `deny_domains`.
    DenyAlways,
}

impl Decision {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::AllowOnce => "allow-once",
            Decision::AllowAlways => "allow-always",
            Decision::Deny => "deny",
            Decision::DenyAlways => "deny-always",
        }
    }

    pub fn allows(self) -> bool {
        matches!(self, Decision::AllowOnce | Decision::AllowAlways)
    }
}

impl std::str::FromStr for Decision {
    type Err = ();
    fn from_str(s: &str) -> Result<Decision, ()> {
        match s {
            "allow-once" => Ok(Decision::AllowOnce),
            "allow-always" => Ok(Decision::AllowAlways),
            "deny" => Ok(Decision::Deny),
            "deny-always" => Ok(Decision::DenyAlways),
            _ => Err(()),
        }
    }
}

/// The approval rule that ended a held request, as its [`super::Outcome`] carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldRule {
    /// `approval`: the queue could not keep the request (its sandbox went, its organisation is
    /// unknown, the queue itself went away).
    Queue,
    /// `approval:<decision>`: a person decided.
    Decided(Decision),
    /// `approval:timeout`: nobody decided in time.
    Timeout,
    /// `hold-limit`: a bound of the queue refused to hold it at all.
    Limit,
}

impl HoldRule {
    /// Every rule, so that an event's text is read back through `Display` itself.
    pub const ALL: [HoldRule; 7] = [
        HoldRule::Queue,
        HoldRule::Decided(Decision::AllowOnce),
        HoldRule::Decided(Decision::AllowAlways),
        HoldRule::Decided(Decision::Deny),
        HoldRule::Decided(Decision::DenyAlways),
        HoldRule::Timeout,
        HoldRule::Limit,
    ];
}

impl fmt::Display for HoldRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldRule::Queue => f.write_str("approval"),
            HoldRule::Decided(d) => write!(f, "approval:{}", d.as_str()),
            HoldRule::Timeout => f.write_str("approval:timeout"),
            HoldRule::Limit => f.write_str("hold-limit"),
        }
    }
}
