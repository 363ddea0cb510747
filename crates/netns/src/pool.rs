//! The sandbox address pool: a network cut into /30 blocks, block `i` giving the host side `.1`
//! and the sandbox side `.2` of `net + 4 i`. A block's index never changes, so addresses saved
//! before a restart are [`AddressPool::reserve`]d back exactly.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::NetnsError;

/// The default pool, inside CGNAT space (RFC 6598), which real networks rarely route to hosts.
pub const DEFAULT_POOL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(100, 96, 0, 0), 16);

const BLOCK_PREFIX: u8 = 30;

/// The two ends of a sandbox's veth pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SandboxAddrs {
    /// Host side (`plh-<id>`), the sandbox's gateway, DNS server and proxy address.
    pub host: Ipv4Addr,
    /// Sandbox side (`eth0` inside).
    pub sandbox: Ipv4Addr,
    /// Always 30 for addresses from [`AddressPool`].
    pub prefix_len: u8,
}

/// Hands out /30 blocks of a network; next-fit so a just-released block (whose conntrack
/// entries may linger) is reused as late as possible.
#[derive(Debug, Clone)]
pub struct AddressPool {
    net: Ipv4Net,
    blocks: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl AddressPool {
    /// A pool over `net` (host bits ignored); `net` must hold at least one /30.
    pub fn new(net: Ipv4Net) -> Result<Self, NetnsError> {
        let net = net.trunc();
        if net.prefix_len() > BLOCK_PREFIX {
            return Err(NetnsError::InvalidPool {
                net,
                reason: "a prefix longer than /30 holds no /30 block",
            });
        }
        if net.prefix_len() == 0 {
            return Err(NetnsError::InvalidPool {
                net,
                reason: "/0 would claim every address",
            });
        }
        let blocks = 1u32 << (BLOCK_PREFIX - net.prefix_len());
        Ok(Self {
            net,
            blocks,
            used: BTreeSet::new(),
            next: 0,
        })
    }

    /// The pool's network.
    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// How many blocks the pool holds in all.
    pub fn capacity(&self) -> u32 {
        self.blocks
    }

    /// How many blocks are handed out.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }

    /// The next free block, or `None` when the pool is exhausted.
    pub fn allocate(&mut self) -> Option<SandboxAddrs> {
        if self.used.len() >= self.blocks as usize {
            return None;
        }
        let index = (self.next..self.blocks)
            .chain(0..self.next)
            .find(|i| !self.used.contains(i))?;
        self.used.insert(index);
        self.next = (index + 1) % self.blocks;
        Some(self.addrs_of(index))
    }

    /// Marks `a` as in use (after a restart, from saved state).
    pub fn reserve(&mut self, a: SandboxAddrs) -> Result<(), NetnsError> {
        let index = self.index_of(a)?;
        if !self.used.insert(index) {
            return Err(NetnsError::AddrsInUse {
                host: a.host,
                sandbox: a.sandbox,
            });
        }
        Ok(())
    }

    /// Returns `a` to the pool; addresses that are not a block of this pool are ignored.
    pub fn release(&mut self, a: SandboxAddrs) {
        if let Ok(index) = self.index_of(a) {
            self.used.remove(&index);
        }
    }

    /// The block index of `a`, if `a` is exactly one of this pool's blocks.
    pub fn index_of(&self, a: SandboxAddrs) -> Result<u32, NetnsError> {
        let not_in_pool = || NetnsError::NotInPool {
            net: self.net,
            host: a.host,
            sandbox: a.sandbox,
            prefix_len: a.prefix_len,
        };
        if a.prefix_len != BLOCK_PREFIX || !self.net.contains(&a.host) {
            return Err(not_in_pool());
        }
        let offset = u32::from(a.host).wrapping_sub(u32::from(self.net.network()));
        if offset % 4 != 1 {
            return Err(not_in_pool());
        }
        let index = offset / 4;
        if index >= self.blocks || self.addrs_of(index) != a {
            return Err(not_in_pool());
        }
        Ok(index)
    }

    fn addrs_of(&self, index: u32) -> SandboxAddrs {
        let base = u32::from(self.net.network()).wrapping_add(index.wrapping_mul(4));
        SandboxAddrs {
            host: Ipv4Addr::from(base.wrapping_add(1)),
            sandbox: Ipv4Addr::from(base.wrapping_add(2)),
            prefix_len: BLOCK_PREFIX,
        }
    }
}

impl Default for AddressPool {
    fn default() -> Self {
        Self {
            net: DEFAULT_POOL,
            blocks: 1 << (BLOCK_PREFIX - DEFAULT_POOL.prefix_len()),
            used: BTreeSet::new(),
            next: 0,
        }
    }
}

#[cfg(test)]
mod tests {
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
}
