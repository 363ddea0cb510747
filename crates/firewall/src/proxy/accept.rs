//! The first stage: the listener, and each accepted connection given its context.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::Instrument;

use super::conn::{Conn, reset};
use super::dispatch::dispatch;
use super::relay::BufferPool;
use super::{LocalAddrs, Shared};
use crate::config::Limits;
use crate::decision::RuleRef;
use crate::registry::Registry;
use crate::resolve::UpstreamResolver;

/// The transparent proxy's listener.
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Proxy {
    pub async fn bind(
        addr: SocketAddr,
        registry: Arc<Registry>,
        resolver: Arc<UpstreamResolver>,
        limits: Limits,
        local: Arc<LocalAddrs>,
        upstream_tls: Arc<rustls::ClientConfig>,
    ) -> io::Result<Self> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?;
        let pool = BufferPool::new(limits.relay_buffer_bytes, limits.relay_splice);
        Ok(Self {
            listener,
            shared: Arc::new(Shared {
                registry,
                resolver,
                limits,
                local,
                pool,
                upstream_tls,
            }),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until the task is dropped.
    pub async fn run(self) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let shared = Arc::clone(&self.shared);
                    tokio::spawn(async move { accept(shared, stream, peer).await });
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// From the accept to a connection with its context: the sandbox by source address, the
/// original destination, a synthetic address's name, a slot under the connection cap.
async fn accept(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let Some(entry) = shared.registry.by_addr(peer.ip()) else {
        tracing::warn!(%peer, "connection from an address that is not a sandbox");
        reset(stream);
        return;
    };
    let orig = match palisade_netns::original_dst(&stream) {
        Ok(orig) => orig,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "no original destination");
            reset(stream);
            return;
        }
    };
    let is_synthetic = shared.registry.is_synthetic(*orig.ip());
    let conn = Conn {
        shared: Arc::clone(&shared),
        entry: Arc::clone(&entry),
        orig,
        synthetic: is_synthetic
            .then(|| entry.synthetic_name(*orig.ip()))
            .flatten(),
        started: Instant::now(),
    };
    let Some(_slot) = entry.try_acquire_connection(shared.limits.max_connections_per_sandbox)
    else {
        conn.deny(
            stream,
            None,
            &RuleRef::Limit,
            "too many open connections for this sandbox",
        );
        return;
    };
    let span = tracing::info_span!("conn", sandbox = %entry.id(), dst = %orig);
    dispatch(conn, stream, is_synthetic).instrument(span).await;
}
