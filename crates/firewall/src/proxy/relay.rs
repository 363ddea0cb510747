//! The opaque tunnel: bytes copied both ways with correct half-close.
//!
//! Large buffers matter more than anything else for throughput here (design.md), but an idle
//! tunnel should cost next to nothing, so a direction takes a buffer from a shared pool only
//! while its socket is readable and gives it back when the socket runs dry.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

/// How many idle buffers the pool keeps for reuse.
const POOL_KEEP: usize = 64;

/// Buffers shared by every tunnel.
#[derive(Debug)]
pub(super) struct BufferPool {
    size: usize,
    free: Mutex<Vec<Box<[u8]>>>,
}

impl BufferPool {
    pub(super) fn new(size: usize) -> Self {
        Self {
            size,
            free: Mutex::new(Vec::new()),
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
}

#[derive(Debug, Clone, Copy)]
pub(super) struct RelayStats {
    pub(super) up: u64,
    pub(super) down: u64,
    pub(super) end: RelayEnd,
}

/// Relays between `client` and `upstream` until both directions are closed, the tunnel is idle
/// for `idle`, or `revoked` completes.
pub(super) async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    pool: &BufferPool,
    idle: Duration,
    revoked: impl std::future::Future<Output = ()>,
) -> RelayStats {
    let (client_read, client_write) = client.into_split();
    let (up_read, up_write) = upstream.into_split();
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let activity = Activity::new();

    let both = async {
        let (a, b) = tokio::join!(
            pump(&client_read, up_write, pool, &up_bytes, &activity),
            pump(&up_read, client_write, pool, &down_bytes, &activity),
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
    let end = tokio::select! {
        end = both => end,
        () = idle_watch => RelayEnd::Idle,
        () = revoked => RelayEnd::Revoked,
    };
    RelayStats {
        up: up_bytes.load(Ordering::Relaxed),
        down: down_bytes.load(Ordering::Relaxed),
        end,
    }
}

/// Copies one direction; on end of stream, shuts the other side's sending direction down.
async fn pump(
    from: &OwnedReadHalf,
    mut to: OwnedWriteHalf,
    pool: &BufferPool,
    counter: &AtomicU64,
    activity: &Activity,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = pool.take();
        let result = drain(from, &mut to, &mut buf, counter, activity).await;
        pool.give(buf);
        match result {
            Ok(true) => {
                // Half-close: the peer's read side sees EOF; the other direction goes on.
                to.shutdown().await?;
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads and forwards until the socket would block (`false`) or reaches end of stream (`true`).
async fn drain(
    from: &OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    buf: &mut [u8],
    counter: &AtomicU64,
    activity: &Activity,
) -> io::Result<bool> {
    loop {
        match from.try_read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                to.write_all(&buf[..n]).await?;
                counter.fetch_add(n as u64, Ordering::Relaxed);
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
