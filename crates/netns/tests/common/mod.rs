//! A private test world for the privileged tests: a namespace playing the firewall host, one
//! playing the internet (198.51.100.2 and .3 behind the host's `up0`, default route there), and
//! sandbox networks hanging off the host. Everything is named after the pid and a counter and
//! removed by `Drop`, also when a test panics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub,
    reason = "test code: a failed step is a failed test"
)]

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use palisade_netns::nft::{FirewallPorts, SandboxRules};
use palisade_netns::{
    AddressPool, HostNetPlatform, NetPlatform, SandboxNet, SandboxNetSpec, create_sandbox_net,
    remove_sandbox_net,
};

pub const PROXY: u16 = 15001;
pub const DNS: u16 = 15053;
pub const UP_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const UP_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const UP_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn next() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

fn base36(mut n: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// `ip …`, panicking with stderr on failure.
pub fn ip(args: &[&str]) -> String {
    HostNetPlatform.run("ip", args, None).unwrap()
}

/// A command run inside a namespace.
pub fn exec(ns: &str, program: &str, args: &[&str]) -> Result<String, palisade_netns::NetnsError> {
    HostNetPlatform.run(
        "ip",
        &[&["netns", "exec", ns, program][..], args].concat(),
        None,
    )
}

#[derive(Debug)]
pub struct World {
    pub host: String,
    pub up: String,
    pub pool: AddressPool,
    sandboxes: Vec<String>,
    extra_netns: Vec<String>,
}

impl World {
    /// Only the host namespace (for nftables checks).
    pub fn host_only() -> World {
        let n = next();
        let host = format!("pt-netns-{}-{n}", std::process::id());
        let w = World {
            up: format!("{host}-up"),
            host,
            pool: AddressPool::default(),
            sandboxes: Vec::new(),
            extra_netns: Vec::new(),
        };
        ip(&["netns", "add", &w.host]);
        ip(&["-n", &w.host, "link", "set", "lo", "up"]);
        w
    }

    /// Host plus the upstream namespace.
    pub fn new() -> World {
        let mut w = World::host_only();
        let (h, u) = (w.host.clone(), w.up.clone());
        ip(&["netns", "add", &u]);
        w.extra_netns.push(u.clone());
        ip(&["-n", &u, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &h, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &u,
        ]);
        ip(&["-n", &h, "addr", "add", "198.51.100.1/24", "dev", "up0"]);
        ip(&["-n", &h, "link", "set", "up0", "up"]);
        ip(&["-n", &h, "route", "add", "default", "via", "198.51.100.2"]);
        ip(&["-n", &u, "addr", "add", "198.51.100.2/24", "dev", "eth0"]);
        ip(&["-n", &u, "addr", "add", "198.51.100.3/24", "dev", "eth0"]);
        ip(&["-n", &u, "link", "set", "eth0", "up"]);
        w
    }

    /// A fresh sandbox id, unique across processes and tests: `t<pid36><n36>`.
    pub fn fresh_id() -> String {
        format!("t{}{}", base36(std::process::id() as usize), base36(next()))
    }

    /// A sandbox network on this host, addresses from the world's pool.
    pub fn sandbox(&mut self) -> SandboxNet {
        let id = World::fresh_id();
        let addrs = self.pool.allocate().unwrap();
        // Registered before creation, so a half-made sandbox is removed too.
        self.sandboxes.push(id.clone());
        create_sandbox_net(
            &HostNetPlatform,
            &SandboxNetSpec {
                id: &id,
                host_netns: Some(&self.host),
                addrs,
                owner_userns: None,
            },
        )
        .unwrap()
    }

    /// Removes one sandbox now (the guard forgets it).
    pub fn remove(&mut self, id: &str) {
        remove_sandbox_net(&HostNetPlatform, id, Some(&self.host)).unwrap();
        self.sandboxes.retain(|s| s != id);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for id in &self.sandboxes {
            let _ = remove_sandbox_net(&HostNetPlatform, id, Some(&self.host));
        }
        for ns in self.extra_netns.iter().chain([&self.host]) {
            let _ = HostNetPlatform.run("ip", &["netns", "del", ns], None);
        }
    }
}

/// Runs `f` on a thread that has joined namespace `ns`; sockets made there stay there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

pub fn tcp_listen(ns: &str, port: u16) -> TcpListener {
    in_netns(ns, move || TcpListener::bind(("0.0.0.0", port)).unwrap())
}

pub fn udp_bind(ns: &str, addr: Ipv4Addr, port: u16) -> UdpSocket {
    let s = in_netns(ns, move || UdpSocket::bind((addr, port)).unwrap());
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

pub fn tcp_connect(ns: &str, addr: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    in_netns(ns, move || {
        TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(3))
    })
}

/// Accepts one connection, giving up after a few seconds (bounded: tests never hang).
pub fn accept_within(l: &TcpListener, limit: Duration) -> Option<TcpStream> {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return Some(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
}

/// Reads datagrams until one equals `marker`, returning every payload seen before it.
pub fn read_until_marker(s: &UdpSocket, marker: &[u8]) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..64 {
        let (n, _) = s
            .recv_from(&mut buf)
            .expect("marker datagram never arrived");
        if &buf[..n] == marker {
            return seen;
        }
        seen.push(buf[..n].to_vec());
    }
    panic!("marker never arrived among 64 datagrams");
}

/// Nothing is queued on `s` right now.
pub fn nothing_queued(s: &UdpSocket) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let r = s.recv_from(&mut buf);
    s.set_nonblocking(false).unwrap();
    matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/var/run/netns").join(name).exists()
}

pub fn link_exists(host: &str, link: &str) -> bool {
    HostNetPlatform
        .run("ip", &["-n", host, "link", "show", "dev", link], None)
        .is_ok()
}

/// One ICMP echo request from a raw socket in `ns`; returns the (type, code) of the first ICMP
/// message that comes back, or `None` when nothing does within two seconds.
pub fn ping(ns: &str, dst: Ipv4Addr) -> Option<(u8, u8)> {
    in_netns(ns, move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
        let sock = UdpSocket::from(sock);
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut pkt = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        pkt.extend_from_slice(b"palisade");
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        sock.send_to(&pkt, (dst, 0)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            // An echo reply comes from `dst`, a rejection from whichever hop refused it.
            let Ok((n, _from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            if n > ihl + 1 {
                return Some((buf[ihl], buf[ihl + 1]));
            }
        }
        None
    })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn ports() -> FirewallPorts {
    FirewallPorts {
        proxy: PROXY,
        dns: DNS,
    }
}

pub fn rules(net: &SandboxNet, cidrs: &[&str]) -> SandboxRules {
    SandboxRules::for_net(net, cidrs.iter().map(|c| c.parse().unwrap()).collect())
}

pub fn list_table(w: &World) -> String {
    exec(&w.host, "nft", &["list", "table", "inet", "palisade"]).unwrap()
}
