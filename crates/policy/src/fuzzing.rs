//! Bodies of the fuzz targets, here so `cargo test` runs the committed seed corpus through the
//! same code. Each asserts invariants; a failed assertion is a bug.

use crate::canonicalize;

/// Policy JSON: parse and validate; a valid policy's normalised spec re-validates to the same
/// policy, survives a JSON round trip, compiles, and never shows a secret in `Debug`.
pub fn policy_json(data: &[u8]) {
    let Ok(spec) = crate::NetworkPolicySpec::from_json(data) else {
        return;
    };
    let policy = match spec.validate() {
        Ok(p) => p,
        Err(errors) => {
            assert!(
                !errors.0.is_empty(),
                "an error result lists at least one problem"
            );
            return;
        }
    };
    let normal = policy.to_spec();
    assert_eq!(
        normal.validate().as_ref(),
        Ok(&policy),
        "to_spec re-validates to the same policy"
    );
    let reparsed = crate::NetworkPolicySpec::from_json(normal.to_json().as_bytes());
    assert_eq!(
        reparsed.as_ref(),
        Ok(&normal),
        "normalised spec survives JSON"
    );

    // Debug of the policy equals Debug of its redacted twin: no value reaches Debug.
    let redacted = policy.redacted_spec().validate();
    let redacted = redacted.as_ref().map(|p| format!("{p:?}"));
    assert_eq!(
        redacted,
        Ok(format!("{policy:?}")),
        "Debug output carries no header values"
    );

    let compiled = policy.compile();
    for t in policy.transforms() {
        let probe = t.pattern().base();
        let probe = if t.pattern().is_wildcard() {
            format!("x.{probe}")
        } else {
            probe.to_owned()
        };
        if let Ok(name) = canonicalize(probe.as_bytes()) {
            assert!(
                matches!(
                    compiled.decide_name(&name),
                    crate::NameVerdict::Intercept { .. }
                ),
                "a transform domain is intercepted"
            );
        }
    }
    for d in policy.allow_domains() {
        let probe = if d.is_wildcard() {
            format!("x.{}", d.base())
        } else {
            d.base().to_owned()
        };
        if let Ok(name) = canonicalize(probe.as_bytes()) {
            assert!(
                compiled.decide_name(&name).is_allowed(),
                "an allowed domain is allowed"
            );
        }
    }
}

/// Name canonicalisation: the result is canonical (idempotent, bounded, LDH, lowercase) and
/// case and one trailing dot do not change it.
pub fn canonical_name(data: &[u8]) {
    let Ok(name) = canonicalize(data) else {
        return;
    };
    let s = name.as_str();
    assert!(
        !s.is_empty() && s.len() <= crate::MAX_NAME_LEN,
        "length within limits"
    );
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    );
    for label in s.split('.') {
        assert!(
            !label.is_empty() && label.len() <= crate::MAX_LABEL_LEN,
            "label within limits"
        );
        assert!(
            !label.starts_with('-') && !label.ends_with('-'),
            "no edge hyphens"
        );
    }
    assert_eq!(canonicalize(s.as_bytes()).as_ref(), Ok(&name), "idempotent");
    assert_eq!(
        canonicalize(format!("{s}.").as_bytes()).as_ref(),
        Ok(&name),
        "one trailing dot"
    );
    assert_eq!(
        canonicalize(data.to_ascii_uppercase().as_slice()).as_ref(),
        Ok(&name),
        "case-insensitive"
    );
    if !data.ends_with(b".") {
        let mut dotted = data.to_vec();
        dotted.push(b'.');
        if dotted.len() <= crate::MAX_RAW_LEN {
            assert_eq!(
                canonicalize(&dotted).as_ref(),
                Ok(&name),
                "trailing dot on the raw input"
            );
        }
    }
    if let Ok(pattern) = crate::DomainPattern::parse(s) {
        assert!(
            pattern.matches(&name),
            "an exact pattern matches its own name"
        );
        if let Ok(wild) = crate::DomainPattern::parse(&format!("*.{s}")) {
            assert!(!wild.matches(&name), "a wildcard never matches its base");
        }
    }
}
