//! Integration tests of the public API: validation, names, matching, addresses, properties and
//! the fuzz seed corpus.

#![expect(clippy::panic, reason = "test helpers fail loudly on broken fixtures")]

mod addresses;
mod corpus;
mod hold;
mod matching;
mod names;
mod props;
mod validation;

use palisade_policy::{
    CanonicalName, CompiledPolicy, NetworkPolicySpec, Policy, ValidationErrors, canonicalize,
};

pub(crate) fn policy(json: &str) -> Policy {
    match Policy::from_json(json.as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("policy {json} should be valid: {e}"),
    }
}

pub(crate) fn compiled(json: &str) -> CompiledPolicy {
    policy(json).compile()
}

pub(crate) fn errors(json: &str) -> ValidationErrors {
    match NetworkPolicySpec::from_json(json.as_bytes()).and_then(|s| s.validate()) {
        Ok(p) => panic!("policy {json} should be invalid, got {p:?}"),
        Err(e) => e,
    }
}

pub(crate) fn name(raw: &str) -> CanonicalName {
    match canonicalize(raw.as_bytes()) {
        Ok(n) => n,
        Err(e) => panic!("{raw:?} should canonicalise: {e}"),
    }
}
