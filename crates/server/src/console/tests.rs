use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::testing::TestPlane;
use crate::{Metrics, api_router};

async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    // The real plane behind the router: the console's routes must not need one, but the
    // API beside them does.
    let dir = tempfile::tempdir().unwrap();
    let bed = TestPlane::new(dir.path()).await.unwrap();
    let app = api_router(bed.plane.clone(), Arc::new(Metrics::default()));
    let req = Request::get(path).body(Body::empty()).unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn assert_strict(h: &axum::http::HeaderMap) {
    assert_eq!(h["content-security-policy"], CONTENT_SECURITY_POLICY);
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h.get("set-cookie").is_none());
}

#[tokio::test]
async fn page_and_assets_carry_the_strict_headers() {
    let (s, h, body) = get("/console/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_strict(&h);
    assert!(body.contains("<title>Palisade console</title>"));
    for (path, ty) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/suggestions.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
        ("/console/icon.svg", "image/svg+xml"),
    ] {
        let (s, h, body) = get(path).await;
        assert_eq!(
            (s, h["content-type"].to_str().unwrap()),
            (StatusCode::OK, ty)
        );
        assert_strict(&h);
        assert!(!body.is_empty());
    }
    let (s, h, _) = get("/console/nope.js").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_strict(&h);
    let (s, _, _) = get("/console/../v1/sandboxes").await;
    assert_ne!(s, StatusCode::OK);
}

#[tokio::test]
async fn bare_addresses_lead_to_the_console_and_the_api_is_unchanged() {
    for path in ["/", "/console"] {
        let (s, h, _) = get(path).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(h["location"], PREFIX);
    }
    // The API keeps its own answers: no key is still a JSON 401, unknown routes a JSON 404.
    let (s, h, _) = get("/v1/sandboxes").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.get("content-security-policy").is_none());
    let (s, _, body) = get("/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body.contains("\"message\""), "{body}");
}

/// The CSP forbids inline code; the files must not need it (a page that did would silently
/// break in the browser, not in a test).
#[test]
fn no_inline_script_or_style_and_no_third_party_origin() {
    let html = std::str::from_utf8(INDEX).unwrap();
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..i + lower[i..].find('>').unwrap()];
        assert!(tag.contains(" src="), "inline script: {tag}");
        assert!(lower[i..].starts_with(&format!("{tag}></script>")), "{tag}");
    }
    assert!(!lower.contains("<style"), "inline <style>");
    assert!(!lower.contains(" style="), "style attribute");
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        "javascript:",
    ] {
        assert!(!lower.contains(handler), "{handler}");
    }
    let mut files = vec![("index.html", html)];
    for a in ASSETS {
        files.push((a.name, std::str::from_utf8(a.body).unwrap()));
    }
    for (name, text) in files {
        for origin in ["http://", "https://", "//cdn", "@import"] {
            // The SVG namespace is an identifier, never fetched.
            let n = text.matches(origin).count()
                - text.matches("http://www.w3.org/2000/svg").count()
                    * usize::from(origin == "http://");
            assert_eq!(n, 0, "{name} mentions {origin}");
        }
    }
}

/// Text from the API (names chosen inside a sandbox) must never be parsed as HTML, and the key
/// must never leave sessionStorage except in a header.
#[test]
fn the_script_never_parses_html_and_keeps_the_key_out_of_cookies_and_urls() {
    let js = ASSETS
        .iter()
        .find(|a| a.name == "app.js")
        .map(|a| std::str::from_utf8(a.body).unwrap())
        .unwrap();
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "document.cookie",
        "localStorage",
        "new EventSource",
    ] {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            assert!(!text.contains(banned), "{} uses {banned}", a.name);
        }
    }
    assert!(js.contains("sessionStorage"));
    assert!(js.contains("Authorization: `Bearer ${k}`"));
    assert!(js.contains("credentials: 'omit'"));
}
