//! Privileged (root): every rendered script is accepted by the kernel (check mode and for real)
//! inside a namespace this test creates; re-applying is idempotent; a failing script changes
//! nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step is a failed test"
)]

mod common;

use std::net::Ipv4Addr;

use common::*;
use palisade_netns::nft::{self, SandboxRules};
use palisade_netns::{HostNetPlatform, NetnsError};

#[test]
fn nft_accepts_every_rendered_script_and_reapplies_idempotently() {
    let w = World::host_only();
    let h = Some(w.host.as_str());
    let p = &HostNetPlatform;
    let pool = w.pool.net();
    let a = SandboxRules {
        id: "deny1".into(),
        host_if: "plh-deny1".into(),
        addrs: palisade_netns::SandboxAddrs {
            host: Ipv4Addr::new(100, 96, 0, 1),
            sandbox: Ipv4Addr::new(100, 96, 0, 2),
            prefix_len: 30,
        },
        allow_cidrs_v4: vec![],
        dns_limit: None,
    };
    let mut b = a.clone();
    b.id = "cidr2".into();
    b.host_if = "plh-cidr2".into();
    // The kernel takes the DNS ceiling's rule too.
    b.dns_limit = Some(palisade_netns::nft::DnsPacketLimit {
        per_second: 1_000,
        burst: 4_000,
    });
    b.allow_cidrs_v4 = vec![
        "198.51.100.0/24".parse().unwrap(),
        "0.0.0.0/0".parse().unwrap(),
    ];

    // Check mode on an empty namespace, then for real.
    nft::check(p, h, &nft::render_base(&ports(), pool)).unwrap();
    nft::check(
        p,
        h,
        &nft::render_full(&ports(), pool, &[a.clone(), b.clone()]),
    )
    .unwrap();
    assert!(!nft::table_exists(p, h).unwrap());
    assert!(nft::list_sandbox_ids(p, h).unwrap().is_empty());

    nft::apply(p, h, &nft::render_base(&ports(), pool)).unwrap();
    let base_only = list_table(&w);
    nft::apply(p, h, &nft::render_base(&ports(), pool)).unwrap();
    assert_eq!(
        list_table(&w),
        base_only,
        "base re-applied changed the table"
    );

    for r in [&a, &b] {
        nft::check(p, h, &nft::render_sandbox(r)).unwrap();
        nft::apply(p, h, &nft::render_sandbox(r)).unwrap();
    }
    let with_two = list_table(&w);
    nft::apply(p, h, &nft::render_sandbox(&b)).unwrap();
    nft::apply(p, h, &nft::render_base(&ports(), pool)).unwrap();
    assert_eq!(
        list_table(&w),
        with_two,
        "sandbox or base re-applied changed the table"
    );
    assert_eq!(nft::list_sandbox_ids(p, h).unwrap(), ["cidr2", "deny1"]);

    nft::check(p, h, &nft::render_remove_sandbox("cidr2", "plh-cidr2")).unwrap();
    nft::apply(p, h, &nft::render_remove_sandbox("cidr2", "plh-cidr2")).unwrap();
    nft::apply(p, h, &nft::render_remove_sandbox("cidr2", "plh-cidr2")).unwrap();
    assert_eq!(nft::list_sandbox_ids(p, h).unwrap(), ["deny1"]);
    assert!(!list_table(&w).contains("cidr2"));

    // The daemon-start path: whole table from state, twice, same result.
    let full = nft::render_full(&ports(), pool, &[a.clone(), b.clone()]);
    nft::apply(p, h, &full).unwrap();
    let once = list_table(&w);
    nft::apply(p, h, &full).unwrap();
    assert_eq!(list_table(&w), once);
    assert_eq!(nft::list_sandbox_ids(p, h).unwrap(), ["cidr2", "deny1"]);
    // A state without b drops b's chains in the same transaction.
    nft::apply(p, h, &nft::render_full(&ports(), pool, &[a])).unwrap();
    assert_eq!(nft::list_sandbox_ids(p, h).unwrap(), ["deny1"]);

    // A failing script changes nothing (one transaction).
    let before = list_table(&w);
    let broken = format!(
        "{}\nadd rule inet palisade no_such_chain drop\n",
        nft::render_sandbox(&b)
    );
    assert!(matches!(
        nft::apply(p, h, &broken),
        Err(NetnsError::Command { .. })
    ));
    assert_eq!(list_table(&w), before);
}
