//! Per-source query rate: a token bucket for each client address, checked before a query is
//! parsed, so a flooding sandbox costs the server one hash lookup per datagram and cannot take
//! the receive loop, the event log or the upstream away from the others.
//!
//! Written here rather than taken from `governor` because what is kept per source is a bucket
//! plus a count of what it dropped since its last report (one event a second, not one per
//! query), both under the lock the check takes anyway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sources tracked before idle ones are forgotten.
const GC_AT: usize = 4_096;
/// A source unseen this long has a full bucket again, so its entry can go.
const IDLE: Duration = Duration::from_secs(10);
/// Drops of one source are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The verdict on one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Under the rate: answer it.
    Ok,
    /// Over the rate: drop it (UDP) or refuse it (TCP). `report` is the number of queries
    /// dropped since the last report, when one is due.
    Over { report: Option<u64> },
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    dropped: u64,
    /// When drops were last reported; `None`: never, so the first drop is reported at once.
    reported: Option<Instant>,
}

/// Token buckets by source; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct Rates {
    inner: Arc<Mutex<HashMap<IpAddr, Bucket>>>,
    /// Tokens per second; 0 turns the limit off.
    rate: f64,
    burst: f64,
}

impl Rates {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Self {
            inner: Arc::default(),
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
        }
    }

    /// Takes one token for `src` at `now`.
    pub(crate) fn take(&self, src: IpAddr, now: Instant) -> Take {
        if self.rate <= 0.0 {
            return Take::Ok;
        }
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= GC_AT && !map.contains_key(&src) {
            map.retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
        }
        let b = map.entry(src).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            dropped: 0,
            reported: None,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Take::Ok;
        }
        b.dropped += 1;
        let due = b
            .reported
            .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_EVERY);
        let report = if due {
            b.reported = Some(now);
            Some(std::mem::take(&mut b.dropped))
        } else {
            None
        };
        Take::Over { report }
    }
}

#[cfg(test)]
#[path = "rate_tests.rs"]
mod tests;
