//! TLS interception, for transform domains only: the sandbox's CA mints a leaf for the exact
//! SNI, each request is checked to name that same host (else 421, and the secret is not sent),
//! gets the transform (strip, then inject), and goes upstream over verified TLS. HTTP/1.1 and
//! HTTP/2 on both sides; bodies stream both ways.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use palisade_policy::{CanonicalName, canonicalize};
use tokio::net::TcpStream;

use super::http::request_authority;
use super::peek::Rewind;
use super::plan::{Plan, plan_name};
use super::rewrite::{Body, apply_transform, empty, is_websocket, strip_hop_by_hop, text};
use super::{Conn, upstream};
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
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let handshake = acceptor.accept(Rewind::new(prefix, stream));
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
    let session = Arc::new(Session { conn, sni, client });
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
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(error = %e, "intercepted connection ended with an error");
    }
}

struct Session {
    conn: Conn,
    sni: CanonicalName,
    client: upstream::UpstreamClient,
}

impl Session {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let conn = &self.conn;
        let mut info = HttpInfo {
            method: req.method().to_string(),
            host: self.sni.as_str().to_owned(),
            path: req.uri().path().to_owned(),
            status: 0,
            injected: Vec::new(),
            stripped: Vec::new(),
        };
        let deny = |info: &mut HttpInfo, status: StatusCode, rule: &str, reason: String| {
            info.status = status.as_u16();
            let mut ev = conn.event(EventKind::Http, EventVerdict::Deny, rule, reason.clone());
            ev.name = Some(info.host.clone());
            ev.http = Some(info.clone());
            conn.record(ev);
            text(status, format!("palisade: {reason}\n"), true)
        };
        if req.method() == Method::CONNECT || req.method() == Method::TRACE {
            return deny(
                &mut info,
                StatusCode::METHOD_NOT_ALLOWED,
                "protocol",
                format!("{} is not allowed from this sandbox", req.method()),
            );
        }
        if req.headers().contains_key(header::TRANSFER_ENCODING)
            && req.headers().contains_key(header::CONTENT_LENGTH)
        {
            return deny(
                &mut info,
                StatusCode::BAD_REQUEST,
                "protocol",
                "a request may not carry both Content-Length and Transfer-Encoding".into(),
            );
        }
        if req.headers().contains_key(header::UPGRADE) && !is_websocket(req.headers()) {
            return deny(
                &mut info,
                StatusCode::BAD_REQUEST,
                "protocol",
                "only WebSocket upgrades are allowed".into(),
            );
        }
        // The request must name the host the connection was opened (and the secret minted) for.
        let host = match request_authority(&req, conn.orig.port(), "https") {
            Ok(h) => h,
            Err(why) => return deny(&mut info, StatusCode::BAD_REQUEST, "protocol", why),
        };
        let same = canonicalize(host.as_bytes()).is_ok_and(|n| n == self.sni);
        if !same {
            info.host = host.clone();
            return deny(
                &mut info,
                StatusCode::MISDIRECTED_REQUEST,
                "authority",
                format!(
                    "this connection is for {}; open a new connection for {host}",
                    self.sni.as_str()
                ),
            );
        }
        // A fresh check on the policy in force now.
        let policy = conn.entry.policy();
        let transform = match plan_name(&policy, &self.sni) {
            Plan::DialName { transform, .. } => transform,
            Plan::Deny { rule, reason } => {
                return deny(&mut info, StatusCode::FORBIDDEN, &rule, reason);
            }
            Plan::DialAddr { rule } => {
                return deny(
                    &mut info,
                    StatusCode::FORBIDDEN,
                    &rule,
                    "the name is no longer allowed".into(),
                );
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

        let websocket = is_websocket(req.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let port = conn.orig.port();
        let authority = if port == 443 {
            self.sni.as_str().to_owned()
        } else {
            format!("{}:{port}", self.sni.as_str())
        };
        parts.uri = match format!("https://{authority}{path}").parse::<Uri>() {
            Ok(u) => u,
            Err(_) => {
                return deny(
                    &mut info,
                    StatusCode::BAD_REQUEST,
                    "protocol",
                    "invalid request target".into(),
                );
            }
        };
        parts.version = Version::HTTP_11;
        parts.headers.remove(header::HOST);
        strip_hop_by_hop(&mut parts.headers, websocket);
        if let Some(t) = transform.and_then(|i| policy.transform(i)) {
            let (stripped, injected) = apply_transform(&mut parts.headers, t);
            info.stripped = stripped;
            info.injected = injected;
        }
        let response = match self.client.request(Request::from_parts(parts, body)).await {
            Ok(r) => r,
            Err(e) => {
                let reason = upstream_error(&e);
                info.status = StatusCode::BAD_GATEWAY.as_u16();
                let mut ev =
                    conn.event(EventKind::Http, EventVerdict::Allow, &rule, reason.clone());
                ev.name = Some(info.host.clone());
                ev.http = Some(info);
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
        ev.http = Some(info);
        conn.record(ev);
        if rparts.status == StatusCode::SWITCHING_PROTOCOLS && websocket {
            let mut resp_for_upgrade = Response::from_parts(rparts.clone(), rbody);
            let upstream_upgrade = hyper::upgrade::on(&mut resp_for_upgrade);
            if let Some(client_upgrade) = client_upgrade {
                tokio::spawn(async move {
                    if let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) {
                        let mut c = TokioIo::new(c);
                        let mut u = TokioIo::new(u);
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                });
            }
            rparts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            return Response::from_parts(rparts, empty());
        }
        strip_hop_by_hop(&mut rparts.headers, false);
        Response::from_parts(rparts, rbody.boxed())
    }
}

/// The most specific cause of a client error, for the 502 body.
fn upstream_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}
