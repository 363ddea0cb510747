//! Load generators this binary runs as a separate process inside a client namespace
//! (`ip netns exec <ns> taskset -c 1 palisade-bench client …`), so their CPU is not the
//! firewall's. Each is bounded in count and time and prints one JSON line.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};

/// Per-socket I/O timeout: a stuck peer fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// A run gives up after this many failed connections.
const MAX_ERRORS: u64 = 20;
/// What the plain-TCP client sends and expects echoed. Its first byte is neither a TLS record
/// type nor an HTTP method letter, so the proxy classifies it as a name-less protocol at once.
const PING: [u8; 64] = {
    let mut b = [b'.'; 64];
    b[0] = 0;
    b
};

#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum Client {
    /// New TCP connections: connect, 64-byte echo round trip, close; sequentially.
    Conns {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        max: u64,
    },
    /// New TLS connections: connect, full handshake with SNI, one GET, close; sequentially.
    Tls {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        max: u64,
    },
}

/// One client run's result, as printed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClientReport {
    pub(crate) conns: u64,
    pub(crate) errors: u64,
    pub(crate) secs: f64,
}

pub(crate) fn run(client: &Client) -> Result<()> {
    let report = match client {
        Client::Conns { addr, secs, max } => {
            repeat(*secs, *max, || echo_once(*addr)).context("plain TCP client")?
        }
        Client::Tls {
            addr,
            name,
            ca,
            secs,
            max,
        } => {
            let config = tls_config(ca)?;
            let server = ServerName::try_from(name.clone()).context("server name")?;
            repeat(*secs, *max, || tls_once(*addr, &config, &server)).context("TLS client")?
        }
    };
    let line = serde_json::to_string(&report)?;
    writeln!(io::stdout().lock(), "{line}")?;
    Ok(())
}

/// Runs `once` until `secs` or `max` connections, whichever first; fails after too many errors.
fn repeat(secs: f64, max: u64, mut once: impl FnMut() -> Result<()>) -> Result<ClientReport> {
    let limit = Duration::try_from_secs_f64(secs).context("duration")?;
    let start = Instant::now();
    let (mut conns, mut errors) = (0u64, 0u64);
    let mut last_error = None;
    while conns < max && start.elapsed() < limit {
        match once() {
            Ok(()) => conns += 1,
            Err(e) => {
                errors += 1;
                last_error = Some(e);
                if errors >= MAX_ERRORS {
                    break;
                }
            }
        }
    }
    if let Some(e) = last_error
        && errors >= MAX_ERRORS
    {
        return Err(e.context(format!("{errors} failed connections")));
    }
    Ok(ClientReport {
        conns,
        errors,
        secs: start.elapsed().as_secs_f64(),
    })
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn echo_once(addr: SocketAddr) -> Result<()> {
    let mut s = connect(addr)?;
    s.write_all(&PING)?;
    let mut back = [0u8; PING.len()];
    s.read_exact(&mut back).context("reading the echo")?;
    if back != PING {
        bail!("echo returned different bytes");
    }
    Ok(())
}

fn tls_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("reading the CA file")? {
        roots.add(cert.context("CA PEM")?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Every connection is a full handshake, as a new client process would make.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

fn tls_once(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    server: &ServerName<'static>,
) -> Result<()> {
    let tcp = connect(addr)?;
    let conn = rustls::ClientConnection::new(Arc::clone(config), server.clone())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let host = server.to_str();
    write!(
        tls,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    tls.flush()?;
    let mut body = Vec::with_capacity(4096);
    match tls.read_to_end(&mut body) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete response is fine here.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !body.is_empty() => {}
        Err(e) => return Err(e).context("reading the response"),
    }
    if !body.starts_with(b"HTTP/1.1 200") {
        bail!("unexpected response");
    }
    Ok(())
}
