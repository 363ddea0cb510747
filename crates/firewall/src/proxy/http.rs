//! Plain HTTP: every request on a connection is checked on its own Host, so a keep-alive
//! connection cannot switch to a denied name (threat 4), and transforms apply per request.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_http1;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use palisade_policy::{Mode, canonicalize};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::Conn;
use super::framing::{FramingGuard, Verdicts};
use super::peek::Rewind;
use super::plan::{Plan, plan_named, plan_nameless};
use super::rewrite::{
    Body, BodyFailure, ClientBody, apply_transform, check_http_rules, empty, is_websocket,
    splice_upgrades, strip_hop_by_hop, text,
};
use crate::budget::{Metered, Tally};
use crate::events::{EventKind, EventVerdict, HttpInfo};
use crate::hold::HoldKind;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The upstream connection a client connection is currently using, by name and address.
struct Upstream {
    key: (String, IpAddr),
    sender: client_http1::SendRequest<ClientBody>,
}

struct Session {
    conn: Conn,
    upstream: Mutex<Option<Upstream>>,
    verdicts: Arc<Verdicts>,
    tally: Option<Arc<Tally>>,
}

pub(crate) async fn serve_plain(conn: Conn, stream: TcpStream, prefix: Vec<u8>) {
    let verdicts = Arc::new(Verdicts::default());
    // Byte budgets: the sandbox's from the first byte, a domain's from the request to it on.
    let tally = conn.entry.switchable_tally();
    let io = TokioIo::new(FramingGuard::new(
        Metered::new(Rewind::new(prefix, stream), tally.clone()),
        Arc::clone(&verdicts),
    ));
    let session = Arc::new(Session {
        conn: conn.clone(),
        upstream: Mutex::new(None),
        verdicts,
        tally: tally.clone(),
    });
    let service = service_fn(move |req| {
        let session = Arc::clone(&session);
        async move { Ok::<_, Infallible>(session.handle(req).await) }
    });
    let serve = server_http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .half_close(true)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(e) = super::budgeted::serve(serve, tally.as_deref()).await {
        tracing::debug!(error = %e, "plain HTTP connection ended with an error");
    }
    super::budgeted::record_cut(&conn, tally.as_deref(), None);
}

/// The authority a request names: its Host header, or the absolute-form target's authority
/// when both agree. Userinfo, disagreement and a port other than the connection's are refused.
pub(super) fn request_authority<B>(
    req: &Request<B>,
    orig_port: u16,
    scheme: &str,
) -> Result<String, String> {
    let uri_auth = req.uri().authority();
    let host_header = match req
        .headers()
        .get_all(header::HOST)
        .iter()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => None,
        [one] => Some(
            one.to_str()
                .map_err(|_| "the Host header is not valid text".to_owned())?,
        ),
        _ => return Err("more than one Host header".into()),
    };
    if let Some(a) = uri_auth {
        if a.as_str().contains('@') {
            return Err("userinfo in the request target is not allowed".into());
        }
        if req
            .uri()
            .scheme_str()
            .is_some_and(|s| !s.eq_ignore_ascii_case(scheme))
        {
            return Err(format!(
                "only {scheme}:// targets are served on this connection"
            ));
        }
        if let Some(h) = host_header
            && !h.eq_ignore_ascii_case(a.as_str())
        {
            return Err("the request target and the Host header name different hosts".into());
        }
    }
    let authority = uri_auth
        .map(|a| a.as_str().to_owned())
        .or_else(|| host_header.map(str::to_owned))
        .ok_or_else(|| "the request names no host".to_owned())?;
    let parsed: http::uri::Authority = authority
        .parse()
        .map_err(|_| format!("invalid host {authority:?}"))?;
    if authority.contains('@') {
        return Err("userinfo in the Host header is not allowed".into());
    }
    // Whatever the parser tolerated must read back as exactly host[:port], so a garbled port
    // cannot slip past the port check (found by fuzzing: "host:443www").
    let canonical = match parsed.port_u16() {
        Some(port) => format!("{}:{port}", parsed.host()),
        None => parsed.host().to_owned(),
    };
    if !canonical.eq_ignore_ascii_case(&authority) {
        return Err(format!("invalid host {authority:?}"));
    }
    if let Some(port) = parsed.port_u16()
        && port != orig_port
    {
        return Err(format!(
            "the host names port {port} but the connection is to port {orig_port}"
        ));
    }
    Ok(parsed.host().to_owned())
}

