//! The relay over real loopback sockets, with and without splice.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A connected pair of loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    (a.unwrap(), b.unwrap().0)
}

/// Sends `len` patterned bytes each way through a relay and checks them and the half-close.
async fn round_trip(splice: bool, len: usize) {
    let (mut client, client_side) = pair().await;
    let (upstream_side, mut server) = pair().await;
    let pool = BufferPool::new(64 * 1024, splice);
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let relay = relay(
        client_side,
        upstream_side,
        &pool,
        Duration::from_secs(30),
        std::future::pending(),
        None,
    );
    let ends = async {
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let up = async {
            cw.write_all(&data).await.unwrap();
            cw.shutdown().await.unwrap();
            let mut got = Vec::new();
            sr.read_to_end(&mut got).await.unwrap();
            got
        };
        let down = async {
            sw.write_all(&data).await.unwrap();
            sw.shutdown().await.unwrap();
            let mut got = Vec::new();
            cr.read_to_end(&mut got).await.unwrap();
            got
        };
        tokio::join!(up, down)
    };
    let (stats, (up, down)) = tokio::join!(relay, ends);
    assert!(
        up == data,
        "upstream got {} of {len} bytes, or other bytes",
        up.len()
    );
    assert!(
        down == data,
        "client got {} of {len} bytes, or other bytes",
        down.len()
    );
    assert_eq!((stats.up, stats.down), (len as u64, len as u64));
    assert_eq!(stats.end, RelayEnd::Done);
    if splice {
        // Every pipe came back empty, so the next tunnel can reuse it.
        assert!(!pool.pipes.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn splice_relay_moves_every_byte_both_ways_and_half_closes() {
    round_trip(true, 5 * 1024 * 1024 + 17).await;
    round_trip(true, 1).await;
}

#[tokio::test]
async fn copy_relay_moves_every_byte_both_ways_and_half_closes() {
    round_trip(false, 5 * 1024 * 1024 + 17).await;
}

#[tokio::test]
async fn a_budget_cuts_the_tunnel_before_the_batch_that_would_pass_it() {
    for splice in [true, false] {
        let policy = palisade_policy::Policy::from_json(
            br#"{"mode":"allow-all","budgets":{"sandbox":{"sent_bytes":100000,"window_secs":60}}}"#,
        )
        .unwrap();
        let meters = crate::budget::Meters::empty().update(policy.budgets());
        let tally = meters.tally(None).unwrap();
        let (mut client, client_side) = pair().await;
        let (upstream_side, mut server) = pair().await;
        let pool = BufferPool::new(16 * 1024, splice);
        let relay = relay(
            client_side,
            upstream_side,
            &pool,
            Duration::from_secs(30),
            std::future::pending(),
            Some(&tally),
        );
        let ends = async {
            let send = async {
                let _ = client.write_all(&vec![7u8; 1_000_000]).await;
            };
            let receive = async {
                let mut got = Vec::new();
                let _ = server.read_to_end(&mut got).await;
                got.len()
            };
            tokio::join!(send, receive).1
        };
        let (stats, got) = tokio::join!(relay, ends);
        assert_eq!(stats.end, RelayEnd::Budget, "splice {splice}");
        assert!(
            got <= 100_000,
            "splice {splice}: {got} bytes passed a 100 kB budget"
        );
        assert!(
            got >= 100_000 - 16 * 1024,
            "splice {splice}: only {got} bytes"
        );
        assert_eq!(stats.up, got as u64);
        assert!(tally.cut_reason().is_some());
    }
}

#[tokio::test]
async fn idle_tunnel_ends_at_the_idle_timeout() {
    let (_client, client_side) = pair().await;
    let (upstream_side, _server) = pair().await;
    tokio::time::pause();
    let pool = BufferPool::new(4096, true);
    let stats = relay(
        client_side,
        upstream_side,
        &pool,
        Duration::from_secs(5),
        std::future::pending(),
        None,
    )
    .await;
    assert_eq!(stats.end, RelayEnd::Idle);
}
