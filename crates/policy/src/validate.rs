//! From wire spec to [`Policy`]: every rule of the API, every failure reported at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Errors, ValidationErrors};
use crate::headers;
use crate::http_rules::{HttpRule, HttpRuleSpec};
use crate::name::DomainPattern;
use crate::placeholder::{self, Placeholder, PlaceholderSpec};
use crate::policy::{Policy, Transform};
use crate::secret::SecretValue;
use crate::wire::{Mode, NetworkPolicySpec, ROOT, TransformSpec};

/// Size limits applied by [`NetworkPolicySpec::validate_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in `allow_domains`.
    pub max_domains: usize,
    /// Entries in `allow_cidrs`.
    pub max_cidrs: usize,
    /// Entries in `transforms`.
    pub max_transforms: usize,
    /// `inject_headers` entries per transform.
    pub max_inject_headers: usize,
    /// `strip_headers` entries per transform.
    pub max_strip_headers: usize,
    /// Bytes in a header name.
    pub max_header_name_len: usize,
    /// Bytes in an injected value.
    pub max_header_value_len: usize,
    /// `http_rules` entries per transform.
    pub max_http_rules: usize,
}

impl Limits {
    /// Leap0's limits (50 domains, 10 CIDRs, 20 transforms) and header caps.
    pub const LEAP0: Limits = Limits {
        max_domains: 50,
        max_cidrs: 10,
        max_transforms: 20,
        max_inject_headers: 32,
        max_strip_headers: 32,
        max_header_name_len: 256,
        max_header_value_len: 8192,
        max_http_rules: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::LEAP0
    }
}

impl NetworkPolicySpec {
    /// Checks the policy under [`Limits::LEAP0`]. Field paths start with `network_policy`.
    pub fn validate(&self) -> Result<Policy, ValidationErrors> {
        self.validate_with(&Limits::LEAP0)
    }

    /// Checks the policy under the given limits.
    pub fn validate_with(&self, limits: &Limits) -> Result<Policy, ValidationErrors> {
        let mut errs = Errors::new();
        let domains = self.allow_domains.as_deref().unwrap_or_default();
        let cidrs = self.allow_cidrs.as_deref().unwrap_or_default();
        let transforms = self.transforms.as_deref().unwrap_or_default();

        check_mode(self.mode, domains, cidrs, transforms, &mut errs);
        check_audit(self.mode, self.audit, &mut errs);
        if self.audit && self.on_unknown == Some(crate::hold::OnUnknown::Hold) {
            // Audit lets every unlisted name through; holding it for a person contradicts that.
            errs.push(
                format!("{ROOT}.on_unknown"),
                "\"hold\" cannot be combined with audit (audit lets every unlisted name through); turn audit off to hold unlisted names for approval",
            );
        }
        check_count(
            "allow_domains",
            domains.len(),
            limits.max_domains,
            &mut errs,
        );
        check_count("allow_cidrs", cidrs.len(), limits.max_cidrs, &mut errs);
        check_count(
            "transforms",
            transforms.len(),
            limits.max_transforms,
            &mut errs,
        );

        let allow_domains = parse_domains(domains, &mut errs);
        let allow_cidrs = parse_cidrs(cidrs, &mut errs);
        let transforms = parse_transforms(transforms, limits, &mut errs);
        let budgets = crate::budget::parse(self.budgets.as_ref(), &mut errs);
        let hold = crate::hold::parse(
            self.mode,
            self.on_unknown,
            self.deny_domains.as_deref(),
            &mut errs,
        );

        if errs.is_empty() {
            Ok(Policy {
                mode: self.mode,
                allow_domains,
                allow_cidrs,
                transforms,
                budgets,
                audit: self.audit,
                hold,
            })
        } else {
            Err(errs.finish())
        }
    }
}

fn check_mode(
    mode: Mode,
    domains: &[String],
    cidrs: &[String],
    transforms: &[TransformSpec],
    errs: &mut Errors,
) {
    match mode {
        Mode::DenyAll => {
            if !domains.is_empty() {
                errs.push(
                    format!("{ROOT}.allow_domains"),
                    "must be empty in deny-all mode; use mode \"custom\" to allow some domains",
                );
            }
            if !cidrs.is_empty() {
                errs.push(
                    format!("{ROOT}.allow_cidrs"),
                    "must be empty in deny-all mode; use mode \"custom\" to allow some networks",
                );
            }
            if !transforms.is_empty() {
                errs.push(
                    format!("{ROOT}.transforms"),
                    "must be empty in deny-all mode; use mode \"custom\" with transforms instead",
                );
            }
        }
        Mode::AllowAll => {
            if !domains.is_empty() {
                errs.push(
                    format!("{ROOT}.allow_domains"),
                    "must be empty in allow-all mode, which already allows every domain; use mode \"custom\" to allow only these",
                );
            }
        }
        Mode::Custom => {}
    }
}

