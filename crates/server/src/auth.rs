//! API keys: `Authorization: Bearer <key>` (the SDKs' default), or the key in
//! `leap0-authorization` (the SDKs' `auth_header` option), with or without `Bearer `.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::plane::Plane;

/// Longest header value worth looking at.
const MAX_KEY_HEADER: usize = 512;

/// The key a request presents, if any. `leap0-authorization` wins when both are present, as
/// a proxy in front may use `Authorization` for itself.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let raw = headers
        .get("leap0-authorization")
        .or_else(|| headers.get(http::header::AUTHORIZATION))?
        .to_str()
        .ok()?
        .trim();
    if raw.len() > MAX_KEY_HEADER {
        return None;
    }
    let key = match raw.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ if raw.eq_ignore_ascii_case("bearer") => "",
        _ => raw,
    };
    (!key.is_empty()).then_some(key)
}

/// Middleware: resolve the key to an organisation (request extension) or answer 401.
pub(crate) async fn require_key(
    State(cp): State<Arc<Plane>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = presented_key(req.headers()).ok_or(ApiError::Unauthorized)?;
    let org = cp.authenticate(key).await?.ok_or(ApiError::Unauthorized)?;
    req.extensions_mut().insert(org);
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn header_forms() {
        let long = format!("Bearer {}", "a".repeat(600));
        // Headers sent, and the key they present.
        type Case<'a> = (&'a [(&'static str, &'a str)], Option<&'a str>);
        let cases: [Case<'_>; 8] = [
            (&[("authorization", "Bearer pl_a")], Some("pl_a")),
            (&[("authorization", "bearer  pl_a ")], Some("pl_a")),
            (&[("leap0-authorization", "pl_b")], Some("pl_b")),
            (&[("leap0-authorization", "Bearer pl_b")], Some("pl_b")),
            (
                &[
                    ("authorization", "Bearer pl_a"),
                    ("leap0-authorization", "pl_b"),
                ],
                Some("pl_b"),
            ),
            (&[("authorization", "Bearer ")], None),
            (&[], None),
            (&[("authorization", &long)], None),
        ];
        for (headers, want) in cases {
            assert_eq!(presented_key(&h(headers)), want, "{headers:?}");
        }
    }
}
