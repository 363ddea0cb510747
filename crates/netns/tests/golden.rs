//! Golden tests: the rendered nftables scripts, byte for byte. After an intended change, run
//! with `UPDATE_GOLDEN=1` and review the diff of `tests/golden/`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step is a failed test"
)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use palisade_netns::SandboxAddrs;
use palisade_netns::nft::{
    DnsPacketLimit, FirewallPorts, SandboxRules, render_base, render_full, render_remove_sandbox,
    render_sandbox,
};

pub fn ports() -> FirewallPorts {
    FirewallPorts {
        proxy: 15001,
        dns: 15053,
    }
}

pub fn deny_all() -> SandboxRules {
    SandboxRules {
        id: "deny1".into(),
        host_if: "plh-deny1".into(),
        addrs: SandboxAddrs {
            host: Ipv4Addr::new(100, 96, 0, 1),
            sandbox: Ipv4Addr::new(100, 96, 0, 2),
            prefix_len: 30,
        },
        allow_cidrs_v4: vec![],
        dns_limit: None,
    }
}

pub fn with_cidrs() -> SandboxRules {
    SandboxRules {
        id: "cidr2".into(),
        host_if: "plh-cidr2".into(),
        addrs: SandboxAddrs {
            host: Ipv4Addr::new(100, 96, 0, 5),
            sandbox: Ipv4Addr::new(100, 96, 0, 6),
            prefix_len: 30,
        },
        allow_cidrs_v4: vec![
            "198.51.100.0/24".parse().unwrap(),
            "10.0.0.0/24".parse().unwrap(),
            "203.0.113.7/32".parse().unwrap(),
        ],
        dns_limit: Some(DnsPacketLimit {
            per_second: 1_000,
            burst: 4_000,
        }),
    }
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs from the rendering",
        path.display()
    );
}

#[test]
fn base() {
    golden(
        "base.nft",
        &render_base(&ports(), "100.96.0.0/16".parse().unwrap()),
    );
}

#[test]
fn sandbox_deny_all() {
    golden("sandbox_deny_all.nft", &render_sandbox(&deny_all()));
}

#[test]
fn sandbox_with_cidrs() {
    golden("sandbox_with_cidrs.nft", &render_sandbox(&with_cidrs()));
}

#[test]
fn remove_sandbox() {
    golden(
        "remove_sandbox.nft",
        &render_remove_sandbox("cidr2", "plh-cidr2"),
    );
}

#[test]
fn full() {
    golden(
        "full.nft",
        &render_full(
            &ports(),
            "100.96.0.0/16".parse().unwrap(),
            &[deny_all(), with_cidrs()],
        ),
    );
}
