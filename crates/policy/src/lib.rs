//! Network policy: wire types, validation, canonical names, address classes and the compiled
//! matcher. Pure code: no I/O, no tokio, no libc.
//!
//! The path of a policy: JSON → [`NetworkPolicySpec`] (serde, unknown fields refused) →
//! [`NetworkPolicySpec::validate`] → [`Policy`] (canonical, checked) → [`Policy::compile`] →
//! [`CompiledPolicy`], which the data plane asks about every name ([`CompiledPolicy::decide_name`]
//! with a name from [`canonicalize`]) and every address ([`CompiledPolicy::check_addr`]).

#![forbid(unsafe_code)]

mod addr;
mod budget;
mod compiled;
mod error;
mod headers;
mod hold;
mod http_rules;
mod name;
mod placeholder;
mod policy;
mod secret;
mod validate;
mod wire;

#[doc(hidden)]
#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use addr::{AddrVerdict, AddressClass, classify, embedded_v4};
pub use budget::{
    Budgets, BudgetsSpec, ByteBudget, ByteBudgetSpec, DomainBudgetSpec, MAX_DOMAIN_BUDGETS,
    MAX_WINDOW_SECS,
};
pub use compiled::{CompiledPolicy, DenyReason, NameVerdict, Rule, Scrub};
pub use error::{FieldError, ValidationErrors};
pub use hold::{HoldPolicy, MAX_DENY_DOMAINS, OnUnknown};
pub use http_rules::{HttpAction, HttpDecision, HttpRule, HttpRuleSpec};
pub use name::{
    CanonicalName, DomainPattern, MAX_LABEL_LEN, MAX_NAME_LEN, MAX_RAW_LEN, NameError,
    PatternError, canonicalize,
};
pub use placeholder::{PLACEHOLDER_PREFIX, Placeholder, PlaceholderSpec};
pub use policy::{Policy, Transform};
pub use secret::{REDACTED, SecretValue};
pub use validate::Limits;
pub use wire::{Mode, NetworkPolicySpec, TransformSpec};
