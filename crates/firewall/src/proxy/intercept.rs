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
use palisade_policy::{CanonicalName, CompiledPolicy, canonicalize};
use tokio::net::TcpStream;

use super::framing::{FramingGuard, Verdicts};
use super::http::request_authority;
use super::peek::Rewind;
use super::plan::{Plan, plan_name};
use super::rewrite::{
    Body, BodyFailure, ClientBody, apply_transform, empty, innermost, is_websocket,
    splice_upgrades, strip_hop_by_hop, text,
};
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
    let verdicts = Arc::new(Verdicts::default());
    let io = FramingGuard::new(tls, Arc::clone(&verdicts));
    let session = Arc::new(Session {
        conn,
        sni,
        client,
        verdicts,
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
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(error = %e, "intercepted connection ended with an error");
    }
}

struct Session {
    conn: Conn,
    sni: CanonicalName,
    client: upstream::UpstreamClient,
    verdicts: Arc<Verdicts>,
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
/// removed, the transform applied). Returns the request to send and the rule that allowed it;
/// `info` gets the header names the transform touched.
pub(crate) fn prepare<B>(
    req: Request<B>,
    framing: Result<(), String>,
    sni: &CanonicalName,
    port: u16,
    policy: &CompiledPolicy,
    info: &mut HttpInfo,
) -> Result<(Request<B>, String), Refusal> {
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
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "protocol",
            "a request may not carry both Content-Length and Transfer-Encoding",
        ));
    }
    // Only `chunked`, once and last, is a framing both hops agree on.
    let te: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    let framing_ok = match te.as_slice() {
        [] => true,
        [one] => one.as_bytes().eq_ignore_ascii_case(b"chunked"),
        _ => false,
    };
    if !framing_ok {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "protocol",
            "only Transfer-Encoding: chunked is accepted",
        ));
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
    // A fresh check on the policy in force now.
    let transform = match plan_name(policy, sni) {
        Plan::DialName { transform, .. } => transform,
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
    Ok((Request::from_parts(parts, body), rule))
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
        let (upstream_req, rule) = match prepare(
            req,
            framing,
            &self.sni,
            conn.orig.port(),
            &policy,
            &mut info,
        ) {
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
                splice_upgrades(client_upgrade, upstream_upgrade);
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

/// The intercepted per-request path (`prepare`) driven by arbitrary client bytes: a hyper
/// HTTP/1 server over an in-memory stream, and an in-memory upstream recording what it would be
/// sent. Used by the seed-corpus test and the bounded property test below; the cargo-fuzz
/// target needs it exported from the crate (see the crate's fuzz notes).
#[doc(hidden)]
pub(crate) mod harness {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http::header;
    use http_body_util::{BodyExt, Full, Limited};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use palisade_policy::{CanonicalName, CompiledPolicy, NetworkPolicySpec, canonicalize};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::prepare;
    use crate::events::HttpInfo;
    use crate::proxy::framing::{FramingGuard, Verdicts};
    use crate::proxy::rewrite::{BodyFailure, ClientBody};

    pub(crate) const SECRET: &str = "sk-fuzz-SECRET-7f3a";
    pub(crate) const SNI: &str = "api.example.test";

    /// What the in-memory upstream received.
    #[derive(Debug, Clone)]
    pub(crate) struct Forwarded {
        pub(crate) uri: String,
        pub(crate) headers: Vec<(String, Vec<u8>)>,
        /// The authority the client's request named, as the parser saw it (Host or target).
        pub(crate) client_host: Option<String>,
        /// Which request on the connection this was (0-based, in the order hyper served them).
        pub(crate) index: u64,
        /// Whether the upstream received the whole body, cleanly ended.
        pub(crate) body_complete: bool,
    }

    fn policy() -> CompiledPolicy {
        let json = format!(
            r#"{{"mode":"custom","allow_domains":["alpha.test"],"transforms":[{{"domain":"{SNI}",
            "inject_headers":{{"Authorization":"Bearer {SECRET}"}},"strip_headers":["X-Debug"]}}]}}"#
        );
        match serde_json::from_str::<NetworkPolicySpec>(&json).map(|s| s.validate()) {
            Ok(Ok(p)) => p.compile(),
            _ => unreachable!("the harness policy is valid"),
        }
    }

    /// Runs `data` through the intercepted request path and returns what reached the upstream.
    /// Panics (the fuzz failure) if a forwarded request breaks an invariant.
    pub(crate) fn run(data: &[u8]) -> Vec<Forwarded> {
        crate::proxy::framing::check_split(data);
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return Vec::new();
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let policy = Arc::new(policy());
        let Ok(sni) = canonicalize(SNI.as_bytes()) else {
            return Vec::new();
        };
        let sni: Arc<CanonicalName> = Arc::new(sni);
        let client_knows_secret = data.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
        let data = data.to_vec();
        let record = Arc::clone(&seen);
        let verdicts = Arc::new(Verdicts::default());
        let guard_verdicts = Arc::clone(&verdicts);
        let service_verdicts = Arc::clone(&verdicts);
        let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
        rt.block_on(async move {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (mut rd, mut wr) = tokio::io::split(client);
            let writer = tokio::spawn(async move {
                let _ = wr.write_all(&data).await;
                let _ = wr.shutdown().await;
            });
            let reader = tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = rd.read_to_end(&mut sink).await;
            });
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let index = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let framing = service_verdicts.admit(req.version());
                let failure = Arc::new(BodyFailure::default());
                let req = req.map(|b| ClientBody::new(b, Arc::clone(&failure)));
                let policy = Arc::clone(&policy);
                let sni = Arc::clone(&sni);
                let record = Arc::clone(&record);
                async move {
                    let client_host = req
                        .headers()
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                        .or_else(|| req.uri().authority().map(|a| a.to_string()));
                    let mut info = HttpInfo {
                        method: String::new(),
                        host: String::new(),
                        path: String::new(),
                        status: 0,
                        injected: Vec::new(),
                        stripped: Vec::new(),
                    };
                    let status = match prepare(req, framing, &sni, 443, &policy, &mut info) {
                        Ok((fwd, _rule)) => {
                            let (parts, body) = fwd.into_parts();
                            let body_complete = Limited::new(body, 1 << 20).collect().await.is_ok();
                            if let Ok(mut v) = record.lock() {
                                v.push(Forwarded {
                                    index,
                                    body_complete,
                                    uri: parts.uri.to_string(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(n, v)| {
                                            (n.as_str().to_owned(), v.as_bytes().to_vec())
                                        })
                                        .collect(),
                                    client_host,
                                });
                            }
                            if failure.get().is_some() {
                                http::StatusCode::BAD_REQUEST
                            } else {
                                http::StatusCode::OK
                            }
                        }
                        Err(r) => r.status,
                    };
                    let mut resp = http::Response::new(Full::new(bytes::Bytes::new()));
                    *resp.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .max_buf_size(64 * 1024)
                .serve_connection(
                    TokioIo::new(FramingGuard::new(server, guard_verdicts)),
                    service,
                )
                .with_upgrades();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
            writer.abort();
            reader.abort();
        });
        let forwarded = seen.lock().map(|v| v.clone()).unwrap_or_default();
        let broken = verdicts.broken_body();
        for f in &forwarded {
            check(f, client_knows_secret);
            // A body the guard could not follow never reaches the upstream whole.
            assert!(
                !(broken == Some(f.index) && f.body_complete),
                "a malformed body was forwarded complete: {f:?}"
            );
        }
        forwarded
    }

    /// The invariants of every request the upstream receives.
    fn check(f: &Forwarded, client_knows_secret: bool) {
        assert!(
            f.uri.starts_with(&format!("https://{SNI}/")),
            "forwarded to {}",
            f.uri
        );
        // The client named the transform domain itself (independent of `request_authority`).
        let named = f.client_host.as_deref().map(|h| {
            let h = h.to_ascii_lowercase();
            let h = h.strip_suffix(":443").unwrap_or(&h).to_owned();
            h.strip_suffix('.').unwrap_or(&h).to_owned()
        });
        assert_eq!(
            named.as_deref(),
            Some(SNI),
            "secret sent for {:?}",
            f.client_host
        );
        let auth: Vec<&[u8]> = f
            .headers
            .iter()
            .filter(|(n, _)| n == "authorization")
            .map(|(_, v)| v.as_slice())
            .collect();
        assert_eq!(auth, vec![format!("Bearer {SECRET}").as_bytes()], "{f:?}");
        for (n, v) in &f.headers {
            assert!(n != "x-debug" && n != "host", "{n} forwarded");
            assert!(
                !matches!(
                    n.as_str(),
                    "transfer-encoding" | "te" | "keep-alive" | "proxy-authorization" | "trailer"
                ),
                "hop-by-hop {n} forwarded"
            );
            // A client that itself sends the secret's text (the fuzzer can) is echoed, not leaked to.
            if n != "authorization" && !client_knows_secret {
                assert!(
                    !String::from_utf8_lossy(v).contains(SECRET),
                    "secret in {n}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::harness;

    fn seeds() -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/intercept_http");
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (p.display().to_string(), std::fs::read(&p).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn seed_corpus_never_panics_never_leaks() {
        let seeds = seeds();
        assert!(seeds.len() >= 20, "{}", seeds.len());
        for (name, data) in &seeds {
            let fwd = harness::run(data);
            let base = name.rsplit('/').next().unwrap_or_default();
            let want = match base {
                "get"
                | "get_transform"
                | "spellings"
                | "trailing_dot_case"
                | "post_cl"
                | "chunked_ok"
                | "keepalive_switch"
                | "conn_named"
                | "websocket"
                | "trailers_ok"
                | "leading_crlf"
                | "upgrade_then_smuggle" => Some(1),
                "pipelined_ok" => Some(2),
                "front"
                | "absolute"
                | "absolute_mismatch"
                | "userinfo"
                | "port"
                | "two_hosts"
                | "trace"
                | "connect"
                | "h2c"
                | "http10"
                | "regression-asterisk-target" => Some(0),
                // Threat 19: every smuggling shape is refused before anything goes upstream
                // (the guard sees a bad chunk in the same read as its head).
                "clte" | "tecl" | "dupcl" | "dupcl_same" | "cl_list" | "te_gzip" | "te_twice"
                | "http10_te" | "bare_lf" | "bare_lf_only" | "obs_fold" | "badchunk"
                | "chunk_too_long" => Some(0),
                _ => None,
            };
            // A complete body reached the upstream only where the client sent one.
            for f in &fwd {
                assert!(f.body_complete || base == "late_badchunk", "{base}: {f:?}");
            }
            if base == "late_badchunk" {
                // The bad chunk comes after hyper's first read: the head went upstream, the
                // body was cut off there.
                assert_eq!(fwd.len(), 1, "{fwd:?}");
                assert!(!fwd[0].body_complete, "{fwd:?}");
            }
            let Some(want) = want else { continue };
            assert_eq!(fwd.len(), want, "{base}: {fwd:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn mutated_seeds_never_panic_never_leak(
            pick in 0usize..64,
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..8),
            cut in any::<u16>(),
        ) {
            let seeds = seeds();
            let mut data = seeds[pick % seeds.len()].1.clone();
            for (at, byte) in edits {
                if data.is_empty() { break; }
                let i = usize::from(at) % data.len();
                data[i] = byte;
            }
            if !data.is_empty() {
                data.truncate(usize::from(cut) % (data.len() + 1));
            }
            let _ = harness::run(&data);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = harness::run(&data);
        }
    }
}
