//! Plain HTTP: every request on a connection is checked on its own Host, so a keep-alive
//! connection cannot switch to a denied name (threat 4), and transforms apply per request.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_http1;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use palisade_policy::{CompiledPolicy, canonicalize};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::Conn;
use super::audit::{self, WouldDeny};
use super::framing::{FramingGuard, Verdicts};
use super::peek::Rewind;
use super::pipeline::{Exchange, Refusal, UpstreamForm, admit, http_rules, rewrite, within_budget};
use super::plan::{Plan, Reason, RuleRef, plan_http};
use super::rewrite::{Body, ClientBody};
use crate::budget::{Metered, Tally};
use crate::events::HttpInfo;
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

struct PlainSession {
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
    let session = Arc::new(PlainSession {
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

/// Where a plain request goes once the policy has allowed it.
struct Target {
    ip: IpAddr,
    rule: RuleRef,
    transform: Option<usize>,
    /// Under audit: what the policy would have refused the request for.
    would: Option<WouldDeny>,
}

impl PlainSession {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let framing = self.verdicts.admit(req.version());
        let (mut exchange, req) = Exchange::begin(&self.conn, req, String::new());
        // Fresh decision for every request, on the policy in force now.
        let policy = self.conn.entry.policy();
        let (req, mut target) = match self
            .prepare(req, framing, &policy, &mut exchange.info)
            .await
        {
            Ok(ok) => ok,
            Err(r) => return exchange.refuse(r),
        };
        exchange.would = target.would.take();
        let host = exchange.info.host.clone();
        match self.send(&host, target.ip, req).await {
            // Only a transform domain was ever sent a secret; nothing else can echo one.
            Ok(resp) => exchange.respond(&target.rule, resp, &policy, target.transform.is_some()),
            Err(reason) => exchange.forward_failed(&target.rule, reason),
        }
    }

    /// The pipeline's checks and rewrite for one plain request.
    async fn prepare(
        &self,
        req: Request<ClientBody>,
        framing: Result<(), String>,
        policy: &CompiledPolicy,
        info: &mut HttpInfo,
    ) -> Result<(Request<ClientBody>, Target), Refusal> {
        let host = admit(&req, framing, self.conn.orig.port(), "http")?;
        info.host = host.clone();
        let mut target = self.decide(policy, &host).await?;
        self.charge_domain(&host)?;
        let transform = target.transform.and_then(|i| policy.transform(i));
        if let Err(r) = http_rules(transform, req.method().as_str(), req.uri().path()) {
            // Under audit an L7 denial is let through and recorded as a would-deny; a path that
            // cannot be checked (400) stays refused.
            if !(policy.audit() && r.status == StatusCode::FORBIDDEN) {
                return Err(r);
            }
            target.would = Some(WouldDeny {
                rule: r.rule,
                reason: Reason::Said(r.reason),
            });
        }
        let req = rewrite(req, UpstreamForm::Origin { host: &host }, transform, info)?;
        Ok((req, target))
    }

    /// The policy on the request's host, and the address to dial: where the name resolves, or
    /// the original destination (the address, or the name a synthetic one stands for).
    async fn decide(&self, policy: &CompiledPolicy, host: &str) -> Result<Target, Refusal> {
        let conn = &self.conn;
        let denies = || format!("palisade: the sandbox network policy denies {host}\n");
        let plan = plan_http(policy, host, conn.orig, conn.synthetic.as_ref());
        // Under audit a denial by the lists is let through as a would-deny; an unusable host
        // name stays refused (malformed input is enforced in every mode).
        let (plan, would) = match plan {
            Plan::Deny {
                reason: Reason::UnusableHost(_),
                ..
            } => (plan, None),
            plan => audit::relax(policy, plan, || {
                canonicalize(host.as_bytes())
                    .ok()
                    .or_else(|| conn.synthetic.clone())
            }),
        };
        // `on_unknown: hold`: a refused name waits in the approval queue before anything is
        // dialled.
        let plan = super::held::settle(conn, plan, Some(host.as_bytes()), HoldKind::Http).await;
        match plan {
            Plan::Deny {
                rule: rule @ RuleRef::Held(_),
                reason,
            } => {
                let body =
                    format!("palisade: {host} was held for approval and refused: {reason}\n");
                Err(Refusal::new(StatusCode::FORBIDDEN, rule, reason.to_string()).saying(body))
            }
            Plan::Deny { rule, reason } => {
                Err(Refusal::new(StatusCode::FORBIDDEN, rule, reason.to_string()).saying(denies()))
            }
            Plan::DialName {
                name,
                transform,
                rule,
            } => match self.resolve(&name).await {
                Ok(ip) => Ok(Target {
                    ip,
                    rule,
                    transform,
                    would,
                }),
                Err(reason) => Err(Refusal::new(StatusCode::FORBIDDEN, rule, reason)),
            },
            Plan::DialAddr { rule } => match conn.orig_target().await {
                Ok(ip) => Ok(Target {
                    ip,
                    rule,
                    transform: None,
                    would,
                }),
                Err(reason) => Err(
                    Refusal::new(StatusCode::FORBIDDEN, RuleRef::Address, reason).saying(denies()),
                ),
            },
        }
    }

    /// Byte budgets: from here on the connection counts against this host's domain budget; a
    /// spent budget refuses the request.
    fn charge_domain(&self, host: &str) -> Result<(), Refusal> {
        let Some(tally) = &self.tally else {
            return Ok(());
        };
        let meter = canonicalize(host.as_bytes())
            .ok()
            .and_then(|n| self.conn.entry.domain_meter(&n));
        tally.set_domain(meter);
        within_budget(Some(tally))
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
