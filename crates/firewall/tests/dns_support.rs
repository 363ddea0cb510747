//! Test world for the filtering DNS server, all on loopback: a tiny authoritative upstream that
//! logs every query it receives, a DnsView with a policy per source address, and clients (raw
//! hickory-proto messages, the hickory resolver, and `dig`).
//!
//! Included by the `dns_*` tests with `#[path]`; compiled alone it has no tests.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers, each test binary uses a different part; a failed unwrap is a failed test"
)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use palisade_firewall::dns::{DnsLimits, DnsServer, DnsServerHandle, DnsView};
use palisade_firewall::events::EventLog;
use palisade_firewall::resolve::{ResolverConfig, UpstreamResolver};
use palisade_policy::{CanonicalName, CompiledPolicy, Policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Sources: each loopback address is one sandbox (or none).
pub(crate) const CUSTOM: &str = "127.0.0.1";
pub(crate) const UNKNOWN: &str = "127.0.0.2";
pub(crate) const DENY_ALL: &str = "127.0.0.3";
pub(crate) const ALLOW_ALL: &str = "127.0.0.4";

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Aborts a task when dropped, so a failing test leaves nothing running.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------- upstream

/// One query the upstream received, name exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) name: String,
    pub(crate) qtype: RecordType,
    pub(crate) tcp: bool,
}

#[derive(Debug, Clone)]
enum Entry {
    A(Vec<Ipv4Addr>, u32),
    Cname(&'static str),
    ServFail,
    Slow(Ipv4Addr, Duration),
}

fn zone() -> HashMap<&'static str, Entry> {
    let a = |s: &str, ttl| Entry::A(vec![s.parse().unwrap()], ttl);
    let mut z = HashMap::new();
    z.insert("allowed.test", a("198.51.100.10", 3600));
    z.insert("www.allowed.test", a("198.51.100.11", 30));
    z.insert("alias.allowed.test", Entry::Cname("www.allowed.test"));
    z.insert("loop.allowed.test", a("127.0.0.1", 300));
    z.insert("private.allowed.test", a("10.0.0.1", 300));
    z.insert("meta.allowed.test", a("169.254.169.254", 300));
    z.insert("cgnat.allowed.test", a("100.64.0.1", 300));
    z.insert(
        "mixed.allowed.test",
        Entry::A(
            vec![
                "198.51.100.12".parse().unwrap(),
                "10.0.0.2".parse().unwrap(),
            ],
            300,
        ),
    );
    z.insert("cidr.allowed.test", a("10.9.0.7", 300));
    z.insert(
        "many.allowed.test",
        Entry::A(
            (1..=60).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect(),
            300,
        ),
    );
    z.insert("fail.allowed.test", Entry::ServFail);
    z.insert(
        "slow.allowed.test",
        Entry::Slow(
            "198.51.100.20".parse().unwrap(),
            Duration::from_millis(1500),
        ),
    );
    // Exist upstream, but no custom policy allows them: they must never be asked for.
    z.insert("denied.test", a("203.0.113.66", 300));
    z.insert("secret.denied.test", a("203.0.113.67", 300));
    z.insert("open.test", a("203.0.113.5", 300));
    z
}

/// A small authoritative server on 127.0.0.1 (UDP and TCP, same port).
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    _tasks: Vec<AbortOnDrop>,
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        let (udp, tcp) = bind_same_port().await;
        let addr = udp.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let zone = Arc::new(zone());
        let udp = Arc::new(udp);
        let udp_task = {
            let (log, zone) = (log.clone(), zone.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    let packet = buf[..n].to_vec();
                    let (udp, log, zone) = (udp.clone(), log.clone(), zone.clone());
                    tokio::spawn(async move {
                        if let Some(resp) = serve(&packet, false, &log, &zone).await {
                            let _ = udp.send_to(&resp, peer).await;
                        }
                    });
                }
            })
        };
        let tcp_task = {
            let (log, zone) = (log.clone(), zone.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let (log, zone) = (log.clone(), zone.clone());
                    tokio::spawn(async move {
                        while let Some(packet) = read_framed(&mut stream).await {
                            let Some(resp) = serve(&packet, true, &log, &zone).await else {
                                return;
                            };
                            if write_framed(&mut stream, &resp).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            })
        };
        Upstream {
            addr,
            log,
            _tasks: vec![AbortOnDrop(udp_task), AbortOnDrop(tcp_task)],
        }
    }

    /// Every query received so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// How many queries named `name` (any case) arrived.
    pub(crate) fn count(&self, name: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.name.trim_end_matches('.').eq_ignore_ascii_case(name))
            .count()
    }
}

