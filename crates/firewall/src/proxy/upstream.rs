//! Upstream HTTPS for intercepted connections: a pooled hyper client per sandbox whose
//! connector resolves names with the firewall's resolver, applies the sandbox's address checks,
//! and verifies the upstream's certificate against the system roots plus configured extras.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_policy::canonicalize;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use super::Shared;
use super::plan::check_dial_addr;
use super::rewrite::ClientBody;
use crate::registry::SandboxEntry;

/// The pooled clients intercepted requests of one sandbox go through: `any` offers h2 and
/// HTTP/1.1 by ALPN; `h1` offers HTTP/1.1 only, for WebSocket upgrades (an HTTP/1.1 mechanism
/// that an h2 connection cannot carry).
#[derive(Debug, Clone)]
pub(crate) struct UpstreamClient {
    pub(crate) any: Client<Connector, ClientBody>,
    pub(crate) h1: Client<Connector, ClientBody>,
}

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read extra root {path}: {message}")]
    ExtraRoot { path: PathBuf, message: String },
    #[error("no usable trust roots for upstream TLS")]
    NoRoots,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client-side TLS configuration for upstreams: system roots plus `extra_roots`.
pub fn upstream_tls_config(
    extra_roots: &[PathBuf],
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system root is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    for path in extra_roots {
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| TlsConfigError::ExtraRoot {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| TlsConfigError::ExtraRoot {
                path: path.clone(),
                message: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| TlsConfigError::ExtraRoot {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsConfigError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Makes the per-sandbox clients.
pub(crate) fn client(shared: &Arc<Shared>, entry: &Arc<SandboxEntry>) -> UpstreamClient {
    let mut h1_tls = (*shared.upstream_tls).clone();
    h1_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let build = |tls: Arc<rustls::ClientConfig>| {
        let connector = Connector {
            shared: Arc::downgrade(shared),
            entry: Arc::downgrade(entry),
            tls,
        };
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(32)
            .build(connector)
    };
    UpstreamClient {
        any: build(Arc::clone(&shared.upstream_tls)),
        h1: build(Arc::new(h1_tls)),
    }
}

/// Dials `https://name:port` for one sandbox.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    shared: Weak<Shared>,
    entry: Weak<SandboxEntry>,
    tls: Arc<rustls::ClientConfig>,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamTls>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let shared = self.shared.upgrade();
        let entry = self.entry.upgrade();
        let tls_config = Arc::clone(&self.tls);
        Box::pin(async move {
            let (Some(shared), Some(entry)) = (shared, entry) else {
                return Err(err("the sandbox is gone"));
            };
            let host = uri.host().ok_or_else(|| err("no host in upstream URI"))?;
            let port = uri.port_u16().unwrap_or(443);
            let name = canonicalize(host.as_bytes())
                .map_err(|e| err(format!("bad upstream name: {e}")))?;
            let resolved = shared
                .resolver
                .lookup_ipv4(&name)
                .await
                .map_err(|e| err(format!("cannot resolve {}: {e}", name.as_str())))?;
            let policy = entry.policy();
            let mut last = format!("{} has no usable IPv4 address", name.as_str());
            for a in resolved.addrs {
                let ip = IpAddr::V4(a);
                if let Err(r) = check_dial_addr(&policy, ip, shared.is_own(ip)) {
                    last = format!("{} resolves to a refused address ({r})", name.as_str());
                    continue;
                }
                let addr = SocketAddr::new(ip, port);
                let tcp = match tokio::time::timeout(
                    shared.limits.connect_timeout(),
                    TcpStream::connect(addr),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        last = format!("cannot connect to {addr}: {e}");
                        continue;
                    }
                    Err(_) => {
                        last = format!("timed out connecting to {addr}");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let server_name = ServerName::try_from(name.as_str().to_owned())
                    .map_err(|e| err(format!("bad server name: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls_config));
                // A server that accepts and then says nothing must not hold the request forever.
                let tls = tokio::time::timeout(
                    shared.limits.connect_timeout(),
                    connector.connect(server_name, tcp),
                )
                .await
                .map_err(|_| err(format!("TLS with {} ({addr}) timed out", name.as_str())))?
                .map_err(|e| err(format!("TLS with {} ({addr}) failed: {e}", name.as_str())))?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                return Ok(TokioIo::new(UpstreamTls { inner: tls, h2 }));
            }
            Err(err(last))
        })
    }
}

/// A verified TLS connection to an upstream.
#[derive(Debug)]
pub(crate) struct UpstreamTls {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    h2: bool,
}

impl Connection for UpstreamTls {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl AsyncRead for UpstreamTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

crate::delegate::delegate_async_write!(impl[] UpstreamTls);
