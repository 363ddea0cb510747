//! The transparent proxy. nftables redirects every TCP connection from a sandbox here; the proxy
//! finds the sandbox by source address and the original destination with SO_ORIGINAL_DST, peeks
//! at the first bytes for a name, asks the compiled policy, and then tunnels, serves HTTP per
//! request, or refuses.

mod budgeted;
mod framing;
mod held;
mod http;
mod intercept;
mod local;
mod peek;
pub mod plan;
mod relay;
mod rewrite;
mod scrub;
mod upstream;

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use palisade_policy::CanonicalName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::Instrument;

use crate::budget::{Dir, Tally};
use crate::config::Limits;
use crate::events::{EgressEvent, EventKind, EventVerdict};
use crate::hold::HoldKind;
use crate::registry::{Registry, SandboxEntry};
use crate::resolve::UpstreamResolver;

pub use local::LocalAddrs;
use peek::{Peeked, peek};
use plan::{Plan, Recheck, check_dial_addr, plan_name, plan_nameless, plan_tls};
use relay::{BufferPool, RelayEnd, relay};
pub(crate) use upstream::UpstreamClient;
pub use upstream::{TlsConfigError, upstream_tls_config};

/// How long a client may stay silent before a name-less destination that the policy allows is
/// dialled anyway, for protocols where the server speaks first (SMTP, MySQL, some SSH clients).
const SERVER_FIRST_WAIT: Duration = Duration::from_millis(300);

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    registry: Arc<Registry>,
    resolver: Arc<UpstreamResolver>,
    limits: Limits,
    local: Arc<LocalAddrs>,
    pool: BufferPool,
    upstream_tls: Arc<rustls::ClientConfig>,
}

impl Shared {
    /// The firewall host's own addresses and sandbox addresses are never dialled on a
    /// sandbox's behalf unless `allow_cidrs` says so.
    fn is_own(&self, ip: IpAddr) -> bool {
        self.local.contains(ip) || self.registry.by_addr(ip).is_some()
    }
}

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
                    tokio::spawn(async move { handle(shared, stream, peer).await });
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

/// Runs arbitrary client bytes through the intercepted request path (the fuzz target's body);
/// panics if a forwarded request breaks an invariant. Returns how many requests were forwarded.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn intercept_harness_run(data: &[u8]) -> usize {
    intercept::harness::run(data).len()
}

/// The TLS record type of a handshake: the first byte of a ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;
/// After a 400 for a malformed request: how long and how much of the client's remaining bytes
/// are read and dropped before the socket closes.
const MALFORMED_LINGER: Duration = Duration::from_secs(1);
const MALFORMED_DRAIN_BYTES: usize = 64 * 1024;

/// Closes with a TCP reset, so the client fails at once rather than waiting.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

fn original_dst(stream: &TcpStream) -> io::Result<SocketAddrV4> {
    let addr = socket2::SockRef::from(stream).original_dst_v4()?;
    addr.as_socket_ipv4().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not IPv4",
        )
    })
}

/// One accepted connection: who it belongs to and where it was going.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    shared: Arc<Shared>,
    entry: Arc<SandboxEntry>,
    orig: SocketAddrV4,
    /// The name the original destination stands for, when it is one of the sandbox's
    /// synthetic addresses: "the original destination" is then where that name resolves.
    synthetic: Option<CanonicalName>,
    started: Instant,
}

impl Conn {
    fn event(
        &self,
        kind: EventKind,
        verdict: EventVerdict,
        rule: &str,
        reason: impl Into<String>,
    ) -> EgressEvent {
        let mut e = EgressEvent::new(self.entry.id().as_ref(), kind, verdict);
        e.dst = Some(SocketAddr::V4(self.orig));
        e.rule = rule.to_owned();
        e.reason = reason.into();
        e.duration = self.started.elapsed();
        e
    }

    fn record(&self, event: EgressEvent) {
        self.shared.registry.event_log().record(event);
    }

    fn deny(&self, stream: TcpStream, name: Option<&str>, rule: &str, reason: impl Into<String>) {
        let mut e = self.event(EventKind::Tcp, EventVerdict::Deny, rule, reason);
        // Without a name sent, a synthetic destination still says which name was meant.
        e.name = name
            .or(self.synthetic.as_ref().map(CanonicalName::as_str))
            .map(str::to_owned);
        self.record(e);
        reset(stream);
    }

