//! Header rewriting shared by the plain and intercepted HTTP paths: hop-by-hop headers, the
//! transform (strip, then inject), the proxy's own short answers, and the client's request body
//! as it goes upstream.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use palisade_policy::Transform;

/// What the proxy answers the sandbox with: the upstream's (possibly scrubbed) body or its own.
pub(super) type Body = BoxBody<Bytes, super::scrub::BoxError>;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus the proxy's own.
pub(super) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn text(status: StatusCode, body: String, close: bool) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && (*name == "upgrade" || *name == "connection") {
            continue;
        }
        headers.remove(*name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Strips, then replaces placeholders, then injects (replacing whatever the client sent).
/// Returns the header names touched (never values) for the event.
pub(super) fn apply_transform(
    headers: &mut HeaderMap,
    t: &Transform,
) -> (Vec<String>, Vec<String>) {
    let mut stripped = Vec::new();
    let mut injected = Vec::new();
    for name in t.strip() {
        if headers.remove(name.as_str()).is_some() {
            stripped.push(name.clone());
        }
    }
    // Placeholders the sandbox holds become the secret, only in the headers they name and only
    // here, on a request to their transform's domain.
    for p in t.placeholders() {
        for name in p.headers() {
            let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let values: Vec<HeaderValue> = headers.get_all(&n).iter().cloned().collect();
            if !values
                .iter()
                .any(|v| contains(v.as_bytes(), p.token().as_bytes()))
            {
                continue;
            }
            headers.remove(&n);
            for v in values {
                let replaced = replace_all(
                    v.as_bytes(),
                    p.token().as_bytes(),
                    p.value().expose().as_bytes(),
                );
                if let Ok(mut v) = HeaderValue::from_bytes(&replaced) {
                    v.set_sensitive(true);
                    headers.append(n.clone(), v);
                }
            }
            if !injected.contains(name) {
                injected.push(name.clone());
            }
        }
    }
    for (name, value) in t.inject() {
        let (Ok(n), Ok(mut v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.expose()),
        ) else {
            continue;
        };
        v.set_sensitive(true);
        headers.insert(n, v);
        injected.push(name.clone());
    }
    (stripped, injected)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len() + with.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

pub(super) fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// Once both sides of a WebSocket upgrade have switched protocols, relays between them.
pub(super) fn splice_upgrades(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    tokio::spawn(async move {
        if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
            let mut c = hyper_util::rt::TokioIo::new(c);
            let mut u = hyper_util::rt::TokioIo::new(u);
            let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
        }
    });
}

/// Records why the client's request body failed, if it did.
#[derive(Debug, Default)]
pub(crate) struct BodyFailure(OnceLock<String>);

impl BodyFailure {
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// The request body as the sandbox sends it. An error here is the client's (a malformed or
/// cut-off body), so the service answers 400 rather than blaming the upstream; passing the
/// error on makes hyper abort the upstream request, so no complete request reaches it.
#[derive(Debug)]
pub(crate) struct ClientBody {
    inner: Incoming,
    failure: Arc<BodyFailure>,
}

impl ClientBody {
    pub(crate) fn new(inner: Incoming, failure: Arc<BodyFailure>) -> Self {
        Self { inner, failure }
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Err(e)) = &frame {
            let _ = this.failure.0.set(innermost(e));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The most specific cause of an error.
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}
