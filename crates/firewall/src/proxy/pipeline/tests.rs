//! The pipeline's pure steps and the header rewriting beneath them, without sockets.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode, Version};
use palisade_policy::{CompiledPolicy, Policy, canonicalize};

use super::*;

const POLICY: &str = r#"{"mode":"custom","allow_domains":["ok.test"],
  "transforms":[{"domain":"tx.test",
    "inject_headers":{"Authorization":"Bearer sk-injected"},
    "strip_headers":["X-Debug"],
    "placeholders":[{"placeholder":"pl-secret-0123456789abcdef","value":"sk-real",
      "headers":["X-Api-Key"]}],
    "http_rules":[{"action":"deny","method":"DELETE","path":"/v1/**"},
                  {"action":"allow","path":"/v1/**"}]}]}"#;

fn policy() -> CompiledPolicy {
    Policy::from_json(POLICY.as_bytes()).unwrap().compile()
}

fn info() -> HttpInfo {
    HttpInfo::default()
}

fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(target);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

fn refused(r: Result<impl std::fmt::Debug, Refusal>) -> (StatusCode, String, String) {
    let r = r.unwrap_err();
    let body = r.body();
    (r.status, r.rule.to_string(), body)
}

#[test]
fn admit_refuses_what_a_proxy_must_not_pass_on_and_returns_the_host() {
    let host = [("Host", "ok.test")];
    assert_eq!(
        admit(&req("GET", "/", &host), Ok(()), 80, "http").unwrap(),
        "ok.test"
    );
    type Case = (Request<()>, Result<(), String>, StatusCode, &'static str);
    let cases: Vec<Case> = vec![
        (
            req("GET", "/", &host),
            Err("bare LF line ending".into()),
            StatusCode::BAD_REQUEST,
            "palisade: request framing refused: bare LF line ending\n",
        ),
        (
            req("CONNECT", "ok.test:443", &host),
            Ok(()),
            StatusCode::METHOD_NOT_ALLOWED,
            "palisade: CONNECT is not allowed from this sandbox\n",
        ),
        (
            req("TRACE", "/", &host),
            Ok(()),
            StatusCode::METHOD_NOT_ALLOWED,
            "palisade: TRACE is not allowed from this sandbox\n",
        ),
        (
            req(
                "POST",
                "/",
                &[("Host", "ok.test"), ("Transfer-Encoding", "gzip, chunked")],
            ),
            Ok(()),
            StatusCode::BAD_REQUEST,
            "palisade: Transfer-Encoding other than a single chunked\n",
        ),
        (
            req("GET", "/", &[("Host", "ok.test"), ("Upgrade", "h2c")]),
            Ok(()),
            StatusCode::BAD_REQUEST,
            "palisade: only WebSocket upgrades are allowed\n",
        ),
        (
            req("GET", "/", &[]),
            Ok(()),
            StatusCode::BAD_REQUEST,
            "palisade: the request names no host\n",
        ),
    ];
    for (i, (r, framing, status, body)) in cases.into_iter().enumerate() {
        let got = refused(admit(&r, framing, 80, "http"));
        assert_eq!(
            got,
            (status, "protocol".to_owned(), body.to_owned()),
            "case {i}"
        );
    }
}

#[test]
fn http_rules_decide_by_method_and_path_and_name_the_rule() {
    let p = policy();
    let t = p.transform(0);
    assert!(http_rules(t, "GET", "/v1/models").is_ok());
    assert!(http_rules(None, "DELETE", "/v1/x").is_ok());
    let (status, rule, body) = refused(http_rules(t, "DELETE", "/v1/x"));
    assert_eq!(
        (status, rule.as_str()),
        (StatusCode::FORBIDDEN, "http-rule:0")
    );
    assert!(body.contains("http_rules[0]"), "{body}");
    let (status, rule, _) = refused(http_rules(t, "GET", "/v2"));
    assert_eq!(
        (status, rule.as_str()),
        (StatusCode::FORBIDDEN, "http-rules")
    );
    let (status, rule, body) = refused(http_rules(t, "GET", "/v1/../admin"));
    assert_eq!(
        (status, rule.as_str()),
        (StatusCode::BAD_REQUEST, "http-rules")
    );
    assert!(
        body.contains("cannot be checked against http_rules"),
        "{body}"
    );
}

#[test]
fn rewrite_to_the_origin_form_keeps_the_host_and_applies_the_transform() {
    let p = policy();
    let r = req(
        "GET",
        "http://tx.test/v1/a?q=1",
        &[
            ("X-Debug", "1"),
            ("Authorization", "Bearer sandbox-own"),
            ("X-Api-Key", "key=pl-secret-0123456789abcdef;"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
        ],
    );
    let mut i = info();
    let out = rewrite(
        r,
        UpstreamForm::Origin { host: "tx.test" },
        p.transform(0),
        &mut i,
    )
    .unwrap();
    assert_eq!(out.uri().to_string(), "/v1/a?q=1");
    let h = out.headers();
    assert_eq!(h[header::HOST], "tx.test");
    assert_eq!(h[header::AUTHORIZATION], "Bearer sk-injected");
    assert_eq!(h["x-api-key"], "key=sk-real;");
    for gone in ["x-debug", "connection", "x-hop", "keep-alive"] {
        assert!(!h.contains_key(gone), "{gone} forwarded");
    }
    assert_eq!(i.stripped, ["x-debug"]);
    assert_eq!(i.injected, ["x-api-key", "authorization"]);
}

#[test]
fn rewrite_to_the_absolute_form_for_an_intercepted_request() {
    let p = policy();
    let sni = canonicalize(b"tx.test").unwrap();
    let r = req("GET", "/v1/a", &[("Host", "tx.test")]);
    let mut i = info();
    let form = UpstreamForm::Absolute {
        sni: &sni,
        port: 443,
    };
    let out = rewrite(r, form, p.transform(0), &mut i).unwrap();
    assert_eq!(out.uri().to_string(), "https://tx.test/v1/a");
    assert_eq!(out.version(), Version::HTTP_11);
    assert!(!out.headers().contains_key(header::HOST));
    let form = UpstreamForm::Absolute {
        sni: &sni,
        port: 8443,
    };
    let out = rewrite(req("GET", "/", &[]), form, None, &mut info()).unwrap();
    assert_eq!(out.uri().to_string(), "https://tx.test:8443/");
    // `OPTIONS *` would be glued onto the authority (found by fuzzing).
    let (status, rule, _) = refused(rewrite(req("OPTIONS", "*", &[]), form, None, &mut info()));
    assert_eq!(
        (status, rule.as_str()),
        (StatusCode::BAD_REQUEST, "protocol")
    );
}

#[test]
fn a_websocket_upgrade_keeps_its_hop_by_hop_headers() {
    let r = req(
        "GET",
        "/chat",
        &[
            ("Host", "ok.test"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Te", "trailers"),
        ],
    );
    let out = rewrite(
        r,
        UpstreamForm::Origin { host: "ok.test" },
        None,
        &mut info(),
    )
    .unwrap();
    let h = out.headers();
    assert_eq!(h[header::UPGRADE], "websocket");
    assert_eq!(h[header::CONNECTION], "upgrade");
    assert!(!h.contains_key(header::TE));
}

#[test]
fn strip_hop_by_hop_removes_the_listed_and_the_named_headers() {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("connection", "x-a, x-b"),
        ("x-a", "1"),
        ("x-b", "1"),
        ("x-c", "1"),
        ("proxy-authorization", "Basic eA=="),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
    ] {
        h.append(n, HeaderValue::from_static(v));
    }
    strip_hop_by_hop(&mut h, false);
    let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, ["x-c"]);
}

#[test]
fn a_placeholder_is_replaced_only_in_the_headers_it_names() {
    let p = policy();
    let t = p.transform(0).unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        "x-api-key",
        HeaderValue::from_static("pl-secret-0123456789abcdef"),
    );
    h.insert(
        "x-other",
        HeaderValue::from_static("pl-secret-0123456789abcdef"),
    );
    let (stripped, injected) = super::super::rewrite::apply_transform(&mut h, t);
    assert!(stripped.is_empty());
    assert_eq!(injected, ["x-api-key", "authorization"]);
    assert_eq!(h["x-api-key"], "sk-real");
    assert!(h["x-api-key"].is_sensitive());
    assert_eq!(h["x-other"], "pl-secret-0123456789abcdef");
}