    /// Refuses a first request head that breaks HTTP/1 syntax or framing: records the denial,
    /// answers 400 naming the reason and closes. Nothing was dialled. The rest of what the
    /// client sent is read and dropped for a moment so the close does not turn into a reset
    /// that would discard the answer before the client reads it.
    async fn bad_request(&self, mut stream: TcpStream, why: &'static str) {
        let reason = format!("malformed HTTP request: {why}");
        self.record(self.event(EventKind::Http, EventVerdict::Deny, "malformed", &*reason));
        let body = format!("palisade: {reason}\n");
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let linger = async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut left = MALFORMED_DRAIN_BYTES;
            while left > 0 {
                match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? {
                    0 => break,
                    n => left = left.saturating_sub(n),
                }
            }
            io::Result::Ok(())
        };
        if tokio::time::timeout(MALFORMED_LINGER, linger)
            .await
            .is_err()
        {
            tracing::debug!("client kept sending after a 400 for a malformed request");
        }
    }

    /// Resolves `name` with the firewall's resolver and connects to the first address that
    /// passes the address checks, on the original port.
    async fn dial_name(&self, name: &CanonicalName) -> Result<(TcpStream, IpAddr), String> {
        let candidates = self.resolve_allowed(name).await?;
        let mut last_err = String::new();
        for ip in candidates {
            match self.connect(SocketAddr::new(ip, self.orig.port())).await {
                Ok(s) => return Ok((s, ip)),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Resolves `name` with the firewall's resolver and keeps the addresses that pass the
    /// address checks; an error says why none is left.
    async fn resolve_allowed(&self, name: &CanonicalName) -> Result<Vec<IpAddr>, String> {
        let resolved = self
            .shared
            .resolver
            .lookup_ipv4(name)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", name.as_str()))?;
        let policy = self.entry.policy();
        let mut refusal = None;
        let mut allowed = Vec::with_capacity(resolved.addrs.len());
        for ip in resolved.addrs.into_iter().map(IpAddr::V4) {
            match check_dial_addr(&policy, ip, self.shared.is_own(ip)) {
                Ok(()) => allowed.push(ip),
                Err(r) => refusal = Some(r),
            }
        }
        if allowed.is_empty() {
            return Err(match refusal {
                Some(r) => format!("{} resolves only to refused addresses ({r})", name.as_str()),
                None => format!("{} has no IPv4 address", name.as_str()),
            });
        }
        Ok(allowed)
    }

    /// Connects to the original destination after the address checks. A synthetic address is
    /// never dialled itself: it stands for a name, which must still be allowed, and the name's
    /// own addresses are dialled (the class of each checked as for any name).
    async fn dial_orig(&self) -> Result<(TcpStream, Recheck), String> {
        let Some(name) = &self.synthetic else {
            let ip = IpAddr::V4(*self.orig.ip());
            check_dial_addr(&self.entry.policy(), ip, self.shared.is_own(ip))
                .map_err(|r| format!("{ip}: {r}"))?;
            let stream = self.connect(SocketAddr::V4(self.orig)).await?;
            return Ok((stream, Recheck::Addr { orig: self.orig }));
        };
        self.check_synthetic(name)?;
        let (stream, ip) = self.dial_name(name).await?;
        Ok((
            stream,
            Recheck::Name {
                name: name.clone(),
                ip,
            },
        ))
    }

    /// Refuses a synthetic address whose name the live policy no longer allows.
    fn check_synthetic(&self, name: &CanonicalName) -> Result<(), String> {
        match plan_name(&self.entry.policy(), name) {
            Plan::Deny { reason, .. } => Err(format!(
                "{}: the sandbox's address for {}, which the policy does not allow ({reason})",
                self.orig.ip(),
                name.as_str()
            )),
            _ => Ok(()),
        }
    }

    /// Where the original destination is for HTTP on this connection: the original address,
    /// or for a synthetic one an address of the name it stands for.
    async fn orig_target(&self) -> Result<IpAddr, String> {
        let Some(name) = &self.synthetic else {
            let ip = IpAddr::V4(*self.orig.ip());
            check_dial_addr(&self.entry.policy(), ip, self.shared.is_own(ip))
                .map_err(|r| format!("{ip}: {r}"))?;
            return Ok(ip);
        };
        self.check_synthetic(name)?;
        let allowed = self.resolve_allowed(name).await?;
        allowed
            .first()
            .copied()
            .ok_or_else(|| format!("{} has no IPv4 address", name.as_str()))
    }

    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, String> {
        match tokio::time::timeout(
            self.shared.limits.connect_timeout(),
            TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e}")),
            Err(_) => Err(format!("timed out connecting to {addr}")),
        }
    }

    /// Completes when the sandbox's policy changes so that `recheck` is no longer allowed.
    async fn revoked(&self, recheck: Recheck) {
        let mut rx = self.entry.watch_policy();
        loop {
            if rx.changed().await.is_err() {
                return;
            }
            let ip = match &recheck {
                Recheck::Name { ip, .. } => *ip,
                Recheck::Addr { orig } => IpAddr::V4(*orig.ip()),
            };
            if !recheck.still_allowed(&self.entry.policy(), self.shared.is_own(ip)) {
                return;
            }
        }
    }
}

async fn handle(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let Some(entry) = shared.registry.by_addr(peer.ip()) else {
        tracing::warn!(%peer, "connection from an address that is not a sandbox");
        reset(stream);
        return;
    };
    let orig = match original_dst(&stream) {
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
            "limit",
            "too many open connections for this sandbox",
        );
        return;
    };
    let span = tracing::info_span!("conn", sandbox = %entry.id(), dst = %orig);
    async move {
        if is_synthetic && conn.synthetic.is_none() {
            // Never dialled as such, whatever allow_cidrs says: it means nothing outside.
            let reason = format!(
                "{} is in the synthetic range but was never handed to this sandbox",
                orig.ip()
            );
            conn.deny(stream, None, "synthetic", reason);
            return;
        }
        let _ = stream.set_nodelay(true);
        let policy = entry.policy();
        let nameless = plan_nameless(&policy, orig, conn.synthetic.as_ref(), "connection");
        let quiet = (!matches!(nameless, Plan::Deny { .. })).then_some(SERVER_FIRST_WAIT);
        let mut buf = Vec::new();
        let limits = &shared.limits;
        let peeked = peek(
            &mut stream,
            &mut buf,
            limits.peek_max_bytes,
            limits.peek_timeout(),
            quiet,
        )
        .await;
        match peeked {
            Ok(Peeked::Tls(hello)) => {
                let plan = plan_tls(&policy, hello.sni.as_deref(), hello.ech, orig);
                // With ECH the outer SNI is not where the connection goes: never held.
                let named = hello.sni.as_deref().filter(|_| !hello.ech);
                let plan = held::settle(&conn, plan, named, HoldKind::Tls).await;
                if let Plan::DialName {
                    name,
                    transform: Some(_),
                    ..
                } = plan
                {
                    intercept::serve_intercepted(conn, stream, buf, name).await;
                    return;
                }
                let name = hello
                    .sni
                    .as_deref()
                    .map(|s| String::from_utf8_lossy(s).into_owned());
                tunnel(conn, stream, buf, plan, name).await;
            }
            Ok(Peeked::Http) => http::serve_plain(conn, stream, buf).await,
            Ok(Peeked::Unknown | Peeked::Quiet) => tunnel(conn, stream, buf, nameless, None).await,
            Ok(Peeked::Closed) => {}
            // Bytes that claim to be an HTTP request but break its syntax or framing (threat
            // 19: CL+TE, bare LF, ...) get a 400 that says why; a broken ClientHello a reset.
            Ok(Peeked::Malformed(why)) if buf.first() != Some(&TLS_HANDSHAKE) => {
                conn.bad_request(stream, why).await;
            }
            Ok(Peeked::Malformed(why)) => conn.deny(
                stream,
                None,
                "malformed",
                format!("malformed first bytes: {why}"),
            ),
            Ok(Peeked::TooLarge) => conn.deny(
                stream,
                None,
                "limit",
                "no complete ClientHello or request head within the peek limit",
            ),
            Ok(Peeked::TimedOut) => conn.deny(
                stream,
                None,
                "limit",
                "the destination was not named within the peek timeout",
            ),
            Err(e) => tracing::debug!(error = %e, "client error while peeking"),
        }
    }
    .instrument(span)
    .await;
}

