//! The last stage for everything that is not served per request: dial as the plan says, replay
//! the peeked bytes, relay until either side ends, the idle timeout, a budget or a policy swap.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::audit::WouldDeny;
use super::conn::{Conn, reset};
use super::plan::{Plan, Recheck};
use super::relay::{RelayEnd, relay};
use crate::budget::{Dir, Tally};
use crate::events::{EventKind, EventVerdict};

/// Carries out a tunnel plan: dial, replay the peeked bytes, relay.
pub(super) async fn tunnel(
    conn: Conn,
    stream: TcpStream,
    prefix: Vec<u8>,
    plan: Plan,
    sent_name: Option<String>,
    would: Option<WouldDeny>,
) {
    // Byte budgets: a spent one refuses the tunnel before anything is dialled.
    let tally = tunnel_tally(&conn, &plan);
    if let Some(cut) = tally.as_deref().and_then(Tally::exhausted) {
        conn.deny(stream, sent_name.as_deref(), &cut.rule, cut.reason);
        return;
    }
    let (dialled, recheck, rule, name) = match plan {
        Plan::Deny { rule, reason } => {
            conn.deny(stream, sent_name.as_deref(), &rule, reason);
            return;
        }
        Plan::DialName { name, rule, .. } => match conn.dial_name(&name).await {
            Ok((upstream, ip)) => (
                upstream,
                Recheck::Name {
                    name: name.clone(),
                    ip,
                },
                rule,
                Some(name.as_str().to_owned()),
            ),
            Err(reason) => {
                conn.deny(stream, Some(name.as_str()), &rule, reason);
                return;
            }
        },
        Plan::DialAddr { rule } => match conn.dial_orig().await {
            Ok((upstream, recheck)) => {
                // Through a synthetic address the name is the destination, whatever was sent.
                let name = conn
                    .synthetic
                    .as_ref()
                    .map(|n| n.as_str().to_owned())
                    .or(sent_name);
                (upstream, recheck, rule, name)
            }
            Err(reason) => {
                conn.deny(stream, sent_name.as_deref(), &rule, reason);
                return;
            }
        },
    };
    let mut upstream = dialled;
    if let Some(cut) = tally
        .as_deref()
        .and_then(|t| t.charge(Dir::Sent, prefix.len()).err())
    {
        conn.deny(stream, name.as_deref(), &cut.rule, cut.reason);
        return;
    }
    if !prefix.is_empty()
        && let Err(e) = upstream.write_all(&prefix).await
    {
        let mut ev = conn.event(
            EventKind::Tcp,
            EventVerdict::Allow,
            &rule,
            format!("upstream failed: {e}"),
        );
        ev.name = name;
        WouldDeny::mark(would.as_ref(), &mut ev);
        conn.record(ev);
        reset(stream);
        return;
    }
    // An idle tunnel should hold no buffers: the peeked bytes are sent, so let them go.
    let prefix_len = prefix.len() as u64;
    drop(prefix);
    tracing::debug!(rule = %rule, "tunnel open");
    let stats = relay(
        stream,
        upstream,
        &conn.shared.pool,
        conn.shared.limits.idle_timeout(),
        conn.revoked(recheck),
        tally.as_deref(),
    )
    .await;
    let reason = match stats.end {
        RelayEnd::Done => "tunnel closed",
        RelayEnd::Idle => "tunnel idle timeout",
        RelayEnd::Revoked => "tunnel closed: the new policy denies it",
        RelayEnd::Error => "tunnel ended with a socket error",
        RelayEnd::Budget => "tunnel closed: a byte budget is spent",
    };
    let cut = tally.as_deref().and_then(Tally::cut_reason);
    let mut ev = match cut.filter(|_| stats.end == RelayEnd::Budget) {
        Some(cut) => conn.event(
            EventKind::Tcp,
            EventVerdict::Deny,
            &cut.rule,
            format!("tunnel closed: {}", cut.reason),
        ),
        None => conn.event(EventKind::Tcp, EventVerdict::Allow, &rule, reason),
    };
    ev.name = name;
    WouldDeny::mark(would.as_ref(), &mut ev);
    ev.bytes_up = stats.up + prefix_len;
    ev.bytes_down = stats.down;
    conn.record(ev);
}

/// The byte-budget tally of a tunnel: the sandbox's budget, and the domain budget of the name it
/// was allowed for (the SNI, or the name a synthetic address stands for).
fn tunnel_tally(conn: &Conn, plan: &Plan) -> Option<Arc<Tally>> {
    let name = match plan {
        Plan::DialName { name, .. } => Some(name),
        Plan::DialAddr { .. } => conn.synthetic.as_ref(),
        Plan::Deny { .. } => None,
    };
    conn.entry.tally(name)
}
