//! Property tests of the query handler: any bytes in, no panic and no stray answer out; and no
//! name the policy does not allow ever reaches the upstream, whatever its spelling or type.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use palisade_policy::{CanonicalName, CompiledPolicy, Policy, canonicalize};
use proptest::prelude::*;
use tokio::net::UdpSocket;
use tokio::runtime::Runtime;

use super::query::{Origin, Responder, Transport};
use super::{DnsLimits, DnsView};
use crate::events::EventLog;
use crate::resolve::{ResolverConfig, UpstreamResolver};

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug)]
struct View {
    policies: HashMap<IpAddr, (Arc<str>, Arc<CompiledPolicy>)>,
    events: EventLog,
    told: Mutex<Vec<String>>,
}

impl DnsView for View {
    fn policy_for(&self, src: IpAddr) -> Option<(Arc<str>, Arc<CompiledPolicy>)> {
        self.policies.get(&src).cloned()
    }
    fn answer_addrs(
        &self,
        _: IpAddr,
        name: &CanonicalName,
        resolved: &[Ipv4Addr],
    ) -> Result<Vec<Ipv4Addr>, String> {
        self.told.lock().unwrap().push(name.as_str().to_owned());
        Ok(resolved.to_vec())
    }
    fn events(&self) -> &EventLog {
        &self.events
    }
}

fn policy() -> Arc<CompiledPolicy> {
    let json = br#"{"mode":"custom","allow_domains":["allowed.test","*.ok.test"]}"#;
    Arc::new(Policy::from_json(json).unwrap().compile())
}

/// A responder whose upstream is a socket that records and never answers.
struct Rig {
    rt: Runtime,
    responder: Responder,
    upstream: UdpSocket,
    policy: Arc<CompiledPolicy>,
}

impl Rig {
    fn new() -> Rig {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let upstream = rt.block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
        let resolver = rt
            .block_on(async {
                UpstreamResolver::new(&ResolverConfig {
                    upstreams: vec![upstream.local_addr().unwrap()],
                    timeout: Duration::from_millis(50),
                    attempts: 1,
                    ..ResolverConfig::default()
                })
            })
            .unwrap();
        let policy = policy();
        let view = View {
            policies: HashMap::from([(SRC, (Arc::from("sb"), policy.clone()))]),
            events: EventLog::new(16),
            told: Mutex::new(Vec::new()),
        };
        let responder = Responder {
            view: Arc::new(view),
            resolver: Arc::new(resolver),
            limits: DnsLimits {
                query_timeout: Duration::from_millis(100),
                ..DnsLimits::default()
            },
        };
        Rig {
            rt,
            responder,
            upstream,
            policy,
        }
    }

    fn respond(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let origin = Origin {
            src: SRC,
            server: SocketAddr::from(([127, 0, 0, 1], 53)),
            transport,
        };
        self.rt.block_on(self.responder.respond(packet, origin))
    }

    /// Every query the upstream received so far, as (name, type).
    fn upstream_queries(&self) -> Vec<(String, RecordType)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok((n, _)) = self.upstream.try_recv_from(&mut buf) {
            let msg = Message::from_vec(&buf[..n]).unwrap();
            for q in &msg.queries {
                out.push((q.name().to_ascii(), q.query_type()));
            }
        }
        out
    }
}

fn check_reply(packet: &[u8], reply: Option<Vec<u8>>, limit: usize) {
    let Some(reply) = reply else { return };
    assert!(reply.len() <= limit, "reply over the size limit");
    let msg = Message::from_vec(&reply).expect("replies are well-formed");
    assert_eq!(msg.metadata.message_type, MessageType::Response);
    assert_eq!(msg.metadata.id, u16::from_be_bytes([packet[0], packet[1]]));
    assert!(msg.answers.is_empty(), "no upstream answers anything here");
}