/// Carries out a tunnel plan: dial, replay the peeked bytes, relay.
async fn tunnel(
    conn: Conn,
    stream: TcpStream,
    prefix: Vec<u8>,
    plan: Plan,
    sent_name: Option<String>,
) {
    // Byte budgets: a spent one refuses the tunnel before anything is dialled.
    let tally = tunnel_tally(&conn, &plan);
    if let Some(cut) = tally.as_deref().and_then(Tally::exhausted) {
        conn.deny(stream, sent_name.as_deref(), &cut.rule, cut.reason);
        return;
    }
    let (dialled, recheck, rule, name) = match plan {
        Plan::Deny { rule, reason } => {
            conn.deny(stream, sent_name.as_deref(), &rule, reason);
            return;
        }
        Plan::DialName { name, rule, .. } => match conn.dial_name(&name).await {
            Ok((upstream, ip)) => (
                upstream,
                Recheck::Name {
                    name: name.clone(),
                    ip,
                },
                rule,
                Some(name.as_str().to_owned()),
            ),
            Err(reason) => {
                conn.deny(stream, Some(name.as_str()), &rule, reason);
                return;
            }
        },
        Plan::DialAddr { rule } => match conn.dial_orig().await {
            Ok((upstream, recheck)) => {
                // Through a synthetic address the name is the destination, whatever was sent.
                let name = conn
                    .synthetic
                    .as_ref()
                    .map(|n| n.as_str().to_owned())
                    .or(sent_name);
                (upstream, recheck, rule, name)
            }
            Err(reason) => {
                conn.deny(stream, sent_name.as_deref(), &rule, reason);
                return;
            }
        },
    };
    let mut upstream = dialled;
    if let Some(cut) = tally
        .as_deref()
        .and_then(|t| t.charge(Dir::Sent, prefix.len()).err())
    {
        conn.deny(stream, name.as_deref(), &cut.rule, cut.reason);
        return;
    }
    if !prefix.is_empty()
        && let Err(e) = upstream.write_all(&prefix).await
    {
        let mut ev = conn.event(
            EventKind::Tcp,
            EventVerdict::Allow,
            &rule,
            format!("upstream failed: {e}"),
        );
        ev.name = name;
        conn.record(ev);
        reset(stream);
        return;
    }
    // An idle tunnel should hold no buffers: the peeked bytes are sent, so let them go.
    let prefix_len = prefix.len() as u64;
    drop(prefix);
    tracing::debug!(rule = %rule, "tunnel open");
    let stats = relay(
        stream,
        upstream,
        &conn.shared.pool,
        conn.shared.limits.idle_timeout(),
        conn.revoked(recheck),
        tally.as_deref(),
    )
    .await;
    let reason = match stats.end {
        RelayEnd::Done => "tunnel closed",
        RelayEnd::Idle => "tunnel idle timeout",
        RelayEnd::Revoked => "tunnel closed: the new policy denies it",
        RelayEnd::Error => "tunnel ended with a socket error",
        RelayEnd::Budget => "tunnel closed: a byte budget is spent",
    };
    let cut = tally.as_deref().and_then(Tally::cut_reason);
    let mut ev = match cut.filter(|_| stats.end == RelayEnd::Budget) {
        Some(cut) => conn.event(
            EventKind::Tcp,
            EventVerdict::Deny,
            &cut.rule,
            format!("tunnel closed: {}", cut.reason),
        ),
        None => conn.event(EventKind::Tcp, EventVerdict::Allow, &rule, reason),
    };
    ev.name = name;
    ev.bytes_up = stats.up + prefix_len;
    ev.bytes_down = stats.down;
    conn.record(ev);
}

/// The byte-budget tally of a tunnel: the sandbox's budget, and the domain budget of the name it
/// was allowed for (the SNI, or the name a synthetic address stands for).
fn tunnel_tally(conn: &Conn, plan: &Plan) -> Option<Arc<Tally>> {
    let name = match plan {
        Plan::DialName { name, .. } => Some(name),
        Plan::DialAddr { .. } => conn.synthetic.as_ref(),
        Plan::Deny { .. } => None,
    };
    conn.entry.tally(name)
}
