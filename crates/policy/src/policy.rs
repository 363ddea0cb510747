//! The validated runtime policy.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::budget::Budgets;
use crate::compiled::CompiledPolicy;
use crate::error::ValidationErrors;
use crate::hold::HoldPolicy;
use crate::http_rules::{HttpDecision, HttpRule};
use crate::name::{CanonicalName, DomainPattern};
use crate::placeholder::Placeholder;
use crate::secret::{REDACTED, SecretValue};
use crate::wire::{Mode, NetworkPolicySpec, TransformSpec};

/// A checked, canonical network policy: names canonicalised, CIDRs masked, duplicates of
/// `allow_domains`/`allow_cidrs` removed, header names lowercased. `Debug` never shows injected
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub(crate) mode: Mode,
    pub(crate) allow_domains: Vec<DomainPattern>,
    pub(crate) allow_cidrs: Vec<IpNet>,
    pub(crate) transforms: Vec<Transform>,
    pub(crate) budgets: Budgets,
    /// Audit mode: policy denials are recorded as `would-deny` and let through.
    pub(crate) audit: bool,
    pub(crate) hold: HoldPolicy,
}

/// Header rewriting for one domain pattern; connections to it are intercepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    pub(crate) pattern: DomainPattern,
    pub(crate) inject: Vec<(String, SecretValue)>,
    pub(crate) strip: Vec<String>,
    pub(crate) http_rules: Vec<HttpRule>,
    pub(crate) placeholders: Vec<Placeholder>,
}

impl Transform {
    /// The domain pattern this transform applies to.
    pub fn pattern(&self) -> &DomainPattern {
        &self.pattern
    }

    /// Headers to set, lowercase names sorted, replacing whatever the client sent.
    pub fn inject(&self) -> &[(String, SecretValue)] {
        &self.inject
    }

    /// Lowercase names of headers to remove (applied before `inject`).
    pub fn strip(&self) -> &[String] {
        &self.strip
    }

    /// Placeholders replaced by their secret in the headers they name (after strip, before
    /// inject).
    pub fn placeholders(&self) -> &[Placeholder] {
        &self.placeholders
    }

    /// The L7 rules, in order (empty: every request is allowed).
    pub fn http_rules(&self) -> &[HttpRule] {
        &self.http_rules
    }

    /// What the L7 rules say about a request (`path`: the target's path, no query).
    pub fn decide_request(&self, method: &str, path: &str) -> HttpDecision {
        crate::http_rules::decide(&self.http_rules, method, path)
    }

