//! TLS interception, for transform domains only: the sandbox's CA mints a leaf for the exact
//! SNI, each request is checked to name that same host (else 421, and the secret is not sent),
//! gets the transform (strip, then inject), and goes upstream over verified TLS. HTTP/1.1 and
//! HTTP/2 on both sides; bodies stream both ways.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use palisade_policy::{CanonicalName, CompiledPolicy, canonicalize};
use palisade_wire::framing::body_framing;
use tokio::net::TcpStream;

use super::audit::WouldDeny;
use super::framing::{FramingGuard, Verdicts};
use super::http::request_authority;
use super::peek::Rewind;
use super::plan::{Plan, plan_name};
use super::rewrite::{
    Body, BodyFailure, ClientBody, apply_transform, check_http_rules, empty, innermost,
    is_websocket, splice_upgrades, strip_hop_by_hop, text,
};
use super::{Conn, scrub, upstream};
use crate::budget::{Metered, Tally};
use crate::events::{EventKind, EventVerdict, HttpInfo};

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn serve_intercepted(
    conn: Conn,
    stream: TcpStream,
    prefix: Vec<u8>,
    sni: CanonicalName,
) {
    let Some(server_config) = conn.entry.tls_server_config() else {
        conn.deny(
            stream,
            Some(sni.as_str()),
            "transform",
            "the sandbox has no CA to intercept this transform domain",
        );
        return;
    };
    // Everything the sandbox sends and receives on the connection counts against its byte
    // budgets, TLS records included.
    let tally = conn.entry.tally(Some(&sni));
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let handshake = acceptor.accept(Metered::new(Rewind::new(prefix, stream), tally.clone()));
    let tls = match tokio::time::timeout(conn.shared.limits.peek_timeout(), handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let mut ev = conn.event(
                EventKind::Tcp,
                EventVerdict::Deny,
                "transform",
                format!("TLS handshake with the sandbox failed: {e}"),
            );
            ev.name = Some(sni.as_str().to_owned());
            conn.record(ev);
            return;
        }
        Err(_) => {
            let mut ev = conn.event(
                EventKind::Tcp,
                EventVerdict::Deny,
                "limit",
                "TLS handshake with the sandbox timed out",
            );
            ev.name = Some(sni.as_str().to_owned());
            conn.record(ev);
            return;
        }
    };
    let client = conn
        .entry
        .upstream
        .get_or_init(|| upstream::client(&conn.shared, &conn.entry))
        .clone();
    let verdicts = Arc::new(Verdicts::default());
    let io = FramingGuard::new(tls, Arc::clone(&verdicts));
    let session = Arc::new(Session {
        conn: conn.clone(),
        sni: sni.clone(),
        client,
        verdicts,
        tally: tally.clone(),
    });
    let service = service_fn(move |req| {
        let session = Arc::clone(&session);
        async move { Ok::<_, Infallible>(session.handle(req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .half_close(true)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20);
    let serve = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = super::budgeted::serve(serve, tally.as_deref()).await {
        tracing::debug!(error = %e, "intercepted connection ended with an error");
    }
    super::budgeted::record_cut(&conn, tally.as_deref(), Some(sni.as_str()));
}

struct Session {
    conn: Conn,
    sni: CanonicalName,
    client: upstream::UpstreamClient,
    verdicts: Arc<Verdicts>,
    tally: Option<Arc<Tally>>,
}

/// Why a request on an intercepted connection is answered by the proxy itself.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) rule: String,
    pub(crate) reason: String,
}

fn refuse(status: StatusCode, rule: &str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        rule: rule.to_owned(),
        reason: reason.into(),
    }
}

/// The per-request checks and rewrite of an intercepted connection, with no I/O: the framing
/// guard's verdict on the request (`framing`), the method, framing and upgrade checks, the authority (must be the SNI), a fresh policy decision, then
/// the upstream form of the request (absolute `https://sni[:port]` target, hop-by-hop headers
/// removed, the transform applied). Returns the request to send, the rule that allowed it and,
/// under audit, what the policy would have denied it for;
/// `info` gets the header names the transform touched.
pub(crate) fn prepare<B>(
    req: Request<B>,
    framing: Result<(), String>,
    sni: &CanonicalName,
    port: u16,
    policy: &CompiledPolicy,
    info: &mut HttpInfo,
) -> Result<(Request<B>, String, Option<WouldDeny>), Refusal> {
    if let Err(why) = framing {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "protocol",
            format!("request framing refused: {why}"),
        ));
    }
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "protocol",
            format!("{} is not allowed from this sandbox", req.method()),
        ));
    }
    let headers = req.headers();
    // What hyper hands on must still be framed the one way both hops agree on (the guard has
    // judged the bytes as sent; an h2 request is judged here).
    let fields = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    if let Err(why) = body_framing(1, fields) {
        return Err(refuse(StatusCode::BAD_REQUEST, "protocol", why));
    }
    if headers.contains_key(header::UPGRADE) && !is_websocket(headers) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "protocol",
            "only WebSocket upgrades are allowed",
        ));
    }
    // The request must name the host the connection was opened (and the secret minted) for.
    let host = request_authority(&req, port, "https")
        .map_err(|why| refuse(StatusCode::BAD_REQUEST, "protocol", why))?;
    if !canonicalize(host.as_bytes()).is_ok_and(|n| &n == sni) {
        info.host = host.clone();
        return Err(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "authority",
            format!(
                "this connection is for {}; open a new connection for {host}",
                sni.as_str()
            ),
        ));
    }
    // A fresh check on the policy in force now; under audit a denial by the lists is let
    // through (without the transform it no longer has) and recorded as a would-deny.
    let mut would = None;
    let transform = match plan_name(policy, sni) {
        Plan::DialName { transform, .. } => transform,
        Plan::Deny { rule, reason } if policy.audit() => {
            would = Some(WouldDeny { rule, reason });
            None
        }
        Plan::Deny { rule, reason } => return Err(refuse(StatusCode::FORBIDDEN, &rule, reason)),
        Plan::DialAddr { rule } => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                &rule,
                "the name is no longer allowed",
            ));
        }
    };
    let rule = match transform {
        Some(i) => format!(
            "transform:{}",
            policy
                .transform(i)
                .map(|t| t.pattern().to_string())
                .unwrap_or_default()
        ),
        None => "domain".to_owned(),
    };
    // The transform's L7 rules, after the authority and policy checks.
    if let Some(t) = transform.and_then(|i| policy.transform(i))
        && let Err(r) = check_http_rules(t, req.method().as_str(), req.uri().path())
    {
        if !(policy.audit() && r.status == StatusCode::FORBIDDEN) {
            return Err(refuse(r.status, &r.rule, r.reason));
        }
        would = Some(WouldDeny {
            rule: r.rule,
            reason: r.reason,
        });
    }
    let websocket = is_websocket(req.headers());
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    // The asterisk form (`OPTIONS *`, which httparse accepts for any method) would otherwise be
    // glued onto the authority: `https://sni*` (found by fuzzing).
    if !path.starts_with('/') {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "protocol",
            "only origin-form and absolute-form request targets are served",
        ));
    }
    let authority = if port == 443 {
        sni.as_str().to_owned()
    } else {
        format!("{}:{port}", sni.as_str())
    };
    parts.uri = format!("https://{authority}{path}")
        .parse::<Uri>()
        .map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "protocol",
                "invalid request target",
            )
        })?;
    parts.version = Version::HTTP_11;
    parts.headers.remove(header::HOST);
    strip_hop_by_hop(&mut parts.headers, websocket);
    if let Some(t) = transform.and_then(|i| policy.transform(i)) {
        let (stripped, injected) = apply_transform(&mut parts.headers, t);
        info.stripped = stripped;
        info.injected = injected;
    }
    Ok((Request::from_parts(parts, body), rule, would))
}

