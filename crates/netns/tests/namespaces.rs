//! Privileged (root): sandbox networks are built as specified and removed without trace, inside
//! a host namespace these tests create.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step is a failed test"
)]

mod common;

use std::net::Ipv4Addr;

use common::*;
use palisade_netns::{
    HostNetPlatform, NetnsError, SandboxNetSpec, create_sandbox_net, list_sandbox_netns,
    remove_sandbox_net,
};

#[test]
fn sandbox_net_is_built_as_specified_and_removed_without_trace() {
    let mut w = World::new();
    let a = w.sandbox();
    let b = w.sandbox();
    let ns = a.netns.as_str();

    assert!(a.netns_path.exists());
    let addr = ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        addr.contains(&format!("inet {}/30", a.addrs.sandbox)),
        "{addr}"
    );
    let link = ip(&["-n", ns, "-o", "link", "show"]);
    assert!(link.contains("lo: <LOOPBACK,UP"), "{link}");
    assert!(link.contains("eth0@"), "{link}");
    let route = ip(&["-n", ns, "route", "show", "default"]);
    assert_eq!(
        route.trim(),
        format!("default via {} dev eth0", a.addrs.host)
    );
    for key in [
        "net.ipv6.conf.all.disable_ipv6",
        "net.ipv6.conf.default.disable_ipv6",
        "net.ipv6.conf.eth0.disable_ipv6",
    ] {
        assert_eq!(
            exec(ns, "sysctl", &["-n", key]).unwrap().trim(),
            "1",
            "{key}"
        );
    }
    assert_eq!(
        ip(&["-n", ns, "-6", "addr", "show"]).trim(),
        "",
        "IPv6 address inside"
    );
    let resolv = exec(ns, "cat", &["/etc/resolv.conf"]).unwrap();
    assert_eq!(resolv, format!("nameserver {}\n", a.addrs.host));

    let host_addr = ip(&["-n", &w.host, "-4", "-o", "addr", "show", "dev", &a.host_if]);
    assert!(
        host_addr.contains(&format!("inet {}/30", a.addrs.host)),
        "{host_addr}"
    );
    assert_eq!(
        exec(&w.host, "sysctl", &["-n", "net.ipv4.ip_forward"])
            .unwrap()
            .trim(),
        "1"
    );
    let key = format!("net.ipv4.conf.{}.route_localnet", a.host_if);
    assert_eq!(exec(&w.host, "sysctl", &["-n", &key]).unwrap().trim(), "0");
    assert_eq!(
        ip(&["-n", &w.host, "-6", "addr", "show", "dev", &a.host_if]).trim(),
        ""
    );

    let ids = list_sandbox_netns(&HostNetPlatform).unwrap();
    assert!(ids.contains(&a.id) && ids.contains(&b.id), "{ids:?}");

    // Creating it again is refused and leaves the live one alone.
    let again = create_sandbox_net(
        &HostNetPlatform,
        &SandboxNetSpec {
            id: &a.id,
            host_netns: Some(&w.host),
            addrs: a.addrs,
            owner_userns: None,
        },
    );
    assert!(
        matches!(again, Err(NetnsError::AlreadyExists(_))),
        "{again:?}"
    );
    assert!(link_exists(&w.host, &a.host_if));

    w.remove(&a.id);
    assert!(!netns_exists(&a.netns));
    assert!(!link_exists(&w.host, &a.host_if));
    assert!(!std::path::Path::new("/etc/netns").join(&a.netns).exists());
    assert!(
        !list_sandbox_netns(&HostNetPlatform)
            .unwrap()
            .contains(&a.id)
    );
    remove_sandbox_net(&HostNetPlatform, &a.id, Some(&w.host)).unwrap();
    // The other sandbox is untouched.
    assert!(netns_exists(&b.netns) && link_exists(&w.host, &b.host_if));
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let w = World::new();
    let id = World::fresh_id();
    // The host side is taken already (a stale link of the same name): create fails mid-way.
    let stale = format!("plh-{id}");
    ip(&[
        "-n", &w.host, "link", "add", &stale, "type", "veth", "peer", "name", "stale0",
    ]);
    let r = create_sandbox_net(
        &HostNetPlatform,
        &SandboxNetSpec {
            id: &id,
            host_netns: Some(&w.host),
            addrs: palisade_netns::SandboxAddrs {
                host: Ipv4Addr::new(100, 96, 0, 1),
                sandbox: Ipv4Addr::new(100, 96, 0, 2),
                prefix_len: 30,
            },
            owner_userns: None,
        },
    );
    let err = r.unwrap_err();
    assert!(
        matches!(err, NetnsError::Command { ref stderr, .. } if !stderr.is_empty()),
        "{err}"
    );
    assert!(!netns_exists(&format!("pls-{id}")));
    // The stale link went too: the name is ours, and the next create needs it free.
    assert!(!link_exists(&w.host, &stale));
    assert!(
        !std::path::Path::new("/etc/netns")
            .join(format!("pls-{id}"))
            .exists()
    );
}

/// The test world is removed even when a test panics half-way.
#[test]
fn world_is_torn_down_on_panic() {
    let names = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = names.clone();
    let r = std::panic::catch_unwind(move || {
        let mut w = World::new();
        let a = w.sandbox();
        *seen.lock().unwrap() = Some((w.host.clone(), w.up.clone(), a.netns.clone()));
        panic!("deliberate");
    });
    assert!(r.is_err());
    let (host, up, sandbox) = names.lock().unwrap().clone().unwrap();
    for ns in [host, up, sandbox.clone()] {
        assert!(!netns_exists(&ns), "{ns} left behind");
    }
    assert!(!std::path::Path::new("/etc/netns").join(sandbox).exists());
}
