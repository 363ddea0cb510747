//! The in-memory log every upstream server writes to, so tests can prove what reached whom.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most entries kept; later ones are counted in [`ServerLog::dropped`] instead of stored.
const MAX_ENTRIES: usize = 200_000;
/// Most raw bytes kept across all entries; beyond it entries keep their length, not their bytes.
const MAX_DATA_BYTES: usize = 64 << 20;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A TCP connection was accepted.
    TcpAccept,
    /// A TLS ClientHello arrived; `detail` holds the SNI (or `-`) and the offered ALPN.
    TlsSni,
    /// An HTTP request head arrived; `detail` holds method, authority, path, version, headers.
    HttpRequest,
    /// Bytes arrived on a sink or echo connection; `data` holds them.
    Bytes,
    /// A DNS query arrived; `dns` holds it.
    DnsQuery,
    /// A UDP datagram arrived; `data` holds it.
    Udp,
    /// An `/upload` body ended, whole or cut off; `detail` is `<n> bytes` (what arrived).
    BodyEnd,
}

impl Kind {
    /// The short name used in rendered logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TcpAccept => "tcp-accept",
            Kind::TlsSni => "tls-sni",
            Kind::HttpRequest => "http-request",
            Kind::Bytes => "bytes",
            Kind::DnsQuery => "dns-query",
            Kind::Udp => "udp",
            Kind::BodyEnd => "body-end",
        }
    }
}

/// DNS transport of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// One query as the DNS server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    /// The name exactly as received (case preserved, with the trailing dot).
    pub name: String,
    /// The record type, e.g. `A`, `AAAA`, `HTTPS`.
    pub qtype: String,
    /// UDP or TCP.
    pub transport: Transport,
    /// Who asked.
    pub peer: SocketAddr,
}

/// One log entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Which server: `good`, `attacker`, `echo`, `tcp`, `dns`, `private`, `metadata`, `v6`.
    pub server: &'static str,
    /// The server's address the client reached.
    pub local: SocketAddr,
    /// The client's address.
    pub peer: SocketAddr,
    /// What happened.
    pub kind: Kind,
    /// Human-readable detail.
    pub detail: String,
    /// Raw bytes for [`Kind::Bytes`] and [`Kind::Udp`] (empty once the log's byte budget is spent).
    pub data: Vec<u8>,
    /// Set for [`Kind::DnsQuery`].
    pub dns: Option<DnsQuery>,
    /// When it was logged.
    pub at: Instant,
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} -> {} {}: {}",
            self.server,
            self.peer,
            self.local,
            self.kind.as_str(),
            self.detail
        )
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<LogEntry>,
    data_bytes: usize,
    dropped: u64,
}

/// A shared handle to the log. Cloning it shares the same log.
#[derive(Debug, Clone, Default)]
pub struct ServerLog {
    inner: Arc<Mutex<Inner>>,
}