    fn to_spec(&self, redact: bool) -> TransformSpec {
        let inject_headers = (!self.inject.is_empty()).then(|| {
            self.inject
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if redact {
                            REDACTED.to_owned()
                        } else {
                            v.expose().to_owned()
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>()
        });
        TransformSpec {
            domain: self.pattern.to_string(),
            inject_headers,
            strip_headers: (!self.strip.is_empty()).then(|| self.strip.clone()),
            placeholders: (!self.placeholders.is_empty()).then(|| {
                self.placeholders
                    .iter()
                    .map(|p| p.to_spec(redact))
                    .collect()
            }),
            http_rules: (!self.http_rules.is_empty())
                .then(|| self.http_rules.iter().map(HttpRule::to_spec).collect()),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::allow_all()
    }
}

impl Policy {
    /// The policy of a sandbox created without one.
    pub fn allow_all() -> Policy {
        Policy {
            mode: Mode::AllowAll,
            allow_domains: Vec::new(),
            allow_cidrs: Vec::new(),
            transforms: Vec::new(),
            budgets: Budgets::default(),
            audit: false,
            hold: HoldPolicy::default(),
        }
    }

    /// Nothing leaves the sandbox.
    pub fn deny_all() -> Policy {
        Policy {
            mode: Mode::DenyAll,
            ..Policy::allow_all()
        }
    }

    /// Parses and validates the JSON of a `network_policy` object.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, ValidationErrors> {
        NetworkPolicySpec::from_json(bytes)?.validate()
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Canonical `allow_domains`, first occurrence order, no duplicates.
    pub fn allow_domains(&self) -> &[DomainPattern] {
        &self.allow_domains
    }

    /// Masked `allow_cidrs`, first occurrence order, no duplicates.
    pub fn allow_cidrs(&self) -> &[IpNet] {
        &self.allow_cidrs
    }

    /// Transforms in the order given; [`NameVerdict::Intercept`](crate::NameVerdict) indexes
    /// into this list.
    pub fn transforms(&self) -> &[Transform] {
        &self.transforms
    }

    /// The byte budgets (empty: no limit).
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// Whether the policy is in audit mode (`custom` only): denials by the policy's lists and
    /// L7 rules are recorded as `would-deny` and the traffic proceeds.
    pub fn audit(&self) -> bool {
        self.audit
    }

    /// The same policy with audit mode set or cleared. Audit applies to `custom` only; on any
    /// other mode this leaves the policy as it is.
    pub fn with_audit(mut self, audit: bool) -> Policy {
        self.audit = audit && self.mode == Mode::Custom;
        self
    }

    /// What happens to unlisted names, and the names refused without asking.
    pub fn hold(&self) -> &HoldPolicy {
        &self.hold
    }

    /// This policy with `name` added to `allow_domains` ("allow always"): validated again, so
    /// the domain limit still holds. Unchanged when the name is already listed.
    pub fn with_allowed_name(&self, name: &CanonicalName) -> Result<Policy, ValidationErrors> {
        self.with_name_in(name, |spec| &mut spec.allow_domains)
    }

    /// This policy with `name` added to `deny_domains` ("deny always"), validated again.
    pub fn with_denied_name(&self, name: &CanonicalName) -> Result<Policy, ValidationErrors> {
        self.with_name_in(name, |spec| &mut spec.deny_domains)
    }

    /// This policy with `name` added, unless already there, to the list `list` picks.
    fn with_name_in(
        &self,
        name: &CanonicalName,
        list: impl FnOnce(&mut NetworkPolicySpec) -> &mut Option<Vec<String>>,
    ) -> Result<Policy, ValidationErrors> {
        let mut spec = self.to_spec();
        let names = list(&mut spec).get_or_insert_with(Vec::new);
        if !names.iter().any(|d| d == name.as_str()) {
            names.push(name.to_string());
        }
        spec.validate()
    }

    /// The normalised policy as wire JSON, secrets included (for sealing in the store).
    /// Validating it gives back an equal `Policy`.
    pub fn to_spec(&self) -> NetworkPolicySpec {
        self.spec(false)
    }

    /// Like [`to_spec`](Self::to_spec) with every injected value replaced by `[REDACTED]` (for
    /// API responses and logs).
    pub fn redacted_spec(&self) -> NetworkPolicySpec {
        self.spec(true)
    }

    fn spec(&self, redact: bool) -> NetworkPolicySpec {
        fn some<T>(v: Vec<T>) -> Option<Vec<T>> {
            (!v.is_empty()).then_some(v)
        }
        let (on_unknown, deny_domains) = self.hold.to_spec();
        NetworkPolicySpec {
            on_unknown,
            deny_domains,
            mode: self.mode,
            allow_domains: some(self.allow_domains.iter().map(ToString::to_string).collect()),
            allow_cidrs: some(self.allow_cidrs.iter().map(ToString::to_string).collect()),
            transforms: some(self.transforms.iter().map(|t| t.to_spec(redact)).collect()),
            budgets: self.budgets.to_spec(),
            audit: self.audit,
        }
    }

    /// Builds the matcher the data plane consults for every connection.
    pub fn compile(&self) -> CompiledPolicy {
        CompiledPolicy::new(self)
    }
}

impl TryFrom<&NetworkPolicySpec> for Policy {
    type Error = ValidationErrors;
    fn try_from(spec: &NetworkPolicySpec) -> Result<Policy, ValidationErrors> {
        spec.validate()
    }
}

impl TryFrom<NetworkPolicySpec> for Policy {
    type Error = ValidationErrors;
    fn try_from(spec: NetworkPolicySpec) -> Result<Policy, ValidationErrors> {
        spec.validate()
    }
}
