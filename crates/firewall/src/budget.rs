//! Byte budgets: per-sandbox meters of bytes sent and received per window, and the per-connection
//! handle (`Tally`) every path charges.
//!
//! Cost: a connection without a budget has no tally at all. With one, each read or write batch
//! (not each byte) costs a clock read and one or two atomic adds per meter. A meter's window is
//! fixed: it starts when the budget is first set and restarts every `window_secs`; the counts go
//! back to zero at each restart (so a burst at the end of one window and the start of the next
//! can move up to twice the budget within one window's time).
//!
//! A batch that would take a count past its limit is not forwarded: the connection carrying it
//! is cut at once and every other connection of the sandbox charged to the same meter is told to
//! close (`signal`). A connection opened while the budget is already spent is not cut on sight:
//! the HTTP paths answer its requests with a 403 naming the budget instead, and the tunnel paths
//! refuse it before dialling.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use palisade_policy::{Budgets, ByteBudget, CanonicalName, DomainPattern};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::decision::{BudgetScope, RuleRef};

/// Which way bytes go, seen from the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From the sandbox towards the destination.
    Sent,
    /// From the destination into the sandbox.
    Received,
}

/// No limit.
const NONE: u64 = u64::MAX;

/// One budget's counters. Limits and window are atomics so a policy update changes them in place
/// and the counts carry over.
#[derive(Debug)]
pub(crate) struct Meter {
    /// The budget, as events name it.
    rule: RuleRef,
    /// `the sandbox's byte budget` or `the byte budget for <pattern>`.
    what: String,
    limits: [AtomicU64; 2],
    counts: [AtomicU64; 2],
    window_ms: AtomicU64,
    origin: Instant,
    /// Start of the current window, in ms since `origin`.
    window_start: AtomicU64,
    /// How many times the meter went from within its limits to past them.
    spent: AtomicU64,
    signal: Arc<watch::Sender<u64>>,
}

fn idx(dir: Dir) -> usize {
    match dir {
        Dir::Sent => 0,
        Dir::Received => 1,
    }
}

impl Meter {
    fn new(
        rule: RuleRef,
        what: String,
        budget: &ByteBudget,
        signal: Arc<watch::Sender<u64>>,
    ) -> Self {
        let m = Meter {
            rule,
            what,
            limits: [AtomicU64::new(NONE), AtomicU64::new(NONE)],
            counts: [AtomicU64::new(0), AtomicU64::new(0)],
            window_ms: AtomicU64::new(1000),
            origin: Instant::now(),
            window_start: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            signal,
        };
        m.set(budget);
        m
    }

    /// Applies a (possibly changed) budget; the counts carry over. A lower limit that the counts
    /// already pass spends the budget now, closing open connections as a crossing would.
    fn set(&self, budget: &ByteBudget) {
        let was = self.over();
        self.limits[0].store(budget.sent().unwrap_or(NONE), Ordering::Relaxed);
        self.limits[1].store(budget.received().unwrap_or(NONE), Ordering::Relaxed);
        let ms = budget.window().as_millis();
        self.window_ms
            .store(u64::try_from(ms).unwrap_or(NONE).max(1), Ordering::Relaxed);
        if !was && self.over() {
            self.mark_spent();
        }
    }

    /// A budget removed from the policy: connections still holding the meter stop being limited.
    fn retire(&self) {
        for l in &self.limits {
            l.store(NONE, Ordering::Relaxed);
        }
    }

    fn mark_spent(&self) {
        self.spent.fetch_add(1, Ordering::AcqRel);
        self.signal.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Starts a new window when the current one is over.
    fn roll(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NONE);
        let start = self.window_start.load(Ordering::Acquire);
        let window = self.window_ms.load(Ordering::Relaxed);
        let elapsed = now.saturating_sub(start);
        if elapsed < window {
            return;
        }
        let new_start = now - elapsed % window;
        // One winner resets; bytes charged by a racing batch in between may be lost, which only
        // ever lets a little more through at a window's start.
        if self
            .window_start
            .compare_exchange(start, new_start, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            for c in &self.counts {
                c.store(0, Ordering::Relaxed);
            }
        }
    }

    fn over(&self) -> bool {
        (0..2).any(|i| {
            self.counts[i].load(Ordering::Relaxed) > self.limits[i].load(Ordering::Relaxed)
        })
    }

    /// Past a limit in this window.
    fn exhausted(&self) -> bool {
        self.roll();
        self.over()
    }

    /// Adds `n`; `true` when the meter is now past a limit.
    fn charge(&self, dir: Dir, n: u64) -> bool {
        self.roll();
        let i = idx(dir);
        let limit = self.limits[i].load(Ordering::Relaxed);
        let before = self.counts[i].fetch_add(n, Ordering::Relaxed);
        let after = before.saturating_add(n);
        if after <= limit {
            return self.over();
        }
        if before <= limit {
            self.mark_spent();
        }
        true
    }

