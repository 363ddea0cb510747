//! Building and encoding responses: the question echoed as asked, a synthetic SOA for negative
//! answers, EDNS, and truncation to what the client can receive.

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Metadata, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record};

/// Without EDNS a UDP response may not exceed 512 bytes (RFC 1035 §4.2.1).
pub(crate) const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// A response under construction.
#[derive(Debug)]
pub(crate) struct Reply {
    msg: Message,
}

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
        let mut msg = Message::new(metadata.id, metadata.message_type, metadata.op_code);
        msg.metadata = metadata;
        if let Some(q) = query {
            msg.add_query(q.clone());
        }
        if client_edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(max_udp_payload.max(CLASSIC_UDP_PAYLOAD));
            edns.set_version(0);
            msg.set_edns(edns);
        }
        Self { msg }
    }

    /// Adds A records owned by the question name, in the client's spelling.
    pub(crate) fn answer_a(&mut self, addrs: &[Ipv4Addr], ttl: Duration) {
        let Some(owner) = self.msg.queries.first().map(|q| q.name().clone()) else {
            return;
        };
        let ttl = secs(ttl);
        for ip in addrs {
            self.msg
                .add_answer(Record::from_rdata(owner.clone(), ttl, RData::A(A(*ip))));
        }
    }

    /// Adds the synthetic SOA whose TTL and minimum make resolvers cache the negative answer
    /// only briefly (RFC 2308).
    pub(crate) fn negative_soa(&mut self, ttl: Duration) {
        let ttl = secs(ttl);
        let (Ok(mname), Ok(rname)) = (
            Name::from_ascii("palisade.invalid."),
            Name::from_ascii("hostmaster.palisade.invalid."),
        ) else {
            return;
        };
        let soa = SOA::new(mname, rname, 1, 3600, 600, 86_400, ttl);
        // The root is an ancestor of every name, so the SOA fits any question.
        self.msg
            .add_authority(Record::from_rdata(Name::root(), ttl, RData::SOA(soa)));
    }

    /// Wire bytes no longer than `limit`; a response that does not fit is sent with only its
    /// question and the TC bit, so the client retries over TCP.
    pub(crate) fn encode(&self, limit: usize) -> Option<Vec<u8>> {
        match self.msg.to_vec() {
            Ok(bytes) if bytes.len() <= limit => Some(bytes),
            Ok(_) => self
                .msg
                .truncate()
                .to_vec()
                .ok()
                .filter(|b| b.len() <= limit),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode DNS response");
                let mut fail = Message::new(
                    self.msg.metadata.id,
                    self.msg.metadata.message_type,
                    self.msg.metadata.op_code,
                );
                fail.metadata = self.msg.metadata;
                fail.metadata.response_code = ResponseCode::ServFail;
                fail.to_vec().ok()
            }
        }
    }
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
