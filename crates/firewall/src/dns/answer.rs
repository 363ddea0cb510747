//! Building and encoding responses: the question echoed as asked, a synthetic SOA for negative
//! answers, EDNS, and truncation to what the client can receive.

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record};

/// Without EDNS a UDP response may not exceed 512 bytes (RFC 1035 §4.2.1).
pub(crate) const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// A response under construction: the few shapes this server answers with.
#[derive(Debug)]
pub(crate) struct Reply {
    metadata: Metadata,
    /// The question, as the client spelled it.
    query: Option<Query>,
    /// Our EDNS payload size, when the client spoke EDNS.
    edns_payload: Option<u16>,
    /// A records owned by the question name, and their TTL.
    answers: Vec<Ipv4Addr>,
    answer_ttl: u32,
    /// The TTL of the synthetic SOA of a negative answer.
    negative_ttl: Option<u32>,
}

/// The synthetic SOA's names.
const SOA_MNAME: &[&[u8]] = &[b"palisade", b"invalid"];
const SOA_RNAME_FIRST: &[u8] = b"hostmaster";
const SOA_SERIAL: u32 = 1;
/// Refresh, retry and expire, in seconds.
const SOA_TIMERS: [i32; 3] = [3600, 600, 86_400];
const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// A compression pointer to offset 12, where the question name starts.
const QUESTION_NAME_POINTER: [u8; 2] = [0xc0, 12];

impl Reply {
    /// A response to `req` with `rcode`, echoing `query` exactly as the client spelled it.
    pub(crate) fn new(
        req: &Metadata,
        query: Option<&Query>,
        client_edns: Option<&Edns>,
        max_udp_payload: u16,
        rcode: ResponseCode,
    ) -> Self {
        let mut metadata = Metadata::response_from_request(req);
        metadata.recursion_available = true;
        metadata.response_code = rcode;
        Self {
            metadata,
            query: query.cloned(),
            edns_payload: client_edns.map(|_| max_udp_payload.max(CLASSIC_UDP_PAYLOAD)),
            answers: Vec::new(),
            answer_ttl: 0,
            negative_ttl: None,
        }
    }

    /// Adds A records owned by the question name, in the client's spelling.
    pub(crate) fn answer_a(&mut self, addrs: &[Ipv4Addr], ttl: Duration) {
        if self.query.is_none() {
            return;
        }
        self.answer_ttl = secs(ttl);
        self.answers.extend_from_slice(addrs);
    }

    /// Adds the synthetic SOA whose TTL and minimum make resolvers cache the negative answer
    /// only briefly (RFC 2308).
    pub(crate) fn negative_soa(&mut self, ttl: Duration) {
        self.negative_ttl = Some(secs(ttl));
    }

