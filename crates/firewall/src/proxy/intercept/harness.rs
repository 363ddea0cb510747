//! The intercepted per-request path (`prepare`) driven by arbitrary client bytes: a hyper
//! HTTP/1 server over an in-memory stream, and an in-memory upstream recording what it would be
//! sent. Used by the seed-corpus test and the bounded property test of the intercept module, and
//! by the cargo-fuzz target `intercept_http` (feature `fuzzing`); not in release builds.

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
    palisade_wire::framing::check_split(data);
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
                let mut info = HttpInfo::default();
                let status = match prepare(req, framing, &sni, 443, &policy, &mut info) {
                    Ok((fwd, _rule, _would)) => {
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
                                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
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
