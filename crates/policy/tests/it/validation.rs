use palisade_policy::{FieldError, Mode, NetworkPolicySpec, Policy, REDACTED};

use crate::{errors, policy};

fn fields(json: &str) -> Vec<(String, String)> {
    errors(json)
        .0
        .into_iter()
        .map(|FieldError { field, message }| (field, message))
        .collect()
}

fn one(json: &str) -> (String, String) {
    let f = fields(json);
    assert_eq!(f.len(), 1, "expected exactly one error for {json}: {f:?}");
    f.into_iter().next().unwrap_or_default()
}

#[test]
fn omitted_policy_is_allow_all() {
    assert_eq!(Policy::default(), Policy::allow_all());
    assert_eq!(
        NetworkPolicySpec::default().validate(),
        Ok(Policy::allow_all())
    );
    assert_eq!(Policy::allow_all().mode(), Mode::AllowAll);
    assert_eq!(
        Policy::allow_all().to_spec().to_json(),
        r#"{"mode":"allow-all"}"#
    );
}

#[test]
fn modes_parse_and_display() {
    for (s, m) in [
        ("allow-all", Mode::AllowAll),
        ("deny-all", Mode::DenyAll),
        ("custom", Mode::Custom),
    ] {
        assert_eq!(policy(&format!(r#"{{"mode":"{s}"}}"#)).mode(), m);
        assert_eq!(m.to_string(), s);
    }
}

#[test]
fn leap0_json_round_trips() {
    let json = r#"{"mode":"custom","allow_domains":["api.openai.com","pypi.org"],"allow_cidrs":["10.0.0.0/24"],"transforms":[{"domain":"api.openai.com","inject_headers":{"authorization":"Bearer sk-proj-1"},"strip_headers":["x-debug"]}]}"#;
    let spec = NetworkPolicySpec::from_json(json.as_bytes()).unwrap();
    assert_eq!(spec.to_json(), json);
    let p = spec.validate().unwrap();
    assert_eq!(p.to_spec(), spec);
    assert_eq!(p.to_spec().validate(), Ok(p));
}

#[test]
fn nulls_and_empty_lists_are_absent() {
    let p =
        policy(r#"{"mode":"deny-all","allow_domains":null,"allow_cidrs":[],"transforms":null}"#);
    assert_eq!(p, Policy::deny_all());
    let p = policy(
        r#"{"mode":"custom","allow_domains":["a.example.com"],"transforms":[{"domain":"b.example.com","inject_headers":null,"strip_headers":null}]}"#,
    );
    assert_eq!(p.transforms().len(), 1);
}

#[test]
fn unknown_fields_and_bad_json_are_reported_with_paths() {
    let (f, m) = one(r#"{"mode":"custom","allow_domain":["a.com"]}"#);
    assert_eq!(f, "network_policy.allow_domain");
    assert_eq!(
        m,
        "unknown field `allow_domain`, expected one of `mode`, `allow_domains`, `allow_cidrs`, \
         `transforms`, `budgets`, `audit`, `on_unknown`, `deny_domains`"
    );
    let (f, m) = one(r#"{"mode":"custom","transforms":[{"domain":"a.example.com","headers":{}}]}"#);
    assert_eq!(f, "network_policy.transforms[0].headers");
    assert_eq!(
        m,
        "unknown field `headers`, expected one of `domain`, `inject_headers`, `strip_headers`, \
         `http_rules`, `placeholders`"
    );
    let (f, m) = one(r#"{"mode":"block"}"#);
    assert_eq!(f, "network_policy.mode");
    assert_eq!(
        m,
        r#"unknown mode "block", expected "allow-all", "deny-all" or "custom""#
    );
    let (f, m) = one(r#"{"allow_domains":[]}"#);
    assert_eq!(f, "network_policy");
    assert!(m.contains("missing field `mode`"), "{m}");
    let (_, m) = one(r#"{"mode":"custom""#);
    assert!(m.contains("ends too early"), "{m}");
    let (f, m) = one(r#"{"mode":"custom","allow_domains":"a.com"}"#);
    assert_eq!(f, "network_policy.allow_domains");
    assert!(m.contains("wrong type"), "{m}");
    assert_eq!(
        one("[]"),
        (
            "network_policy".into(),
            "has the wrong type: expected an object".into()
        )
    );
    let (f, m) = one(r#"{"mode":1}"#);
    assert_eq!(f, "network_policy.mode");
    assert_eq!(m, "has the wrong type: expected a string");
    let (f, m) = one(r#"{"mode":"custom","transforms":[7]}"#);
    assert_eq!(
        (f.as_str(), m.as_str()),
        (
            "network_policy.transforms[0]",
            "has the wrong type: expected an object"
        )
    );
    let (f, m) = one(r#"["custom",["a.example.com"]]"#);
    assert_eq!(
        (f.as_str(), m.as_str()),
        ("network_policy", "has the wrong type: expected an object")
    );
    let (f, m) = one(r#"{"mode":"custom","transforms":[["a.example.com"]]}"#);
    assert_eq!(
        (f.as_str(), m.as_str()),
        (
            "network_policy.transforms[0]",
            "has the wrong type: expected an object"
        )
    );
    let (_, m) = one(r#"{"mode":"custom","mode":"deny-all"}"#);
    assert!(m.contains("duplicate field `mode`"), "{m}");
}

#[test]
fn json_errors_never_echo_header_values() {
    let e = errors(
        r#"{"mode":"custom","transforms":[{"domain":"a.example.com","inject_headers":{"authorization":["sk-live-SECRET"]}}]}"#,
    );
    assert_eq!(
        e.0[0].field,
        r#"network_policy.transforms[0].inject_headers.authorization"#
    );
    assert!(!e.to_string().contains("SECRET"), "{e}");
    let e = errors(
        r#"{"mode":"custom","transforms":[{"domain":"a.example.com","strip_headers":"SECRET, expected x"}]}"#,
    );
    assert!(!e.to_string().contains("SECRET"), "{e}");
    assert_eq!(e.0[0].message, "has the wrong type: expected a sequence");
}

#[test]
fn domain_table() {
    let ok = [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("  api.example.com ", "api.example.com"),
        ("*.Example.com", "*.example.com"),
        ("*.a.b.example.com.", "*.a.b.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*.XN--BCHER-KVA.example", "*.xn--bcher-kva.example"),
        ("r3---sn-abc.googlevideo.com", "r3---sn-abc.googlevideo.com"),
    ];
    for (raw, want) in ok {
        let p = policy(&format!(r#"{{"mode":"custom","allow_domains":["{raw}"]}}"#));
        assert_eq!(p.allow_domains()[0].to_string(), want, "{raw}");
    }
    let bad = [
        ("*", "too broad"),
        ("*.", "too broad"),
        ("*.com", "too broad"),
        ("*.com.", "too broad"),
        ("com", "at least two labels"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("a..example.com", "empty label"),
        (".example.com", "empty label"),
        ("example.com..", "empty label"),
        ("*example.com", "'*'"),
        ("a.*.example.com", "'*'"),
        ("*.*.example.com", "'*'"),
        ("**.example.com", "'*'"),
        ("1.2.3.4", "IP address"),
        ("*.1.2.3.4", "IP address"),
        ("::1", "IP address"),
        ("[::1]", "IP address"),
        ("10.0.0.0/8", "IP address"),
        ("example.123", "IP address"),
        ("a_b.example.com", "'_'"),
        ("exa mple.com", "' '"),
        ("example.com:443", "':'"),
        ("https://example.com", "':'"),
        ("-a.example.com", "'-'"),
        ("a-.example.com", "'-'"),
        ("xn--zz.example", "internationalised"),
    ];
    for (raw, want) in bad {
        let json = format!(
            r#"{{"mode":"custom","allow_domains":["ok.example.com",{}]}}"#,
            serde_json::json!(raw)
        );
        let (f, m) = one(&json);
        assert_eq!(f, "network_policy.allow_domains[1]", "{raw}");
        assert!(m.contains(want), "{raw:?}: {m}");
        assert!(
            m.starts_with(&format!("{:?}", raw)),
            "the message quotes the input: {m}"
        );
    }
    let long = format!("{}.example.com", "a".repeat(64));
    assert!(
        one(&format!(
            r#"{{"mode":"custom","allow_domains":["{long}"]}}"#
        ))
        .1
        .contains("limit is 63")
    );
}

#[test]
fn too_broad_message_reads_well() {
    let (f, m) = one(r#"{"mode":"custom","allow_domains":["a.com","b.com","c.com","*.com"]}"#);
    assert_eq!(f, "network_policy.allow_domains[3]");
    assert_eq!(
        m,
        r#""*.com" is too broad: a wildcard needs at least two labels after "*." (for example "*.example.com")"#
    );
}

#[test]
fn all_failures_are_reported_at_once() {
    let e = errors(
        r#"{"mode":"custom","allow_domains":["*.com","ok.com","*"],"allow_cidrs":["10.0.0.0/33","nope"],"transforms":[{"domain":"*.io","inject_headers":{"Host":"x","X-K":"a\r\nb"},"strip_headers":["Content-Length",":path"]}]}"#,
    );
    let got: Vec<&str> = e.0.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        got,
        [
            "network_policy.allow_domains[0]",
            "network_policy.allow_domains[2]",
            "network_policy.allow_cidrs[0]",
            "network_policy.allow_cidrs[1]",
            "network_policy.transforms[0].domain",
            r#"network_policy.transforms[0].inject_headers["Host"]"#,
            r#"network_policy.transforms[0].inject_headers["X-K"]"#,
            "network_policy.transforms[0].strip_headers[0]",
            "network_policy.transforms[0].strip_headers[1]",
        ]
    );
    let text = e.to_string();
    assert!(
        text.starts_with("invalid network policy (9 problems):"),
        "{text}"
    );
}

#[test]
fn limits() {
    let list = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>().join(",");
    let ok = format!(
        r#"{{"mode":"custom","allow_domains":[{}]}}"#,
        list(50, &|i| format!(r#""d{i}.example.com""#))
    );
    assert_eq!(policy(&ok).allow_domains().len(), 50);
    let bad = format!(
        r#"{{"mode":"custom","allow_domains":[{}]}}"#,
        list(51, &|i| format!(r#""d{i}.example.com""#))
    );
    assert_eq!(
        one(&bad),
        (
            "network_policy.allow_domains".into(),
            "has 51 entries; the limit is 50".into()
        )
    );
    let bad = format!(
        r#"{{"mode":"custom","allow_cidrs":[{}]}}"#,
        list(11, &|i| format!(r#""10.0.{i}.0/24""#))
    );
    assert_eq!(one(&bad).1, "has 11 entries; the limit is 10");
    let bad = format!(
        r#"{{"mode":"custom","transforms":[{}]}}"#,
        list(21, &|i| format!(r#"{{"domain":"t{i}.example.com"}}"#))
    );
    assert_eq!(one(&bad).1, "has 21 entries; the limit is 20");
    let headers = list(33, &|i| format!(r#""x-h{i}":"v""#));
    let bad = format!(
        r#"{{"mode":"custom","transforms":[{{"domain":"a.example.com","inject_headers":{{{headers}}}}}]}}"#
    );
    assert_eq!(one(&bad).0, "network_policy.transforms[0].inject_headers");
    let big = "v".repeat(8193);
    let bad = format!(
        r#"{{"mode":"custom","transforms":[{{"domain":"a.example.com","inject_headers":{{"x-k":"{big}"}}}}]}}"#
    );
    assert!(one(&bad).1.contains("the limit is 8192"));
}

#[test]
fn error_count_is_bounded() {
    let many = (0..5000).map(|_| r#""*""#).collect::<Vec<_>>().join(",");
    let e = errors(&format!(r#"{{"mode":"custom","allow_domains":[{many}]}}"#));
    assert_eq!(e.0.len(), 101);
    assert!(e.0[100].message.contains("more problems"), "{:?}", e.0[100]);
}

#[test]
fn cidrs_are_masked_and_deduplicated() {
    let p = policy(
        r#"{"mode":"custom","allow_cidrs":["10.1.2.3/8","10.0.0.0/8","192.0.2.7","2001:db8::1/32"," 172.16.0.1/12 "]}"#,
    );
    let got: Vec<String> = p.allow_cidrs().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "10.0.0.0/8",
            "192.0.2.7/32",
            "2001:db8::/32",
            "172.16.0.0/12"
        ]
    );
    assert_eq!(p.to_spec().allow_cidrs.unwrap()[0], "10.0.0.0/8");
    for bad in [
        "10.0.0.0/33",
        "10.0.0",
        "010.0.0.1/8",
        "example.com",
        "",
        "::1/129",
        "10.0.0.0/8/8",
    ] {
        let (f, m) = one(&format!(r#"{{"mode":"custom","allow_cidrs":["{bad}"]}}"#));
        assert_eq!(f, "network_policy.allow_cidrs[0]");
        assert!(m.contains("is not an IP network"), "{bad}: {m}");
    }
}

#[test]
fn duplicate_domains_collapse_but_duplicate_transforms_are_refused() {
    let p = policy(
        r#"{"mode":"custom","allow_domains":["a.example.com","A.example.com.","a.example.com"]}"#,
    );
    assert_eq!(p.allow_domains().len(), 1);
    let (f, m) = one(
        r#"{"mode":"custom","transforms":[{"domain":"a.example.com"},{"domain":"A.Example.com"}]}"#,
    );
    assert_eq!(f, "network_policy.transforms[1].domain");
    assert!(m.contains("already has a transform (transforms[0])"), "{m}");
}

#[test]
fn mode_rules() {
    for field in [
        "allow_domains\":[\"a.example.com\"]",
        "allow_cidrs\":[\"10.0.0.0/8\"]",
        "transforms\":[{\"domain\":\"a.example.com\"}]",
    ] {
        let (f, m) = one(&format!(r#"{{"mode":"deny-all","{field}}}"#));
        assert!(f.starts_with("network_policy."), "{f}");
        assert!(m.contains("deny-all"), "{m}");
    }
    let (f, m) = one(r#"{"mode":"allow-all","allow_domains":["a.example.com"]}"#);
    assert_eq!(f, "network_policy.allow_domains");
    assert!(m.contains("allow-all"), "{m}");
    let p = policy(
        r#"{"mode":"allow-all","allow_cidrs":["10.0.0.0/8"],"transforms":[{"domain":"a.example.com","strip_headers":["x-a"]}]}"#,
    );
    assert_eq!(p.allow_cidrs().len(), 1);
    assert_eq!(p.transforms().len(), 1);
}

#[test]
fn header_rules() {
    let bad_names = [
        ("Host", "managed by the proxy"),
        ("content-length", "managed by the proxy"),
        ("Transfer-Encoding", "managed by the proxy"),
        ("Connection", "managed by the proxy"),
        ("Upgrade", "managed by the proxy"),
        ("TE", "managed by the proxy"),
        ("Keep-Alive", "managed by the proxy"),
        ("Proxy-Authorization", "managed by the proxy"),
        ("proxy-connection", "managed by the proxy"),
        (":authority", "pseudo-header"),
        ("X Bad", "not a valid HTTP header name"),
        ("X:Bad", "not a valid HTTP header name"),
        ("Ünicode", "not a valid HTTP header name"),
        ("", "is empty"),
    ];
    for (name, want) in bad_names {
        let n = serde_json::json!(name);
        let (f, m) = one(&format!(
            r#"{{"mode":"custom","transforms":[{{"domain":"a.example.com","inject_headers":{{{n}:"v"}}}}]}}"#
        ));
        assert!(
            f.starts_with("network_policy.transforms[0].inject_headers["),
            "{f}"
        );
        assert!(m.contains(want), "{name}: {m}");
        let (f, m) = one(&format!(
            r#"{{"mode":"custom","transforms":[{{"domain":"a.example.com","strip_headers":[{n}]}}]}}"#
        ));
        assert_eq!(f, "network_policy.transforms[0].strip_headers[0]");
        assert!(m.contains(want), "{name}: {m}");
    }
    for (value, want) in [
        ("a\rb", "line break"),
        ("a\nb", "line break"),
        ("a\u{0}b", "NUL"),
        ("a\u{7}b", "control"),
    ] {
        let v = serde_json::json!(format!("SECRET{value}"));
        let e = errors(&format!(
            r#"{{"mode":"custom","transforms":[{{"domain":"a.example.com","inject_headers":{{"Authorization":{v}}}}}]}}"#
        ));
        assert!(e.0[0].message.contains(want), "{}", e.0[0].message);
        assert!(
            !e.to_string().contains("SECRET"),
            "errors never echo values: {e}"
        );
    }
    let (_, m) = one(
        r#"{"mode":"custom","transforms":[{"domain":"a.example.com","inject_headers":{"X-Key":"1","x-key":"2"}}]}"#,
    );
    assert!(m.contains("twice"), "{m}");
    // Tabs, spaces and UTF-8 are fine in values; names are lowercased and sorted.
    let p = policy(
        r#"{"mode":"custom","transforms":[{"domain":"a.example.com","inject_headers":{"X-B":"a\tb c","Authorization":"Bearer é"},"strip_headers":["X-Debug","x-debug","Cookie"]}]}"#,
    );
    let t = &p.transforms()[0];
    let names: Vec<&str> = t.inject().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["authorization", "x-b"]);
    assert_eq!(t.inject()[0].1.expose(), "Bearer é");
    assert_eq!(t.strip(), ["x-debug", "cookie"]);
}

#[test]
fn secrets_stay_out_of_debug_and_redacted_spec() {
    let p = policy(
        r#"{"mode":"custom","transforms":[{"domain":"api.example.com","inject_headers":{"Authorization":"Bearer sk-TOPSECRET"}}]}"#,
    );
    let spec = p.to_spec();
    for shown in [
        format!("{p:?}"),
        format!("{:?}", p.compile()),
        format!("{spec:?}"),
        p.redacted_spec().to_json(),
    ] {
        assert!(!shown.contains("TOPSECRET"), "{shown}");
    }
    assert!(
        spec.to_json().contains("TOPSECRET"),
        "to_spec keeps the secret for sealing"
    );
    let redacted = p.redacted_spec();
    let headers = redacted.transforms.unwrap()[0]
        .inject_headers
        .clone()
        .unwrap();
    assert_eq!(headers["authorization"], REDACTED);
    assert_eq!(p.transforms()[0].inject()[0].1.to_string(), REDACTED);
}

#[test]
fn custom_without_rules_is_valid_and_allows_nothing() {
    let c = policy(r#"{"mode":"custom"}"#).compile();
    assert!(!c.allows_any_name());
    assert!(
        policy(r#"{"mode":"custom","transforms":[{"domain":"a.example.com"}]}"#)
            .compile()
            .allows_any_name()
    );
    assert!(Policy::allow_all().compile().allows_any_name());
    assert!(!Policy::deny_all().compile().allows_any_name());
}

#[test]
fn http_rules_are_checked_with_field_paths_and_round_trip() {
    let json = r#"{"mode":"custom","transforms":[{"domain":"api.test","http_rules":[
        {"action":"allow","method":"GET","path":"/v1/models"},
        {"action":"permit","path":"/x"},
        {"action":"deny","method":"GE T","path":"v1/*x"}]}]}"#;
    let errs = palisade_policy::Policy::from_json(json.as_bytes()).unwrap_err();
    let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "network_policy.transforms[0].http_rules[1].action",
            "network_policy.transforms[0].http_rules[2].method",
            "network_policy.transforms[0].http_rules[2].path",
        ],
        "{errs:?}"
    );
    let json = r#"{"mode":"custom","transforms":[{"domain":"api.test","http_rules":[
        {"action":"allow","method":"*","path":"/v1/%6dodels/**"},
        {"action":"deny","path":"/"}]}]}"#;
    let policy = palisade_policy::Policy::from_json(json.as_bytes()).unwrap();
    let spec = policy.to_spec();
    let rules = spec.transforms.as_ref().unwrap()[0]
        .http_rules
        .as_ref()
        .unwrap();
    assert_eq!(rules[0].path, "/v1/models/**");
    assert_eq!(rules[0].method, None);
    assert_eq!(spec.validate().unwrap(), policy);
    let unknown = r#"{"mode":"custom","transforms":[{"domain":"api.test","http_rules":[
        {"action":"allow","path":"/","extra":1}]}]}"#;
    assert!(palisade_policy::Policy::from_json(unknown.as_bytes()).is_err());
}

#[test]
fn placeholders_are_checked_redacted_and_round_trip() {
    let json = r#"{"mode":"custom","transforms":[{"domain":"api.test","placeholders":[
        {"placeholder":"pl-secret-0123456789abcdef","value":"sk-real","headers":["Authorization"]},
        {"placeholder":"short","value":"x\ny","headers":[]},
        {"placeholder":"pl-secret-0123456789abcdef","value":"v","headers":["Host"]}]}]}"#;
    let errs = palisade_policy::Policy::from_json(json.as_bytes()).unwrap_err();
    let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "network_policy.transforms[0].placeholders[1].placeholder",
            "network_policy.transforms[0].placeholders[1].value",
            "network_policy.transforms[0].placeholders[1].headers",
            "network_policy.transforms[0].placeholders[2].placeholder",
            "network_policy.transforms[0].placeholders[2].headers[0]",
        ],
        "{errs:?}"
    );
    assert!(!format!("{errs:?}").contains("sk-real"));
    let json = r#"{"mode":"custom","transforms":[{"domain":"api.test","placeholders":[
        {"placeholder":"pl-secret-0123456789abcdef","value":"sk-real-1","headers":["X-Key","x-key"]}]}]}"#;
    let policy = palisade_policy::Policy::from_json(json.as_bytes()).unwrap();
    let p = &policy.transforms()[0].placeholders()[0];
    assert_eq!(p.headers(), ["x-key"]);
    assert_eq!(policy.to_spec().validate().unwrap(), policy);
    let shown = policy.redacted_spec().to_json();
    assert!(
        !shown.contains("sk-real-1") && shown.contains("pl-secret-0123456789abcdef"),
        "{shown}"
    );
    assert!(!format!("{policy:?}").contains("sk-real-1"));
}

#[test]
fn budgets_are_checked_with_field_paths() {
    // Each bad budget → (field, part of the message). Table: negative, zero, missing window,
    // no limit at all, window too long, unknown fields, bad or repeated domains, wrong types.
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"sandbox":{"sent_bytes":-1,"window_secs":60}}"#,
            "network_policy.budgets.sandbox.sent_bytes",
            "whole number",
        ),
        (
            r#"{"sandbox":{"sent_bytes":0,"window_secs":60}}"#,
            "network_policy.budgets.sandbox.sent_bytes",
            "at least 1 byte",
        ),
        (
            r#"{"sandbox":{"received_bytes":0,"window_secs":60}}"#,
            "network_policy.budgets.sandbox.received_bytes",
            "at least 1 byte",
        ),
        (
            r#"{"sandbox":{"sent_bytes":10}}"#,
            "network_policy.budgets.sandbox.window_secs",
            "is required",
        ),
        (
            r#"{"sandbox":{"window_secs":60}}"#,
            "network_policy.budgets.sandbox",
            "sets no limit",
        ),
        (
            r#"{"sandbox":{"sent_bytes":10,"window_secs":0}}"#,
            "network_policy.budgets.sandbox.window_secs",
            "must be 1 to",
        ),
        (
            r#"{"sandbox":{"sent_bytes":10,"window_secs":2592001}}"#,
            "network_policy.budgets.sandbox.window_secs",
            "must be 1 to",
        ),
        (
            r#"{"sandbox":{"sent_bytes":1.5,"window_secs":60}}"#,
            "network_policy.budgets.sandbox.sent_bytes",
            "wrong type",
        ),
        (
            r#"{"sandbox":{"sent_bytes":"10","window_secs":60}}"#,
            "network_policy.budgets.sandbox.sent_bytes",
            "wrong type",
        ),
        (
            r#"{"sandbox":{"sent_bytes":10,"window_secs":60,"burst":5}}"#,
            "network_policy.budgets.sandbox.burst",
            "unknown field `burst`",
        ),
        (
            r#"{"total":{}}"#,
            "network_policy.budgets.total",
            "unknown field `total`",
        ),
        (
            r#"{"domains":[{"domain":"api.test","sent_bytes":5,"window_secs":9,"rate":1}]}"#,
            "network_policy.budgets.domains[0].rate",
            "unknown field `rate`",
        ),
        (
            r#"{"domains":[{"domain":"api.test","sent_bytes":5,"window_secs":-9}]}"#,
            "network_policy.budgets.domains[0].window_secs",
            "whole number",
        ),
        (
            r#"{"domains":[{"domain":"api.test","received_bytes":5}]}"#,
            "network_policy.budgets.domains[0].window_secs",
            "is required",
        ),
        (
            r#"{"domains":[{"domain":"*.com","sent_bytes":5,"window_secs":9}]}"#,
            "network_policy.budgets.domains[0].domain",
            "too broad",
        ),
        (
            r#"{"domains":[{"sent_bytes":5,"window_secs":9}]}"#,
            "network_policy.budgets.domains[0]",
            "missing field `domain`",
        ),
        (
            r#"{"domains":[{"domain":"A.test","sent_bytes":5,"window_secs":9},{"domain":"a.test.","sent_bytes":6,"window_secs":9}]}"#,
            "network_policy.budgets.domains[1].domain",
            "already has a budget (domains[0])",
        ),
        (
            r#"{"domains":[{"domain":"api.test","window_secs":9}]}"#,
            "network_policy.budgets.domains[0]",
            "sets no limit",
        ),
    ];
    for (budgets, field, says) in cases {
        let json = format!(r#"{{"mode":"custom","budgets":{budgets}}}"#);
        let (f, msg) = one(&json);
        assert_eq!(f, *field, "{json}: {msg}");
        assert!(msg.contains(says), "{json}: {f}: {msg}");
    }
    // Too many domain budgets.
    let many: Vec<String> = (0..51)
        .map(|i| format!(r#"{{"domain":"d{i}.test","sent_bytes":1,"window_secs":1}}"#))
        .collect();
    let json = format!(
        r#"{{"mode":"custom","budgets":{{"domains":[{}]}}}}"#,
        many.join(",")
    );
    assert_eq!(one(&json).0, "network_policy.budgets.domains");
}

#[test]
fn budgets_round_trip_and_pick_the_most_specific_domain() {
    let json = r#"{"mode":"allow-all","budgets":{
        "sandbox":{"sent_bytes":1000,"received_bytes":2000,"window_secs":60},
        "domains":[{"domain":"*.Example.test","sent_bytes":10,"window_secs":1},
                   {"domain":"api.example.test.","received_bytes":20,"window_secs":3600},
                   {"domain":"*.b.example.test","sent_bytes":30,"window_secs":5}]}}"#;
    let p = policy(json);
    let spec = p.to_spec();
    let shown = spec.to_json();
    assert!(
        shown.contains(r#""budgets":{"sandbox":{"sent_bytes":1000,"received_bytes":2000,"window_secs":60},"domains":[{"domain":"*.example.test","sent_bytes":10,"window_secs":1},{"domain":"api.example.test","received_bytes":20,"window_secs":3600}"#),
        "{shown}"
    );
    assert_eq!(spec.validate(), Ok(p.clone()));
    assert_eq!(p.redacted_spec(), spec, "budgets hold no secret");
    let b = p.compile().budgets().clone();
    assert_eq!(b.sandbox().and_then(|s| s.sent()), Some(1000));
    let pick = |n: &str| b.domain_for(&palisade_policy::canonicalize(n.as_bytes()).unwrap());
    assert_eq!(pick("api.example.test"), Some(1));
    assert_eq!(pick("x.b.example.test"), Some(2));
    assert_eq!(pick("other.example.test"), Some(0));
    assert_eq!(pick("example.test"), None);
    assert_eq!(pick("alpha.test"), None);
    // No budgets: nothing in the JSON.
    assert!(
        !policy(r#"{"mode":"custom"}"#)
            .to_spec()
            .to_json()
            .contains("budgets")
    );
}

/// `audit` beside the Leap0 fields: a table of what is accepted, echoed and refused.
#[test]
fn audit_table() {
    // Accepted, and echoed back only when on.
    for (json, audit, echoed) in [
        (r#"{"mode":"custom","audit":true}"#, true, true),
        (
            r#"{"mode":"custom","allow_domains":["a.example.com"],"audit":true}"#,
            true,
            true,
        ),
        (r#"{"mode":"custom","audit":false}"#, false, false),
        (r#"{"mode":"custom","audit":null}"#, false, false),
        (r#"{"mode":"custom"}"#, false, false),
        (r#"{"mode":"allow-all","audit":false}"#, false, false),
        (r#"{"mode":"deny-all","audit":false}"#, false, false),
    ] {
        let p = policy(json);
        assert_eq!(p.audit(), audit, "{json}");
        assert_eq!(p.compile().audit(), audit, "{json}");
        let back = p.to_spec().to_json();
        assert_eq!(back.contains("\"audit\":true"), echoed, "{json} -> {back}");
        assert!(!back.contains("\"audit\":false"), "{back}");
        assert_eq!(
            Policy::from_json(back.as_bytes()).as_ref(),
            Ok(&p),
            "{json}"
        );
        assert_eq!(p.redacted_spec().audit, audit);
    }
    // Refused with the field and a reason a person can act on.
    for (json, field, says) in [
        (
            r#"{"mode":"allow-all","audit":true}"#,
            "network_policy.audit",
            "allow-all",
        ),
        (
            r#"{"mode":"deny-all","audit":true}"#,
            "network_policy.audit",
            "no allow_domains",
        ),
        (
            r#"{"mode":"custom","audit":"yes"}"#,
            "network_policy.audit",
            "wrong type",
        ),
        (
            r#"{"mode":"custom","audit":1}"#,
            "network_policy.audit",
            "wrong type",
        ),
    ] {
        let (f, m) = one(json);
        assert_eq!(f, field, "{json}");
        assert!(m.contains(says), "{json}: {m}");
    }
}

#[test]
fn audit_lets_custom_without_names_resolve_and_with_audit_is_custom_only() {
    let p = policy(r#"{"mode":"custom"}"#);
    assert!(!p.compile().allows_any_name());
    let audited = p.clone().with_audit(true);
    assert!(audited.audit());
    assert!(audited.compile().allows_any_name());
    assert!(!audited.with_audit(false).audit());
    assert!(!Policy::allow_all().with_audit(true).audit());
    assert!(!Policy::deny_all().with_audit(true).audit());
}