async fn serve(
    packet: &[u8],
    tcp: bool,
    log: &Mutex<Vec<Seen>>,
    zone: &HashMap<&'static str, Entry>,
) -> Option<Vec<u8>> {
    let req = Message::from_vec(packet).ok()?;
    let q = req.queries.first()?.clone();
    log.lock().unwrap().push(Seen {
        name: q.name().to_ascii(),
        qtype: q.query_type(),
        tcp,
    });
    let mut resp = Message::response(req.metadata.id, OpCode::Query);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    resp.add_query(q.clone());
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        resp.set_edns(edns);
    }
    let key = q.name().to_ascii().to_ascii_lowercase();
    let key = key.trim_end_matches('.');
    let soa = || {
        let soa = SOA::new(
            Name::from_ascii("ns.test.").unwrap(),
            Name::from_ascii("admin.test.").unwrap(),
            1,
            60,
            60,
            60,
            30,
        );
        Record::from_rdata(Name::from_ascii("test.").unwrap(), 30, RData::SOA(soa))
    };
    match zone.get(key) {
        None => {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.add_authority(soa());
        }
        Some(Entry::ServFail) => resp.metadata.response_code = ResponseCode::ServFail,
        Some(_) if q.query_type() != RecordType::A => {
            resp.add_authority(soa());
        }
        Some(Entry::Slow(addr, delay)) => {
            tokio::time::sleep(*delay).await;
            resp.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A(*addr))));
        }
        Some(Entry::A(addrs, ttl)) => {
            for a in addrs {
                resp.add_answer(Record::from_rdata(q.name().clone(), *ttl, RData::A(A(*a))));
            }
        }
        Some(Entry::Cname(target)) => {
            let target_name = Name::from_ascii(format!("{target}.")).unwrap();
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                300,
                RData::CNAME(CNAME(target_name.clone())),
            ));
            if let Some(Entry::A(addrs, ttl)) = zone.get(target) {
                for a in addrs {
                    resp.add_answer(Record::from_rdata(
                        target_name.clone(),
                        *ttl,
                        RData::A(A(*a)),
                    ));
                }
            }
        }
    }
    resp.to_vec().ok()
}

async fn bind_same_port() -> (UdpSocket, TcpListener) {
    for _ in 0..32 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}

pub(crate) async fn read_framed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

pub(crate) async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut out = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

// ---------------------------------------------------------------- view

/// A recorded `answer_addrs` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Told {
    pub(crate) src: IpAddr,
    pub(crate) name: String,
    pub(crate) addrs: Vec<Ipv4Addr>,
}

/// A sandbox id and its policy.
type Sandbox = (Arc<str>, Arc<CompiledPolicy>);

#[derive(Debug)]
pub(crate) struct TestView {
    policies: Mutex<HashMap<IpAddr, Sandbox>>,
    pub(crate) told: Mutex<Vec<Told>>,
    pub(crate) events: EventLog,
}

pub(crate) fn compile(json: &str) -> Arc<CompiledPolicy> {
    Arc::new(Policy::from_json(json.as_bytes()).unwrap().compile())
}

pub(crate) const CUSTOM_POLICY: &str = r#"{"mode":"custom",
    "allow_domains":["allowed.test","*.allowed.test"],
    "allow_cidrs":["10.9.0.0/16"]}"#;

