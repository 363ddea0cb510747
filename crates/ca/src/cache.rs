//! Bounded per-sandbox leaf cache: least recently used entries go first, and every entry expires
//! long before its certificate's notAfter.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use rustls::sign::CertifiedKey;

/// Counters of a sandbox's leaf cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to mint a leaf (absent or expired).
    pub misses: u64,
    /// Leaves currently cached.
    pub entries: usize,
    /// Most leaves the cache holds.
    pub capacity: usize,
}

impl CacheStats {
    /// Hits over all lookups; 0 when nothing was looked up.
    #[must_use]
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits.saturating_add(self.misses);
        if total == 0 {
            0.0
        } else {
            // Precision loss only beyond 2^53 lookups.
            #[expect(clippy::cast_precision_loss, reason = "a ratio for reporting")]
            let rate = self.hits as f64 / total as f64;
            rate
        }
    }
}

struct Entry {
    leaf: Arc<CertifiedKey>,
    fresh_until: Instant,
}

pub(crate) struct LeafCache {
    entries: Mutex<LruCache<String, Entry>>,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl LeafCache {
    pub(crate) fn new(capacity: NonZeroUsize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// A fresh cached leaf for `name`, counting a hit or a miss.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let found = match entries.get(name) {
            Some(entry) if entry.fresh_until > now => Some(Arc::clone(&entry.leaf)),
            Some(_) => {
                entries.pop(name);
                None
            }
            None => None,
        };
        drop(entries);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches `leaf` for `name`. When two lookups raced to mint the same name, the leaf already
    /// cached wins so that every connection sees one certificate.
    pub(crate) fn insert(&self, name: String, leaf: Arc<CertifiedKey>) -> Arc<CertifiedKey> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get(&name)
            && entry.fresh_until > now
        {
            return Arc::clone(&entry.leaf);
        }
        let fresh_until = now.checked_add(self.ttl).unwrap_or(now);
        entries.put(
            name,
            Entry {
                leaf: Arc::clone(&leaf),
                fresh_until,
            },
        );
        leaf
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: entries.len(),
            capacity: entries.cap().get(),
        }
    }
}

impl std::fmt::Debug for LeafCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCache")
            .field("ttl", &self.ttl)
            .field("stats", &self.stats())
            .finish()
    }
}