/// Audit mode observes what a `custom` policy would deny; other modes have nothing to observe.
fn check_audit(mode: Mode, audit: bool, errs: &mut Errors) {
    if !audit {
        return;
    }
    match mode {
        Mode::Custom => {}
        Mode::AllowAll => errs.push(
            format!("{ROOT}.audit"),
            "makes no sense in allow-all mode, which denies nothing; use mode \"custom\" with the domains you expect, and audit reports the rest",
        ),
        Mode::DenyAll => errs.push(
            format!("{ROOT}.audit"),
            "is not accepted in deny-all mode; to audit everything a sandbox does, use mode \"custom\" with no allow_domains or allow_cidrs",
        ),
    }
}

fn check_count(list: &str, len: usize, max: usize, errs: &mut Errors) {
    check_count_at(&format!("{ROOT}.{list}"), len, max, errs);
}

/// Quotes user text for a message, shortened so a huge input gives a short message.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

/// Reads a wire enum from its spelling (`word` of one of `all`), or says which were expected:
/// `unknown <what> "x", expected "a", "b" or "c"`.
pub(crate) fn parse_word<T: Copy>(
    what: &str,
    s: &str,
    all: &[T],
    word: fn(T) -> &'static str,
) -> Result<T, String> {
    if let Some(v) = all.iter().copied().find(|v| word(*v) == s) {
        return Ok(v);
    }
    let mut expected = String::new();
    for (i, v) in all.iter().enumerate() {
        if i > 0 {
            expected.push_str(if i + 1 == all.len() { " or " } else { ", " });
        }
        expected.push_str(&format!("{:?}", word(*v)));
    }
    Err(format!("unknown {what} {}, expected {expected}", quote(s)))
}

fn parse_domains(raw: &[String], errs: &mut Errors) -> Vec<DomainPattern> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        match DomainPattern::parse(d) {
            Ok(p) => {
                if seen.insert(p.clone()) {
                    out.push(p);
                }
            }
            Err(e) => errs.push(
                format!("{ROOT}.allow_domains[{i}]"),
                format!("{} {e}", quote(d)),
            ),
        }
    }
    out
}

fn parse_cidrs(raw: &[String], errs: &mut Errors) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for (i, c) in raw.iter().enumerate() {
        let text = c.trim();
        match parse_cidr(text) {
            Some(net) => {
                let net = net.trunc();
                if !out.contains(&net) {
                    out.push(net);
                }
            }
            None => errs.push(
                format!("{ROOT}.allow_cidrs[{i}]"),
                format!(
                    "{} is not an IP network; write an address with a prefix length, like \"10.0.0.0/24\" or \"2001:db8::/48\"",
                    quote(c)
                ),
            ),
        }
    }
    out
}

/// `addr/len` or a bare address, with std's strict address parser (no leading zeros, which some
/// tools read as octal) and a plain decimal prefix length.
fn parse_cidr(text: &str) -> Option<IpNet> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let len = match len {
        None => return Some(IpNet::from(addr)),
        Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u8>().ok()?
        }
        Some(_) => return None,
    };
    IpNet::new(addr, len).ok()
}

fn parse_transforms(raw: &[TransformSpec], limits: &Limits, errs: &mut Errors) -> Vec<Transform> {
    let mut first_index: HashMap<DomainPattern, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let at = format!("{ROOT}.transforms[{i}]");
        let pattern = match DomainPattern::parse(&t.domain) {
            Ok(p) => {
                match first_index.get(&p) {
                    Some(j) => {
                        errs.push(
                        format!("{at}.domain"),
                        format!("{} already has a transform (transforms[{j}]); combine them into one", quote(&p.to_string())),
                    );
                        None
                    }
                    None => {
                        first_index.insert(p.clone(), i);
                        Some(p)
                    }
                }
            }
            Err(e) => {
                errs.push(format!("{at}.domain"), format!("{} {e}", quote(&t.domain)));
                None
            }
        };
        let empty = BTreeMap::new();
        let mut check = TransformCheck { at, limits, errs };
        let inject = check.inject(t.inject_headers.as_ref().unwrap_or(&empty));
        let strip = check.strip(t.strip_headers.as_deref().unwrap_or_default());
        let http_rules = check.http_rules(t.http_rules.as_deref().unwrap_or_default());
        let placeholders = check.placeholders(t.placeholders.as_deref().unwrap_or_default());
        if let Some(pattern) = pattern {
            out.push(Transform {
                pattern,
                inject,
                strip,
                http_rules,
                placeholders,
            });
        }
    }
    out
}

