//! Streaming secret scrubber: the bytes an intercepted upstream sends back to a sandbox pass
//! through a [`Scrubber`], which replaces every injected secret value with [`MARKER`] before the
//! sandbox sees it. Pure code: no I/O.
//!
//! An upstream that echoes a credential back (an error page quoting the request, a debug
//! endpoint, a reflected `Authorization`) would otherwise hand the sandbox the secret that
//! header injection kept out of it. The scrubber looks for each secret in the forms an echo
//! takes ([`forms`]): as sent, the token after an auth scheme (`Bearer <token>`), base64
//! (standard and URL-safe alphabets, at each of the three byte alignments inside a longer
//! encoded text) and percent-encoding.
//!
//! **Split invariance.** The output does not depend on how the input is cut into
//! [`Scrubber::feed`] calls: a secret split over two reads is still caught. The scrubber holds
//! back only the shortest tail that could still begin a match (so a stream such as SSE is not
//! delayed when its last bytes cannot start a secret), and matches leftmost-longest, exactly as a
//! scan of the whole stream would. Proven by property tests and the `scrub` fuzz target.

#![forbid(unsafe_code)]

mod forms;

use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use zeroize::Zeroizing;

pub use forms::{MIN_PATTERN, forms};

/// What a secret is replaced with.
pub const MARKER: &[u8] = b"[REDACTED]";

/// Why a set of secrets could not be made into patterns.
#[derive(Debug, thiserror::Error)]
#[error("the secrets could not be compiled into a scrubber: {0}")]
pub struct ScrubError(String);

/// The compiled forms of a policy's secrets, shared by every stream of a sandbox.
pub struct Patterns {
    matcher: AhoCorasick,
    patterns: Vec<Zeroizing<Vec<u8>>>,
    /// Whether a byte can start some pattern: most tails are ruled out by one lookup.
    starts: [bool; 256],
    max_len: usize,
}

/// Patterns are secrets: never shown.
impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patterns")
            .field("count", &self.patterns.len())
            .finish_non_exhaustive()
    }
}

impl Patterns {
    /// The patterns for `secrets` (every form of each), or `None` when no secret yields one.
    ///
    /// # Errors
    /// When the automaton cannot be built (far more patterns than a policy can hold).
    pub fn new<'a, I>(secrets: I) -> Result<Option<Arc<Self>>, ScrubError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for secret in secrets {
            for form in forms(secret) {
                if !patterns.iter().any(|p| **p == *form) {
                    patterns.push(form);
                }
            }
        }
        if patterns.is_empty() {
            return Ok(None);
        }
        let matcher = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns.iter().map(|p| p.as_slice()))
            .map_err(|e| ScrubError(e.to_string()))?;
        let mut starts = [false; 256];
        for p in &patterns {
            if let Some(&b) = p.first() {
                starts[usize::from(b)] = true;
            }
        }
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        Ok(Some(Arc::new(Self {
            matcher,
            patterns,
            starts,
            max_len,
        })))
    }

    /// Whether `value` holds a secret in any of its forms (no allocation).
    pub fn is_match(&self, value: &[u8]) -> bool {
        self.matcher.is_match(value)
    }

    /// How many patterns the secrets gave.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Never true: [`Patterns::new`] gives `None` instead of an empty set.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// A scrubber for one stream.
    pub fn stream(self: &Arc<Self>) -> Scrubber {
        Scrubber {
            patterns: Arc::clone(self),
            carry: Zeroizing::new(Vec::new()),
            replaced: 0,
        }
    }

    /// Scrubs a whole value (a header): the value with every match replaced, and how many.
    pub fn scrub_all(self: &Arc<Self>, value: &[u8]) -> (Vec<u8>, u64) {
        let mut s = self.stream();
        let mut out = Vec::with_capacity(value.len());
        s.feed(value, &mut out);
        s.finish(&mut out);
        (out, s.replaced())
    }

    /// The first position from which `buf` could still be the start of a match that needs more
    /// bytes: the shortest tail that is a proper prefix of some pattern (`buf.len()` if none).
    fn hold_from(&self, buf: &[u8]) -> usize {
        let from = buf.len().saturating_sub(self.max_len.saturating_sub(1));
        (from..buf.len())
            .find(|&p| {
                let tail = &buf[p..];
                self.starts[usize::from(tail[0])]
                    && self
                        .patterns
                        .iter()
                        .any(|pat| pat.len() > tail.len() && pat.starts_with(tail))
            })
            .unwrap_or(buf.len())
    }

    /// Appends `buf[..limit]`-or-further to `out` with matches replaced; matches that start at or
    /// after `limit` are left. Returns where the unconsumed bytes begin and how many matches were
    /// replaced.
    fn replace(&self, buf: &[u8], limit: usize, out: &mut Vec<u8>) -> (usize, u64) {
        let mut at = 0;
        let mut n = 0;
        for m in self.matcher.find_iter(buf) {
            if m.start() >= limit {
                break;
            }
            out.extend_from_slice(&buf[at..m.start()]);
            out.extend_from_slice(MARKER);
            at = m.end();
            n += 1;
        }
        let keep = limit.max(at);
        out.extend_from_slice(&buf[at..keep]);
        (keep, n)
    }
}

