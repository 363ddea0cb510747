//! Every address of the test world, in one place so tests and the world agree.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The firewall host's side of the uplink to the internet namespace.
pub const FW_UPLINK_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The internet namespace's side of the uplink (the firewall host's default gateway).
pub const NET_UPLINK_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// Prefix length of the v4 uplink.
pub const UPLINK_V4_PREFIX: u8 = 30;
/// The firewall host's v6 uplink address.
pub const FW_UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
/// The internet namespace's v6 uplink address.
pub const NET_UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);
/// Prefix length of the v6 uplink.
pub const UPLINK_V6_PREFIX: u8 = 64;

/// The sandbox pool; the internet namespace routes it back to the firewall host.
pub const SANDBOX_POOL_V4: Ipv4Addr = Ipv4Addr::new(100, 96, 0, 0);
/// Prefix length of the sandbox pool.
pub const SANDBOX_POOL_PREFIX: u8 = 16;

/// "Good" server: HTTPS on 443 and HTTP on 80 for alpha.test, beta.test, api.example.test,
/// *.wild.test.
pub const GOOD_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The attacker: HTTPS (valid certificates for the same names and evil.test), HTTP, TCP sinks on
/// [`ATTACKER_SINK_PORTS`] and UDP sinks on [`ATTACKER_UDP_PORTS`]. It logs everything.
pub const ATTACKER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// Plain HTTP echo on 80.
pub const ECHO_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// TCP echo (7), UDP echo (7), TCP sink (9), SSH-like banner (22).
pub const TCP_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
/// A shared host (virtual hosting, a CDN): `shared-a.test` and `shared-b.test` both resolve
/// here. HTTPS on 443 and HTTP on 80 for both names (server `shared`), a TCP echo on 7 (server
/// `shared-echo`, shared-a's service) and an SSH-like banner on 22 (server `shared-ssh`,
/// shared-b's service); every one logs what it receives.
pub const SHARED_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
/// The names served by [`SHARED_V4`].
pub const SHARED_NAMES: [&str; 2] = ["shared-a.test", "shared-b.test"];
/// Authoritative DNS for `test.`, UDP and TCP 53.
pub const DNS_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
/// A "private" HTTP host on 80.
pub const PRIVATE_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
/// Fake cloud metadata HTTP on 80.
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// IPv6 HTTP host on 80.
pub const V6_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

/// TCP ports where the attacker runs a logging sink (besides its HTTP 80 and HTTPS 443).
pub const ATTACKER_SINK_PORTS: [u16; 7] = [22, 25, 53, 853, 5432, 8080, 8443];
/// UDP ports where the attacker logs every datagram (DNS, QUIC, NTP).
pub const ATTACKER_UDP_PORTS: [u16; 3] = [53, 123, 443];

/// The banner the SSH-like server on [`TCP_V4`]:22 sends first.
pub const SSH_BANNER: &[u8] = b"SSH-2.0-testbed\r\n";

/// Names the good server holds certificates for (`*.wild.test` is a wildcard certificate).
pub const GOOD_NAMES: [&str; 4] = ["alpha.test", "beta.test", "api.example.test", "*.wild.test"];
/// Names the attacker holds certificates for: the same, plus its own.
pub const ATTACKER_NAMES: [&str; 5] = [
    "alpha.test",
    "beta.test",
    "api.example.test",
    "*.wild.test",
    "evil.test",
];

/// The uplink interface's name inside the firewall host namespace.
pub const FW_UPLINK_IF: &str = "uplink";
/// The uplink interface's name inside the internet namespace.
pub const NET_UPLINK_IF: &str = "fwlink";

/// Sandbox-like namespaces made by `World::sandbox_like` take /30s from 100.96.250.0/24.
pub const SANDBOX_LIKE_BASE: Ipv4Addr = Ipv4Addr::new(100, 96, 250, 0);
