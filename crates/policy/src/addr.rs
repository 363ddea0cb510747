//! Address classes: which destinations are internal and refused unless inside `allow_cidrs`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of destination an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressClass {
    /// Globally routable.
    Public,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20. Treated as
    /// public: the test internet lives there.
    Documentation,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, and local-use NAT64 64:ff9b:1::/48.
    Private,
    /// fc00::/7.
    UniqueLocal,
    /// 100.64.0.0/10 (carrier-grade NAT; the default sandbox pool lives here).
    Cgnat,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Cloud metadata endpoints: 169.254.169.254, fd00:ec2::254, 168.63.129.16 (Azure).
    Metadata,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 0.0.0.0/8, :: (connecting to these reaches the local host on Linux).
    Unspecified,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmarking,
    /// Everything else that is not globally routable: 240/4, 192.0.0/24, 192.88.99/24,
    /// IPv6 outside 2000::/3, Teredo, ORCHID, discard-only, deprecated site-local …
    Reserved,
}

impl AddressClass {
    /// Internal classes are refused in every mode unless the address is inside `allow_cidrs`:
    /// everything except [`Public`](Self::Public) and [`Documentation`](Self::Documentation).
    pub fn is_internal(&self) -> bool {
        !matches!(self, AddressClass::Public | AddressClass::Documentation)
    }

    /// Short lowercase name for events and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Documentation => "documentation",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Cgnat => "cgnat",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "metadata",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Benchmarking => "benchmarking",
            AddressClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies an address. IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are classified by the IPv4
/// address inside, so `::ffff:127.0.0.1` is loopback.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

/// The IPv4 address carried inside an IPv6 address, for the forms the firewall decodes.
pub fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // ::a.b.c.d (deprecated compatible form); :: and ::1 are themselves.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(tail),
        // 64:ff9b::a.b.c.d (well-known NAT64 prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:AABB:CCDD::/48 (6to4)
        [0x2002, _, _, _, _, _, _, _] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, d] = ip.octets();
    match (a, b, c, d) {
        (0, ..) => AddressClass::Unspecified,
        (10, ..) => AddressClass::Private,
        (100, 64..=127, ..) => AddressClass::Cgnat,
        (127, ..) => AddressClass::Loopback,
        (169, 254, 169, 254) => AddressClass::Metadata,
        (169, 254, ..) => AddressClass::LinkLocal,
        (168, 63, 129, 16) => AddressClass::Metadata,
        (172, 16..=31, ..) => AddressClass::Private,
        (192, 0, 0, _) => AddressClass::Reserved,
        (192, 0, 2, _) | (198, 51, 100, _) | (203, 0, 113, _) => AddressClass::Documentation,
        (192, 88, 99, _) => AddressClass::Reserved,
        (192, 168, ..) => AddressClass::Private,
        (198, 18..=19, ..) => AddressClass::Benchmarking,
        (224..=239, ..) => AddressClass::Multicast,
        (255, 255, 255, 255) => AddressClass::Broadcast,
        (240..=255, ..) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254] {
        return AddressClass::Metadata;
    }
    match s[0] {
        0xff00..=0xffff => return AddressClass::Multicast,
        0xfe80..=0xfebf => return AddressClass::LinkLocal,
        0xfec0..=0xfeff => return AddressClass::Reserved,
        0xfc00..=0xfdff => return AddressClass::UniqueLocal,
        _ => {}
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return AddressClass::Private;
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 || (s[0] & 0xfff0) == 0x3ff0 {
        return AddressClass::Documentation;
    }
    if s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0 {
        return AddressClass::Benchmarking;
    }
    // 2001::/23 holds IETF protocol assignments (Teredo 2001::/32, ORCHID, AMT …); the few
    // globally reachable services in it are not worth the risk of embedded addresses.
    if s[0] == 0x2001 && s[1] < 0x0200 {
        return AddressClass::Reserved;
    }
    // Global unicast is 2000::/3; the rest (discard-only 100::/64, unassigned) is not routable.
    if (s[0] & 0xe000) == 0x2000 {
        return AddressClass::Public;
    }
    AddressClass::Reserved
}

/// Where an address stands under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrVerdict {
    /// Its class.
    pub class: AddressClass,
    /// Whether it lies inside one of the policy's `allow_cidrs`.
    pub in_allow_cidrs: bool,
}

impl AddrVerdict {
    /// `true` when the address is internal and not opened by `allow_cidrs`: the firewall must
    /// refuse it in every mode.
    pub fn internal_refused(&self) -> bool {
        self.class.is_internal() && !self.in_allow_cidrs
    }
}