impl Session {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let conn = &self.conn;
        let framing = self.verdicts.admit(req.version());
        let failure = Arc::new(BodyFailure::default());
        let mut req = req.map(|b| ClientBody::new(b, Arc::clone(&failure)));
        let mut info = HttpInfo {
            method: req.method().to_string(),
            host: self.sni.as_str().to_owned(),
            path: req.uri().path().to_owned(),
            status: 0,
            injected: Vec::new(),
            stripped: Vec::new(),
        };
        let websocket = is_websocket(req.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let policy = conn.entry.policy();
        let prepared = match self.tally.as_deref().and_then(Tally::exhausted) {
            Some(cut) => Err(refuse(StatusCode::FORBIDDEN, &cut.rule, cut.reason)),
            None => prepare(
                req,
                framing,
                &self.sni,
                conn.orig.port(),
                &policy,
                &mut info,
            ),
        };
        let (upstream_req, rule, would) = match prepared {
            Ok(ok) => ok,
            Err(r) => {
                info.status = r.status.as_u16();
                let mut ev = conn.event(
                    EventKind::Http,
                    EventVerdict::Deny,
                    &r.rule,
                    r.reason.clone(),
                );
                ev.name = Some(info.host.clone());
                ev.http = Some(info);
                conn.record(ev);
                return text(r.status, format!("palisade: {}\n", r.reason), true);
            }
        };
        let client = if websocket {
            &self.client.h1
        } else {
            &self.client.any
        };
        let response = match client.request(upstream_req).await {
            Ok(r) => r,
            Err(e) if let Some(why) = failure.get() => {
                // The client's body broke mid-stream; hyper aborted the upstream request.
                let reason = format!("the request body is malformed: {why}");
                info.status = StatusCode::BAD_REQUEST.as_u16();
                tracing::debug!(error = %e, "upstream request aborted");
                let mut ev = conn.event(
                    EventKind::Http,
                    EventVerdict::Deny,
                    "protocol",
                    reason.clone(),
                );
                ev.name = Some(info.host.clone());
                ev.http = Some(info);
                conn.record(ev);
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("palisade: {reason}\n"),
                    true,
                );
            }
            Err(e) => {
                let reason = innermost(&e);
                info.status = StatusCode::BAD_GATEWAY.as_u16();
                let mut ev =
                    conn.event(EventKind::Http, EventVerdict::Allow, &rule, reason.clone());
                ev.name = Some(info.host.clone());
                ev.http = Some(info);
                WouldDeny::mark(would.as_ref(), &mut ev);
                conn.record(ev);
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!("palisade: upstream failed: {reason}\n"),
                    true,
                );
            }
        };
        let (mut rparts, rbody) = response.into_parts();
        info.status = rparts.status.as_u16();
        let mut ev = conn.event(
            EventKind::Http,
            EventVerdict::Allow,
            &rule,
            "request forwarded",
        );
        ev.name = Some(info.host.clone());
        let ev_info = info.clone();
        ev.http = Some(info);
        WouldDeny::mark(would.as_ref(), &mut ev);
        conn.record(ev);
        if rparts.status == StatusCode::SWITCHING_PROTOCOLS && websocket {
            let mut resp_for_upgrade = Response::from_parts(rparts.clone(), rbody);
            let upstream_upgrade = hyper::upgrade::on(&mut resp_for_upgrade);
            if let Some(client_upgrade) = client_upgrade {
                splice_upgrades(client_upgrade, upstream_upgrade);
            }
            rparts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            return Response::from_parts(rparts, empty());
        }
        strip_hop_by_hop(&mut rparts.headers, false);
        match scrub::response(conn, &policy, &mut rparts, rbody, ev_info) {
            Ok(body) => Response::from_parts(rparts, body),
            Err(reason) => {
                // Fail closed: a response the firewall cannot scrub never reaches the sandbox.
                let mut ev =
                    conn.event(EventKind::Http, EventVerdict::Deny, "scrub", reason.clone());
                ev.name = Some(self.sni.as_str().to_owned());
                conn.record(ev);
                text(
                    StatusCode::BAD_GATEWAY,
                    format!("palisade: the response cannot be inspected: {reason}\n"),
                    true,
                )
            }
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod harness;
#[cfg(test)]
mod tests;