/// One stream's scrubbing state: the held-back tail and the count of replacements.
pub struct Scrubber {
    patterns: Arc<Patterns>,
    /// Bytes that may still begin a secret; never longer than the longest pattern.
    carry: Zeroizing<Vec<u8>>,
    replaced: u64,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("held", &self.carry.len())
            .field("replaced", &self.replaced)
            .finish_non_exhaustive()
    }
}

impl Scrubber {
    /// Takes the next bytes of the stream; appends to `out` everything that can no longer be part
    /// of a secret, with secrets replaced.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.carry.is_empty() {
            let hold = self.patterns.hold_from(data);
            let (keep, n) = self.patterns.replace(data, hold, out);
            self.replaced += n;
            self.carry.extend_from_slice(&data[keep..]);
        } else {
            self.carry.extend_from_slice(data);
            let buf = std::mem::take(&mut *self.carry);
            let hold = self.patterns.hold_from(&buf);
            let (keep, n) = self.patterns.replace(&buf, hold, out);
            self.replaced += n;
            self.carry.extend_from_slice(&buf[keep..]);
            drop(Zeroizing::new(buf));
        }
    }

    /// [`Scrubber::feed`] without a copy, for the common read that holds no secret: when
    /// nothing is held back from earlier reads and no match starts in the part of `data` that
    /// can go out now, takes `data` and returns how many of its first bytes go out unchanged
    /// (the rest is held back exactly as `feed` would hold it). Otherwise takes nothing and
    /// returns `None`: call `feed`. Either way the stream's output is the same.
    pub fn feed_unchanged(&mut self, data: &[u8]) -> Option<usize> {
        if !self.carry.is_empty() {
            return None;
        }
        let hold = self.patterns.hold_from(data);
        if self
            .patterns
            .matcher
            .find(data)
            .is_some_and(|m| m.start() < hold)
        {
            return None;
        }
        self.carry.extend_from_slice(&data[hold..]);
        Some(hold)
    }

    /// The end of the stream: the held-back tail, scrubbed.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let buf = std::mem::take(&mut *self.carry);
        let (_, n) = self.patterns.replace(&buf, buf.len(), out);
        self.replaced += n;
        drop(Zeroizing::new(buf));
    }

    /// How many bytes are held back, waiting to see whether they begin a secret.
    pub fn held(&self) -> usize {
        self.carry.len()
    }

    /// How many secrets were replaced so far.
    pub fn replaced(&self) -> u64 {
        self.replaced
    }
}

#[cfg(test)]
mod tests;