    /// Wire bytes no longer than `limit`; a response that does not fit is sent with only its
    /// question and the TC bit, so the client retries over TCP.
    pub(crate) fn encode(&self, limit: usize) -> Option<Vec<u8>> {
        if let Some(bytes) = self.encode_direct().filter(|b| b.len() <= limit) {
            return Some(bytes);
        }
        let msg = self.to_message();
        match msg.to_vec() {
            Ok(bytes) if bytes.len() <= limit => Some(bytes),
            Ok(_) => msg.truncate().to_vec().ok().filter(|b| b.len() <= limit),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode DNS response");
                let mut fail = Message::new(
                    self.metadata.id,
                    self.metadata.message_type,
                    self.metadata.op_code,
                );
                fail.metadata = self.metadata;
                fail.metadata.response_code = ResponseCode::ServFail;
                fail.to_vec().ok()
            }
        }
    }

    /// The response as hickory's message (the reference encoding, and what truncation uses).
    fn to_message(&self) -> Message {
        let mut msg = Message::new(
            self.metadata.id,
            self.metadata.message_type,
            self.metadata.op_code,
        );
        msg.metadata = self.metadata;
        if let Some(q) = &self.query {
            msg.add_query(q.clone());
            for ip in &self.answers {
                msg.add_answer(Record::from_rdata(
                    q.name().clone(),
                    self.answer_ttl,
                    RData::A(A(*ip)),
                ));
            }
        }
        if let Some(ttl) = self.negative_ttl
            && let (Ok(mname), Ok(rname)) = (
                Name::from_ascii("palisade.invalid."),
                Name::from_ascii("hostmaster.palisade.invalid."),
            )
        {
            let [refresh, retry, expire] = SOA_TIMERS;
            let soa = SOA::new(mname, rname, SOA_SERIAL, refresh, retry, expire, ttl);
            // The root is an ancestor of every name, so the SOA fits any question.
            msg.add_authority(Record::from_rdata(Name::root(), ttl, RData::SOA(soa)));
        }
        if let Some(payload) = self.edns_payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            edns.set_version(0);
            msg.set_edns(edns);
        }
        msg
    }

    /// The same bytes hickory's encoder writes for these shapes, written directly: its generic
    /// encoder (a compression table for every name) was a third of a query's cost. The one
    /// name written twice, the answers' owner, is a pointer to the question; the SOA's rname
    /// points into its mname. `None` (the caller falls back to hickory) for what these shapes
    /// cannot say: an extended response code without EDNS, or a question name hickory would
    /// compress against the SOA's (`…invalid`).
    fn encode_direct(&self) -> Option<Vec<u8>> {
        let rcode = u16::from(self.metadata.response_code);
        let (rcode_low, rcode_high) = ((rcode & 0x0f) as u8, (rcode >> 4) as u8);
        if rcode_high > 0 && self.edns_payload.is_none() {
            return None;
        }
        let labels = self.query.as_ref().map(|q| q.name().iter());
        if let Some(q) = &self.query
            && q.name()
                .iter()
                .next_back()
                .is_some_and(|l| l.eq_ignore_ascii_case(b"invalid"))
        {
            return None;
        }
        let m = &self.metadata;
        let mut out = Vec::with_capacity(128 + 16 * self.answers.len());
        out.extend_from_slice(&m.id.to_be_bytes());
        let qr = if m.message_type == MessageType::Response {
            0x80
        } else {
            0
        };
        out.push(
            qr | (u8::from(m.op_code) << 3)
                | (u8::from(m.authoritative) << 2)
                | (u8::from(m.truncation) << 1)
                | u8::from(m.recursion_desired),
        );
        out.push(
            (u8::from(m.recursion_available) << 7)
                | (u8::from(m.authentic_data) << 5)
                | (u8::from(m.checking_disabled) << 4)
                | rcode_low,
        );
        let questions = u16::from(self.query.is_some());
        let answers = if self.query.is_some() {
            u16::try_from(self.answers.len()).ok()?
        } else {
            0
        };
        let authorities = u16::from(self.negative_ttl.is_some());
        let additionals = u16::from(self.edns_payload.is_some());
        for count in [questions, answers, authorities, additionals] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        if let (Some(q), Some(labels)) = (&self.query, labels) {
            for label in labels {
                out.push(u8::try_from(label.len()).ok()?);
                out.extend_from_slice(label);
            }
            out.push(0);
            out.extend_from_slice(&u16::from(q.query_type()).to_be_bytes());
            out.extend_from_slice(&u16::from(q.query_class()).to_be_bytes());
            for ip in self.answers.iter().take(usize::from(answers)) {
                out.extend_from_slice(&QUESTION_NAME_POINTER);
                push_rr_head(&mut out, TYPE_A, CLASS_IN, self.answer_ttl, 4);
                out.extend_from_slice(&ip.octets());
            }
        }
        if let Some(ttl) = self.negative_ttl {
            out.push(0);
            let mname_len: usize = SOA_MNAME.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
            let rdata_len = mname_len + 1 + SOA_RNAME_FIRST.len() + 2 + 20;
            push_rr_head(
                &mut out,
                TYPE_SOA,
                CLASS_IN,
                ttl,
                u16::try_from(rdata_len).ok()?,
            );
            let mname_at = u16::try_from(out.len()).ok().filter(|at| *at < 0x4000)?;
            for label in SOA_MNAME {
                out.push(u8::try_from(label.len()).ok()?);
                out.extend_from_slice(label);
            }
            out.push(0);
            out.push(u8::try_from(SOA_RNAME_FIRST.len()).ok()?);
            out.extend_from_slice(SOA_RNAME_FIRST);
            out.extend_from_slice(&(0xc000 | mname_at).to_be_bytes());
            out.extend_from_slice(&SOA_SERIAL.to_be_bytes());
            for v in SOA_TIMERS {
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(&ttl.to_be_bytes());
        }
        if let Some(payload) = self.edns_payload {
            out.push(0);
            push_rr_head(&mut out, TYPE_OPT, payload, u32::from(rcode_high) << 24, 0);
        }
        Some(out)
    }
}

/// Type, class, TTL and RDATA length of a resource record, after its owner name.
fn push_rr_head(out: &mut Vec<u8>, rtype: u16, class: u16, ttl: u32, rdlen: u16) {
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&rdlen.to_be_bytes());
}

