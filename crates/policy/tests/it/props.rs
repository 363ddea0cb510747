//! The compiled matcher against a naive reference: scan every rule, keep the most specific.

use palisade_policy::{Mode, NameVerdict, NetworkPolicySpec, TransformSpec, canonicalize};
use proptest::prelude::*;

const LABELS: &[&str] = &["a", "b", "c", "ab", "ex", "xn--bcher-kva"];

fn labels(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(LABELS), min..=max).prop_map(|l| l.join("."))
}

fn pattern() -> impl Strategy<Value = String> {
    (any::<bool>(), labels(2, 4))
        .prop_map(|(wild, base)| if wild { format!("*.{base}") } else { base })
}

/// Naive reference: (rank, is_transform) ordering, exact outranks every wildcard.
fn reference(mode: Mode, domains: &[String], transforms: &[String], name: &str) -> String {
    let rank = |p: &str| -> Option<usize> {
        match p.strip_prefix("*.") {
            Some(base) => name
                .ends_with(&format!(".{base}"))
                .then(|| base.split('.').count()),
            None => (name == p).then_some(usize::MAX),
        }
    };
    let mut best: Option<(usize, bool, String)> = None;
    let candidates = domains
        .iter()
        .map(|p| (p, false, format!("allow domain:{p}")))
        .chain(
            transforms
                .iter()
                .enumerate()
                .map(|(i, p)| (p, true, format!("intercept {i} transform:{p}"))),
        );
    for (p, is_t, text) in candidates {
        if let Some(r) = rank(p)
            && best
                .as_ref()
                .is_none_or(|(br, bt, _)| (r, is_t) > (*br, *bt))
        {
            best = Some((r, is_t, text));
        }
    }
    match (best, mode) {
        (Some((_, _, text)), _) => text,
        (None, Mode::AllowAll) => "allow allow-all".to_owned(),
        (None, _) => "deny default".to_owned(),
    }
}

fn actual(v: NameVerdict) -> String {
    match v {
        NameVerdict::Allow { rule } => format!("allow {rule}"),
        NameVerdict::Intercept { transform, rule } => format!("intercept {transform} {rule}"),
        NameVerdict::Deny { rule, .. } => format!("deny {rule}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn compiled_matches_reference(
        custom in any::<bool>(),
        domains in prop::collection::vec(pattern(), 0..20),
        transforms in prop::collection::btree_set(pattern(), 0..6),
        names in prop::collection::vec(labels(1, 6), 1..30),
    ) {
        let mode = if custom { Mode::Custom } else { Mode::AllowAll };
        let domains = if custom { domains } else { Vec::new() };
        let transforms: Vec<String> = transforms.into_iter().collect();
        let spec = NetworkPolicySpec {
            mode,
            allow_domains: Some(domains.clone()),
            allow_cidrs: None,
            transforms: Some(transforms.iter().map(|d| TransformSpec {
                domain: d.clone(), inject_headers: None, strip_headers: None, http_rules: None, placeholders: None,
            }).collect()),
            budgets: None,
            ..Default::default()
        };
        let policy = spec.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = policy.to_spec().validate();
        prop_assert_eq!(again.as_ref(), Ok(&policy));
        let compiled = policy.compile();
        for raw in &names {
            let name = canonicalize(raw.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(actual(compiled.decide_name(&name)), reference(mode, &domains, &transforms, raw), "name {}", raw);
        }
    }

    #[test]
    fn canonicalize_never_panics_and_is_idempotent(raw in prop::collection::vec(any::<u8>(), 0..300)) {
        palisade_policy::fuzzing::canonical_name(&raw);
    }

    #[test]
    fn canonicalize_unicode_strings(raw in "\\PC{0,40}(\\.\\PC{0,20}){0,3}") {
        palisade_policy::fuzzing::canonical_name(raw.as_bytes());
    }
}