impl TestView {
    pub(crate) fn new() -> Arc<TestView> {
        let view = TestView {
            policies: Mutex::new(HashMap::new()),
            told: Mutex::new(Vec::new()),
            events: EventLog::new(1000),
        };
        view.set(CUSTOM, "sb-custom", CUSTOM_POLICY);
        view.set(DENY_ALL, "sb-deny", r#"{"mode":"deny-all"}"#);
        view.set(ALLOW_ALL, "sb-all", r#"{"mode":"allow-all"}"#);
        Arc::new(view)
    }

    /// Installs (or replaces) the policy of a source, as a live policy update would.
    pub(crate) fn set(&self, src: &str, sandbox: &str, json: &str) {
        self.policies
            .lock()
            .unwrap()
            .insert(ip(src), (Arc::from(sandbox), compile(json)));
    }
}

impl DnsView for TestView {
    fn policy_for(&self, src: IpAddr) -> Option<(Arc<str>, Arc<CompiledPolicy>)> {
        self.policies.lock().unwrap().get(&src).cloned()
    }

    fn answer_addrs(
        &self,
        src: IpAddr,
        name: &CanonicalName,
        resolved: &[Ipv4Addr],
    ) -> Result<Vec<Ipv4Addr>, String> {
        self.told.lock().unwrap().push(Told {
            src,
            name: name.as_str().to_owned(),
            addrs: resolved.to_vec(),
        });
        Ok(resolved.to_vec())
    }

    fn events(&self) -> &EventLog {
        &self.events
    }
}

// ---------------------------------------------------------------- world

#[derive(Debug)]
pub(crate) struct World {
    pub(crate) upstream: Upstream,
    pub(crate) view: Arc<TestView>,
    pub(crate) udp: SocketAddr,
    pub(crate) tcp: SocketAddr,
    _server: DnsServerHandle,
}

pub(crate) fn test_limits() -> DnsLimits {
    DnsLimits {
        tcp_idle_timeout: Duration::from_secs(1),
        max_tcp_connections_per_source: 4,
        max_inflight_per_source: 4,
        ..DnsLimits::default()
    }
}

impl World {
    pub(crate) async fn start() -> World {
        World::with_limits(test_limits()).await
    }

    pub(crate) async fn with_limits(limits: DnsLimits) -> World {
        let upstream = Upstream::start().await;
        let resolver = UpstreamResolver::new(&ResolverConfig {
            upstreams: vec![upstream.addr],
            timeout: Duration::from_secs(3),
            attempts: 1,
            cache_size: 1024,
            max_ttl: Duration::from_secs(60),
        })
        .unwrap();
        let view = TestView::new();
        let server = DnsServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            view.clone(),
            Arc::new(resolver),
            limits,
        )
        .await
        .unwrap();
        let (udp, tcp) = (server.udp_addr(), server.tcp_addr());
        World {
            upstream,
            view,
            udp,
            tcp,
            _server: server.spawn(),
        }
    }
}

// ---------------------------------------------------------------- clients

/// Wire bytes of a query; `name` is sent exactly as written (case kept).
pub(crate) fn query_bytes(id: u16, name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.set_edns(e);
    }
    msg.to_vec().unwrap()
}

/// Sends raw bytes over UDP from `src` and waits (bounded) for one reply.
pub(crate) async fn udp_raw(
    server: SocketAddr,
    src: &str,
    packet: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((ip(src), 0)).await.unwrap();
    sock.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Sends one framed query over a new TCP connection from `src`.
pub(crate) async fn tcp_raw(server: SocketAddr, src: &str, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((ip(src), 0).into()).unwrap();
    let mut stream = sock.connect(server).await.unwrap();
    write_framed(&mut stream, packet).await.ok()?;
    tokio::time::timeout(Duration::from_secs(10), read_framed(&mut stream))
        .await
        .ok()
        .flatten()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Udp,
    Tcp,
}

/// A well-formed query; panics (fails the test) if no reply comes within 10 s.
pub(crate) async fn ask(w: &World, via: Via, src: &str, name: &str, qtype: RecordType) -> Message {
    let packet = query_bytes(0x4242, name, qtype, true);
    let reply = match via {
        Via::Udp => udp_raw(w.udp, src, &packet, Duration::from_secs(10)).await,
        Via::Tcp => tcp_raw(w.tcp, src, &packet).await,
    }
    .unwrap_or_else(|| panic!("no reply for {name} {qtype} over {via:?}"));
    let msg = Message::from_vec(&reply).unwrap();
    assert_eq!(msg.metadata.id, 0x4242);
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    msg
}

pub(crate) fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// What `dig` printed: the status and the answer lines.
#[derive(Debug)]
pub(crate) struct Dig {
    pub(crate) status: String,
    pub(crate) answers: Vec<String>,
    pub(crate) raw: String,
}

/// Runs the real `dig` against the server (`+tries=1 +time=1`): a server that does not answer
/// within a second shows up as a missing status.
pub(crate) async fn dig(w: &World, src: &str, name: &str, qtype: &str, tcp: bool) -> Dig {
    let server = if tcp { w.tcp } else { w.udp };
    let mut cmd = tokio::process::Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "-b", src, name, qtype])
        .args(["+tries=1", "+time=1", "+noall", "+comments", "+answer"]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd
        .output()
        .await
        .expect("`dig` must be installed (Debian package dnsutils)");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = raw
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let answers = raw
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    Dig {
        status,
        answers,
        raw,
    }
}
