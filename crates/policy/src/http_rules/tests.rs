//! The L7 rule matcher: patterns, normalisation and first-match order.

use super::*;

fn rule(action: &str, method: Option<&str>, path: &str) -> HttpRule {
    HttpRule::parse(&HttpRuleSpec {
        action: action.to_owned(),
        method: method.map(str::to_owned),
        path: path.to_owned(),
    })
    .unwrap()
}

fn allowed(rules: &[HttpRule], method: &str, path: &str) -> bool {
    matches!(decide(rules, method, path), HttpDecision::Allow { .. })
}

#[test]
fn an_allowlist_denies_what_it_does_not_name() {
    let rules = [
        rule("allow", Some("GET"), "/v1/models"),
        rule("allow", Some("POST"), "/v1/chat/*"),
    ];
    let table = [
        ("GET", "/v1/models", true),
        ("POST", "/v1/models", false),
        ("get", "/v1/models", false),
        ("POST", "/v1/chat/completions", true),
        ("POST", "/v1/chat", false),
        ("POST", "/v1/chat/", false),
        ("POST", "/v1/chat/completions/x", false),
        ("GET", "/v1/models/gpt", false),
        ("GET", "/v1/%6Dodels", true),
        ("GET", "/v2/models", false),
        ("DELETE", "/", false),
    ];
    for (m, p, want) in table {
        assert_eq!(allowed(&rules, m, p), want, "{m} {p}");
    }
    let HttpDecision::Deny { rule: None, reason } = decide(&rules, "GET", "/admin") else {
        panic!()
    };
    assert!(reason.contains("no allow rule"), "{reason}");
}

#[test]
fn first_match_wins_and_a_blocklist_allows_the_rest() {
    let rules = [
        rule("deny", Some("POST"), "/v1/files/**"),
        rule("allow", None, "/v1/**"),
    ];
    assert!(!allowed(&rules, "POST", "/v1/files"));
    assert!(!allowed(&rules, "POST", "/v1/files/a/b"));
    assert!(allowed(&rules, "GET", "/v1/files/a"));
    assert!(allowed(&rules, "PATCH", "/v1/"));
    assert!(!allowed(&rules, "GET", "/v2"));
    let blocklist = [rule("deny", Some("DELETE"), "/**")];
    assert!(allowed(&blocklist, "GET", "/anything/at/all"));
    let HttpDecision::Deny {
        rule: Some(0),
        reason,
    } = decide(&blocklist, "DELETE", "/x")
    else {
        panic!()
    };
    assert!(
        reason.contains("http_rules[0] (deny DELETE /**)"),
        "{reason}"
    );
    assert!(allowed(&[], "DELETE", "//odd/../path"));
}

#[test]
fn ambiguous_paths_are_refused_not_guessed() {
    let rules = [rule("deny", Some("POST"), "/v1/chat/*")];
    for p in [
        "/v1/./chat/completions",
        "/v1/x/../chat/completions",
        "/v1/%2e%2E/chat/completions",
        "/v1//chat/completions",
        "/v1/chat%2Fcompletions",
        "/v1\\chat",
        "/v1/%zz",
        "relative",
    ] {
        assert!(
            matches!(decide(&rules, "POST", p), HttpDecision::BadPath(_)),
            "{p}"
        );
    }
    // Escapes of unreserved characters are decoded; others compare upper-cased.
    assert!(!allowed(&rules, "POST", "/v1/%63hat/completions"));
    let spaced = [rule("allow", None, "/a%20b")];
    assert!(allowed(&spaced, "GET", "/a%20b"));
    assert!(allowed(&spaced, "GET", "/a%20b"));
    assert!(!allowed(&spaced, "GET", "/a%2"));
}

#[test]
fn bad_rules_name_the_field() {
    let bad = |action: &str, method: Option<&str>, path: &str| {
        HttpRule::parse(&HttpRuleSpec {
            action: action.to_owned(),
            method: method.map(str::to_owned),
            path: path.to_owned(),
        })
        .unwrap_err()
        .into_iter()
        .map(|(f, _)| f)
        .collect::<Vec<_>>()
    };
    assert_eq!(bad("permit", None, "/"), ["action"]);
    assert_eq!(bad("allow", Some("GE T"), "/"), ["method"]);
    for p in ["v1", "/v1/*x", "/**/x", "/a//b", "/a/../b", "/a b"] {
        assert_eq!(bad("allow", None, p), ["path"], "{p}");
    }
    assert_eq!(bad("x", Some(""), "nope"), ["action", "method", "path"]);
    assert_eq!(
        rule("allow", Some("*"), "/v1/%6d/").to_spec().path,
        "/v1/m/"
    );
}
