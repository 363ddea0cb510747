//! Byte budgets on the HTTP paths (intercepted and plain): the connection is served until a
//! budget it counts against runs out, then dropped; the cut is recorded once.

use std::future::Future;

use super::Conn;
use crate::budget::Tally;
use crate::events::{EventKind, EventVerdict};

/// Drives `serve` (a hyper connection) until it ends or a budget of `tally` runs out while it is
/// open; dropping the connection closes the socket.
pub(super) async fn serve<E>(
    serve: impl Future<Output = Result<(), E>>,
    tally: Option<&Tally>,
) -> Result<(), E> {
    let Some(tally) = tally else {
        return serve.await;
    };
    tokio::select! {
        r = serve => r,
        _ = tally.closed() => Ok(()),
    }
}

/// Records that the connection was closed by a byte budget, if it was.
pub(super) fn record_cut(conn: &Conn, tally: Option<&Tally>, name: Option<&str>) {
    if let Some(cut) = tally.and_then(Tally::cut_reason) {
        let mut ev = conn.event(
            EventKind::Tcp,
            EventVerdict::Deny,
            &cut.rule,
            format!("connection closed: {}", cut.reason),
        );
        ev.name = name.map(str::to_owned);
        conn.record(ev);
    }
}