impl Session {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let conn = &self.conn;
        let framing = self.verdicts.admit(req.version());
        let failure = Arc::new(BodyFailure::default());
        let mut req = req.map(|b| ClientBody::new(b, Arc::clone(&failure)));
        let orig: SocketAddrV4 = conn.orig;
        let mut info = HttpInfo {
            method: req.method().to_string(),
            host: String::new(),
            path: req.uri().path().to_owned(),
            status: 0,
            injected: Vec::new(),
            stripped: Vec::new(),
        };
        let deny =
            |info: &mut HttpInfo, status: StatusCode, rule: &str, reason: String, body: String| {
                info.status = status.as_u16();
                let mut ev = conn.event(EventKind::Http, EventVerdict::Deny, rule, reason);
                ev.name = Some(info.host.clone()).filter(|h| !h.is_empty());
                ev.http = Some(info.clone());
                conn.record(ev);
                text(status, body, true)
            };

        // Shapes a proxy must not pass on (threats 7, 19): first the framing as the client sent
        // it, which hyper no longer shows (it drops Content-Length next to chunked).
        if let Err(why) = framing {
            return deny(
                &mut info,
                StatusCode::BAD_REQUEST,
                "protocol",
                format!("request framing refused: {why}"),
                format!("palisade: request framing refused: {why}\n"),
            );
        }
        if req.method() == Method::CONNECT {
            return deny(
                &mut info,
                StatusCode::METHOD_NOT_ALLOWED,
                "protocol",
                "CONNECT is not served".into(),
                "palisade: CONNECT is not allowed from this sandbox\n".into(),
            );
        }
        if req.method() == Method::TRACE {
            return deny(
                &mut info,
                StatusCode::METHOD_NOT_ALLOWED,
                "protocol",
                "TRACE is not served".into(),
                "palisade: TRACE is not allowed from this sandbox\n".into(),
            );
        }
        if req.headers().contains_key(header::UPGRADE) && !is_websocket(req.headers()) {
            return deny(
                &mut info,
                StatusCode::BAD_REQUEST,
                "protocol",
                "upgrade other than websocket".into(),
                "palisade: only WebSocket upgrades are allowed\n".into(),
            );
        }
        let host = match request_authority(&req, orig.port(), "http") {
            Ok(h) => h,
            Err(why) => {
                return deny(
                    &mut info,
                    StatusCode::BAD_REQUEST,
                    "protocol",
                    why.clone(),
                    format!("palisade: {why}\n"),
                );
            }
        };
        info.host = host.clone();

        // Fresh decision for every request, on the policy in force now.
        let policy = conn.entry.policy();
        let plan = match canonicalize(host.as_bytes()) {
            Ok(name) => plan_named(&policy, &name, orig),
            Err(_) if host.parse::<IpAddr>().is_ok() || host.starts_with('[') => {
                plan_nameless(&policy, orig, conn.synthetic.as_ref(), "HTTP")
            }
            Err(e) if matches!(policy.mode(), Mode::AllowAll) => {
                tracing::debug!(error = %e, "unusable Host on allow-all; address rules apply");
                plan_nameless(&policy, orig, None, "HTTP")
            }
            Err(e) => Plan::deny("default", format!("unusable host name: {e}")),
        };
        let plan = super::held::settle(conn, plan, Some(host.as_bytes()), HoldKind::Http).await;
        let (target_ip, rule, transform) = match plan {
            Plan::Deny { rule, reason } if rule.starts_with("approval") || rule == "hold-limit" => {
                let body =
                    format!("palisade: {host} was held for approval and refused: {reason}\n");
                return deny(&mut info, StatusCode::FORBIDDEN, &rule, reason, body);
            }
            Plan::Deny { rule, reason } => {
                let body = format!("palisade: the sandbox network policy denies {host}\n");
                return deny(&mut info, StatusCode::FORBIDDEN, &rule, reason, body);
            }
            Plan::DialName {
                name,
                transform,
                rule,
            } => match self.resolve(&name).await {
                Ok(ip) => (ip, rule, transform),
                Err(reason) => {
                    let body = format!("palisade: {reason}\n");
                    return deny(&mut info, StatusCode::FORBIDDEN, &rule, reason, body);
                }
            },
            // The original destination: the address, or the name a synthetic one stands for.
            Plan::DialAddr { rule } => match conn.orig_target().await {
                Ok(ip) => (ip, rule, None),
                Err(reason) => {
                    let body = format!("palisade: the sandbox network policy denies {host}\n");
                    return deny(&mut info, StatusCode::FORBIDDEN, "address", reason, body);
                }
            },
        };

        // Byte budgets: from here on the connection counts against this host's domain budget;
        // a spent budget answers 403 naming it.
        if let Some(tally) = &self.tally {
            let meter = canonicalize(host.as_bytes())
                .ok()
                .and_then(|n| conn.entry.domain_meter(&n));
            tally.set_domain(meter);
            if let Some(cut) = tally.exhausted() {
                let body = format!("palisade: {}\n", cut.reason);
                return deny(
                    &mut info,
                    StatusCode::FORBIDDEN,
                    &cut.rule,
                    cut.reason,
                    body,
                );
            }
        }

