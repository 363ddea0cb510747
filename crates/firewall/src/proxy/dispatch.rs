//! The second stage: peek at the first bytes (bounded), decide, and hand the connection to the
//! path that serves it: a tunnel, plain HTTP per request, TLS interception, or a refusal.

use std::time::Duration;

use palisade_policy::canonicalize;
use tokio::net::TcpStream;

use super::audit;
use super::conn::Conn;
use super::peek::{Peeked, peek};
use super::plan::{Plan, plan_nameless, plan_tls};
use super::tunnel::tunnel;
use super::{held, http, intercept};
use crate::decision::{Carrier, RuleRef};
use crate::hold::HoldKind;

/// How long a client may stay silent before a name-less destination that the policy allows is
/// dialled anyway, for protocols where the server speaks first (SMTP, MySQL, some SSH clients).
const SERVER_FIRST_WAIT: Duration = Duration::from_millis(300);

/// The TLS record type of a handshake: the first byte of a ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;

/// Decides on the connection from what it sent and serves it. `is_synthetic`: the original
/// destination lies in the synthetic range (handed to this sandbox or not).
pub(super) async fn dispatch(conn: Conn, mut stream: TcpStream, is_synthetic: bool) {
    let orig = conn.orig;
    if is_synthetic && conn.synthetic.is_none() {
        // Never dialled as such, whatever allow_cidrs says: it means nothing outside.
        let reason = format!(
            "{} is in the synthetic range but was never handed to this sandbox",
            orig.ip()
        );
        conn.deny(stream, None, &RuleRef::Synthetic, reason);
        return;
    }
    let _ = stream.set_nodelay(true);
    let policy = conn.entry.policy();
    let (nameless, nameless_would) = audit::relax(
        &policy,
        plan_nameless(&policy, orig, conn.synthetic.as_ref(), Carrier::Connection),
        || conn.synthetic.clone(),
    );
    let quiet = (!nameless.is_deny()).then_some(SERVER_FIRST_WAIT);
    let mut buf = Vec::new();
    let limits = &conn.shared.limits;
    let peeked = peek(
        &mut stream,
        &mut buf,
        limits.peek_max_bytes,
        limits.peek_timeout(),
        quiet,
    )
    .await;
    match peeked {
        Ok(Peeked::Tls(hello)) => {
            let plan = plan_tls(&policy, hello.sni.as_deref(), hello.ech, orig);
            // With ECH the outer SNI is not where the connection goes: never held.
            let named = hello.sni.as_deref().filter(|_| !hello.ech);
            let plan = held::settle(&conn, plan, named, HoldKind::Tls).await;
            if let Plan::DialName {
                name,
                transform: Some(_),
                ..
            } = plan
            {
                // Boxed: interception's state (TLS, hyper's connection) is several KiB, and an
                // async fn's future is as large as its largest branch, so inline it would make
                // every tunnel's task that large for the tunnel's whole life.
                Box::pin(intercept::serve_intercepted(conn, stream, buf, name)).await;
                return;
            }
            let (plan, would) = audit::relax(&policy, plan, || {
                hello
                    .sni
                    .as_deref()
                    .and_then(|s| canonicalize(s).ok())
                    .or_else(|| conn.synthetic.clone())
            });
            let name = hello
                .sni
                .as_deref()
                .map(|s| String::from_utf8_lossy(s).into_owned());
            tunnel(conn, stream, buf, plan, name, would).await;
        }
        Ok(Peeked::Http) => http::serve_plain(conn, stream, buf).await,
        Ok(Peeked::Unknown | Peeked::Quiet) => {
            tunnel(conn, stream, buf, nameless, None, nameless_would).await;
        }
        Ok(Peeked::Closed) => {}
        // Bytes that claim to be an HTTP request but break its syntax or framing (threat
        // 19: CL+TE, bare LF, ...) get a 400 that says why; a broken ClientHello a reset.
        Ok(Peeked::Malformed(why)) if buf.first() != Some(&TLS_HANDSHAKE) => {
            conn.bad_request(stream, why).await;
        }
        Ok(Peeked::Malformed(why)) => conn.deny(
            stream,
            None,
            &RuleRef::Malformed,
            format!("malformed first bytes: {why}"),
        ),
        Ok(Peeked::TooLarge) => conn.deny(
            stream,
            None,
            &RuleRef::Limit,
            "no complete ClientHello or request head within the peek limit",
        ),
        Ok(Peeked::TimedOut) => conn.deny(
            stream,
            None,
            &RuleRef::Limit,
            "the destination was not named within the peek timeout",
        ),
        Err(e) => tracing::debug!(error = %e, "client error while peeking"),
    }
}