    /// Takes back bytes charged for a write that did not happen.
    fn refund(&self, dir: Dir, n: u64) {
        let _ = self.counts[idx(dir)].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            Some(c.saturating_sub(n))
        });
    }

    fn spent(&self) -> u64 {
        self.spent.load(Ordering::Acquire)
    }

    /// Why the meter refuses, for events and 403 bodies.
    fn describe(&self) -> Cut {
        let window_s = self.window_ms.load(Ordering::Relaxed) / 1000;
        let mut parts = Vec::new();
        for (i, verb) in [(0, "sent"), (1, "received")] {
            let limit = self.limits[i].load(Ordering::Relaxed);
            let count = self.counts[i].load(Ordering::Relaxed);
            if count > limit {
                parts.push(format!("{verb} {count} of {limit} bytes"));
            }
        }
        let detail = if parts.is_empty() {
            "spent".to_owned()
        } else {
            parts.join(", ")
        };
        Cut {
            rule: self.rule.clone(),
            reason: format!(
                "{} is spent ({detail} in a {window_s} s window); connections are refused until the window ends",
                self.what
            ),
        }
    }
}

/// Why a connection was refused or closed: the budget (`rule`) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cut {
    pub(crate) rule: RuleRef,
    pub(crate) reason: String,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Cut {}

/// A sandbox's meters, rebuilt on each policy update from the old ones so counts carry over.
#[derive(Debug)]
pub(crate) struct Meters {
    sandbox: Option<Arc<Meter>>,
    domains: Vec<(DomainPattern, Arc<Meter>)>,
    source: Budgets,
    signal: Arc<watch::Sender<u64>>,
}

impl Meters {
    pub(crate) fn empty() -> Self {
        Meters {
            sandbox: None,
            domains: Vec::new(),
            source: Budgets::default(),
            signal: Arc::new(watch::channel(0).0),
        }
    }

    /// The meters for `budgets`, keeping (with new limits) the meter of every budget that was
    /// already there: same sandbox budget, or same domain pattern.
    pub(crate) fn update(&self, budgets: &Budgets) -> Meters {
        let signal = Arc::clone(&self.signal);
        let sandbox = budgets.sandbox().map(|b| match &self.sandbox {
            Some(m) => {
                m.set(b);
                Arc::clone(m)
            }
            None => Arc::new(Meter::new(
                RuleRef::Budget(BudgetScope::Sandbox),
                "the sandbox's byte budget".into(),
                b,
                Arc::clone(&signal),
            )),
        });
        if sandbox.is_none()
            && let Some(old) = &self.sandbox
        {
            old.retire();
        }
        let domains: Vec<(DomainPattern, Arc<Meter>)> = budgets
            .domains()
            .iter()
            .map(|(p, b)| {
                let meter = match self.domains.iter().find(|(q, _)| q == p) {
                    Some((_, m)) => {
                        m.set(b);
                        Arc::clone(m)
                    }
                    None => Arc::new(Meter::new(
                        RuleRef::Budget(BudgetScope::Domain(p.clone())),
                        format!("the byte budget for {p}"),
                        b,
                        Arc::clone(&signal),
                    )),
                };
                (p.clone(), meter)
            })
            .collect();
        for (p, m) in &self.domains {
            if !domains.iter().any(|(q, _)| q == p) {
                m.retire();
            }
        }
        Meters {
            sandbox,
            domains,
            source: budgets.clone(),
            signal,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sandbox.is_none() && self.domains.is_empty()
    }

    /// The meter of the most specific domain budget covering `name`.
    pub(crate) fn domain(&self, name: &CanonicalName) -> Option<Arc<Meter>> {
        let i = self.source.domain_for(name)?;
        self.domains.get(i).map(|(_, m)| Arc::clone(m))
    }

    /// A connection's tally: the sandbox meter and the meter of `name`'s domain budget; `None`
    /// when neither applies (and the connection is not counted at all).
    pub(crate) fn tally(&self, name: Option<&CanonicalName>) -> Option<Arc<Tally>> {
        let domain = name.and_then(|n| self.domain(n));
        if self.sandbox.is_none() && domain.is_none() {
            return None;
        }
        Some(self.tally_with(domain))
    }

    /// A tally even when no meter applies yet, for plain HTTP, whose requests may each go to a
    /// different domain (`Tally::set_domain`); `None` when the sandbox has no budget at all.
    pub(crate) fn switchable_tally(&self) -> Option<Arc<Tally>> {
        (!self.is_empty()).then(|| self.tally_with(None))
    }

    fn tally_with(&self, domain: Option<Arc<Meter>>) -> Arc<Tally> {
        Arc::new(Tally {
            sandbox: self.sandbox.as_ref().map(|m| Attached::new(Arc::clone(m))),
            domain: ArcSwapOption::new(domain.map(|m| Arc::new(Attached::new(m)))),
            signal: self.signal.subscribe(),
            cut: OnceLock::new(),
        })
    }
}

/// A meter as one connection holds it: `seen` is the meter's spent count when the connection
/// attached, so a connection opened while the budget was spent is told apart from one that was
/// open when it ran out.
#[derive(Debug)]
struct Attached {
    meter: Arc<Meter>,
    seen: u64,
}

impl Attached {
    fn new(meter: Arc<Meter>) -> Self {
        let seen = meter.spent();
        Attached { meter, seen }
    }

