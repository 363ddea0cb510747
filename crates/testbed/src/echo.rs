//! What the HTTP servers answer: the echo JSON, and the good server's extra endpoints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::http::HttpRole;
use crate::log::{Kind, ServerLog, escape};

type Body = BoxBody<Bytes, Infallible>;

/// Largest `/bytes/<n>`.
const MAX_BYTES: u64 = 1 << 36;
/// Most events and longest delay of `/sse`.
const MAX_SSE_EVENTS: u64 = 10_000;
const MAX_SSE_MS: u64 = 60_000;

/// The pattern `/bytes/<n>` sends: byte `i` is `i % 251`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The first `n` bytes `/bytes/<n>` sends.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n as u64).map(pattern_byte).collect()
}

/// A 251·261-byte block of the pattern: a whole number of periods, so it can be repeated.
static BLOCK: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(pattern(251 * 261)));

/// One connection's facts, shared by its requests.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub(crate) role: HttpRole,
    pub(crate) log: ServerLog,
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    pub(crate) sni: Option<String>,
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "?",
    }
}

/// The request's authority: `:authority` / absolute-form authority, else the Host header.
fn authority<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
}

pub(crate) async fn handle(
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let host = authority(&req);
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut detail = format!(
        "{} {} {} {}",
        req.method(),
        host.as_deref().unwrap_or("-"),
        req.uri().path_and_query().map_or("/", |p| p.as_str()),
        version_str(req.version())
    );
    for (n, v) in &headers {
        detail.push_str(&format!("\n{n}: {v}"));
    }
    conn.log.push(
        conn.role.server,
        conn.local,
        conn.peer,
        Kind::HttpRequest,
        detail,
    );

    let path = req.uri().path().to_owned();
    if conn.role.extras {
        if let Some(n) = path.strip_prefix("/bytes/") {
            return Ok(bytes_response(n));
        }
        match path.as_str() {
            "/sse" => return Ok(sse_response(req.uri().query().unwrap_or(""))),
            "/redirect" => {
                let mut resp = text(StatusCode::FOUND, "redirecting to evil.test\n");
                resp.headers_mut().insert(
                    header::LOCATION,
                    HeaderValue::from_static("http://evil.test/"),
                );
                return Ok(resp);
            }
            "/ws" => return Ok(websocket(&conn, req)),
            "/reflect" => {
                let query = req.uri().query().unwrap_or("");
                return Ok(crate::reflect::response(req.headers(), query));
            }
            _ => {}
        }
    }

    let method = req.method().clone();
    let version = req.version();
    let uri = req.uri().to_string();
    let query = req.uri().query().map(str::to_owned);
    let (len, sha) = drain_body(&conn, req.into_body()).await;
    if conn.role.extras && path == "/upload" {
        // Logged before answering: a cut upload never gets its answer to the client.
        conn.log.push(
            conn.role.server,
            conn.local,
            conn.peer,
            Kind::BodyEnd,
            format!("{len} bytes"),
        );
    }
    let body = if conn.role.extras && path == "/upload" {
        serde_json::json!({ "server": conn.role.server, "len": len, "sha256": sha })
    } else {
        echo_json(
            &conn, &method, &path, query, &uri, host, version, &headers, len, &sha,
        )
    };
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[expect(clippy::too_many_arguments, reason = "one flat JSON object")]
fn echo_json(
    conn: &ConnInfo,
    method: &Method,
    path: &str,
    query: Option<String>,
    uri: &str,
    host: Option<String>,
    version: Version,
    headers: &[(String, String)],
    len: u64,
    sha: &str,
) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (n, v) in headers {
        if let serde_json::Value::Array(vals) = map
            .entry(n.clone())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        {
            vals.push(serde_json::Value::String(v.clone()));
        }
    }
    // Digests let a test in a sandbox check an injected secret without the secret itself: the
    // firewall scrubs the echoed value, never its digest.
    let mut digests = serde_json::Map::new();
    for (n, v) in headers {
        if let serde_json::Value::Array(vals) = digests
            .entry(n.clone())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        {
            vals.push(serde_json::Value::String(sha256_hex(v.as_bytes())));
        }
    }
    serde_json::json!({
        "server": conn.role.server,
        "method": method.as_str(),
        "path": path,
        "query": query,
        "uri": uri,
        "host": host,
        "sni": conn.sni,
        "version": version_str(version),
        "headers": headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
        "header_map": map,
        "header_sha256": digests,
        "body_len": len,
        "body_sha256": sha,
        "peer": conn.peer.to_string(),
        "local": conn.local.to_string(),
    })
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads the whole body without keeping it: its length and SHA-256 (hex).
async fn drain_body(conn: &ConnInfo, mut body: Incoming) -> (u64, String) {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            hasher.update(data);
            len += data.len() as u64;
            if conn.role.log_bodies {
                conn.log
                    .push_data(conn.role.server, conn.local, conn.peer, Kind::Bytes, data);
            }
        }
    }
    let digest = hasher.finalize();
    (len, digest.iter().map(|b| format!("{b:02x}")).collect())
}

fn bytes_response(n: &str) -> Response<Body> {
    let n = match n.parse::<u64>() {
        Ok(n) if n <= MAX_BYTES => n,
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("/bytes/<n>: n must be 0..={MAX_BYTES}\n"),
            );
        }
    };
    let block_len = BLOCK.len() as u64;
    let chunks = stream::unfold(0u64, move |sent| async move {
        if sent >= n {
            return None;
        }
        let take = (n - sent).min(block_len);
        let chunk = BLOCK.slice(..take as usize);
        Some((Ok::<_, Infallible>(Frame::data(chunk)), sent + take))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    resp
}

fn query_param(query: &str, key: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn sse_response(query: &str) -> Response<Body> {
    let n = query_param(query, "n").unwrap_or(5).min(MAX_SSE_EVENTS);
    let ms = query_param(query, "ms").unwrap_or(100).min(MAX_SSE_MS);
    let events = stream::unfold(0u64, move |i| async move {
        if i >= n {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let event = Bytes::from(format!("id: {i}\ndata: event {i}\n\n"));
        Some((Ok::<_, Infallible>(Frame::data(event)), i + 1))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(events)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Accepts an HTTP/1.1 WebSocket upgrade and echoes text and binary messages.
fn websocket(conn: &Arc<ConnInfo>, req: Request<Incoming>) -> Response<Body> {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key), Version::HTTP_11) = (is_upgrade, key, req.version()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected an HTTP/1.1 WebSocket upgrade\n",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let conn = Arc::clone(conn);
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    let data = msg.clone().into_data();
                    conn.log.push(
                        conn.role.server,
                        conn.local,
                        conn.peer,
                        Kind::Bytes,
                        format!("websocket message: {}", escape(&data, 200)),
                    );
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_block_repeats_seamlessly() {
        let block = &BLOCK[..];
        let two: Vec<u8> = block.iter().chain(block.iter()).copied().collect();
        assert_eq!(two, pattern(two.len()));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("n=3&ms=20", "n"), Some(3));
        assert_eq!(query_param("n=3&ms=20", "ms"), Some(20));
        assert_eq!(query_param("nn=3", "n"), None);
        assert_eq!(query_param("n=x", "n"), None);
    }
}
