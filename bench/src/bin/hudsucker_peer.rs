//! hudsucker as a bench peer (issue 7, scenario 4e): an explicit (CONNECT) intercepting proxy
//! whose leaf certificates an `RcgenAuthority` signs with the measured sandbox's CA, which strips
//! the client's `Authorization` and sets the secret from `BENCH_SECRET`, and which verifies the
//! upstream against the testbed CA only. Every upstream name resolves to `--upstream` (the bench
//! namespace `fw` has no resolver for the test names). One tokio worker thread.

#![forbid(unsafe_code)]

use std::future::Ready;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result, bail};
use clap::Parser;
use http::HeaderValue;
use http::header::AUTHORIZATION;
use hudsucker::certificate_authority::RcgenAuthority;
use hudsucker::hyper::{Request, Response};
use hudsucker::hyper_util::client::legacy::connect::HttpConnector;
use hudsucker::hyper_util::client::legacy::connect::dns::Name;
use hudsucker::rcgen::{Issuer, KeyPair};
use hudsucker::rustls::{self, ClientConfig, RootCertStore};
use hudsucker::{Body, HttpContext, HttpHandler, Proxy, RequestOrResponse};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on for proxy clients.
    #[arg(long)]
    listen: SocketAddr,
    /// PEM certificate of the CA that signs the leaves presented to clients.
    #[arg(long)]
    ca_cert: PathBuf,
    /// PEM private key of that CA.
    #[arg(long)]
    ca_key: PathBuf,
    /// PEM roots the upstream must chain to (only these).
    #[arg(long)]
    upstream_ca: PathBuf,
    /// The address every upstream name resolves to.
    #[arg(long)]
    upstream: IpAddr,
    /// The host whose requests get the secret; others are forwarded unchanged.
    #[arg(long)]
    host: String,
}

/// Strips the client's Authorization and sets the secret on requests to `host`.
#[derive(Clone)]
struct Inject {
    host: Arc<str>,
    secret: HeaderValue,
}

impl std::fmt::Debug for Inject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inject")
            .field("host", &self.host)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl HttpHandler for Inject {
    async fn handle_request(
        &mut self,
        _ctx: &HttpContext,
        mut req: Request<Body>,
    ) -> RequestOrResponse {
        if req.uri().host() == Some(&*self.host) {
            let headers = req.headers_mut();
            headers.remove(AUTHORIZATION);
            headers.insert(AUTHORIZATION, self.secret.clone());
        }
        req.into()
    }

    async fn handle_response(&mut self, _ctx: &HttpContext, res: Response<Body>) -> Response<Body> {
        res
    }
}

/// Resolves every name to one fixed address (the connector sets the port).
#[derive(Debug, Clone, Copy)]
struct Fixed(IpAddr);

impl tower_service::Service<Name> for Fixed {
    type Response = std::iter::Once<SocketAddr>;
    type Error = std::io::Error;
    type Future = Ready<std::io::Result<Self::Response>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _name: Name) -> Self::Future {
        std::future::ready(Ok(std::iter::once(SocketAddr::new(self.0, 443))))
    }
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let secret = std::env::var("BENCH_SECRET").context("BENCH_SECRET is not set")?;
    let mut secret = HeaderValue::from_str(&secret)
        .map_err(|_| anyhow::anyhow!("BENCH_SECRET is not a valid header value"))?;
    secret.set_sensitive(true);

    let key = KeyPair::from_pem(&read(&args.ca_key)?).context("parsing the CA key")?;
    let issuer =
        Issuer::from_ca_cert_pem(&read(&args.ca_cert)?, key).context("parsing the CA cert")?;
    let provider = rustls::crypto::ring::default_provider;
    let ca = RcgenAuthority::new(issuer, 1_000, provider());

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.upstream_ca)
        .with_context(|| format!("reading {}", args.upstream_ca.display()))?
    {
        roots
            .add(cert.context("parsing an upstream root")?)
            .context("adding an upstream root")?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", args.upstream_ca.display());
    }
    let tls = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(Fixed(args.upstream));
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let proxy = Proxy::builder()
            .with_addr(args.listen)
            .with_ca(ca)
            .with_http_connector(https)
            .with_http_handler(Inject {
                host: args.host.into(),
                secret,
            })
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .build()
            .context("building the proxy")?;
        proxy.start().await.context("proxy")
    })
}
