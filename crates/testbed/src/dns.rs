//! The authoritative DNS server for `test.`: a mutable in-memory zone, UDP and TCP, and a log
//! entry for every query it receives.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::http::accept;
use crate::log::{DnsQuery, ServerLog, Transport};

/// The zone apex.
const APEX: &str = "test";
/// Longest CNAME chain followed.
const MAX_CHAIN: usize = 8;
/// A TCP client silent this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
struct Node {
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    cname: Option<String>,
}

#[derive(Debug)]
struct Zone {
    nodes: HashMap<String, Node>,
    ttl: u32,
}

/// A handle on the `test.` zone the DNS server answers from; changes apply to the next query.
/// Names are matched case-insensitively, with or without the trailing dot. Names outside
/// `test.` can be stored but are never served (the server answers REFUSED for them).
#[derive(Debug, Clone)]
pub struct DnsZone {
    zone: Arc<RwLock<Zone>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn in_zone(key: &str) -> bool {
    key == APEX || key.ends_with(".test")
}

impl DnsZone {
    pub(crate) fn new() -> Self {
        Self {
            zone: Arc::new(RwLock::new(Zone {
                nodes: HashMap::new(),
                ttl: 30,
            })),
        }
    }

    fn edit(&self, name: &str, f: impl FnOnce(&mut Node)) {
        let mut zone = self.zone.write().unwrap_or_else(|e| e.into_inner());
        f(zone.nodes.entry(key(name)).or_default());
    }

    /// Sets the A records of `name` (replacing any, and any CNAME). Empty: name exists, no A.
    pub fn set_a(&self, name: &str, addrs: &[Ipv4Addr]) {
        self.edit(name, |n| {
            n.a = addrs.to_vec();
            n.cname = None;
        });
    }

    /// Sets the AAAA records of `name` (replacing any, and any CNAME).
    pub fn set_aaaa(&self, name: &str, addrs: &[Ipv6Addr]) {
        self.edit(name, |n| {
            n.aaaa = addrs.to_vec();
            n.cname = None;
        });
    }

    /// Makes `name` a CNAME for `target` (dropping its other records).
    pub fn set_cname(&self, name: &str, target: &str) {
        let target = key(target);
        self.edit(name, |n| {
            *n = Node {
                cname: Some(target),
                ..Node::default()
            }
        });
    }

    /// Removes `name` entirely: it answers NXDOMAIN afterwards.
    pub fn remove(&self, name: &str) {
        let mut zone = self.zone.write().unwrap_or_else(|e| e.into_inner());
        zone.nodes.remove(&key(name));
    }

    /// TTL of every answer (default 30 s).
    pub fn set_ttl(&self, ttl: u32) {
        self.zone.write().unwrap_or_else(|e| e.into_inner()).ttl = ttl;
    }

    /// Builds the answer to a raw query; `None` when it is too short to carry an id.
    pub(crate) fn answer(&self, raw: &[u8]) -> Option<Message> {
        let request = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(_) => {
                let id = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
                return Some(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr));
            }
        };
        let meta = &request.metadata;
        if meta.message_type != MessageType::Query {
            return None;
        }
        let mut resp = Message::response(meta.id, meta.op_code);
        resp.metadata.recursion_desired = meta.recursion_desired;
        resp.add_queries(request.queries.iter().cloned());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            resp.set_edns(edns);
        }
        let query = match (meta.op_code, request.queries.as_slice()) {
            (OpCode::Query, [q]) => q,
            (OpCode::Query, _) => {
                resp.metadata.response_code = ResponseCode::FormErr;
                return Some(resp);
            }
            _ => {
                resp.metadata.response_code = ResponseCode::NotImp;
                return Some(resp);
            }
        };
        self.resolve(query, &mut resp);
        Some(resp)
    }

    fn resolve(&self, query: &Query, resp: &mut Message) {
        let zone = self.zone.read().unwrap_or_else(|e| e.into_inner());
        let ttl = zone.ttl;
        let first = key(&query.name().to_ascii());
        if !in_zone(&first) {
            resp.metadata.response_code = ResponseCode::Refused;
            return;
        }
        resp.metadata.authoritative = true;
        let qtype = query.query_type();
        // The first owner keeps the spelling the client sent (0x20 case randomisation).
        let mut owner = query.name().clone();
        let mut current = first;
        for _ in 0..MAX_CHAIN {
            if current == APEX {
                match qtype {
                    RecordType::SOA => resp.add_answer(soa(ttl)),
                    RecordType::NS => {
                        resp.add_answer(Record::from_rdata(apex(), ttl, RData::NS(NS(ns_name()))))
                    }
                    _ => resp.add_authority(soa(ttl)),
                };
                return;
            }
            let Some(node) = zone.nodes.get(&current) else {
                resp.metadata.response_code = ResponseCode::NXDomain;
                resp.add_authority(soa(ttl));
                return;
            };
            if let Some(target) = &node.cname {
                let Ok(target_name) = Name::from_ascii(format!("{target}.")) else {
                    return;
                };
                resp.add_answer(Record::from_rdata(
                    owner,
                    ttl,
                    RData::CNAME(CNAME(target_name.clone())),
                ));
                if qtype == RecordType::CNAME || !in_zone(target) {
                    return;
                }
                owner = target_name;
                current = target.clone();
                continue;
            }
            let before = resp.answers.len();
            match qtype {
                RecordType::A => {
                    for ip in &node.a {
                        resp.add_answer(Record::from_rdata(owner.clone(), ttl, RData::A(A(*ip))));
                    }
                }
                RecordType::AAAA => {
                    for ip in &node.aaaa {
                        resp.add_answer(Record::from_rdata(
                            owner.clone(),
                            ttl,
                            RData::AAAA(AAAA(*ip)),
                        ));
                    }
                }
                _ => {}
            }
            if resp.answers.len() == before {
                resp.add_authority(soa(ttl));
            }
            return;
        }
    }
}

