//! `on_unknown` and `deny_domains` (the approval queue's policy fields).

use palisade_policy::{FieldError, OnUnknown, Policy};

use crate::{compiled, errors, name, policy};

fn fields(json: &str) -> Vec<(String, String)> {
    errors(json)
        .0
        .into_iter()
        .map(|FieldError { field, message }| (field, message))
        .collect()
}

#[test]
fn hold_is_accepted_in_custom_mode_and_echoed() {
    let p = policy(
        r#"{"mode":"custom","allow_domains":["a.test"],"on_unknown":"hold","deny_domains":["Bad.Test.","bad.test"]}"#,
    );
    assert_eq!(p.hold().on_unknown(), OnUnknown::Hold);
    assert_eq!(p.hold().deny_domains(), &[name("bad.test")]);
    let json = p.to_spec().to_json();
    assert!(json.contains(r#""on_unknown":"hold""#), "{json}");
    assert!(json.contains(r#""deny_domains":["bad.test"]"#), "{json}");
    // What the store keeps validates back to the same policy (restarts, snapshots).
    assert_eq!(Policy::from_json(json.as_bytes()), Ok(p));
}

#[test]
fn default_deny_reads_back_as_a_leap0_policy() {
    let p = policy(r#"{"mode":"custom","allow_domains":["a.test"],"on_unknown":"deny"}"#);
    assert_eq!(p.hold().on_unknown(), OnUnknown::Deny);
    assert_eq!(
        p.to_spec().to_json(),
        r#"{"mode":"custom","allow_domains":["a.test"]}"#
    );
}

#[test]
fn hold_fields_are_checked_with_their_paths() {
    let f = fields(r#"{"mode":"allow-all","on_unknown":"hold"}"#);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].0, "network_policy.on_unknown");
    assert!(f[0].1.contains("custom"), "{f:?}");

    let f = fields(r#"{"mode":"custom","on_unknown":"ask"}"#);
    assert_eq!(f[0].0, "network_policy.on_unknown", "{f:?}");
    assert!(f[0].1.contains("\"deny\" or \"hold\""), "{f:?}");

    let f = fields(
        r#"{"mode":"custom","on_unknown":"hold","deny_domains":["ok.test","*.w.test","bad..test"]}"#,
    );
    let paths: Vec<&str> = f.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "network_policy.deny_domains[1]",
            "network_policy.deny_domains[2]"
        ],
        "{f:?}"
    );
    let f = fields(r#"{"mode":"deny-all","deny_domains":["x.test"]}"#);
    assert_eq!(f[0].0, "network_policy.deny_domains", "{f:?}");
    let many: Vec<String> = (0..300).map(|i| format!("\"n{i}.test\"")).collect();
    let f = fields(&format!(
        r#"{{"mode":"custom","deny_domains":[{}]}}"#,
        many.join(",")
    ));
    assert_eq!(f[0].0, "network_policy.deny_domains", "{f:?}");
    assert!(f[0].1.contains("256"), "{f:?}");
}

#[test]
fn only_unlisted_names_are_held() {
    let c = compiled(
        r#"{"mode":"custom","allow_domains":["a.test","*.w.test"],"on_unknown":"hold","deny_domains":["no.test"]}"#,
    );
    assert!(c.holds(&name("b.test")));
    assert!(!c.holds(&name("a.test")), "allowed names are not held");
    assert!(!c.holds(&name("x.w.test")), "wildcard matches are not held");
    assert!(
        !c.holds(&name("no.test")),
        "deny_domains are refused at once"
    );
    assert!(c.denied_always(&name("no.test")));
    // Without hold, nothing is held; a custom policy with hold and no domains still has names
    // to resolve (the ones a person allows).
    assert!(!compiled(r#"{"mode":"custom","allow_domains":["a.test"]}"#).holds(&name("b.test")));
    assert!(compiled(r#"{"mode":"custom","on_unknown":"hold"}"#).allows_any_name());
    assert!(!compiled(r#"{"mode":"custom"}"#).allows_any_name());
}

#[test]
fn always_decisions_rewrite_the_policy() {
    let p = policy(r#"{"mode":"custom","allow_domains":["a.test"],"on_unknown":"hold"}"#);
    let allowed = p.with_allowed_name(&name("b.test")).unwrap();
    assert_eq!(
        allowed.to_spec().allow_domains,
        Some(vec!["a.test".into(), "b.test".into()])
    );
    assert_eq!(
        allowed.with_allowed_name(&name("b.test")),
        Ok(allowed.clone())
    );
    let denied = allowed.with_denied_name(&name("c.test")).unwrap();
    assert!(denied.compile().denied_always(&name("c.test")));
    assert!(!denied.compile().holds(&name("c.test")));
    // The domain limit still holds.
    let full: Vec<String> = (0..50).map(|i| format!("\"n{i}.test\"")).collect();
    let p = policy(&format!(
        r#"{{"mode":"custom","on_unknown":"hold","allow_domains":[{}]}}"#,
        full.join(",")
    ));
    let e = p.with_allowed_name(&name("b.test")).unwrap_err();
    assert_eq!(e.0[0].field, "network_policy.allow_domains", "{e}");
}