    /// Charges `n`; the meter when this connection must stop.
    fn charge(&self, dir: Dir, n: u64) -> Option<&Meter> {
        let over = self.meter.charge(dir, n);
        (over && self.meter.spent() != self.seen).then_some(&*self.meter)
    }

    fn cut(&self) -> bool {
        self.meter.exhausted() && self.meter.spent() != self.seen
    }
}

/// One connection's meters.
#[derive(Debug)]
pub(crate) struct Tally {
    sandbox: Option<Attached>,
    domain: ArcSwapOption<Attached>,
    signal: watch::Receiver<u64>,
    cut: OnceLock<Cut>,
}

impl Tally {
    /// Charges a batch of `n` bytes; `Err` when the connection must be cut (the batch is then
    /// not to be forwarded).
    pub(crate) fn charge(&self, dir: Dir, n: usize) -> Result<(), Cut> {
        let n = n as u64;
        let mut stop = self
            .sandbox
            .as_ref()
            .and_then(|a| a.charge(dir, n))
            .map(Meter::describe);
        if let Some(d) = self.domain.load().as_deref()
            && let Some(m) = d.charge(dir, n)
        {
            stop = stop.or_else(|| Some(m.describe()));
        }
        match stop {
            None => Ok(()),
            Some(cut) => Err(self.remember(cut)),
        }
    }

    fn refund(&self, dir: Dir, n: usize) {
        if let Some(a) = &self.sandbox {
            a.meter.refund(dir, n as u64);
        }
        if let Some(d) = self.domain.load().as_deref() {
            d.meter.refund(dir, n as u64);
        }
    }

    fn remember(&self, cut: Cut) -> Cut {
        self.cut.get_or_init(|| cut).clone()
    }

    /// The budget that is spent now, if any: new connections and requests are refused with it.
    pub(crate) fn exhausted(&self) -> Option<Cut> {
        let sandbox = self.sandbox.as_ref().filter(|a| a.meter.exhausted());
        if let Some(a) = sandbox {
            return Some(a.meter.describe());
        }
        let domain = self.domain.load_full();
        domain
            .as_deref()
            .filter(|a| a.meter.exhausted())
            .map(|a| a.meter.describe())
    }

    /// Why this connection was cut, once it was.
    pub(crate) fn cut_reason(&self) -> Option<Cut> {
        self.cut.get().cloned()
    }

    /// Plain HTTP: the domain budget of the request being served (bytes from now on count to
    /// it).
    pub(crate) fn set_domain(&self, meter: Option<Arc<Meter>>) {
        let same = match (self.domain.load().as_deref(), &meter) {
            (Some(a), Some(m)) => Arc::ptr_eq(&a.meter, m),
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.domain.store(meter.map(|m| Arc::new(Attached::new(m))));
        }
    }

    /// Completes when a budget this connection counts against runs out while it is open.
    pub(crate) async fn closed(&self) -> Cut {
        let mut rx = self.signal.clone();
        loop {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let sandbox = self.sandbox.as_ref().filter(|a| a.cut());
            if let Some(a) = sandbox {
                return self.remember(a.meter.describe());
            }
            let domain = self.domain.load_full();
            if let Some(a) = domain.as_deref().filter(|a| a.cut()) {
                return self.remember(a.meter.describe());
            }
        }
    }
}

/// A stream whose reads count as sent and writes as received. A read that runs past a budget is
/// dropped and fails the stream; a write that would is not made.
#[derive(Debug)]
pub(crate) struct Metered<S> {
    inner: S,
    tally: Option<Arc<Tally>>,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S, tally: Option<Arc<Tally>>) -> Self {
        Metered { inner, tally }
    }
}

fn cut_error(cut: Cut) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, cut)
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0
            && let Some(t) = &self.tally
            && let Err(cut) = t.charge(Dir::Sent, n)
        {
            buf.set_filled(before);
            return Poll::Ready(Err(cut_error(cut)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Metered<S> {
    /// Charges `len` before writing, refunds what was not written.
    fn metered_write(
        &mut self,
        len: usize,
        write: impl FnOnce(Pin<&mut S>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let Some(tally) = self.tally.clone() else {
            return write(Pin::new(&mut self.inner));
        };
        if len == 0 {
            return write(Pin::new(&mut self.inner));
        }
        if let Err(cut) = tally.charge(Dir::Received, len) {
            return Poll::Ready(Err(cut_error(cut)));
        }
        let result = write(Pin::new(&mut self.inner));
        let written = match &result {
            Poll::Ready(Ok(m)) => *m,
            _ => 0,
        };
        if written < len {
            tally.refund(Dir::Received, len - written);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.metered_write(buf.len(), |s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.metered_write(len, |s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