impl ServerLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the Vec inconsistent; keep logging.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(
        &self,
        server: &'static str,
        local: SocketAddr,
        peer: SocketAddr,
        kind: Kind,
        detail: String,
    ) {
        self.push_entry(LogEntry {
            server,
            local,
            peer,
            kind,
            detail,
            data: Vec::new(),
            dns: None,
            at: Instant::now(),
        });
    }

    pub(crate) fn push_data(
        &self,
        server: &'static str,
        local: SocketAddr,
        peer: SocketAddr,
        kind: Kind,
        data: &[u8],
    ) {
        let detail = format!("{} bytes: {}", data.len(), escape(data, 200));
        self.push_entry(LogEntry {
            server,
            local,
            peer,
            kind,
            detail,
            data: data.to_vec(),
            dns: None,
            at: Instant::now(),
        });
    }

    pub(crate) fn push_dns(&self, local: SocketAddr, query: DnsQuery) {
        let transport = match query.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        self.push_entry(LogEntry {
            server: "dns",
            local,
            peer: query.peer,
            kind: Kind::DnsQuery,
            detail: format!("{} {} {transport}", query.name, query.qtype),
            data: Vec::new(),
            dns: Some(query),
            at: Instant::now(),
        });
    }

    fn push_entry(&self, mut entry: LogEntry) {
        tracing::debug!(target: "palisade_testbed", "{entry}");
        let mut inner = self.lock();
        if inner.entries.len() >= MAX_ENTRIES {
            inner.dropped += 1;
            return;
        }
        if inner.data_bytes + entry.data.len() > MAX_DATA_BYTES {
            entry.data = Vec::new();
        }
        inner.data_bytes += entry.data.len();
        inner.entries.push(entry);
    }

    /// The lengths of every `/upload` body the server received, whole or cut off, in order.
    pub fn upload_lengths(&self, server: &str) -> Vec<u64> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.server == server && e.kind == Kind::BodyEnd)
            .filter_map(|e| e.detail.split(' ').next()?.parse().ok())
            .collect()
    }

    /// A snapshot of every entry, oldest first.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.lock().entries.clone()
    }

    /// Entries of one server.
    pub fn for_server(&self, server: &str) -> Vec<LogEntry> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.server == server)
            .cloned()
            .collect()
    }

    /// Every DNS query the authoritative server received, oldest first.
    pub fn dns_queries(&self) -> Vec<DnsQuery> {
        self.lock()
            .entries
            .iter()
            .filter_map(|e| e.dns.clone())
            .collect()
    }

    /// All bytes a server received on its sink/echo connections and UDP sockets, concatenated.
    pub fn bytes_received(&self, server: &str) -> Vec<u8> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.server == server && matches!(e.kind, Kind::Bytes | Kind::Udp))
            .flat_map(|e| e.data.iter().copied())
            .collect()
    }

    /// Forget everything logged so far.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.data_bytes = 0;
        inner.dropped = 0;
    }

    /// True when the server has logged nothing at all.
    pub fn is_untouched(&self, server: &str) -> bool {
        !self.lock().entries.iter().any(|e| e.server == server)
    }

    /// Number of entries stored.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Entries not stored because the log was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Every entry rendered one per line, for assertion messages.
    pub fn render(&self) -> String {
        self.render_filtered(|_| true)
    }

    fn render_filtered(&self, keep: impl Fn(&LogEntry) -> bool) -> String {
        let inner = self.lock();
        let mut out = String::new();
        for e in inner.entries.iter().filter(|e| keep(e)) {
            out.push_str(&e.to_string());
            out.push('\n');
        }
        out
    }

    /// Panics, listing what the server saw, unless it logged nothing.
    #[expect(
        clippy::panic,
        reason = "a test assertion helper: panicking is its job"
    )]
    pub fn assert_untouched(&self, server: &str) {
        if !self.is_untouched(server) {
            panic!(
                "server {server:?} was reached but must not have been:\n{}",
                self.render_filtered(|e| e.server == server)
            );
        }
    }

    /// Polls until `pred` holds over the entries, or `timeout` passes. Returns whether it held.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[LogEntry]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(held) = self.settled(deadline, &pred) {
                return held;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Like [`ServerLog::wait_for`], without blocking an async runtime's thread.
    pub async fn wait_for_async(
        &self,
        timeout: Duration,
        pred: impl Fn(&[LogEntry]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(held) = self.settled(deadline, &pred) {
                return held;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One poll of the `wait_for`s: `Some(true)` once `pred` holds, `Some(false)` past
    /// `deadline`, `None` to poll again.
    fn settled(&self, deadline: Instant, pred: impl Fn(&[LogEntry]) -> bool) -> Option<bool> {
        // A snapshot, not the locked Vec: `pred` may itself read the log.
        if pred(&self.entries()) {
            Some(true)
        } else if Instant::now() >= deadline {
            Some(false)
        } else {
            None
        }
    }
}

/// How often the `wait_for`s look at the log again.
const POLL: Duration = Duration::from_millis(10);

/// Printable form of bytes, at most `max` input bytes, marking truncation.
pub(crate) fn escape(data: &[u8], max: usize) -> String {
    let shown = &data[..data.len().min(max)];
    let mut s = shown.escape_ascii().to_string();
    if data.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn filters_and_untouched() {
        let log = ServerLog::new();
        log.push(
            "good",
            addr("198.51.100.10:443"),
            addr("203.0.113.1:5000"),
            Kind::TcpAccept,
            "x".into(),
        );
        log.push_data(
            "attacker",
            addr("198.51.100.11:22"),
            addr("203.0.113.1:5001"),
            Kind::Bytes,
            b"hi\n",
        );
        assert!(log.is_untouched("dns"));
        assert!(!log.is_untouched("attacker"));
        assert_eq!(log.for_server("good").len(), 1);
        assert_eq!(log.bytes_received("attacker"), b"hi\n");
        assert!(log.render().contains("hi\\n"));
        log.clear();
        assert!(log.is_empty());
        assert!(log.is_untouched("attacker"));
    }

    #[test]
    #[should_panic(expected = "must not have been")]
    fn assert_untouched_panics_with_contents() {
        let log = ServerLog::new();
        log.push(
            "attacker",
            addr("198.51.100.11:80"),
            addr("1.2.3.4:1"),
            Kind::TcpAccept,
            "c".into(),
        );
        log.assert_untouched("attacker");
    }

    #[test]
    fn wait_for_is_bounded_and_may_read_the_log() {
        let log = ServerLog::new();
        assert!(!log.wait_for(Duration::from_millis(30), |e| !e.is_empty()));
        log.push(
            "tcp",
            addr("198.51.100.30:7"),
            addr("1.2.3.4:1"),
            Kind::TcpAccept,
            String::new(),
        );
        assert!(log.wait_for(Duration::from_secs(1), |_| log.len() == 1));
    }
}