fn a_query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::new(1, MessageType::Query, OpCode::Query);
    // Raw labels: the client may send any bytes, not only what a parser would accept.
    let labels = name.trim_end_matches('.').split('.').map(str::as_bytes);
    msg.add_query(Query::query(Name::from_labels(labels).unwrap(), qtype));
    msg.to_vec().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), tcp: bool) {
        let rig = Rig::new();
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let reply = rig.respond(&bytes, transport);
        let limit = if tcp { 65_535 } else { 512 };
        check_reply(&bytes, reply, limit);
    }

    #[test]
    fn mutated_queries_never_panic(
        name in "[a-zA-Z0-9-]{1,20}(\\.[a-zA-Z0-9-]{1,20}){0,3}",
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let rig = Rig::new();
        let mut packet = a_query(&format!("{name}."), RecordType::TXT);
        for (at, byte) in flips {
            let i = at.index(packet.len());
            packet[i] = byte;
        }
        packet.truncate(cut.index(packet.len()) + 1);
        let reply = rig.respond(&packet, Transport::Udp);
        check_reply(&packet, reply, 512);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Threat 14 as a property: whatever the spelling and type, the upstream only ever sees A
    /// queries for allowed names.
    #[test]
    fn only_allowed_a_queries_reach_upstream(
        labels in proptest::collection::vec("[a-zA-Z0-9_-]{1,12}", 0..3),
        suffix in prop::sample::select(vec!["allowed.test", "ALLOWED.test", "ok.test", "x.ok.test",
                                            "denied.test", "allowed.test.evil", "okXtest", "test", "xn--nxasmq6b.ok.test"]),
        qtype in prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::TXT,
                                           RecordType::MX, RecordType::HTTPS, RecordType::SVCB,
                                           RecordType::CNAME, RecordType::ANY, RecordType::PTR]),
        tcp: bool,
    ) {
        let rig = Rig::new();
        let mut name = labels.join(".");
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(suffix);
        name.push('.');
        let packet = a_query(&name, qtype);
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let reply = rig.respond(&packet, transport).expect("a reply");
        let msg = Message::from_vec(&reply).unwrap();
        let canon = canonicalize(name.trim_end_matches('.').as_bytes());
        let allowed = canon.as_ref().is_ok_and(|c| rig.policy.decide_name(c).is_allowed());
        if !allowed {
            prop_assert!(
                matches!(msg.metadata.response_code, ResponseCode::NXDomain | ResponseCode::Refused),
                "{name}: {:?}", msg.metadata.response_code
            );
        }
        for (seen, seen_type) in rig.upstream_queries() {
            prop_assert_eq!(seen_type, RecordType::A);
            let c = canonicalize(seen.trim_end_matches('.').as_bytes()).unwrap();
            prop_assert_eq!(format!("{}.", c.as_str()), seen.clone(), "canonical spelling upstream");
            prop_assert!(rig.policy.decide_name(&c).is_allowed(), "upstream saw {}", seen);
        }
    }
}

#[test]
fn unknown_source_and_policy_swap() {
    let rig = Rig::new();
    let packet = a_query("allowed.test.", RecordType::AAAA);
    let origin = Origin {
        src: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
        server: SocketAddr::from(([127, 0, 0, 1], 53)),
        transport: Transport::Udp,
    };
    let reply = rig
        .rt
        .block_on(rig.responder.respond(&packet, origin))
        .unwrap();
    let msg = Message::from_vec(&reply).unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    assert_eq!(msg.queries.len(), 1, "question echoed");
    let reply = rig.respond(&packet, Transport::Udp).unwrap();
    let msg = Message::from_vec(&reply).unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());
    assert!(rig.upstream_queries().is_empty());
}

#[test]
fn custom_policy_without_names_is_refused() {
    let rig = Rig::new();
    let json = br#"{"mode":"custom","allow_cidrs":["198.51.100.0/24"]}"#;
    let only_cidrs = Arc::new(Policy::from_json(json).unwrap().compile());
    let view = View {
        policies: HashMap::from([(SRC, (Arc::from("sb"), only_cidrs))]),
        events: EventLog::new(4),
        told: Mutex::new(Vec::new()),
    };
    let responder = Responder {
        view: Arc::new(view),
        resolver: Arc::clone(&rig.responder.resolver),
        limits: DnsLimits::default(),
    };
    let origin = Origin {
        src: SRC,
        server: SocketAddr::from(([127, 0, 0, 1], 53)),
        transport: Transport::Udp,
    };
    let reply = rig
        .rt
        .block_on(responder.respond(&a_query("allowed.test.", RecordType::A), origin))
        .unwrap();
    let msg = Message::from_vec(&reply).unwrap();
    assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
}

/// The rig's upstream log really sees what is sent (so the property above can fail).
#[test]
fn allowed_a_query_reaches_upstream_in_canonical_spelling() {
    let rig = Rig::new();
    let reply = rig
        .respond(&a_query("WwW.Ok.TeSt.", RecordType::A), Transport::Udp)
        .unwrap();
    let msg = Message::from_vec(&reply).unwrap();
    assert_eq!(
        msg.metadata.response_code,
        ResponseCode::ServFail,
        "upstream never answers"
    );
    assert_eq!(msg.queries[0].name().to_ascii(), "WwW.Ok.TeSt.");
    let seen = rig.upstream_queries();
    assert!(
        seen.contains(&("www.ok.test.".to_owned(), RecordType::A)),
        "{seen:?}"
    );
}

#[test]
fn unknown_edns_version_is_badvers() {
    let rig = Rig::new();
    let mut msg = Message::from_vec(&a_query("allowed.test.", RecordType::A)).unwrap();
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_version(1);
    msg.set_edns(edns);
    let reply = rig.respond(&msg.to_vec().unwrap(), Transport::Udp).unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    // 16 is BADVERS with an OPT record (hickory decodes the shared code as BADSIG).
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    assert_eq!(reply.edns.map(|e| e.version()), Some(0));
    assert!(rig.upstream_queries().is_empty());
}