fn apex() -> Name {
    Name::from_ascii("test.").unwrap_or_else(|_| Name::root())
}

fn ns_name() -> Name {
    Name::from_ascii("ns.test.").unwrap_or_else(|_| Name::root())
}

fn soa(ttl: u32) -> Record {
    let hostmaster = Name::from_ascii("hostmaster.test.").unwrap_or_else(|_| Name::root());
    Record::from_rdata(
        apex(),
        ttl,
        RData::SOA(SOA::new(ns_name(), hostmaster, 1, 3600, 600, 86400, ttl)),
    )
}

/// Logs every question of a raw query (or that it was malformed).
fn log_query(
    log: &ServerLog,
    local: SocketAddr,
    peer: SocketAddr,
    transport: Transport,
    raw: &[u8],
) {
    match Message::from_vec(raw) {
        Ok(m) if !m.queries.is_empty() => {
            for q in &m.queries {
                let query = DnsQuery {
                    name: q.name().to_ascii(),
                    qtype: q.query_type().to_string(),
                    transport,
                    peer,
                };
                log.push_dns(local, query);
            }
        }
        _ => {
            let query = DnsQuery {
                name: "<malformed>".into(),
                qtype: "-".into(),
                transport,
                peer,
            };
            log.push_dns(local, query);
        }
    }
}

fn encode(resp: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    resp.truncate().to_vec().ok()
}

pub(crate) async fn serve_udp(socket: UdpSocket, zone: DnsZone, log: ServerLog) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let raw = &buf[..n];
        log_query(&log, local, peer, Transport::Udp, raw);
        let Some(resp) = zone.answer(raw) else {
            continue;
        };
        let limit = Message::from_vec(raw)
            .ok()
            .and_then(|m| m.edns.map(|e| usize::from(e.max_payload())))
            .unwrap_or(512)
            .max(512);
        if let Some(bytes) = encode(&resp, limit) {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

pub(crate) async fn serve_tcp(listener: TcpListener, zone: DnsZone, log: ServerLog) {
    loop {
        // TCP accepts are not logged as separate entries: the query log is what tests check.
        let Some((mut stream, local, peer)) = accept(&listener, "dns-tcp", &ServerLog::new()).await
        else {
            continue;
        };
        let zone = zone.clone();
        let log = log.clone();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
                let mut raw = vec![0u8; usize::from(u16::from_be_bytes(len))];
                match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut raw)).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
                log_query(&log, local, peer, Transport::Tcp, &raw);
                let Some(resp) = zone.answer(&raw) else {
                    return;
                };
                let Some(bytes) = encode(&resp, usize::from(u16::MAX)) else {
                    return;
                };
                let Ok(len) = u16::try_from(bytes.len()) else {
                    return;
                };
                let mut out = len.to_be_bytes().to_vec();
                out.extend_from_slice(&bytes);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(zone: &DnsZone, name: &str, qtype: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        zone.answer(&q.to_vec().unwrap()).unwrap()
    }

    fn zone() -> DnsZone {
        let z = DnsZone::new();
        z.set_a("alpha.test", &[Ipv4Addr::new(198, 51, 100, 10)]);
        z.set_aaaa("v6only.test.", &["2001:db8::10".parse().unwrap()]);
        z.set_cname("alias.test", "alpha.test");
        z
    }

    #[test]
    fn answers_a_case_insensitively_keeping_spelling() {
        let r = ask(&zone(), "AlPhA.test.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].name.to_ascii(), "AlPhA.test.");
    }

    #[test]
    fn nxdomain_nodata_refused() {
        let z = zone();
        assert_eq!(
            ask(&z, "nope.test.", RecordType::A).metadata.response_code,
            ResponseCode::NXDomain
        );
        let nodata = ask(&z, "v6only.test.", RecordType::A);
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(
            ask(&z, "example.com.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::Refused
        );
        z.remove("alpha.test.");
        assert_eq!(
            ask(&z, "alpha.test.", RecordType::A).metadata.response_code,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn cname_is_followed() {
        let r = ask(&zone(), "alias.test.", RecordType::A);
        assert_eq!(r.answers.len(), 2);
        assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(r.answers[1].record_type(), RecordType::A);
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        let z = zone();
        assert!(z.answer(&[]).is_none());
        assert!(z.answer(&[1]).is_none());
        let r = z.answer(&[0x12, 0x34, 0xff]).unwrap();
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn cname_loop_terminates() {
        let z = DnsZone::new();
        z.set_cname("a.test", "b.test");
        z.set_cname("b.test", "a.test");
        let r = ask(&z, "a.test.", RecordType::A);
        assert_eq!(r.answers.len(), MAX_CHAIN);
    }
}
