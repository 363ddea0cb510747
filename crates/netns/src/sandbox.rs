//! A sandbox's network: its namespace `pls-<id>`, the veth pair `plh-<id>` (host) / `eth0`
//! (sandbox), addresses, default route, IPv6 off inside, and its `resolv.conf`.

use std::path::PathBuf;

use crate::{NetPlatform, NetnsError, SandboxAddrs};

/// Prefix of sandbox namespace names.
pub const NETNS_PREFIX: &str = "pls-";
/// Prefix of host-side veth names; the nftables rules treat every `plh-*` link as a sandbox.
pub const HOST_IF_PREFIX: &str = "plh-";
/// The sandbox side of the veth pair, inside the sandbox namespace.
pub const SANDBOX_IF: &str = "eth0";
/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";
/// Where `ip netns exec` finds per-namespace files to bind over `/etc`.
pub const NETNS_ETC_DIR: &str = "/etc/netns";

/// What [`create_sandbox_net`] should build.
#[derive(Debug, Clone, Copy)]
pub struct SandboxNetSpec<'a> {
    /// Sandbox id, `[a-z0-9]{1,10}` (so `plh-<id>` fits the 15-byte interface name limit).
    pub id: &'a str,
    /// The namespace acting as the firewall host: `None` is the daemon's own (production).
    pub host_netns: Option<&'a str>,
    /// Addresses from the [`crate::AddressPool`].
    pub addrs: SandboxAddrs,
    /// The sandbox's user namespace (a pinned nsfs file, from `palisade-runtime`), to own the
    /// network namespace; `None` leaves it to the host's. The sandbox runtime must be able to
    /// enter both from inside the sandbox's user namespace.
    pub owner_userns: Option<&'a std::path::Path>,
}

/// Makes namespace `$1` owned by the user namespace pinned at `$2`: a waiting process enters
/// that user namespace, then a new network namespace, which `ip netns attach` pins by name.
const NETNS_IN_USERNS: &str = r#"set -u
nsenter --user="$2" -- unshare --net -- sleep 30 </dev/null >/dev/null 2>&1 &
pid=$!
own=$(readlink /proc/self/ns/net)
i=0
while [ "$(readlink /proc/$pid/ns/net 2>/dev/null || true)" = "$own" ]; do
  i=$((i+1))
  if [ $i -gt 1000 ] || ! kill -0 $pid 2>/dev/null; then kill $pid 2>/dev/null; exit 1; fi
  sleep 0.005
done
ip netns attach "$1" $pid
rc=$?
kill $pid
exit $rc"#;

/// A sandbox network as built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNet {
    /// Sandbox id.
    pub id: String,
    /// Namespace name, `pls-<id>`.
    pub netns: String,
    /// Namespace path for runc's `linux.namespaces` entry: `/var/run/netns/pls-<id>`.
    pub netns_path: PathBuf,
    /// Host-side interface, `plh-<id>`.
    pub host_if: String,
    /// Sandbox-side interface, `eth0`.
    pub sandbox_if: String,
    /// Addresses.
    pub addrs: SandboxAddrs,
    /// Host namespace the host side lives in (`None`: the daemon's own).
    pub host_netns: Option<String>,
}

/// Checks a sandbox id: 1 to 10 characters from `[a-z0-9]`.
pub fn validate_id(id: &str) -> Result<(), NetnsError> {
    let ok = (1..=10).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(NetnsError::InvalidId(id.chars().take(64).collect()))
    }
}

/// Checks a host namespace name: a plain file name under `/var/run/netns` that cannot be read
/// as an option.
pub fn validate_netns_name(name: &str) -> Result<(), NetnsError> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(NetnsError::InvalidNetnsName(
            name.chars().take(64).collect(),
        ))
    }
}

/// `pls-<id>`.
pub fn netns_name(id: &str) -> String {
    format!("{NETNS_PREFIX}{id}")
}

/// `plh-<id>`.
pub fn host_if_name(id: &str) -> String {
    format!("{HOST_IF_PREFIX}{id}")
}

