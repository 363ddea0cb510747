//! One HTTP request through the proxy, plain or intercepted, as small steps both paths share:
//!
//! 1. [`Exchange::begin`]: the event's details, the client body watched for breakage, a WebSocket
//!    upgrade taken aside;
//! 2. [`admit`]: the framing guard's verdict, method, header framing, upgrade, authority;
//! 3. the path's own decision (plain: the policy on the Host and where to dial; intercepted: the
//!    authority must be the SNI, then the policy);
//! 4. [`within_budget`] and [`http_rules`];
//! 5. [`rewrite`]: the upstream target, hop-by-hop headers, strip, placeholders, inject;
//! 6. the path's own forward, then [`Exchange::respond`] (event, upgrade, scrub) or
//!    [`Exchange::forward_failed`].
//!
//! Every step but the forward is a plain function; a refusal at any step is a [`Refusal`],
//! which [`Exchange::refuse`] records and answers.

mod authority;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use palisade_policy::{CanonicalName, CompiledPolicy, HttpDecision, Transform};
use palisade_wire::framing::body_framing;

pub(crate) use authority::request_authority;

use super::Conn;
use super::audit::WouldDeny;
use super::rewrite::{
    Body, BodyFailure, ClientBody, apply_transform, empty, is_websocket, splice_upgrades,
    strip_hop_by_hop, text,
};
use crate::budget::Tally;
use crate::decision::RuleRef;
use crate::events::{EventKind, EventVerdict, HttpInfo};

/// Why the proxy answers a request itself: the status, the rule and reason the event records,
/// and the text the sandbox reads (`palisade: <reason>` unless a step says otherwise).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) rule: RuleRef,
    pub(crate) reason: String,
    body: Option<String>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, rule: RuleRef, reason: impl Into<String>) -> Self {
        Self {
            status,
            rule,
            reason: reason.into(),
            body: None,
        }
    }

    /// A request shape the proxy does not pass on.
    fn protocol(status: StatusCode, reason: impl Into<String>) -> Self {
        Self::new(status, RuleRef::Protocol, reason)
    }

    /// The answer says `body` instead of the reason.
    pub(crate) fn saying(mut self, body: String) -> Self {
        self.body = Some(body);
        self
    }

    fn body(&self) -> String {
        match &self.body {
            Some(b) => b.clone(),
            None => format!("palisade: {}\n", self.reason),
        }
    }
}

/// Step 2, the same on both paths: shapes a proxy must not pass on (threats 7, 19), then the
/// authority the request names. Returns the host.
pub(crate) fn admit<B>(
    req: &Request<B>,
    framing: Result<(), String>,
    port: u16,
    scheme: &str,
) -> Result<String, Refusal> {
    // The framing as the client sent it, which hyper no longer shows (it drops Content-Length
    // next to chunked).
    framing.map_err(|why| {
        Refusal::protocol(
            StatusCode::BAD_REQUEST,
            format!("request framing refused: {why}"),
        )
    })?;
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Err(Refusal::protocol(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed from this sandbox", req.method()),
        ));
    }
    // What hyper hands on must still be framed the one way both hops agree on (the guard has
    // judged the bytes as sent; an h2 request is judged here).
    let fields = req
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    body_framing(1, fields).map_err(|why| Refusal::protocol(StatusCode::BAD_REQUEST, why))?;
    if req.headers().contains_key(header::UPGRADE) && !is_websocket(req.headers()) {
        return Err(Refusal::protocol(
            StatusCode::BAD_REQUEST,
            "only WebSocket upgrades are allowed",
        ));
    }
    request_authority(req, port, scheme)
        .map_err(|why| Refusal::protocol(StatusCode::BAD_REQUEST, why))
}

/// Step 4: a spent byte budget refuses the request, naming the budget.
pub(crate) fn within_budget(tally: Option<&Tally>) -> Result<(), Refusal> {
    match tally.and_then(Tally::exhausted) {
        Some(cut) => Err(Refusal::new(StatusCode::FORBIDDEN, cut.rule, cut.reason)),
        None => Ok(()),
    }
}