/// How large a UDP response this client accepts.
pub(crate) fn udp_limit(client_edns: Option<&Edns>, max_udp_payload: u16) -> usize {
    let ours = max_udp_payload.max(CLASSIC_UDP_PAYLOAD);
    let theirs = client_edns.map_or(CLASSIC_UDP_PAYLOAD, |e| e.max_payload());
    usize::from(theirs.clamp(CLASSIC_UDP_PAYLOAD, ours))
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::RecordType;

    use super::*;

    fn query_meta() -> Metadata {
        let mut m = Metadata::new(7, MessageType::Query, OpCode::Query);
        m.recursion_desired = true;
        m
    }

    #[test]
    fn large_answers_are_truncated_for_udp() {
        let q = Query::query(Name::from_ascii("many.test.").unwrap(), RecordType::A);
        let mut r = Reply::new(&query_meta(), Some(&q), None, 1232, ResponseCode::NoError);
        let addrs: Vec<Ipv4Addr> = (0..60).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
        r.answer_a(&addrs, Duration::from_secs(30));
        let full = r.encode(65_535).unwrap();
        assert!(full.len() > 512);
        let small = r.encode(512).unwrap();
        assert!(small.len() <= 512);
        let parsed = Message::from_vec(&small).unwrap();
        assert!(parsed.metadata.truncation);
        assert_eq!(parsed.metadata.id, 7);
        assert!(parsed.answers.is_empty());
        assert_eq!(parsed.queries.len(), 1);
    }

    /// Every shape the server answers with, encoded directly, is byte for byte what hickory's
    /// encoder writes, and parses back to the same message.
    #[test]
    fn direct_encoding_is_hickorys() {
        let names = [
            "a.test.",
            "API.Example.COM.",
            "x.",
            "deep.er.and.deeper.example.org.",
        ];
        let rcodes = [
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::Refused,
            ResponseCode::ServFail,
            ResponseCode::FormErr,
            ResponseCode::NotImp,
            ResponseCode::BADVERS,
        ];
        let types = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::HTTPS,
            RecordType::TXT,
        ];
        let mut checked = 0;
        for name in names {
            for rcode in rcodes {
                for qtype in types {
                    for edns in [None, Some(Edns::new())] {
                        for (addrs, negative) in [(0, false), (0, true), (1, false), (3, false)] {
                            for with_query in [true, false] {
                                let q = Query::query(Name::from_ascii(name).unwrap(), qtype);
                                let query = with_query.then_some(&q);
                                let mut r =
                                    Reply::new(&query_meta(), query, edns.as_ref(), 1232, rcode);
                                let ips: Vec<Ipv4Addr> =
                                    (0..addrs).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
                                r.answer_a(&ips, Duration::from_secs(42));
                                if negative {
                                    r.negative_soa(Duration::from_secs(5));
                                }
                                let reference = r.to_message().to_vec().ok();
                                let direct = r.encode_direct();
                                if rcode == ResponseCode::BADVERS && edns.is_none() {
                                    assert_eq!(direct, None, "{name} {rcode:?}");
                                    continue;
                                }
                                assert_eq!(
                                    direct, reference,
                                    "{name} {rcode:?} {qtype:?} {edns:?}"
                                );
                                let parsed = Message::from_vec(&direct.unwrap()).unwrap();
                                // By number: 16 is both BADVERS and BADSIG, and hickory reads it as the latter.
                                assert_eq!(
                                    u16::from(parsed.metadata.response_code),
                                    u16::from(rcode)
                                );
                                assert_eq!(
                                    parsed.answers.len(),
                                    if with_query { usize::from(addrs) } else { 0 }
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// A question name ending in the SOA's own suffix is left to hickory, which compresses the
    /// SOA's names against it.
    #[test]
    fn names_sharing_the_soa_suffix_use_hickory() {
        let q = Query::query(
            Name::from_ascii("a.palisade.INVALID.").unwrap(),
            RecordType::A,
        );
        let mut r = Reply::new(&query_meta(), Some(&q), None, 1232, ResponseCode::NXDomain);
        r.negative_soa(Duration::from_secs(5));
        assert_eq!(r.encode_direct(), None);
        let bytes = r.encode(512).unwrap();
        assert_eq!(Some(bytes), r.to_message().to_vec().ok());
    }

    #[test]
    fn udp_limit_follows_edns_within_bounds() {
        assert_eq!(udp_limit(None, 1232), 512);
        let mut e = Edns::new();
        e.set_max_payload(4096);
        assert_eq!(udp_limit(Some(&e), 1232), 1232);
        e.set_max_payload(100);
        assert_eq!(udp_limit(Some(&e), 1232), 512);
    }

    #[test]
    fn negative_soa_carries_the_short_ttl() {
        let q = Query::query(Name::from_ascii("no.test.").unwrap(), RecordType::A);
        let mut r = Reply::new(&query_meta(), Some(&q), None, 1232, ResponseCode::NXDomain);
        r.negative_soa(Duration::from_secs(5));
        let parsed = Message::from_vec(&r.encode(512).unwrap()).unwrap();
        assert_eq!(parsed.metadata.response_code, ResponseCode::NXDomain);
        let soa = &parsed.authorities[0];
        assert_eq!(soa.ttl, 5);
        match &soa.data {
            RData::SOA(s) => assert_eq!(s.minimum, 5),
            other => panic!("not an SOA: {other:?}"),
        }
    }
}
