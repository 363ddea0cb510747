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
    /// Round trips on one connection: 64 bytes out, the same 64 echoed back, one at a time;
    /// prints the p50 and p99 in microseconds.
    Rtt {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        max: u64,
    },
    /// Opens `count` connections, one echo round trip on each, prints `ready`, then holds them
    /// open until stdin closes or `hold_secs` pass.
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        hold_secs: u64,
    },
    /// An echo server for the idle-connection scenario, run in its own process (its sockets
    /// must not count against the firewall process's open-files limit); ends after `secs`.
    EchoServer {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        secs: u64,
    },
}

/// A round-trip run's result, as printed.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RttReport {
    pub(crate) trips: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
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
        Client::Rtt { addr, secs, max } => {
            let line = serde_json::to_string(&rtt(*addr, *secs, *max)?)?;
            writeln!(io::stdout().lock(), "{line}")?;
            return Ok(());
        }
        Client::Idle {
            addr,
            count,
            hold_secs,
        } => return hold_idle(*addr, *count, *hold_secs),
        Client::EchoServer { listen, secs } => return echo_server(*listen, *secs),
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

/// Round trips of [`PING`] on one connection, back to back, until `secs` or `max`.
fn rtt(addr: SocketAddr, secs: f64, max: u64) -> Result<RttReport> {
    let limit = Duration::try_from_secs_f64(secs).context("duration")?;
    let mut s = connect(addr)?;
    let mut back = [0u8; PING.len()];
    let mut trips: Vec<u64> = Vec::new();
    let start = Instant::now();
    while (trips.len() as u64) < max && start.elapsed() < limit {
        let t = Instant::now();
        s.write_all(&PING)?;
        s.read_exact(&mut back).context("reading the echo")?;
        trips.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        if back != PING {
            bail!("echo returned different bytes");
        }
    }
    if trips.len() < 100 {
        bail!("only {} round trips", trips.len());
    }
    // The first trips warm caches and the path: drop them.
    let mut warm = trips.split_off(trips.len() / 10);
    warm.sort_unstable();
    let at = |q: f64| warm[((warm.len() - 1) as f64 * q) as usize] as f64 / 1e3;
    Ok(RttReport {
        trips: warm.len() as u64,
        p50_us: at(0.50),
        p99_us: at(0.99),
    })
}

/// Opens `count` connections with one echo each, says `ready`, holds them until stdin closes.
fn hold_idle(addr: SocketAddr, count: usize, hold_secs: u64) -> Result<()> {
    let mut open = Vec::with_capacity(count);
    for i in 0..count {
        let s = echo_open(addr).with_context(|| format!("connection {i} of {count}"))?;
        open.push(s);
    }
    writeln!(io::stdout().lock(), "ready {}", open.len())?;
    io::stdout().flush()?;
    // Parent closes stdin (or dies) to end the hold; a watchdog bounds it in time.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(hold_secs));
        std::process::exit(0);
    });
    let mut sink = Vec::new();
    let _ = io::stdin().read_to_end(&mut sink);
    drop(open);
    Ok(())
}

fn echo_open(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = connect(addr)?;
    s.write_all(&PING)?;
    let mut back = [0u8; PING.len()];
    s.read_exact(&mut back).context("reading the echo")?;
    if back != PING {
        bail!("echo returned different bytes");
    }
    Ok(s)
}

/// Echoes every connection on a single-threaded runtime until `secs` pass.
fn echo_server(listen: SocketAddr, secs: u64) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        writeln!(io::stdout().lock(), "listening")?;
        io::stdout().flush()?;
        let serve = async {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(secs), serve).await;
        anyhow::Ok(())
    })
}