/// Runs `ip` in the host namespace (`ip -n NS …` in tests).
pub(crate) fn ip_host(
    p: &dyn NetPlatform,
    host_netns: Option<&str>,
    args: &[&str],
) -> Result<String, NetnsError> {
    match host_netns {
        Some(ns) => p.run("ip", &[&["-n", ns][..], args].concat(), None),
        None => p.run("ip", args, None),
    }
}

/// Runs `program` inside namespace `ns` (`ip netns exec NS …`; `None`: here), feeding `stdin`.
pub fn exec_in(
    p: &dyn NetPlatform,
    ns: Option<&str>,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NetnsError> {
    match ns {
        Some(ns) => p.run(
            "ip",
            &[&["netns", "exec", ns, program][..], args].concat(),
            stdin,
        ),
        None => p.run(program, args, stdin),
    }
}

/// Builds the sandbox's namespace, veth pair, addresses, route and `resolv.conf`, and enables
/// IPv4 forwarding in the host namespace (UDP/ICMP to `allow_cidrs` is forwarded, not proxied).
/// On any failure after the namespace exists, everything made so far is removed again. An
/// existing namespace of the same name is an error and left alone.
pub fn create_sandbox_net(
    p: &dyn NetPlatform,
    spec: &SandboxNetSpec,
) -> Result<SandboxNet, NetnsError> {
    validate_id(spec.id)?;
    if let Some(ns) = spec.host_netns {
        validate_netns_name(ns)?;
    }
    let net = SandboxNet {
        id: spec.id.to_owned(),
        netns: netns_name(spec.id),
        netns_path: PathBuf::from(NETNS_RUN_DIR).join(netns_name(spec.id)),
        host_if: host_if_name(spec.id),
        sandbox_if: SANDBOX_IF.to_owned(),
        addrs: spec.addrs,
        host_netns: spec.host_netns.map(str::to_owned),
    };
    if list_netns(p)?.contains(&net.netns) {
        return Err(NetnsError::AlreadyExists(net.netns));
    }
    add_netns(p, &net.netns, spec.owner_userns)?;
    match build(p, &net) {
        Ok(()) => {
            tracing::info!(id = %net.id, host = %net.addrs.host, sandbox = %net.addrs.sandbox, "sandbox network created");
            Ok(net)
        }
        Err(e) => {
            if let Err(cleanup) = remove_sandbox_net(p, spec.id, spec.host_netns) {
                tracing::warn!(id = %net.id, error = %cleanup, "clean-up after failed create failed");
            }
            Err(e)
        }
    }
}

/// Makes the named network namespace (`ip netns add`), owned by the user namespace pinned at
/// `owner_userns` when given.
pub fn add_netns(
    p: &dyn NetPlatform,
    name: &str,
    owner_userns: Option<&std::path::Path>,
) -> Result<(), NetnsError> {
    validate_netns_name(name)?;
    match owner_userns {
        None => p.run("ip", &["netns", "add", name], None)?,
        Some(userns) => {
            let userns = userns
                .to_str()
                .ok_or_else(|| NetnsError::InvalidNetnsName(userns.display().to_string()))?;
            p.run("sh", &["-c", NETNS_IN_USERNS, "sh", name, userns], None)?
        }
    };
    Ok(())
}

fn build(p: &dyn NetPlatform, net: &SandboxNet) -> Result<(), NetnsError> {
    let ns = net.netns.as_str();
    let host_ns = net.host_netns.as_deref();
    let host_cidr = format!("{}/{}", net.addrs.host, net.addrs.prefix_len);
    let sandbox_cidr = format!("{}/{}", net.addrs.sandbox, net.addrs.prefix_len);
    let host_addr = net.addrs.host.to_string();

    // IPv6 off before eth0 exists, so it never gets even a link-local address. ICMP echo
    // through datagram sockets for every group: `ping` works without CAP_NET_RAW, which the
    // sandbox does not hold (the firewall still decides where ICMP may go).
    exec_in(
        p,
        Some(ns),
        "sysctl",
        &[
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.ping_group_range=0 2147483647",
        ],
        None,
    )?;
    p.run("ip", &["-n", ns, "link", "set", "lo", "up"], None)?;
    // The peer is born inside the sandbox namespace, so its name never meets the host's eth0.
    ip_host(
        p,
        host_ns,
        &[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            SANDBOX_IF,
            "netns",
            ns,
        ],
    )?;
    exec_in(
        p,
        host_ns,
        "sysctl",
        &[
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", net.host_if),
            &format!("net.ipv4.conf.{}.route_localnet=0", net.host_if),
            "net.ipv4.ip_forward=1",
        ],
        None,
    )?;
    ip_host(
        p,
        host_ns,
        &["addr", "add", &host_cidr, "dev", &net.host_if],
    )?;
    ip_host(p, host_ns, &["link", "set", &net.host_if, "up"])?;
    p.run(
        "ip",
        &["-n", ns, "addr", "add", &sandbox_cidr, "dev", SANDBOX_IF],
        None,
    )?;
    p.run("ip", &["-n", ns, "link", "set", SANDBOX_IF, "up"], None)?;
    p.run(
        "ip",
        &[
            "-n", ns, "route", "add", "default", "via", &host_addr, "dev", SANDBOX_IF,
        ],
        None,
    )?;
    p.write_file(
        &resolv_conf_path(&net.id),
        &format!("nameserver {host_addr}\n"),
    )?;
    Ok(())
}

/// `/etc/netns/pls-<id>/resolv.conf`.
pub fn resolv_conf_path(id: &str) -> PathBuf {
    PathBuf::from(NETNS_ETC_DIR)
        .join(netns_name(id))
        .join("resolv.conf")
}

/// Removes the host veth (which takes the sandbox end with it), the namespace and
/// `/etc/netns/pls-<id>/`. Idempotent: whatever is already gone is skipped. Every step is tried;
/// the first error is returned.
pub fn remove_sandbox_net(
    p: &dyn NetPlatform,
    id: &str,
    host_netns: Option<&str>,
) -> Result<(), NetnsError> {
    validate_id(id)?;
    if let Some(ns) = host_netns {
        validate_netns_name(ns)?;
    }
    let host_if = host_if_name(id);
    let ns = netns_name(id);

    let link = ip_host(p, host_netns, &["link", "del", &host_if]).map(drop);
    let link = link.or_else(|e| match list_links(p, host_netns) {
        Ok(links) if !links.contains(&host_if) => Ok(()),
        _ => Err(e),
    });
    let netns = p.run("ip", &["netns", "del", &ns], None).map(drop);
    let netns = netns.or_else(|e| match list_netns(p) {
        Ok(names) if !names.contains(&ns) => Ok(()),
        _ => Err(e),
    });
    let etc = p.remove_dir_all(&PathBuf::from(NETNS_ETC_DIR).join(&ns));
    link.and(netns).and(etc)?;
    tracing::info!(%id, "sandbox network removed");
    Ok(())
}

/// Ids of every namespace named `pls-<id>` (for reconciling after a restart).
pub fn list_sandbox_netns(p: &dyn NetPlatform) -> Result<Vec<String>, NetnsError> {
    Ok(list_netns(p)?
        .into_iter()
        .filter_map(|name| {
            let id = name.strip_prefix(NETNS_PREFIX)?;
            validate_id(id).ok().map(|()| id.to_owned())
        })
        .collect())
}

/// Named namespaces, from `ip netns list` (`name` or `name (id: N)` per line).
fn list_netns(p: &dyn NetPlatform) -> Result<Vec<String>, NetnsError> {
    let out = p.run("ip", &["netns", "list"], None)?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Link names in the host namespace, from `ip -o link show` (`N: name[@peer]: <…` per line).
fn list_links(p: &dyn NetPlatform, host_netns: Option<&str>) -> Result<Vec<String>, NetnsError> {
    let out = ip_host(p, host_netns, &["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::RecordingNetPlatform;

    fn addrs() -> SandboxAddrs {
        SandboxAddrs {
            host: Ipv4Addr::new(100, 96, 0, 5),
            sandbox: Ipv4Addr::new(100, 96, 0, 6),
            prefix_len: 30,
        }
    }

    fn spec(host_netns: Option<&str>) -> SandboxNetSpec<'_> {
        SandboxNetSpec {
            id: "ab12",
            host_netns,
            addrs: addrs(),
            owner_userns: None,
        }
    }

    #[test]
    fn ids_and_names_are_validated() {
        for good in ["a", "0", "abcdefghij", "x9"] {
            validate_id(good).unwrap();
        }
        for bad in ["", "abcdefghijk", "A", "a-b", "a b", "a/b", "é", "a\n"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["pt-netns-12-0", "fw_1", "a.b"] {
            validate_netns_name(good).unwrap();
        }
        for bad in ["", "-n", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_netns_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn create_in_test_host_namespace_runs_everything_there() {
        let p = RecordingNetPlatform::new();
        let net = create_sandbox_net(&p, &spec(Some("pt-1-fw"))).unwrap();
        assert_eq!(net.netns, "pls-ab12");
        assert_eq!(net.netns_path, PathBuf::from("/var/run/netns/pls-ab12"));
        assert_eq!(net.host_if, "plh-ab12");
        assert_eq!(net.sandbox_if, "eth0");
        assert_eq!(net.host_netns.as_deref(), Some("pt-1-fw"));
        assert_eq!(
            p.lines(),
            [
                "ip netns list",
                "ip netns add pls-ab12",
                "ip netns exec pls-ab12 sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 net.ipv4.ping_group_range=0 2147483647",
                "ip -n pls-ab12 link set lo up",
                "ip -n pt-1-fw link add plh-ab12 type veth peer name eth0 netns pls-ab12",
                "ip netns exec pt-1-fw sysctl -qw net.ipv6.conf.plh-ab12.disable_ipv6=1 net.ipv4.conf.plh-ab12.route_localnet=0 net.ipv4.ip_forward=1",
                "ip -n pt-1-fw addr add 100.96.0.5/30 dev plh-ab12",
                "ip -n pt-1-fw link set plh-ab12 up",
                "ip -n pls-ab12 addr add 100.96.0.6/30 dev eth0",
                "ip -n pls-ab12 link set eth0 up",
                "ip -n pls-ab12 route add default via 100.96.0.5 dev eth0",
                "mkdir -p -- /etc/netns/pls-ab12",
                "tee -- /etc/netns/pls-ab12/resolv.conf",
            ]
        );
        assert_eq!(
            p.calls().last().unwrap().stdin.as_deref(),
            Some("nameserver 100.96.0.5\n")
        );
    }

    #[test]
    fn namespace_made_inside_the_given_user_namespace() {
        let p = RecordingNetPlatform::new();
        let mut s = spec(None);
        let userns = std::path::PathBuf::from("/data/userns/ab12/ns");
        s.owner_userns = Some(&userns);
        create_sandbox_net(&p, &s).unwrap();
        let calls = p.calls();
        // Not `ip netns add`: a process in the user namespace unshares the network one, which
        // `ip netns attach` pins under the same name.
        assert!(!p.lines().contains(&"ip netns add pls-ab12".to_owned()));
        let make = calls.iter().find(|c| c.program == "sh").unwrap();
        assert_eq!(make.args[0], "-c");
        assert!(make.args[1].contains("nsenter --user=\"$2\" -- unshare --net"));
        assert!(make.args[1].contains("ip netns attach \"$1\" $pid"));
        assert_eq!(make.args[2..], ["sh", "pls-ab12", "/data/userns/ab12/ns"]);
        // The rest is as for any sandbox.
        assert!(
            p.lines()
                .contains(&"ip -n pls-ab12 link set eth0 up".to_owned())
        );
    }

    #[test]
    fn create_in_real_host_namespace_uses_no_netns_flags_for_host_side() {
        let p = RecordingNetPlatform::new();
        create_sandbox_net(&p, &spec(None)).unwrap();
        let lines = p.lines();
        assert!(
            lines.contains(
                &"ip link add plh-ab12 type veth peer name eth0 netns pls-ab12".to_owned()
            )
        );
        assert!(lines.contains(&"sysctl -qw net.ipv6.conf.plh-ab12.disable_ipv6=1 net.ipv4.conf.plh-ab12.route_localnet=0 net.ipv4.ip_forward=1".to_owned()));
        assert!(lines.contains(&"ip addr add 100.96.0.5/30 dev plh-ab12".to_owned()));
    }

    #[test]
    fn existing_namespace_is_refused_and_untouched() {
        let p = RecordingNetPlatform::new().respond("ip netns list", "pls-ab12 (id: 3)\nother\n");
        let err = create_sandbox_net(&p, &spec(None)).unwrap_err();
        assert!(matches!(err, NetnsError::AlreadyExists(ref n) if n == "pls-ab12"));
        assert_eq!(p.lines(), ["ip netns list"]);
    }

    #[test]
    fn failing_netns_add_removes_nothing() {
        let p = RecordingNetPlatform::new().fail_on_call(2);
        create_sandbox_net(&p, &spec(None)).unwrap_err();
        assert_eq!(p.lines(), ["ip netns list", "ip netns add pls-ab12"]);
    }

    #[test]
    fn every_later_failure_cleans_up() {
        // Calls 3..=13 are the build steps; failing any one must end in the full removal.
        for n in 3..=13 {
            let p = RecordingNetPlatform::new().fail_on_call(n);
            let err = create_sandbox_net(&p, &spec(Some("h"))).unwrap_err();
            assert!(
                matches!(err, NetnsError::Injected { call, .. } if call == n),
                "{n}: {err}"
            );
            let lines = p.lines();
            let tail = &lines[n..];
            assert_eq!(
                tail,
                [
                    "ip -n h link del plh-ab12",
                    "ip netns del pls-ab12",
                    "rm -rf -- /etc/netns/pls-ab12"
                ],
                "failing call {n}"
            );
        }
    }

    #[test]
    fn bad_input_runs_nothing() {
        let p = RecordingNetPlatform::new();
        let mut s = spec(None);
        s.id = "../x";
        assert!(matches!(
            create_sandbox_net(&p, &s),
            Err(NetnsError::InvalidId(_))
        ));
        assert!(create_sandbox_net(&p, &spec(Some("-all"))).is_err());
        assert!(remove_sandbox_net(&p, "Bad", None).is_err());
        assert!(remove_sandbox_net(&p, "ok", Some("a/b")).is_err());
        assert!(p.calls().is_empty());
    }

    #[test]
    fn remove_is_idempotent_when_things_are_gone() {
        // Both deletions fail, and the listings show nothing left: success.
        let p = RecordingNetPlatform::new()
            .fail_on_call(1)
            .respond("ip -n h -o link show", "1: lo: <LOOPBACK,UP> mtu 65536\n");
        remove_sandbox_net(&p, "ab12", Some("h")).unwrap();
        let p = RecordingNetPlatform::new()
            .fail_on_call(2)
            .respond("ip netns list", "pls-other\n");
        remove_sandbox_net(&p, "ab12", None).unwrap();
        assert_eq!(
            p.lines(),
            [
                "ip link del plh-ab12",
                "ip netns del pls-ab12",
                "ip netns list",
                "rm -rf -- /etc/netns/pls-ab12"
            ]
        );
    }

    #[test]
    fn remove_reports_a_real_failure_but_still_tries_the_rest() {
        let p = RecordingNetPlatform::new()
            .fail_on_call(1)
            .respond("ip -o link show", "7: plh-ab12@if2: <BROADCAST> mtu 1500\n");
        let err = remove_sandbox_net(&p, "ab12", None).unwrap_err();
        assert!(matches!(err, NetnsError::Injected { call: 1, .. }));
        assert_eq!(
            p.lines(),
            [
                "ip link del plh-ab12",
                "ip -o link show",
                "ip netns del pls-ab12",
                "rm -rf -- /etc/netns/pls-ab12"
            ]
        );
    }

    #[test]
    fn list_filters_sandbox_namespaces() {
        let p = RecordingNetPlatform::new().respond(
            "ip netns list",
            "pls-abc (id: 2)\npt-netns-1-0\npls-Bad\npls-\npls-x9\n",
        );
        assert_eq!(list_sandbox_netns(&p).unwrap(), ["abc", "x9"]);
    }
}
