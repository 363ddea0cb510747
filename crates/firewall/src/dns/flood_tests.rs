//! The server against a flooding source, over real loopback sockets: the flood is cut to its
//! rate (UDP dropped, TCP refused, an event counting it), and another source sending at the same
//! time is answered every time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use palisade_policy::{CanonicalName, CompiledPolicy, Policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};

use super::{DnsLimits, DnsServer, DnsView};
use crate::events::{EventLog, EventVerdict};
use crate::resolve::{ResolverConfig, UpstreamResolver};

const NOISY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const QUIET: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const RATE: u32 = 100;
const BURST: u32 = 200;

#[derive(Debug)]
struct View {
    policies: HashMap<IpAddr, (Arc<str>, Arc<CompiledPolicy>)>,
    events: EventLog,
}

impl DnsView for View {
    fn policy_for(&self, src: IpAddr) -> Option<(Arc<str>, Arc<CompiledPolicy>)> {
        self.policies.get(&src).cloned()
    }
    fn answer_addrs(
        &self,
        _: IpAddr,
        _: &CanonicalName,
        resolved: &[Ipv4Addr],
    ) -> Result<Vec<Ipv4Addr>, String> {
        Ok(resolved.to_vec())
    }
    fn events(&self) -> &EventLog {
        &self.events
    }
}

/// A query for a name the policy does not allow: answered NXDOMAIN at once, no upstream.
fn query(id: u16) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(
        Name::from_ascii("denied.test.").unwrap(),
        RecordType::A,
    ));
    msg.to_vec().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_source_is_cut_to_its_rate_and_another_is_answered() {
    let policy = Arc::new(
        Policy::from_json(br#"{"mode":"custom","allow_domains":["allowed.test"]}"#)
            .unwrap()
            .compile(),
    );
    let view = Arc::new(View {
        policies: HashMap::from([
            (
                IpAddr::V4(NOISY),
                (Arc::from("sb-noisy"), Arc::clone(&policy)),
            ),
            (IpAddr::V4(QUIET), (Arc::from("sb-quiet"), policy)),
        ]),
        events: EventLog::new(4096),
    });
    // An upstream that never answers; nothing here should reach it.
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let resolver = UpstreamResolver::new(&ResolverConfig {
        upstreams: vec![upstream.local_addr().unwrap()],
        ..ResolverConfig::default()
    })
    .unwrap();
    let limits = DnsLimits {
        queries_per_second_per_source: RATE,
        query_burst_per_source: BURST,
        ..DnsLimits::default()
    };
    let server = DnsServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Arc::clone(&view) as Arc<dyn DnsView>,
        Arc::new(resolver),
        limits,
    )
    .await
    .unwrap();
    let (udp_addr, tcp_addr) = (server.udp_addr(), server.tcp_addr());
    let _serving = server.spawn();

    // The flood: 3,000 queries as fast as they go (bounded in count), the answers counted.
    let noisy = UdpSocket::bind(SocketAddr::from((NOISY, 0))).await.unwrap();
    let started = Instant::now();
    let flood = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let mut answered = 0u32;
        for i in 0..3_000u16 {
            noisy.send_to(&query(i), udp_addr).await.unwrap();
            while noisy.try_recv_from(&mut buf).is_ok() {
                answered += 1;
            }
        }
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(300), noisy.recv_from(&mut buf)).await
        {
            answered += 1;
        }
        answered
    });

    // Meanwhile the quiet source asks 20 times, one at a time, each within a normal timeout.
    let quiet = UdpSocket::bind(SocketAddr::from((QUIET, 0))).await.unwrap();
    let mut buf = [0u8; 1500];
    for i in 0..20u16 {
        quiet.send_to(&query(i), udp_addr).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), quiet.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("quiet query {i} not answered"))
            .unwrap();
        let msg = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    }
    let answered = flood.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    // What the bucket allows in that time (plus slack for rounding), and well under 3,000.
    let allowed = f64::from(BURST) + f64::from(RATE) * secs + 5.0;
    assert!(
        f64::from(answered) <= allowed,
        "{answered} flood queries answered in {secs:.2}s, at most {allowed:.0} allowed"
    );
    assert!(
        answered >= BURST / 2,
        "the flood's burst was not answered: {answered}"
    );

    // Over TCP the same source shares its bucket: once it is empty, queries are answered
    // REFUSED at once rather than left waiting. (Bounded: the bucket holds at most BURST.)
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((NOISY, 0))).unwrap();
    let mut conn = sock.connect(tcp_addr).await.unwrap();
    let mut refused_at = None;
    for i in 0..1_000u16 {
        let q = query(i);
        let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        conn.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut len))
            .await
            .unwrap()
            .unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut reply).await.unwrap();
        let msg = Message::from_vec(&reply).unwrap();
        assert_eq!(msg.metadata.id, i);
        if msg.metadata.response_code == ResponseCode::Refused {
            refused_at = Some(i);
            break;
        }
        assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    }
    let refused_at = refused_at.expect("TCP queries past the rate were never refused");
    assert!(
        u32::from(refused_at) <= 2 * BURST,
        "refused only after {refused_at}"
    );

    // The drops are counted in a few events of the noisy sandbox, none for the quiet one.
    let limited: Vec<_> = view
        .events
        .recent(None, 4096)
        .into_iter()
        .filter(|e| e.rule.to_string() == "dns-rate-limit")
        .collect();
    assert!(!limited.is_empty(), "no rate-limit event");
    assert!(limited.len() <= 10, "{} rate-limit events", limited.len());
    assert!(
        limited
            .iter()
            .all(|e| e.sandbox == "sb-noisy" && e.verdict == EventVerdict::Deny)
    );
    assert!(
        limited[0].reason.contains("over the limit of 100/s"),
        "{}",
        limited[0].reason
    );
}
