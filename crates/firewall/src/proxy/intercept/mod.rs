//! TLS interception, for transform domains only: the sandbox's CA mints a leaf for the exact
//! SNI, each request is checked to name that same host (else 421, and the secret is not sent),
//! gets the transform (strip, then inject), and goes upstream over verified TLS. HTTP/1.1 and
//! HTTP/2 on both sides; bodies stream both ways.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use palisade_policy::{CanonicalName, CompiledPolicy, canonicalize};
use tokio::net::TcpStream;

use super::audit::WouldDeny;
use super::framing::{FramingGuard, Verdicts};
use super::peek::Rewind;
use super::pipeline::{Exchange, Refusal, UpstreamForm, admit, http_rules, rewrite, within_budget};
use super::plan::{Plan, RuleRef, plan_name};
use super::rewrite::{Body, innermost, is_websocket};
use super::{Conn, upstream};
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
            &RuleRef::Interception,
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
                &RuleRef::Interception,
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
                &RuleRef::Limit,
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
    let session = Arc::new(InterceptedSession {
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

struct InterceptedSession {
    conn: Conn,
    sni: CanonicalName,
    client: upstream::UpstreamClient,
    verdicts: Arc<Verdicts>,
    tally: Option<Arc<Tally>>,
}

/// The pipeline's checks and rewrite for one intercepted request, with no I/O (the fuzz
/// harness drives it too): the shared admission (framing verdict, method, upgrade, authority),
/// the authority must be the SNI (else 421, and the secret is not sent), a fresh policy
/// decision, the transform's L7 rules, then the upstream form (absolute `https://sni[:port]`
/// target, hop-by-hop headers removed, the transform applied). Returns the request to send, the
/// rule that allowed it and, under audit, what the policy would have denied it for; `info` gets
/// the header names the transform touched.
pub(crate) fn prepare<B>(
    req: Request<B>,
    framing: Result<(), String>,
    sni: &CanonicalName,
    port: u16,
    policy: &CompiledPolicy,
    info: &mut HttpInfo,
) -> Result<(Request<B>, RuleRef, Option<WouldDeny>), Refusal> {
    let host = admit(&req, framing, port, "https")?;
    // The request must name the host the connection was opened (and the secret minted) for.
    if !canonicalize(host.as_bytes()).is_ok_and(|n| &n == sni) {
        let reason = format!(
            "this connection is for {}; open a new connection for {host}",
            sni.as_str()
        );
        info.host = host;
        return Err(Refusal::new(
            StatusCode::MISDIRECTED_REQUEST,
            RuleRef::Authority,
            reason,
        ));
    }
    // A fresh check on the policy in force now; under audit a denial by the lists is let
    // through (without the transform it no longer has) and recorded as a would-deny.
    let mut would = None;
    let (transform, rule) = match plan_name(policy, sni) {
        Plan::DialName {
            transform, rule, ..
        } => (transform.and_then(|i| policy.transform(i)), rule),
        Plan::Deny { rule, reason } if policy.audit() => {
            would = Some(WouldDeny { rule, reason });
            (None, RuleRef::Audit)
        }
        Plan::Deny { rule, reason } => {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                rule,
                reason.to_string(),
            ));
        }
        Plan::DialAddr { rule } => {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                rule,
                "the name is no longer allowed",
            ));
        }
    };
    if let Err(r) = http_rules(transform, req.method().as_str(), req.uri().path()) {
        if !(policy.audit() && r.status == StatusCode::FORBIDDEN) {
            return Err(r);
        }
        would = Some(WouldDeny {
            rule: r.rule,
            reason: crate::decision::Reason::Said(r.reason),
        });
    }
    let req = rewrite(req, UpstreamForm::Absolute { sni, port }, transform, info)?;
    Ok((req, rule, would))
}

impl InterceptedSession {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let conn = &self.conn;
        let framing = self.verdicts.admit(req.version());
        let (mut exchange, req) = Exchange::begin(conn, req, self.sni.as_str().to_owned());
        let websocket = is_websocket(req.headers());
        let policy = conn.entry.policy();
        let prepared = within_budget(self.tally.as_deref()).and_then(|()| {
            prepare(
                req,
                framing,
                &self.sni,
                conn.orig.port(),
                &policy,
                &mut exchange.info,
            )
        });
        let (upstream_req, rule, would) = match prepared {
            Ok(ok) => ok,
            Err(r) => return exchange.refuse(r),
        };
        exchange.would = would;
        // WebSocket is an HTTP/1.1 mechanism: its upstream leg must not be h2.
        let client = if websocket {
            &self.client.h1
        } else {
            &self.client.any
        };
        match client.request(upstream_req).await {
            // Fail closed: every response from an intercepted domain is scrubbed.
            Ok(resp) => exchange.respond(&rule, resp, &policy, true),
            Err(e) => exchange.forward_failed(&rule, innermost(&e)),
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod harness;
#[cfg(test)]
mod tests;
