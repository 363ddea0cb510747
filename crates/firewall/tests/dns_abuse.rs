//! Malformed input and exhaustion against the filtering DNS server: bad packets get FORMERR,
//! REFUSED or nothing, never a crash; TCP and in-flight bounds hold, and other sandboxes keep
//! being served. Loopback only.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "dns_support.rs"]
mod support;

use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long to wait before concluding a UDP packet was dropped.
const DROPPED: Duration = Duration::from_millis(300);

fn rcode(reply: &[u8]) -> ResponseCode {
    Message::from_vec(reply).unwrap().metadata.response_code
}

async fn still_serving(w: &World) {
    let msg = ask(w, Via::Udp, CUSTOM, "www.allowed.test.", RecordType::A).await;
    assert_eq!(a_records(&msg).len(), 1);
    let msg = ask(w, Via::Tcp, CUSTOM, "www.allowed.test.", RecordType::A).await;
    assert_eq!(a_records(&msg).len(), 1);
}

#[tokio::test]
async fn malformed_packets_get_formerr_refused_or_nothing() {
    let w = World::start().await;
    let valid = query_bytes(77, "www.allowed.test.", RecordType::A, false);

    // Shorter than a header: dropped.
    assert!(udp_raw(w.udp, CUSTOM, &valid[..5], DROPPED).await.is_none());
    // A header, then a question cut short: FORMERR with the same id.
    let cut = udp_raw(w.udp, CUSTOM, &valid[..15], DROPPED).await.unwrap();
    let cut = Message::from_vec(&cut).unwrap();
    assert_eq!(cut.metadata.id, 77);
    assert_eq!(cut.metadata.response_code, ResponseCode::FormErr);

    // Two questions, and none.
    let mut two = Message::new(78, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(
        Name::from_ascii("www.allowed.test.").unwrap(),
        RecordType::A,
    ));
    two.add_query(Query::query(
        Name::from_ascii("denied.test.").unwrap(),
        RecordType::A,
    ));
    let r = udp_raw(w.udp, CUSTOM, &two.to_vec().unwrap(), DROPPED)
        .await
        .unwrap();
    assert_eq!(rcode(&r), ResponseCode::FormErr);
    let none = Message::new(79, MessageType::Query, OpCode::Query);
    let r = udp_raw(w.udp, CUSTOM, &none.to_vec().unwrap(), DROPPED)
        .await
        .unwrap();
    assert_eq!(rcode(&r), ResponseCode::FormErr);

    // Class CHAOS (version.bind and friends): refused.
    let mut chaos = Message::new(80, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    chaos.add_query(q);
    let r = udp_raw(w.udp, CUSTOM, &chaos.to_vec().unwrap(), DROPPED)
        .await
        .unwrap();
    assert_eq!(rcode(&r), ResponseCode::Refused);

    // Another opcode: not implemented.
    let mut update = Message::new(81, MessageType::Query, OpCode::Update);
    update.add_query(Query::query(
        Name::from_ascii("allowed.test.").unwrap(),
        RecordType::SOA,
    ));
    let r = udp_raw(w.udp, CUSTOM, &update.to_vec().unwrap(), DROPPED)
        .await
        .unwrap();
    assert_eq!(rcode(&r), ResponseCode::NotImp);

    // A response sent to the server: dropped (answering would let two servers loop).
    let mut resp = Message::new(82, MessageType::Response, OpCode::Query);
    resp.add_query(Query::query(
        Name::from_ascii("www.allowed.test.").unwrap(),
        RecordType::A,
    ));
    assert!(
        udp_raw(w.udp, CUSTOM, &resp.to_vec().unwrap(), DROPPED)
            .await
            .is_none()
    );

    // Names that cannot be canonicalised: NXDOMAIN; the root: REFUSED.
    for bad in [&b"a\x00b"[..], b"a.b", b"-x", b"under_score", b"a b"] {
        let mut msg = Message::new(83, MessageType::Query, OpCode::Query);
        let name = Name::from_labels(vec![bad, b"allowed", b"test"]).unwrap();
        msg.add_query(Query::query(name, RecordType::A));
        let r = udp_raw(w.udp, CUSTOM, &msg.to_vec().unwrap(), DROPPED)
            .await
            .unwrap();
        assert_eq!(rcode(&r), ResponseCode::NXDomain, "{bad:?}");
    }
    let root = query_bytes(84, ".", RecordType::NS, false);
    let r = udp_raw(w.udp, CUSTOM, &root, DROPPED).await.unwrap();
    assert_eq!(rcode(&r), ResponseCode::Refused);

    // Random bytes: whatever comes back is a FORMERR/REFUSED-style error, never an answer.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for len in [12usize, 13, 40, 200, 511, 1400] {
        let mut junk = vec![0u8; len];
        for b in &mut junk {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        junk[2] &= 0x7f; // QR = 0, so it reads as a query.
        if let Some(r) = udp_raw(w.udp, CUSTOM, &junk, DROPPED).await
            && let Ok(m) = Message::from_vec(&r)
        {
            assert!(m.answers.is_empty());
        }
    }

    assert!(
        w.upstream
            .seen()
            .iter()
            .all(|s| s.name == "www.allowed.test.")
    );
    still_serving(&w).await;
}

#[tokio::test]
async fn tcp_framing_bounds_close_the_connection() {
    let w = World::start().await;
    let connect = || async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((ip(CUSTOM), 0).into()).unwrap();
        sock.connect(w.tcp).await.unwrap()
    };
    // A zero length, and one past the limit: closed without an answer.
    for prefix in [[0u8, 0], 9000u16.to_be_bytes()] {
        let mut s = connect().await;
        s.write_all(&prefix).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "connection must close");
    }
    // Garbage in a frame: FORMERR, and the connection stays usable.
    let mut s = connect().await;
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xab; 20]);
    write_framed(&mut s, &garbage).await.unwrap();
    let r = read_framed(&mut s).await.unwrap();
    assert_eq!(rcode(&r), ResponseCode::FormErr);
    write_framed(
        &mut s,
        &query_bytes(5, "www.allowed.test.", RecordType::A, false),
    )
    .await
    .unwrap();
    let r = read_framed(&mut s).await.unwrap();
    assert_eq!(rcode(&r), ResponseCode::NoError);
    // Pipelined queries on one connection are answered in order.
    let mut s = connect().await;
    for id in [1u16, 2, 3] {
        write_framed(
            &mut s,
            &query_bytes(id, "denied.test.", RecordType::A, false),
        )
        .await
        .unwrap();
    }
    for id in [1u16, 2, 3] {
        let r = Message::from_vec(&read_framed(&mut s).await.unwrap()).unwrap();
        assert_eq!(r.metadata.id, id);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    still_serving(&w).await;
}