        // The transform's L7 rules, after the authority and policy checks.
        if let Some(t) = transform.and_then(|i| policy.transform(i))
            && let Err(r) = check_http_rules(t, req.method().as_str(), req.uri().path())
        {
            let body = format!("palisade: {}\n", r.reason);
            return deny(&mut info, r.status, &r.rule, r.reason, body);
        }

        // Rewrite for the upstream hop.
        let websocket = is_websocket(req.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = match path.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => {
                return deny(
                    &mut info,
                    StatusCode::BAD_REQUEST,
                    "protocol",
                    "invalid request target".into(),
                    "palisade: invalid request target\n".into(),
                );
            }
        };
        strip_hop_by_hop(&mut parts.headers, websocket);
        if !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&host)
        {
            parts.headers.insert(header::HOST, v);
        }
        if let Some(index) = transform
            && let Some(t) = policy.transform(index)
        {
            let (stripped, injected) = apply_transform(&mut parts.headers, t);
            info.stripped = stripped;
            info.injected = injected;
        }
        let upstream_req = Request::from_parts(parts, body);

        let response = match self.send(&host, target_ip, upstream_req).await {
            Ok(r) => r,
            Err(reason) if let Some(why) = failure.get() => {
                // The client's body broke mid-stream; the upstream request was aborted.
                tracing::debug!(%reason, "upstream request aborted");
                return deny(
                    &mut info,
                    StatusCode::BAD_REQUEST,
                    "protocol",
                    format!("the request body is malformed: {why}"),
                    format!("palisade: the request body is malformed: {why}\n"),
                );
            }
            Err(reason) => {
                info.status = StatusCode::BAD_GATEWAY.as_u16();
                let mut ev =
                    conn.event(EventKind::Http, EventVerdict::Allow, &rule, reason.clone());
                ev.name = Some(host.clone());
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
        ev.name = Some(host.clone());
        let ev_info = info.clone();
        ev.http = Some(info);
        conn.record(ev);

        if rparts.status == StatusCode::SWITCHING_PROTOCOLS && websocket {
            let mut resp_for_upgrade = Response::from_parts(rparts.clone(), ());
            let upstream_upgrade = hyper::upgrade::on(&mut resp_for_upgrade);
            if let Some(client_upgrade) = client_upgrade {
                splice_upgrades(client_upgrade, upstream_upgrade);
            }
            return Response::from_parts(rparts, empty());
        }
        strip_hop_by_hop(&mut rparts.headers, false);
        if transform.is_none() {
            // Only a transform domain was ever sent a secret; nothing else can echo one.
            return Response::from_parts(rparts, rbody.map_err(Into::into).boxed());
        }
        match super::scrub::response(conn, &policy, &mut rparts, rbody, ev_info) {
            Ok(body) => Response::from_parts(rparts, body),
            Err(reason) => {
                let mut ev =
                    conn.event(EventKind::Http, EventVerdict::Deny, "scrub", reason.clone());
                ev.name = Some(host);
                conn.record(ev);
                text(
                    StatusCode::BAD_GATEWAY,
                    format!("palisade: the response cannot be inspected: {reason}\n"),
                    true,
                )
            }
        }
    }

    async fn resolve(&self, name: &palisade_policy::CanonicalName) -> Result<IpAddr, String> {
        let allowed = self.conn.resolve_allowed(name).await?;
        allowed
            .first()
            .copied()
            .ok_or_else(|| format!("{} has no IPv4 address", name.as_str()))
    }

    /// Sends on the connection already open to this host and address, or opens one.
    async fn send(
        &self,
        host: &str,
        ip: IpAddr,
        req: Request<ClientBody>,
    ) -> Result<Response<Incoming>, String> {
        let mut slot = self.upstream.lock().await;
        let key = (host.to_owned(), ip);
        let reusable = slot
            .as_ref()
            .is_some_and(|u| u.key == key && !u.sender.is_closed());
        if !reusable {
            *slot = None;
            let addr = std::net::SocketAddr::new(ip, self.conn.orig.port());
            let tcp = self.conn.connect(addr).await?;
            let (sender, connection) = client_http1::Builder::new()
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
            tokio::spawn(async move {
                if let Err(e) = connection.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream HTTP connection ended with an error");
                }
            });
            *slot = Some(Upstream { key, sender });
        }
        let Some(upstream) = slot.as_mut() else {
            return Err("no upstream connection".into());
        };
        upstream
            .sender
            .ready()
            .await
            .map_err(|e| format!("upstream connection closed: {e}"))?;
        upstream
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("upstream request failed: {e}"))
    }
}