/// One transform's fields: where they are reported (`network_policy.transforms[i]`), the limits
/// they are checked against and the errors found so far.
struct TransformCheck<'a> {
    at: String,
    limits: &'a Limits,
    errs: &'a mut Errors,
}

impl TransformCheck<'_> {
    /// `<at>.<field>` may hold at most `max` entries.
    fn check_count(&mut self, field: &str, len: usize, max: usize) {
        check_count_at(&format!("{}.{field}", self.at), len, max, self.errs);
    }

    fn placeholders(&mut self, raw: &[PlaceholderSpec]) -> Vec<Placeholder> {
        self.check_count("placeholders", raw.len(), 8);
        let Self { at, limits, errs } = self;
        let mut out: Vec<Placeholder> = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            let field = format!("{at}.placeholders[{i}]");
            let mut ok = true;
            if let Err(msg) = placeholder::check_token(&p.placeholder) {
                errs.push(format!("{field}.placeholder"), msg);
                ok = false;
            } else if out.iter().any(|q| q.token == p.placeholder) {
                errs.push(format!("{field}.placeholder"), "is given twice".to_owned());
                ok = false;
            }
            if let Err(msg) = headers::check_value(&p.value, limits.max_header_value_len) {
                errs.push(format!("{field}.value"), msg);
                ok = false;
            }
            if p.headers.is_empty() {
                errs.push(format!("{field}.headers"), "names no header".to_owned());
                ok = false;
            }
            let mut names = Vec::new();
            for (k, name) in p.headers.iter().enumerate() {
                match check_header_name(name, limits) {
                    Ok(lower) if !names.contains(&lower) => names.push(lower),
                    Ok(_) => {}
                    Err(msg) => {
                        errs.push(
                            format!("{field}.headers[{k}]"),
                            format!("{} {msg}", quote(name)),
                        );
                        ok = false;
                    }
                }
            }
            if ok {
                out.push(Placeholder {
                    token: p.placeholder.clone(),
                    value: SecretValue::new(p.value.clone()),
                    headers: names,
                });
            }
        }
        out
    }

    fn http_rules(&mut self, raw: &[HttpRuleSpec]) -> Vec<HttpRule> {
        self.check_count("http_rules", raw.len(), self.limits.max_http_rules);
        let Self { at, errs, .. } = self;
        let mut out = Vec::new();
        for (i, spec) in raw.iter().enumerate() {
            match HttpRule::parse(spec) {
                Ok(r) => out.push(r),
                Err(problems) => {
                    for (field, message) in problems {
                        errs.push(format!("{at}.http_rules[{i}].{field}"), message);
                    }
                }
            }
        }
        out
    }

    fn inject(&mut self, raw: &BTreeMap<String, String>) -> Vec<(String, SecretValue)> {
        self.check_count("inject_headers", raw.len(), self.limits.max_inject_headers);
        let Self { at, limits, errs } = self;
        let mut out: Vec<(String, SecretValue)> = Vec::new();
        let mut originals: HashMap<String, &str> = HashMap::new();
        for (name, value) in raw {
            let field = format!("{at}.inject_headers[{}]", quote(name));
            let lower = match check_header_name(name, limits) {
                Ok(lower) => lower,
                Err(msg) => {
                    errs.push(field, format!("{} {msg}", quote(name)));
                    continue;
                }
            };
            if let Err(msg) = headers::check_value(value, limits.max_header_value_len) {
                errs.push(field.clone(), msg);
            }
            if let Some(prev) = originals.get(&lower) {
                errs.push(
                    field,
                    format!(
                        "is given twice (as {} too; header names are case-insensitive)",
                        quote(prev)
                    ),
                );
                continue;
            }
            originals.insert(lower.clone(), name);
            out.push((lower, SecretValue::new(value.clone())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn strip(&mut self, raw: &[String]) -> Vec<String> {
        self.check_count("strip_headers", raw.len(), self.limits.max_strip_headers);
        let Self { at, limits, errs } = self;
        let mut out: Vec<String> = Vec::new();
        for (k, name) in raw.iter().enumerate() {
            match check_header_name(name, limits) {
                Ok(lower) => {
                    if !out.contains(&lower) {
                        out.push(lower);
                    }
                }
                Err(msg) => errs.push(
                    format!("{at}.strip_headers[{k}]"),
                    format!("{} {msg}", quote(name)),
                ),
            }
        }
        out
    }
}

fn check_header_name(name: &str, limits: &Limits) -> Result<String, String> {
    if name.len() > limits.max_header_name_len {
        return Err(format!(
            "is {} bytes long; the limit for a header name is {}",
            name.len(),
            limits.max_header_name_len
        ));
    }
    headers::check_name(name)
}

fn check_count_at(field: &str, len: usize, max: usize, errs: &mut Errors) {
    if len > max {
        errs.push(field, format!("has {len} entries; the limit is {max}"));
    }
}
