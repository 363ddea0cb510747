//! The opaque tunnel: bytes moved both ways with correct half-close.
//!
//! Bytes go socket → pipe → socket with splice(2), so they never cross into user space; where a
//! pipe cannot be had (out of file descriptors) a direction falls back to copying through a
//! large buffer for that burst. Either way an idle tunnel holds nothing: a direction takes a pipe
//! or buffer from a shared pool only while its socket is readable, and gives it back when the
//! socket runs dry.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};

use crate::budget::{Dir, Tally};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How many idle buffers the pool keeps for reuse.
const POOL_KEEP: usize = 64;
/// How many idle pipes the pool keeps (two descriptors each, out of the 20,000 the process has).
const PIPES_KEEP: usize = 32;

/// Buffers and pipes shared by every tunnel.
#[derive(Debug)]
pub(super) struct BufferPool {
    size: usize,
    splice: bool,
    free: Mutex<Vec<Box<[u8]>>>,
    pipes: Mutex<Vec<Pipe>>,
}

impl BufferPool {
    /// `size` bytes per buffer and per pipe; `splice` says whether to move bytes with splice(2).
    pub(super) fn new(size: usize, splice: bool) -> Self {
        Self {
            size,
            splice,
            free: Mutex::new(Vec::new()),
            pipes: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Box<[u8]> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        reused.unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice())
    }

    fn give(&self, buf: Box<[u8]>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < POOL_KEEP {
            free.push(buf);
        }
    }

    fn take_pipe(&self) -> Option<Pipe> {
        if !self.splice {
            return None;
        }
        let reused = self.pipes.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match reused {
            Some(pipe) => Some(pipe),
            None => match Pipe::new(self.size) {
                Ok(pipe) => Some(pipe),
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe for splice; copying instead");
                    None
                }
            },
        }
    }

    /// Takes back an empty pipe; one that may still hold bytes must be dropped instead.
    fn give_pipe(&self, pipe: Pipe) {
        let mut free = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < PIPES_KEEP {
            free.push(pipe);
        }
    }
}

/// A non-blocking pipe, the kernel-side buffer splice(2) moves bytes through.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // Larger than the default 64 KiB, like the copy buffers; best effort (the pipe only
        // holds page references while bytes are in flight).
        let size = i32::try_from(size).unwrap_or(i32::MAX);
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(size));
        Ok(Pipe { read, write })
    }
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RelayEnd {
    /// Both sides closed their sending direction.
    Done,
    /// No bytes either way for the idle timeout.
    Idle,
    /// The sandbox's policy changed and no longer allows this connection.
    Revoked,
    /// A socket error on either side.
    Error,
    /// A byte budget ran out (the tally says which).
    Budget,
}

/// What a tunnel moved and how it ended, for its event.
#[derive(Debug, Clone, Copy)]
#[must_use = "a tunnel's event reports its bytes and its end"]
pub(super) struct RelayStats {
    pub(super) up: u64,
    pub(super) down: u64,
    pub(super) end: RelayEnd,
}

/// Relays between `client` and `upstream` until both directions are closed, the tunnel is idle
/// for `idle`, `revoked` completes, or a byte budget of `tally` runs out (each batch is charged
/// before it is forwarded; the batch that would pass the budget is not).
pub(super) async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    pool: &BufferPool,
    idle: Duration,
    revoked: impl std::future::Future<Output = ()>,
    tally: Option<&Tally>,
) -> RelayStats {
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let activity = Activity::new();
    let up = Counter {
        bytes: &up_bytes,
        tally,
        dir: Dir::Sent,
    };
    let down = Counter {
        bytes: &down_bytes,
        tally,
        dir: Dir::Received,
    };

    let both = async {
        let (a, b) = tokio::join!(
            pump(&client, &upstream, pool, &up, &activity),
            pump(&upstream, &client, pool, &down, &activity),
        );
        if a.is_err() || b.is_err() {
            RelayEnd::Error
        } else {
            RelayEnd::Done
        }
    };
    let idle_watch = async {
        loop {
            let deadline = activity.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let spent = async {
        match tally {
            Some(t) => {
                t.closed().await;
            }
            None => std::future::pending().await,
        }
    };
    let mut end = tokio::select! {
        end = both => end,
        () = idle_watch => RelayEnd::Idle,
        () = revoked => RelayEnd::Revoked,
        () = spent => RelayEnd::Budget,
    };
    if tally.is_some_and(|t| t.cut_reason().is_some()) {
        end = RelayEnd::Budget;
    }
    RelayStats {
        up: up_bytes.load(Ordering::Relaxed),
        down: down_bytes.load(Ordering::Relaxed),
        end,
    }
}

/// One direction's byte count (for the event) and budget.
struct Counter<'a> {
    bytes: &'a AtomicU64,
    tally: Option<&'a Tally>,
    dir: Dir,
}

impl Counter<'_> {
    /// Charges a batch before it is forwarded; an error when a budget ran out.
    fn charge(&self, n: usize) -> io::Result<()> {
        if let Some(t) = self.tally {
            t.charge(self.dir, n)
                .map_err(|cut| io::Error::new(io::ErrorKind::ConnectionAborted, cut))?;
        }
        Ok(())
    }

    fn add(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Moves one direction; on end of stream, shuts the other side's sending direction down.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    pool: &BufferPool,
    counter: &Counter<'_>,
    activity: &Activity,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let eof = match pool.take_pipe() {
            Some(pipe) => {
                // An error may leave bytes in the pipe: then it is dropped, not pooled.
                let eof = drain_splice(from, to, &pipe, pool.size, counter, activity).await?;
                pool.give_pipe(pipe);
                eof
            }
            None => {
                let mut buf = pool.take();
                let result = drain_copy(from, to, &mut buf, counter, activity).await;
                pool.give(buf);
                result?
            }
        };
        if eof {
            // Half-close: the peer's read side sees EOF; the other direction goes on.
            socket2::SockRef::from(to).shutdown(Shutdown::Write)?;
            return Ok(());
        }
    }
}

/// Splices until the socket would block (`false`) or reaches end of stream (`true`); the pipe is
/// empty again whenever this returns `Ok`.
async fn drain_splice(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    chunk: usize,
    counter: &Counter<'_>,
    activity: &Activity,
) -> io::Result<bool> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here, so EAGAIN can only mean the socket has nothing more.
        let read = from.try_io(Interest::READABLE, || {
            splice(from.as_fd(), None, &pipe.write, None, chunk, flags).map_err(io::Error::from)
        });
        let n = match read {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        // Past the budget: the bytes stay in the pipe, which the caller then drops.
        counter.charge(n)?;
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            let written = to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to.as_fd(), None, left, flags).map_err(io::Error::from)
            });
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left = left.saturating_sub(m),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        counter.add(n);
        activity.touch();
    }
}

/// Reads and forwards through `buf` until the socket would block (`false`) or reaches end of
/// stream (`true`).
async fn drain_copy(
    from: &TcpStream,
    to: &TcpStream,
    buf: &mut [u8],
    counter: &Counter<'_>,
    activity: &Activity,
) -> io::Result<bool> {
    loop {
        match from.try_read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                counter.charge(n)?;
                let mut sent = 0;
                while let Some(rest) = buf.get(sent..n).filter(|r| !r.is_empty()) {
                    to.writable().await?;
                    match to.try_write(rest) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(m) => sent += m,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                counter.add(n);
                activity.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// When bytes last moved either way, as milliseconds since the tunnel opened.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests;
