//! The web console: a static page, one script module and one stylesheet, embedded in the binary
//! and served on the API listener under `/console/`.
//!
//! The console holds no data of its own and needs no auth to load: everything it shows comes from
//! the public API, called by the page with the key the person typed (kept in the tab's
//! `sessionStorage`, sent only as `Authorization: Bearer …`, never as a cookie, so a cross-site
//! page cannot ride on it). Every console response carries a strict Content-Security-Policy: no
//! inline script or style, no third-party origin, no framing.
//!
//! A new view (approvals, suggestions) is a new section in `index.html` and a new entry in the
//! script's view table; a new asset file is a new line in [`ASSETS`].

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The policy every console response carries. `connect-src 'self'` is what lets the script reach
/// the API (same origin) and nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Where the console lives on the API listener.
pub const PREFIX: &str = "/console/";

/// One embedded file: its name under [`PREFIX`], content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// An [`Asset`] named once: its file under `assets/` is its name under [`PREFIX`].
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("app.js", JS),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("suggestions.js", JS),
    asset!("approvals.js", JS),
    asset!("icon.svg", "image/svg+xml"),
];

const INDEX: &[u8] = include_bytes!("assets/index.html");

/// The console's routes: `/console/` (the page), `/console/<asset>`, and redirects from
/// `/console` and `/` so a person typing the bare address lands on it.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to(PREFIX) }))
        .route("/console", get(|| async { Redirect::to(PREFIX) }))
        .route("/console/", get(index))
        .route("/console/{name}", get(asset))
}

async fn index() -> Response {
    respond("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => respond(a.content_type, a.body),
        None => {
            let mut r = (StatusCode::NOT_FOUND, "not found\n").into_response();
            secure(r.headers_mut(), "text/plain; charset=utf-8");
            r
        }
    }
}

fn respond(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut r = body.into_response();
    secure(r.headers_mut(), content_type);
    r
}

/// The headers every console answer carries, whatever its status.
fn secure(h: &mut axum::http::HeaderMap, content_type: &'static str) {
    let set = |h: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_TYPE, content_type);
    set(h, header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    // The assets are small and change with the binary; revalidating each load keeps a browser
    // from running an old script against a new API.
    set(h, header::CACHE_CONTROL, "no-cache");
}

#[cfg(test)]
mod tests;
