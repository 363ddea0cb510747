//! Raw TCP and UDP servers: echo, sink, SSH-like banner. Each logs every byte it receives.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::http::accept;
use crate::log::{Kind, ServerLog};

/// A connection silent this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a TCP server does with a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TcpRole {
    /// Sends back what it reads.
    Echo,
    /// Reads and logs, never writes.
    Sink,
    /// Sends a banner first, then behaves as a sink.
    Banner(&'static [u8]),
}

pub(crate) async fn serve_tcp(
    listener: TcpListener,
    server: &'static str,
    role: TcpRole,
    log: ServerLog,
) {
    loop {
        let Some((mut stream, local, peer)) = accept(&listener, server, &log).await else {
            continue;
        };
        let log = log.clone();
        tokio::spawn(async move {
            if let TcpRole::Banner(banner) = role
                && stream.write_all(banner).await.is_err()
            {
                return;
            }
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => n,
                };
                log.push_data(server, local, peer, Kind::Bytes, &buf[..n]);
                if matches!(role, TcpRole::Echo) && stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

pub(crate) async fn serve_udp(socket: UdpSocket, server: &'static str, echo: bool, log: ServerLog) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("{server}: udp recv failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        log.push_data(server, local, peer, Kind::Udp, &buf[..n]);
        if echo {
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    }
}
