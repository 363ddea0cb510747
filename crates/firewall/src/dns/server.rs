//! The UDP and TCP listeners: framing, bounds, and one task per query or connection.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use super::DnsView;
use super::batch::{RecvBatch, SendBatch};
use super::limits::{DnsLimits, SlotGuard, Slots};
use super::query::{Origin, Responder, Transport};
use super::rate::{Rates, Take};
use crate::resolve::UpstreamResolver;

/// The filtering DNS server, bound but not yet serving.
#[derive(Debug)]
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    responder: Arc<Responder>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr`. With port 0 both get the same ephemeral port when one is
    /// free on both; otherwise they differ, and [`udp_addr`](Self::udp_addr) and
    /// [`tcp_addr`](Self::tcp_addr) say which.
    pub async fn bind(
        addr: SocketAddr,
        view: Arc<dyn DnsView>,
        resolver: Arc<UpstreamResolver>,
        limits: DnsLimits,
    ) -> io::Result<DnsServer> {
        let (udp, tcp) = bind_pair(addr).await?;
        grow_recv_buffer(&udp);
        Ok(DnsServer {
            udp_addr: udp.local_addr()?,
            tcp_addr: tcp.local_addr()?,
            udp,
            tcp,
            responder: Arc::new(Responder {
                view,
                resolver,
                limits,
            }),
        })
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Serves until the future is dropped; every query and connection task ends with it.
    pub async fn run(self) {
        let limits = &self.responder.limits;
        let queries = Slots::new(limits.max_inflight_per_source, limits.max_inflight);
        // One bucket per source for UDP and TCP together.
        let rates = Rates::new(
            limits.queries_per_second_per_source,
            limits.query_burst_per_source,
        );
        let udp = serve_udp(
            Arc::new(self.udp),
            self.udp_addr,
            Arc::clone(&self.responder),
            queries.clone(),
            rates.clone(),
        );
        let tcp = serve_tcp(self.tcp, self.tcp_addr, self.responder, queries, rates);
        tokio::join!(udp, tcp);
    }

    /// Runs the server on the current tokio runtime until the handle is dropped.
    pub fn spawn(self) -> DnsServerHandle {
        DnsServerHandle(tokio::spawn(self.run()))
    }
}

/// A running server; dropping it stops the server.
#[derive(Debug)]
pub struct DnsServerHandle(JoinHandle<()>);

impl Drop for DnsServerHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((UdpSocket::bind(addr).await?, TcpListener::bind(addr).await?));
    }
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await?;
        let same = SocketAddr::new(addr.ip(), udp.local_addr()?.port());
        if let Ok(tcp) = TcpListener::bind(same).await {
            return Ok((udp, tcp));
        }
    }
    Ok((UdpSocket::bind(addr).await?, TcpListener::bind(addr).await?))
}

/// Receive queue of the UDP socket, in bytes (about 4,000 queries). Every sandbox's queries
/// wait in this one queue, so it must absorb a burst while the loop drops what is over a
/// source's rate (the kernel's per-sandbox limit, in nftables, keeps a flood out of it).
const UDP_RECV_BUFFER: usize = 4 << 20;

/// As root `SO_RCVBUFFORCE` passes the system's `rmem_max` (212992 by default); otherwise the
/// buffer is capped there.
fn grow_recv_buffer(udp: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if let Err(e) = setsockopt(udp, sockopt::RcvBufForce, &UDP_RECV_BUFFER) {
        tracing::debug!(error = %e, "SO_RCVBUFFORCE refused; the DNS receive queue stays smaller");
        let _ = socket2::SockRef::from(udp).set_recv_buffer_size(UDP_RECV_BUFFER);
    }
}

/// An IPv4 client seen through a dual-stack socket is the IPv4 address, for the view.
/// What a receive or accept got; on an error (usually out of descriptors) logs it and backs off
/// for `pause` first, so a lasting error cannot spin the serving loop.
async fn or_back_off<T>(got: io::Result<T>, what: &str, pause: Duration) -> Option<T> {
    match got {
        Ok(got) => Some(got),
        Err(e) => {
            tracing::warn!(error = %e, "DNS {what} failed");
            tokio::time::sleep(pause).await;
            None
        }
    }
}

fn client_ip(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

async fn serve_udp(
    sock: Arc<UdpSocket>,
    server: SocketAddr,
    responder: Arc<Responder>,
    slots: Slots,
    rates: Rates,
) {
    let mut tasks = JoinSet::new();
    let mut received = RecvBatch::new();
    let mut replies = SendBatch::default();
    loop {
        while tasks.try_join_next().is_some() {}
        let got = received.recv(&sock).await;
        if or_back_off(got, "UDP receive", Duration::from_millis(10))
            .await
            .is_none()
        {
            continue;
        }
        for (packet, peer) in received.datagrams() {
            let origin = Origin {
                src: client_ip(peer),
                server,
                transport: Transport::Udp,
            };
            let query = Datagram {
                packet,
                peer,
                origin,
            };
            if let Some(reply) = query.answer_now(&sock, &responder, &slots, &rates, &mut tasks) {
                replies.push(reply, peer);
            }
        }
        replies.flush(&sock).await;
    }
}

/// One datagram of a received batch.
struct Datagram<'a> {
    packet: &'a [u8],
    peer: SocketAddr,
    origin: Origin,
}

impl Datagram<'_> {
    /// The answer when it is ready at once; a query that waits for the upstream resolver gets
    /// a task of its own in `tasks`, which sends its answer itself.
    fn answer_now(
        self,
        sock: &Arc<UdpSocket>,
        responder: &Arc<Responder>,
        slots: &Slots,
        rates: &Rates,
        tasks: &mut JoinSet<()>,
    ) -> Option<Vec<u8>> {
        let Datagram {
            packet,
            peer,
            origin,
        } = self;
        let src = origin.src;
        // First, before the packet is even parsed: a source over its rate costs this lookup
        // and nothing else, so its flood cannot outrun this loop and fill the socket's receive
        // queue, where the other sandboxes' queries wait.
        if let Take::Over { report } = rates.take(src, Instant::now()) {
            if let Some(dropped) = report {
                responder.report_over_rate(origin, dropped);
            }
            return None;
        }
        let Some(slot) = slots.try_acquire(src) else {
            tracing::debug!(%src, "DNS query dropped: too many in flight");
            return None;
        };
        let packet = packet.to_vec();
        let task_responder = Arc::clone(responder);
        let span = tracing::debug_span!("dns", %src, transport = "udp");
        let mut answer = Box::pin(
            async move {
                let _slot = slot;
                task_responder.respond(&packet, origin).await
            }
            .instrument(span),
        );
        // Denied names, refusals and cached answers need nothing to wait for: answer them here,
        // on this task, instead of handing each query to a new task that may wait for the other
        // worker thread (on a shared CPU, for a whole scheduler slice). Only a query that waits
        // for the upstream resolver gets a task of its own.
        match poll_once(&mut answer) {
            Poll::Ready(response) => response,
            Poll::Pending => {
                let sock = Arc::clone(sock);
                tasks.spawn(async move {
                    if let Some(response) = answer.await {
                        send_reply(&sock, &response, peer).await;
                    }
                });
                None
            }
        }
    }
}

/// Polls `fut` once, without a waker: a future that is not ready at once is polled again (with
/// its task's waker) by whoever takes it over, as the `Future` contract requires.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(fut).poll(&mut cx)
}

async fn send_reply(sock: &UdpSocket, response: &[u8], peer: SocketAddr) {
    // Usually the socket has room and this returns without waiting.
    let sent = match sock.try_send_to(response, peer) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.send_to(response, peer).await,
        other => other,
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "DNS UDP send failed");
    }
}

async fn serve_tcp(
    listener: TcpListener,
    server: SocketAddr,
    responder: Arc<Responder>,
    queries: Slots,
    rates: Rates,
) {
    let limits = &responder.limits;
    let conns = Slots::new(
        limits.max_tcp_connections_per_source,
        limits.max_tcp_connections,
    );
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = listener.accept().await;
        let Some((stream, peer)) =
            or_back_off(accepted, "TCP accept", Duration::from_millis(50)).await
        else {
            continue;
        };
        let src = client_ip(peer);
        let Some(conn_slot) = conns.try_acquire(src) else {
            tracing::debug!(%src, "DNS TCP connection refused: too many open");
            continue;
        };
        let origin = Origin {
            src,
            server,
            transport: Transport::Tcp,
        };
        let span = tracing::debug_span!("dns", %src, transport = "tcp");
        tasks.spawn(
            serve_conn(
                stream,
                origin,
                Arc::clone(&responder),
                queries.clone(),
                rates.clone(),
                conn_slot,
            )
            .instrument(span),
        );
    }
}

/// Length-prefixed queries (RFC 1035 §4.2.2, RFC 7766), answered in order, until the client
/// closes, idles past the limit, or breaks a bound.
async fn serve_conn(
    mut stream: TcpStream,
    origin: Origin,
    responder: Arc<Responder>,
    queries: Slots,
    rates: Rates,
    _conn_slot: SlotGuard,
) {
    let idle = responder.limits.tcp_idle_timeout;
    let max_len = usize::from(responder.limits.max_tcp_message);
    loop {
        let mut prefix = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut prefix)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!("DNS TCP connection idle, closed");
                return;
            }
        }
        let len = usize::from(u16::from_be_bytes(prefix));
        if len == 0 || len > max_len {
            tracing::debug!(len, "DNS TCP message length out of bounds, closed");
            return;
        }
        let mut packet = vec![0u8; len];
        if !matches!(
            tokio::time::timeout(idle, stream.read_exact(&mut packet)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let response = if let Take::Over { report } = rates.take(origin.src, Instant::now()) {
            if let Some(dropped) = report {
                responder.report_over_rate(origin, dropped);
            }
            responder.refuse(&packet)
        } else {
            let Some(_slot) = queries.try_acquire(origin.src) else {
                tracing::debug!("DNS TCP query over the in-flight limit, closed");
                return;
            };
            responder.respond(&packet, origin).await
        };
        let Some(response) = response else {
            return;
        };
        let Ok(rlen) = u16::try_from(response.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(response.len() + 2);
        out.extend_from_slice(&rlen.to_be_bytes());
        out.extend_from_slice(&response);
        if !matches!(
            tokio::time::timeout(idle, stream.write_all(&out)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}
