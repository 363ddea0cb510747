use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn default_pool_first_blocks() {
    let mut p = AddressPool::default();
    assert_eq!(p.net(), net("100.96.0.0/16"));
    assert_eq!(p.capacity(), 16384);
    let a = p.allocate().unwrap();
    assert_eq!(a.host, Ipv4Addr::new(100, 96, 0, 1));
    assert_eq!(a.sandbox, Ipv4Addr::new(100, 96, 0, 2));
    assert_eq!(a.prefix_len, 30);
    let b = p.allocate().unwrap();
    assert_eq!(b.host, Ipv4Addr::new(100, 96, 0, 5));
    assert_eq!(b.sandbox, Ipv4Addr::new(100, 96, 0, 6));
    assert_eq!(p.index_of(b).unwrap(), 1);
}

#[test]
fn host_bits_are_ignored_and_bad_pools_rejected() {
    let p = AddressPool::new(net("10.9.8.77/24")).unwrap();
    assert_eq!(p.net(), net("10.9.8.0/24"));
    assert_eq!(p.capacity(), 64);
    assert!(AddressPool::new(net("10.0.0.0/31")).is_err());
    assert!(AddressPool::new(net("10.0.0.0/32")).is_err());
    assert!(AddressPool::new(net("0.0.0.0/0")).is_err());
    assert_eq!(AddressPool::new(net("10.0.0.4/30")).unwrap().capacity(), 1);
}

#[test]
fn exhaustion_then_release_and_next_fit() {
    let mut p = AddressPool::new(net("10.0.0.0/28")).unwrap();
    let all: Vec<_> = std::iter::from_fn(|| p.allocate()).collect();
    assert_eq!(all.len(), 4);
    assert_eq!(p.allocate(), None);
    p.release(all[1]);
    assert_eq!(p.allocate(), Some(all[1]));
    p.release(all[0]);
    p.release(all[3]);
    // next-fit: the cursor is after block 1, so block 3 comes before block 0
    assert_eq!(p.allocate(), Some(all[3]));
    assert_eq!(p.allocate(), Some(all[0]));
    assert_eq!(p.in_use(), 4);
}

#[test]
fn reserve_after_restart() {
    let mut p = AddressPool::default();
    let saved = SandboxAddrs {
        host: Ipv4Addr::new(100, 96, 0, 1),
        sandbox: Ipv4Addr::new(100, 96, 0, 2),
        prefix_len: 30,
    };
    p.reserve(saved).unwrap();
    assert!(matches!(
        p.reserve(saved),
        Err(NetnsError::AddrsInUse { .. })
    ));
    assert_ne!(p.allocate(), Some(saved));
    p.release(saved);
    p.reserve(saved).unwrap();
}

#[test]
fn reserve_rejects_foreign_or_misaligned() {
    let mut p = AddressPool::default();
    let bad = [
        (
            Ipv4Addr::new(100, 97, 0, 1),
            Ipv4Addr::new(100, 97, 0, 2),
            30,
        ),
        (
            Ipv4Addr::new(100, 96, 0, 2),
            Ipv4Addr::new(100, 96, 0, 3),
            30,
        ),
        (
            Ipv4Addr::new(100, 96, 0, 1),
            Ipv4Addr::new(100, 96, 0, 3),
            30,
        ),
        (
            Ipv4Addr::new(100, 96, 0, 1),
            Ipv4Addr::new(100, 96, 0, 2),
            31,
        ),
        (
            Ipv4Addr::new(100, 96, 0, 0),
            Ipv4Addr::new(100, 96, 0, 1),
            30,
        ),
    ];
    for (host, sandbox, prefix_len) in bad {
        let a = SandboxAddrs {
            host,
            sandbox,
            prefix_len,
        };
        assert!(
            matches!(p.reserve(a), Err(NetnsError::NotInPool { .. })),
            "{a:?}"
        );
        p.release(a); // ignored, no panic
    }
    assert_eq!(p.in_use(), 0);
}

#[test]
fn last_block_of_pool() {
    let mut p = AddressPool::new(net("100.96.0.0/16")).unwrap();
    let last = SandboxAddrs {
        host: Ipv4Addr::new(100, 96, 255, 253),
        sandbox: Ipv4Addr::new(100, 96, 255, 254),
        prefix_len: 30,
    };
    p.reserve(last).unwrap();
    assert_eq!(p.index_of(last).unwrap(), 16383);
}

proptest::proptest! {
    /// Any sequence of allocate/release keeps blocks unique, inside the pool, and
    /// round-tripping through their index; the count matches a naive model.
    #[test]
    fn random_allocate_release(prefix in 24u8..=30, ops in proptest::collection::vec(0u8..4, 0..200)) {
        let mut p = AddressPool::new(Ipv4Net::new(Ipv4Addr::new(10, 20, 0, 0), prefix).unwrap()).unwrap();
        let mut model: Vec<SandboxAddrs> = Vec::new();
        for op in ops {
            if op == 0 && !model.is_empty() {
                let a = model.remove(model.len() / 2);
                p.release(a);
            } else if let Some(a) = p.allocate() {
                proptest::prop_assert!(!model.contains(&a));
                proptest::prop_assert!(p.net().contains(&a.host) && p.net().contains(&a.sandbox));
                proptest::prop_assert_eq!(u32::from(a.sandbox), u32::from(a.host) + 1);
                let i = p.index_of(a).unwrap();
                proptest::prop_assert_eq!(u32::from(a.host), u32::from(p.net().network()) + 4 * i + 1);
                model.push(a);
            } else {
                proptest::prop_assert_eq!(model.len() as u32, p.capacity());
            }
            proptest::prop_assert_eq!(p.in_use(), model.len());
        }
    }
}
