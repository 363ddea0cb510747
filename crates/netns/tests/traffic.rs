//! Privileged (root): the rules with real packets, between namespaces these tests create (a
//! firewall host, an upstream on 198.51.100.0/24, sandboxes). Nothing touches the namespace the
//! tests run in.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step is a failed test"
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::*;
use palisade_netns::nft;
use palisade_netns::{HostNetPlatform, original_dst};

/// The whole data plane with real packets: sandbox `a` may send UDP/ICMP to 198.51.100.2 and
/// (to prove sandboxes are still isolated) to the whole pool; sandbox `b` is deny-all.
#[test]
fn rules_enforce_the_design_with_real_traffic() {
    let mut w = World::new();
    let a = w.sandbox();
    let b = w.sandbox();
    let p = &HostNetPlatform;
    let h = Some(w.host.as_str());
    nft::apply(p, h, &nft::render_base(&ports(), w.pool.net())).unwrap();
    nft::apply(
        p,
        h,
        &nft::render_sandbox(&rules(&a, &["198.51.100.2/32", "100.96.0.0/16"])),
    )
    .unwrap();
    nft::apply(p, h, &nft::render_sandbox(&rules(&b, &[]))).unwrap();
    let listing = list_table(&w);
    for needle in [
        format!("\"{}\" : goto sb_{}_pre", a.host_if, a.id),
        format!("chain sb_{}_fwd", b.id),
    ] {
        assert!(listing.contains(&needle), "{needle} missing in\n{listing}");
    }

    let proxy = tcp_listen(&w.host, PROXY);
    let dns_udp = udp_bind(&w.host, Ipv4Addr::UNSPECIFIED, DNS);
    let dns_tcp = tcp_listen(&w.host, DNS);
    let upstream = udp_bind(&w.up, Ipv4Addr::UNSPECIFIED, 7777);
    let upstream_tcp = tcp_listen(&w.up, 8080);

    // TCP to any address and port arrives at the proxy, original destination intact, even
    // when the destination is in allow_cidrs (the proxy decides).
    for (dst, port) in [
        (Ipv4Addr::new(203, 0, 113, 7), 443),
        (UP_A, 8080),
        (a.addrs.host, 22),
        (b.addrs.sandbox, 80),
    ] {
        let mut client = tcp_connect(&a.netns, dst, port).unwrap();
        let mut conn =
            accept_within(&proxy, Duration::from_secs(5)).expect("no connection at the proxy");
        assert_eq!(original_dst(&conn).unwrap(), SocketAddrV4::new(dst, port));
        assert_eq!(
            conn.peer_addr().unwrap().ip(),
            std::net::IpAddr::V4(a.addrs.sandbox)
        );
        client.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }
    assert!(
        accept_within(&upstream_tcp, Duration::from_millis(200)).is_none(),
        "TCP bypassed the proxy"
    );

    // DNS over UDP and TCP to any address reaches the firewall's resolver; replies come back
    // from the address the sandbox asked.
    let q = udp_bind(&a.netns, Ipv4Addr::UNSPECIFIED, 0);
    q.connect((Ipv4Addr::new(203, 0, 113, 53), 53)).unwrap();
    q.send(b"query").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = dns_udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"query");
    assert_eq!(from.ip(), std::net::IpAddr::V4(a.addrs.sandbox));
    dns_udp.send_to(b"answer", from).unwrap();
    let n = q.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"answer");
    let _dns_client = tcp_connect(&a.netns, Ipv4Addr::new(192, 0, 2, 1), 53).unwrap();
    let conn =
        accept_within(&dns_tcp, Duration::from_secs(5)).expect("TCP 53 did not reach the resolver");
    assert_eq!(
        original_dst(&conn).unwrap(),
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 53)
    );
    // The sandbox's own resolv.conf names the gateway: that works too.
    let g = udp_bind(&a.netns, Ipv4Addr::UNSPECIFIED, 0);
    g.send_to(b"via-gateway", (a.addrs.host, 53)).unwrap();
    let (n, _) = dns_udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"via-gateway");

    // UDP to allow_cidrs is forwarded (masqueraded), and the reply gets back.
    let u = udp_bind(&a.netns, Ipv4Addr::UNSPECIFIED, 0);
    u.connect((UP_A, 7777)).unwrap();
    u.send(b"allowed").unwrap();
    let (n, from) = upstream.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"allowed");
    assert_eq!(from.ip(), std::net::IpAddr::V4(UP_HOST), "not masqueraded");
    upstream.send_to(b"reply", from).unwrap();
    let n = u.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"reply");

    // UDP anywhere else is rejected at once (ICMP admin-prohibited → EHOSTUNREACH), from a
    // sandbox with cidrs and from a deny-all one, and the upstream sees none of it.
    for (ns, dst) in [(&a.netns, UP_B), (&b.netns, UP_A), (&a.netns, a.addrs.host)] {
        let s = udp_bind(ns, Ipv4Addr::UNSPECIFIED, 0);
        s.connect((dst, 7777)).unwrap();
        s.send(b"denied").unwrap();
        let err = s.recv(&mut buf).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::HostUnreachable,
            "{ns} -> {dst}: {err}"
        );
    }
    u.send(b"marker").unwrap();
    assert!(
        read_until_marker(&upstream, b"marker").is_empty(),
        "denied UDP reached upstream"
    );

    // ICMP: the gateway answers a ping with admin-prohibited, an allowed upstream answers it.
    assert_eq!(
        ping(&a.netns, a.addrs.host),
        Some((3, 13)),
        "gateway ping not rejected"
    );
    assert_eq!(
        ping(&b.netns, UP_A),
        Some((3, 13)),
        "deny-all ping not rejected"
    );
    assert_eq!(
        ping(&a.netns, UP_A),
        Some((0, 0)),
        "allowed ping got no echo reply"
    );

    // Sandbox to sandbox is blocked although a's allow_cidrs cover the pool.
    let at_b = udp_bind(&b.netns, Ipv4Addr::UNSPECIFIED, 7777);
    let s = udp_bind(&a.netns, Ipv4Addr::UNSPECIFIED, 0);
    s.send_to(b"a2b", (b.addrs.sandbox, 7777)).unwrap();
    assert_eq!(
        ping(&a.netns, b.addrs.sandbox),
        None,
        "sandbox pinged sandbox"
    );
    // The host itself may still reach b: its datagram is the marker.
    let from_host = udp_bind(&w.host, Ipv4Addr::UNSPECIFIED, 0);
    from_host
        .send_to(b"marker", (b.addrs.sandbox, 7777))
        .unwrap();
    assert!(
        read_until_marker(&at_b, b"marker").is_empty(),
        "sandbox reached sandbox"
    );

    // A spoofed source is dropped before anything else sees it.
    let spoof = Ipv4Addr::new(100, 96, 200, 2);
    ip(&[
        "-n",
        &a.netns,
        "addr",
        "add",
        &format!("{spoof}/32"),
        "dev",
        "eth0",
    ]);
    let s = udp_bind(&a.netns, spoof, 0);
    s.send_to(b"spoof-dns", (Ipv4Addr::new(203, 0, 113, 53), 53))
        .unwrap();
    s.send_to(b"spoof-up", (UP_A, 7777)).unwrap();
    q.send(b"marker").unwrap();
    assert!(
        read_until_marker(&dns_udp, b"marker").is_empty(),
        "spoofed DNS arrived"
    );
    u.send(b"marker").unwrap();
    assert!(
        read_until_marker(&upstream, b"marker").is_empty(),
        "spoofed UDP forwarded"
    );

    // Nobody but sandboxes may use the proxy and DNS ports (here: the upstream side).
    let outside = tcp_connect(&w.up, UP_HOST, PROXY);
    assert!(
        outside.is_err(),
        "proxy port open to a non-sandbox interface"
    );
    assert!(accept_within(&proxy, Duration::from_millis(200)).is_none());
    let s = udp_bind(&w.up, Ipv4Addr::UNSPECIFIED, 0);
    s.send_to(b"outside", (UP_HOST, DNS)).unwrap();
    q.send(b"marker").unwrap();
    assert!(
        read_until_marker(&dns_udp, b"marker").is_empty(),
        "DNS port open to the outside"
    );

    // Daemon dead: with nobody on the proxy port a sandbox connection is refused at once.
    drop(proxy);
    let err = tcp_connect(&a.netns, Ipv4Addr::new(203, 0, 113, 7), 443).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    drop(dns_udp);
    q.send(b"dead").unwrap();
    let err = q.recv(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

/// IPv6 is off inside; if root in the sandbox turns it back on and forges a neighbour entry,
/// its packets still die on the host's first hook.
#[test]
fn ipv6_goes_nowhere() {
    let mut w = World::new();
    let a = w.sandbox();
    let p = &HostNetPlatform;
    let h = Some(w.host.as_str());
    nft::apply(p, h, &nft::render_base(&ports(), w.pool.net())).unwrap();
    nft::apply(p, h, &nft::render_sandbox(&rules(&a, &["0.0.0.0/0"]))).unwrap();

    let v6 = in_netns(&a.netns, || std::net::UdpSocket::bind("[::]:0").map(drop));
    let connect = in_netns(&a.netns, || {
        std::net::TcpStream::connect_timeout(
            &"[2001:db8::1]:80".parse().unwrap(),
            Duration::from_secs(2),
        )
    });
    assert!(
        v6.is_err() || connect.is_err(),
        "IPv6 usable inside the sandbox"
    );
    assert!(connect.is_err());

    // The sandbox's root re-enables IPv6; the host side listens on v6.
    exec(
        &a.netns,
        "sysctl",
        &[
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.eth0.disable_ipv6=0",
        ],
    )
    .unwrap();
    ip(&[
        "-n",
        &a.netns,
        "addr",
        "add",
        "2001:db8:a::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    exec(
        &w.host,
        "sysctl",
        &[
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=0", a.host_if),
        ],
    )
    .unwrap();
    ip(&[
        "-n",
        &w.host,
        "addr",
        "add",
        "2001:db8:a::1/64",
        "dev",
        &a.host_if,
        "nodad",
    ]);
    let mac = ip(&["-n", &w.host, "-o", "link", "show", "dev", &a.host_if]);
    let mac = mac
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    ip(&[
        "-n",
        &a.netns,
        "neigh",
        "replace",
        "2001:db8:a::1",
        "lladdr",
        &mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    // Port 7777 plain, and port 53, which the inet nat rule would redirect to the resolver if
    // an IPv6 packet ever got that far.
    let plain = in_netns(&w.host, || {
        std::net::UdpSocket::bind("[2001:db8:a::1]:7777").unwrap()
    });
    let resolver = in_netns(&w.host, move || {
        std::net::UdpSocket::bind(("2001:db8:a::1", DNS)).unwrap()
    });
    let sent = in_netns(&a.netns, || {
        let s = std::net::UdpSocket::bind("[::]:0").unwrap();
        s.send_to(b"v6", "[2001:db8:a::1]:7777")?;
        s.send_to(b"v6", "[2001:db8:a::1]:53").map(drop)
    });
    sent.expect("the packets left the sandbox");
    // A v4 marker through the same veth, then the v6 listener must still be empty.
    let dns = udp_bind(&w.host, Ipv4Addr::UNSPECIFIED, DNS);
    let q = udp_bind(&a.netns, Ipv4Addr::UNSPECIFIED, 0);
    q.send_to(b"marker", (Ipv4Addr::new(203, 0, 113, 53), 53))
        .unwrap();
    assert!(read_until_marker(&dns, b"marker").is_empty());
    assert!(
        nothing_queued(&plain),
        "IPv6 from the sandbox reached the host"
    );
    assert!(
        nothing_queued(&resolver),
        "IPv6 DNS from the sandbox reached the resolver"
    );
}

/// A sandbox link with no rules of its own (created before its rules, or after they were
/// removed) is cut off entirely: fail closed.
#[test]
fn sandbox_without_its_rules_is_cut_off() {
    let mut w = World::new();
    let a = w.sandbox();
    let c = w.sandbox();
    let p = &HostNetPlatform;
    let h = Some(w.host.as_str());
    nft::apply(p, h, &nft::render_base(&ports(), w.pool.net())).unwrap();
    nft::apply(p, h, &nft::render_sandbox(&rules(&a, &[]))).unwrap();
    nft::apply(p, h, &nft::render_sandbox(&rules(&c, &["0.0.0.0/0"]))).unwrap();
    let proxy = tcp_listen(&w.host, PROXY);
    let dns = udp_bind(&w.host, Ipv4Addr::UNSPECIFIED, DNS);
    let upstream = udp_bind(&w.up, Ipv4Addr::UNSPECIFIED, 7777);

    // With its rules, c reaches the proxy and the upstream.
    tcp_connect(&c.netns, UP_A, 80).unwrap();
    assert!(accept_within(&proxy, Duration::from_secs(5)).is_some());
    let s = udp_bind(&c.netns, Ipv4Addr::UNSPECIFIED, 0);
    s.send_to(b"marker", (UP_A, 7777)).unwrap();
    assert!(read_until_marker(&upstream, b"marker").is_empty());

    // Its rules removed while the link still exists: nothing gets through any more.
    nft::apply(p, h, &nft::render_remove_sandbox(&c.id, &c.host_if)).unwrap();
    let err = tcp_connect(&c.netns, UP_A, 80).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(accept_within(&proxy, Duration::from_millis(200)).is_none());
    s.send_to(b"from-c", (UP_A, 7777)).unwrap();
    s.send_to(b"from-c", (Ipv4Addr::new(203, 0, 113, 53), 53))
        .unwrap();
    // a's packets are the markers: the host handled c's before them.
    let q = udp_bind(&a.netns, Ipv4Addr::UNSPECIFIED, 0);
    q.send_to(b"marker", (Ipv4Addr::new(203, 0, 113, 53), 53))
        .unwrap();
    assert!(
        read_until_marker(&dns, b"marker").is_empty(),
        "c reached the resolver"
    );
    assert!(nothing_queued(&upstream), "c reached the upstream");
    assert_eq!(ping(&c.netns, c.addrs.host), None);
}