#[tokio::test]
async fn idle_and_excess_tcp_connections_are_closed() {
    let w = World::start().await; // idle timeout 1 s, 4 connections per source
    let connect = |src: &'static str| {
        let tcp = w.tcp;
        async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind((ip(src), 0).into()).unwrap();
            sock.connect(tcp).await.unwrap()
        }
    };
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(connect(CUSTOM).await);
    }
    // The fifth from the same source is closed at once...
    let mut fifth = connect(CUSTOM).await;
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(Duration::from_secs(10), fifth.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    // ... while another sandbox is still served.
    let other = ask(&w, Via::Tcp, ALLOW_ALL, "open.test.", RecordType::A).await;
    assert_eq!(a_records(&other).len(), 1);
    // Connections that send nothing are closed after the idle timeout.
    for s in &mut idle {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("idle connection must be closed by the server")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    // Then the source may connect again.
    let mut served = false;
    for _ in 0..50 {
        let mut s = connect(CUSTOM).await;
        let query = query_bytes(6, "www.allowed.test.", RecordType::A, false);
        if write_framed(&mut s, &query).await.is_ok()
            && let Ok(Some(r)) =
                tokio::time::timeout(Duration::from_secs(5), read_framed(&mut s)).await
        {
            served = rcode(&r) == ResponseCode::NoError;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served);
}

#[tokio::test]
async fn in_flight_cap_per_source_keeps_others_served() {
    let w = World::start().await; // 4 queries in flight per source
    // Four slow upstream lookups (the upstream waits 1.5 s) fill the source's slots.
    let slow: Vec<_> = (0..4u16)
        .map(|i| {
            let server = w.udp;
            tokio::spawn(async move {
                let q = query_bytes(100 + i, "slow.allowed.test.", RecordType::A, true);
                udp_raw(server, CUSTOM, &q, Duration::from_secs(10)).await
            })
        })
        .collect();
    // Let them arrive before the next query.
    let mut waited = 0;
    while w.upstream.count("slow.allowed.test") == 0 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fifth query from the same source is dropped...
    let extra = query_bytes(200, "denied.test.", RecordType::A, true);
    assert!(udp_raw(w.udp, CUSTOM, &extra, DROPPED).await.is_none());
    // ... another sandbox is answered meanwhile.
    let other = ask(&w, Via::Udp, ALLOW_ALL, "open.test.", RecordType::A).await;
    assert_eq!(a_records(&other).len(), 1);
    // The slow ones complete, and the source is served again.
    for t in slow {
        let r = t.await.unwrap().expect("slow query answered");
        assert_eq!(rcode(&r), ResponseCode::NoError);
    }
    let again = ask(&w, Via::Udp, CUSTOM, "denied.test.", RecordType::A).await;
    assert_eq!(again.metadata.response_code, ResponseCode::NXDomain);
}
