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
#[path = "pool_tests.rs"]
mod tests;
