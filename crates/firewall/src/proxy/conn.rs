//! One accepted connection: the sandbox it belongs to, where it was going, and what every stage
//! after the accept does with it: record events, refuse, resolve and dial under the address
//! checks, and notice when a policy swap revokes it.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use palisade_policy::CanonicalName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Shared;
use super::plan::{Plan, Recheck, check_dial_addr, plan_name};
use crate::decision::RuleRef;
use crate::events::{EgressEvent, EventKind, EventVerdict};
use crate::registry::SandboxEntry;

/// After a 400 for a malformed request: how long and how much of the client's remaining bytes
/// are read and dropped before the socket closes.
const MALFORMED_LINGER: Duration = Duration::from_secs(1);
const MALFORMED_DRAIN_BYTES: usize = 64 * 1024;

/// Closes with a TCP reset, so the client fails at once rather than waiting.
pub(super) fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// One accepted connection: who it belongs to and where it was going.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(super) shared: Arc<Shared>,
    pub(super) entry: Arc<SandboxEntry>,
    pub(super) orig: SocketAddrV4,
    /// The name the original destination stands for, when it is one of the sandbox's
    /// synthetic addresses: "the original destination" is then where that name resolves.
    pub(super) synthetic: Option<CanonicalName>,
    pub(super) started: Instant,
}

impl Conn {
    /// An event about this connection: the one place a decision's reason becomes text.
    pub(super) fn event(
        &self,
        kind: EventKind,
        verdict: EventVerdict,
        rule: &RuleRef,
        reason: impl std::fmt::Display,
    ) -> EgressEvent {
        let mut e = EgressEvent::new(self.entry.id().as_ref(), kind, verdict, rule.clone());
        e.dst = Some(SocketAddr::V4(self.orig));
        e.reason = reason.to_string();
        e.duration = self.started.elapsed();
        e
    }

    pub(super) fn record(&self, event: EgressEvent) {
        self.shared.registry.event_log().record(event);
    }

    pub(super) fn deny(
        &self,
        stream: TcpStream,
        name: Option<&str>,
        rule: &RuleRef,
        reason: impl std::fmt::Display,
    ) {
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
    pub(super) async fn bad_request(&self, mut stream: TcpStream, why: &'static str) {
        let reason = format!("malformed HTTP request: {why}");
        self.record(self.event(
            EventKind::Http,
            EventVerdict::Deny,
            &RuleRef::Malformed,
            &reason,
        ));
        let body = format!("palisade: {reason}\n");
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let linger = async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            // On the heap: an array here would make the future of every connection (they all
            // may take this path) 4 KiB larger for its whole life, idle tunnels included.
            let mut sink = vec![0u8; 4096];
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
    pub(super) async fn dial_name(
        &self,
        name: &CanonicalName,
    ) -> Result<(TcpStream, IpAddr), String> {
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
    pub(super) async fn resolve_allowed(
        &self,
        name: &CanonicalName,
    ) -> Result<Vec<IpAddr>, String> {
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
    pub(super) async fn dial_orig(&self) -> Result<(TcpStream, Recheck), String> {
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
    pub(super) async fn orig_target(&self) -> Result<IpAddr, String> {
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

    pub(super) async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, String> {
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
    pub(super) async fn revoked(&self, recheck: Recheck) {
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
