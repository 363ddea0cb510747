//! HTTP and HTTPS servers: accept loops, TLS with SNI logging, hyper (HTTP/1.1 and HTTP/2).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::server::Acceptor;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

use crate::ca::SniResolver;
use crate::echo::{ConnInfo, handle};
use crate::log::{Kind, ServerLog};

/// Bound on a TLS handshake, so a silent client does not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on reading an HTTP/1 request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Which behaviour an HTTP server has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpRole {
    /// Name in the log and in echo bodies.
    pub(crate) server: &'static str,
    /// Serve `/bytes`, `/sse`, `/upload`, `/redirect`, `/ws` (the good server).
    pub(crate) extras: bool,
    /// Log request body bytes too (the attacker logs everything).
    pub(crate) log_bodies: bool,
}

/// A rustls config choosing certificates by SNI, offering h2 and http/1.1.
pub(crate) fn tls_config(resolver: SniResolver) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts plain HTTP connections forever.
pub(crate) async fn serve_http(listener: TcpListener, role: HttpRole, log: ServerLog) {
    loop {
        let Some((stream, local, peer)) = accept(&listener, role.server, &log).await else {
            continue;
        };
        let log = log.clone();
        tokio::spawn(async move {
            let info = ConnInfo {
                role,
                log,
                local,
                peer,
                sni: None,
            };
            serve_conn(TokioIo::new(stream), info).await;
        });
    }
}

/// Accepts HTTPS connections forever; logs every ClientHello's SNI, even if the handshake fails.
pub(crate) async fn serve_https(
    listener: TcpListener,
    role: HttpRole,
    config: Arc<ServerConfig>,
    log: ServerLog,
) {
    loop {
        let Some((stream, local, peer)) = accept(&listener, role.server, &log).await else {
            continue;
        };
        let log = log.clone();
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            let handshake = async {
                let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
                let hello = start.client_hello();
                let sni = hello.server_name().map(str::to_owned);
                let alpn: Vec<String> = hello
                    .alpn()
                    .map(|a| a.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
                    .unwrap_or_default();
                log.push(
                    role.server,
                    local,
                    peer,
                    Kind::TlsSni,
                    format!(
                        "sni={} alpn={}",
                        sni.as_deref().unwrap_or("-"),
                        alpn.join(",")
                    ),
                );
                let tls = start.into_stream(config).await?;
                Ok::<_, std::io::Error>((tls, sni))
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok((tls, sni))) => {
                    let info = ConnInfo {
                        role,
                        log,
                        local,
                        peer,
                        sni,
                    };
                    serve_conn(TokioIo::new(tls), info).await;
                }
                Ok(Err(e)) => tracing::debug!("{}: TLS from {peer} failed: {e}", role.server),
                Err(_) => tracing::debug!("{}: TLS from {peer} timed out", role.server),
            }
        });
    }
}

/// Accepts one connection and logs it; `None` on a transient accept error.
pub(crate) async fn accept(
    listener: &TcpListener,
    server: &'static str,
    log: &ServerLog,
) -> Option<(TcpStream, SocketAddr, SocketAddr)> {
    match listener.accept().await {
        Ok((stream, peer)) => {
            let local = stream.local_addr().ok()?;
            let _ = stream.set_nodelay(true);
            log.push(server, local, peer, Kind::TcpAccept, String::new());
            Some((stream, local, peer))
        }
        Err(e) => {
            tracing::warn!("{server}: accept failed: {e}");
            // Back off on e.g. EMFILE instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

async fn serve_conn<I>(io: TokioIo<I>, info: ConnInfo)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT);
    let peer = info.peer;
    let server = info.role.server;
    let service = service_fn(move |req| handle(Arc::clone(&info), req));
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!("{server}: connection from {peer} ended: {e}");
    }
}
