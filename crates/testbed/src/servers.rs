//! Binds every upstream server inside the internet namespace and spawns its task.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::net::{TcpListener, UdpSocket};
use tokio::runtime::Runtime;

use crate::addrs::*;
use crate::ca::{SniResolver, TestCa};
use crate::dns::{self, DnsZone};
use crate::http::{HttpRole, serve_http, serve_https, tls_config};
use crate::log::ServerLog;
use crate::tcp::{TcpRole, serve_tcp, serve_udp};

/// How long binding may take before the world gives up.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);

const GOOD: HttpRole = HttpRole {
    server: "good",
    extras: true,
    log_bodies: false,
};
const SHARED: HttpRole = HttpRole {
    server: "shared",
    extras: true,
    log_bodies: false,
};
const ATTACKER: HttpRole = HttpRole {
    server: "attacker",
    extras: false,
    log_bodies: true,
};

fn plain(server: &'static str) -> HttpRole {
    HttpRole {
        server,
        extras: false,
        log_bodies: false,
    }
}

async fn tcp(ip: impl Into<IpAddr>, port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::new(ip.into(), port);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding tcp {addr}"))
}

async fn udp(ip: impl Into<IpAddr>, port: u16) -> Result<UdpSocket> {
    let addr = SocketAddr::new(ip.into(), port);
    UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding udp {addr}"))
}

/// Binds everything on the runtime's threads (which live in the internet namespace), spawns
/// the servers, and returns once all listen, or with the first bind error.
pub(crate) fn start(rt: &Runtime, ca: &Arc<TestCa>, zone: &DnsZone, log: &ServerLog) -> Result<()> {
    let good_tls = tls_config(SniResolver::new(Arc::clone(ca), &GOOD_NAMES)?)?;
    let attacker_tls = tls_config(SniResolver::new(Arc::clone(ca), &ATTACKER_NAMES)?)?;
    let shared_tls = tls_config(SniResolver::new(Arc::clone(ca), &SHARED_NAMES)?)?;
    let (zone, log) = (zone.clone(), log.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let result = async {
            // The named web hosts: HTTPS on 443 (certificates for their names) and HTTP on 80.
            let web = [
                (GOOD_V4, GOOD, good_tls),
                (ATTACKER_V4, ATTACKER, attacker_tls),
                (SHARED_V4, SHARED, shared_tls),
            ];
            for (ip, role, tls) in web {
                tokio::spawn(serve_https(tcp(ip, 443).await?, role, tls, log.clone()));
                tokio::spawn(serve_http(tcp(ip, 80).await?, role, log.clone()));
            }
            for port in ATTACKER_SINK_PORTS {
                tokio::spawn(serve_tcp(
                    tcp(ATTACKER_V4, port).await?,
                    "attacker",
                    TcpRole::Sink,
                    log.clone(),
                ));
            }
            for port in ATTACKER_UDP_PORTS {
                tokio::spawn(serve_udp(
                    udp(ATTACKER_V4, port).await?,
                    "attacker",
                    false,
                    log.clone(),
                ));
            }
            tokio::spawn(serve_http(
                tcp(ECHO_V4, 80).await?,
                plain("echo"),
                log.clone(),
            ));
            let tcp_servers = [
                (SHARED_V4, 7, "shared-echo", TcpRole::Echo),
                (SHARED_V4, 22, "shared-ssh", TcpRole::Banner(SSH_BANNER)),
                (TCP_V4, 7, "tcp", TcpRole::Echo),
                (TCP_V4, 9, "tcp", TcpRole::Sink),
                (TCP_V4, 22, "tcp", TcpRole::Banner(SSH_BANNER)),
            ];
            for (ip, port, server, role) in tcp_servers {
                tokio::spawn(serve_tcp(tcp(ip, port).await?, server, role, log.clone()));
            }
            tokio::spawn(serve_udp(udp(TCP_V4, 7).await?, "tcp", true, log.clone()));
            tokio::spawn(dns::serve_udp(
                udp(DNS_V4, 53).await?,
                zone.clone(),
                log.clone(),
            ));
            tokio::spawn(dns::serve_tcp(
                tcp(DNS_V4, 53).await?,
                zone.clone(),
                log.clone(),
            ));
            tokio::spawn(serve_http(
                tcp(PRIVATE_V4, 80).await?,
                plain("private"),
                log.clone(),
            ));
            tokio::spawn(serve_http(
                tcp(METADATA_V4, 80).await?,
                plain("metadata"),
                log.clone(),
            ));
            tokio::spawn(serve_http(
                tcp(V6_HOST, 80).await?,
                plain("v6"),
                log.clone(),
            ));
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let _ = tx.send(result);
    });
    rx.recv_timeout(BIND_TIMEOUT)
        .map_err(|_| anyhow!("servers did not start within {BIND_TIMEOUT:?}"))?
}