/// Step 4: the transform's `http_rules` on the method and the target's path (no query), after
/// the authority and policy checks: a denial is `403` naming the rule; a path that cannot be
/// compared unambiguously is `400`.
pub(crate) fn http_rules(t: Option<&Transform>, method: &str, path: &str) -> Result<(), Refusal> {
    let Some(t) = t else {
        return Ok(());
    };
    match t.decide_request(method, path) {
        HttpDecision::Allow { .. } => Ok(()),
        HttpDecision::Deny { rule, reason } => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            rule.map_or(RuleRef::HttpRules, RuleRef::HttpRule),
            reason,
        )),
        HttpDecision::BadPath(why) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            RuleRef::HttpRules,
            format!("the request path cannot be checked against http_rules: {why}"),
        )),
    }
}

/// Where the rewritten request goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UpstreamForm<'a> {
    /// Plain HTTP: the origin form, with the Host the client named (added if it sent none).
    Origin { host: &'a str },
    /// Intercepted: the absolute `https://sni[:port]` form, HTTP/1.1, no Host header (the
    /// pooled client sets it, or `:authority` on h2).
    Absolute { sni: &'a CanonicalName, port: u16 },
}

/// Step 5: the request as the upstream hop gets it: the target in `form`, hop-by-hop headers
/// removed (a WebSocket upgrade kept), then the transform: strip, placeholders, inject. `info`
/// gets the names of the headers the transform touched.
pub(crate) fn rewrite<B>(
    req: Request<B>,
    form: UpstreamForm<'_>,
    transform: Option<&Transform>,
    info: &mut HttpInfo,
) -> Result<Request<B>, Refusal> {
    let websocket = is_websocket(req.headers());
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let bad_target = || Refusal::protocol(StatusCode::BAD_REQUEST, "invalid request target");
    match form {
        UpstreamForm::Origin { host } => {
            parts.uri = path.parse::<Uri>().map_err(|_| bad_target())?;
            strip_hop_by_hop(&mut parts.headers, websocket);
            if !parts.headers.contains_key(header::HOST)
                && let Ok(v) = HeaderValue::from_str(host)
            {
                parts.headers.insert(header::HOST, v);
            }
        }
        UpstreamForm::Absolute { sni, port } => {
            // The asterisk form (`OPTIONS *`, which httparse accepts for any method) would
            // otherwise be glued onto the authority: `https://sni*` (found by fuzzing).
            if !path.starts_with('/') {
                return Err(Refusal::protocol(
                    StatusCode::BAD_REQUEST,
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
                .map_err(|_| bad_target())?;
            parts.version = Version::HTTP_11;
            parts.headers.remove(header::HOST);
            strip_hop_by_hop(&mut parts.headers, websocket);
        }
    }
    if let Some(t) = transform {
        let (stripped, injected) = apply_transform(&mut parts.headers, t);
        info.stripped = stripped;
        info.injected = injected;
    }
    Ok(Request::from_parts(parts, body))
}

/// One request's passage: what its event will say, and what the proxy must remember about the
/// client's side (its body's health, its upgrade).
pub(crate) struct Exchange<'a> {
    conn: &'a Conn,
    pub(crate) info: HttpInfo,
    /// Under audit: what the policy would have refused this request for; its events say
    /// `would-deny`.
    pub(crate) would: Option<WouldDeny>,
    failure: Arc<BodyFailure>,
    upgrade: Option<OnUpgrade>,
}

impl<'a> Exchange<'a> {
    /// Step 1. `host` is what the event names until the authority is known.
    pub(crate) fn begin(
        conn: &'a Conn,
        req: Request<Incoming>,
        host: String,
    ) -> (Self, Request<ClientBody>) {
        let failure = Arc::new(BodyFailure::default());
        let mut req = req.map(|b| ClientBody::new(b, Arc::clone(&failure)));
        let info = HttpInfo {
            method: req.method().to_string(),
            host,
            path: req.uri().path().to_owned(),
            status: 0,
            injected: Vec::new(),
            stripped: Vec::new(),
        };
        let upgrade = is_websocket(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let exchange = Self {
            conn,
            info,
            would: None,
            failure,
            upgrade,
        };
        (exchange, req)
    }

    fn record(&self, verdict: EventVerdict, rule: &RuleRef, reason: &str) {
        let mut ev = self.conn.event(EventKind::Http, verdict, rule, reason);
        ev.name = Some(self.info.host.clone()).filter(|h| !h.is_empty());
        ev.http = Some(self.info.clone());
        WouldDeny::mark(self.would.as_ref(), &mut ev);
        self.conn.record(ev);
    }

    /// Records the refusal and answers it; the connection closes after the answer.
    pub(crate) fn refuse(mut self, r: Refusal) -> Response<Body> {
        self.info.status = r.status.as_u16();
        self.record(EventVerdict::Deny, &r.rule, &r.reason);
        text(r.status, r.body(), true)
    }

    /// The forward failed: the client's body broke mid-stream (its fault: 400, and the
    /// upstream request was aborted), or the upstream failed (502).
    pub(crate) fn forward_failed(mut self, rule: &RuleRef, reason: String) -> Response<Body> {
        if let Some(why) = self.failure.get() {
            tracing::debug!(%reason, "upstream request aborted");
            let reason = format!("the request body is malformed: {why}");
            return self.refuse(Refusal::protocol(StatusCode::BAD_REQUEST, reason));
        }
        self.info.status = StatusCode::BAD_GATEWAY.as_u16();
        self.record(EventVerdict::Allow, rule, &reason);
        text(
            StatusCode::BAD_GATEWAY,
            format!("palisade: upstream failed: {reason}\n"),
            true,
        )
    }

    /// Step 6: records the forwarded request and hands the response on: a WebSocket upgrade
    /// spliced, hop-by-hop headers removed, and (`scrub`) the injected secrets scrubbed; a
    /// response that cannot be scrubbed never reaches the sandbox.
    pub(crate) fn respond(
        mut self,
        rule: &RuleRef,
        response: Response<Incoming>,
        policy: &CompiledPolicy,
        scrub: bool,
    ) -> Response<Body> {
        let (mut rparts, rbody) = response.into_parts();
        self.info.status = rparts.status.as_u16();
        self.record(EventVerdict::Allow, rule, "request forwarded");
        if rparts.status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = self.upgrade.take()
        {
            let mut resp_for_upgrade = Response::from_parts(rparts.clone(), rbody);
            let upstream_upgrade = hyper::upgrade::on(&mut resp_for_upgrade);
            splice_upgrades(client_upgrade, upstream_upgrade);
            rparts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            return Response::from_parts(rparts, empty());
        }
        strip_hop_by_hop(&mut rparts.headers, false);
        // Read to its end even if the sandbox's side stops at the Content-Length (see drain.rs).
        let rbody = super::drain::Drained::new(rbody);
        if !scrub {
            return Response::from_parts(rparts, rbody.map_err(Into::into).boxed());
        }
        let host = self.info.host.clone();
        match super::scrub::response(self.conn, policy, &mut rparts, rbody, self.info) {
            Ok(body) => Response::from_parts(rparts, body),
            Err(reason) => {
                let mut ev = self.conn.event(
                    EventKind::Http,
                    EventVerdict::Deny,
                    &RuleRef::Scrub,
                    &reason,
                );
                ev.name = Some(host);
                self.conn.record(ev);
                text(
                    StatusCode::BAD_GATEWAY,
                    format!("palisade: the response cannot be inspected: {reason}\n"),
                    true,
                )
            }
        }
    }
}
