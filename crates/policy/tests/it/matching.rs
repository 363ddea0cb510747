use palisade_policy::{DenyReason, Mode, NameVerdict, Policy, Rule};

use crate::{compiled, name};

/// Short form of a verdict: "allow domain:x", "intercept 0 transform:x", "deny default".
fn decide(c: &palisade_policy::CompiledPolicy, raw: &str) -> String {
    match c.decide_name(&name(raw)) {
        NameVerdict::Allow { rule } => format!("allow {rule}"),
        NameVerdict::Intercept { transform, rule } => format!("intercept {transform} {rule}"),
        NameVerdict::Deny { rule, reason } => format!("deny {rule} ({reason})"),
    }
}

#[test]
fn custom_most_specific_wins() {
    let c = compiled(
        r#"{"mode":"custom",
            "allow_domains":["*.example.com","*.b.example.com","api.example.com","pypi.org","*.x.example.com"],
            "transforms":[{"domain":"*.x.example.com","strip_headers":["x-a"]},{"domain":"t.b.example.com"},{"domain":"*.c.example.com"}]}"#,
    );
    let table = [
        ("a.example.com", "allow domain:*.example.com"),
        ("deep.a.example.com", "allow domain:*.example.com"),
        ("z.b.example.com", "allow domain:*.b.example.com"),
        ("b.example.com", "allow domain:*.example.com"),
        ("api.example.com", "allow domain:api.example.com"),
        ("API.Example.COM.", "allow domain:api.example.com"),
        ("v1.api.example.com", "allow domain:*.example.com"),
        ("pypi.org", "allow domain:pypi.org"),
        (
            "files.pypi.org",
            "deny default (the name is not in the sandbox's allowed domains)",
        ),
        // same pattern in allow_domains and transforms: the transform wins
        ("q.x.example.com", "intercept 0 transform:*.x.example.com"),
        ("x.example.com", "allow domain:*.example.com"),
        ("t.b.example.com", "intercept 1 transform:t.b.example.com"),
        ("u.t.b.example.com", "allow domain:*.b.example.com"),
        // transform domains are allowed implicitly, and win over a shorter wildcard
        ("k.c.example.com", "intercept 2 transform:*.c.example.com"),
        ("c.example.com", "allow domain:*.example.com"),
        (
            "example.com",
            "deny default (the name is not in the sandbox's allowed domains)",
        ),
        (
            "evilexample.com",
            "deny default (the name is not in the sandbox's allowed domains)",
        ),
        (
            "example.com.evil.test",
            "deny default (the name is not in the sandbox's allowed domains)",
        ),
        (
            "localhost",
            "deny default (the name is not in the sandbox's allowed domains)",
        ),
    ];
    for (n, want) in table {
        assert_eq!(decide(&c, n), want, "{n}");
    }
}

#[test]
fn idn_spellings_reach_the_same_rule() {
    // threats.md case 9: allowed and denied names in every spelling.
    let c = compiled(
        r#"{"mode":"custom","allow_domains":["bücher.example"],"transforms":[{"domain":"*.Straße.example"}]}"#,
    );
    for n in [
        "bücher.example",
        "BÜCHER.example.",
        "xn--bcher-kva.example",
        "XN--BCHER-KVA.EXAMPLE",
    ] {
        assert_eq!(decide(&c, n), "allow domain:xn--bcher-kva.example", "{n}");
    }
    assert_eq!(
        decide(&c, "api.STRASSE.example"),
        "deny default (the name is not in the sandbox's allowed domains)"
    );
    assert_eq!(
        decide(&c, "api.straße.example"),
        "intercept 0 transform:*.xn--strae-oqa.example"
    );
    assert_eq!(
        decide(&c, "API.XN--STRAE-OQA.EXAMPLE."),
        "intercept 0 transform:*.xn--strae-oqa.example"
    );
    assert!(decide(&c, "bucher.example").starts_with("deny"));
}

#[test]
fn allow_all_intercepts_transforms_and_allows_the_rest() {
    let c = compiled(
        r#"{"mode":"allow-all","transforms":[{"domain":"api.example.com","inject_headers":{"authorization":"k"}}]}"#,
    );
    assert_eq!(c.mode(), Mode::AllowAll);
    assert_eq!(
        decide(&c, "api.example.com"),
        "intercept 0 transform:api.example.com"
    );
    assert_eq!(decide(&c, "www.example.com"), "allow allow-all");
    assert_eq!(decide(&c, "localhost"), "allow allow-all");
    assert_eq!(c.transform(0).map(|t| t.inject()[0].1.expose()), Some("k"));
    assert!(c.transform(1).is_none());
}

#[test]
fn deny_all_denies_everything() {
    let c = Policy::deny_all().compile();
    for n in ["example.com", "a.b.c", "localhost"] {
        let v = c.decide_name(&name(n));
        assert_eq!(
            v,
            NameVerdict::Deny {
                rule: Rule::DenyAll,
                reason: DenyReason::DenyAll
            }
        );
        assert!(!v.is_allowed());
        assert_eq!(v.as_str(), "deny");
        assert_eq!(v.rule().to_string(), "deny-all");
    }
}

#[test]
fn compiled_policy_is_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<palisade_policy::CompiledPolicy>();
    assert_send_sync::<NameVerdict>();
}
