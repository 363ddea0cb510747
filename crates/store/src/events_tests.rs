use super::*;
use crate::testutil::store;

fn ev(sandbox: &str, at: i64, verdict: &str, name: &str) -> EgressEventRecord {
    EgressEventRecord {
        id: 0,
        sandbox_id: sandbox.into(),
        event: EgressEventFields {
            at_ms: at,
            verdict: verdict.into(),
            protocol: "tls".into(),
            dst_addr: Some("203.0.113.7".into()),
            dst_port: Some(443),
            name: Some(name.into()),
            rule: Some("allow_domains[0]".into()),
            reason: None,
            bytes_up: 10,
            bytes_down: 20,
            duration_ms: 3,
        },
        detail: Some(r#"{"method":"GET"}"#.into()),
    }
}

#[tokio::test]
async fn insert_filter_and_retention() {
    let (_d, s) = store().await;
    let now = now_ms();
    let batch: Vec<_> = (0..1200)
        .map(|i| {
            ev(
                "a",
                now - 1200 + i,
                if i % 2 == 0 { "allow" } else { "deny" },
                "x.test",
            )
        })
        .collect();
    s.insert_events(&batch).await.unwrap();
    s.insert_events(&[
        ev("b", now, "deny", "y.test"),
        ev("b", now - 10 * 86_400_000, "allow", "old.test"),
    ])
    .await
    .unwrap();
    let newest = s.list_events("a", &EventQuery::default()).await.unwrap();
    assert_eq!(newest.len(), 100);
    assert!(newest[0].id > newest[1].id);
    assert_eq!(newest[0].event.at_ms, now - 1);
    let denies = s
        .list_events(
            "a",
            &EventQuery {
                verdict: Some("deny".into()),
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(denies.len(), 600);
    let tail = s
        .list_events(
            "a",
            &EventQuery {
                after_id: Some(newest[1].id),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].id, newest[0].id);
    let by_name = s
        .list_events(
            "b",
            &EventQuery {
                name: Some("y.test".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_name.len(), 1);
    let window = s
        .list_events(
            "a",
            &EventQuery {
                since_ms: Some(now - 10),
                until_ms: Some(now - 5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(window.len(), 5);

    let r = Retention {
        max_per_sandbox: 1000,
        max_age_ms: 86_400_000,
    };
    let removed = s
        .apply_retention(r, now, &["a".to_string()].into())
        .await
        .unwrap();
    assert_eq!(removed, 201); // 200 over the cap in a, one too old in b
    let left = s
        .list_events(
            "a",
            &EventQuery {
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(left.len(), 1000);
    assert_eq!(left[0].event.at_ms, now - 1); // the newest were kept
    assert_eq!(
        retain_all(
            &s,
            Retention {
                max_per_sandbox: 10,
                max_age_ms: r.max_age_ms
            }
        )
        .await
        .unwrap(),
        990
    );
    assert_eq!(s.delete_events("a").await.unwrap(), 10);
}

#[tokio::test]
async fn writer_batches_flushes_and_drains_on_close() {
    let (_d, s) = store().await;
    let config = EventWriterConfig {
        capacity: 10_000,
        batch: 64,
        flush_every: Duration::from_secs(3600),
        retention: Retention {
            max_per_sandbox: 150,
            max_age_ms: 86_400_000,
        },
    };
    let (sink, task) = EventWriter::spawn(s.clone(), config);
    let now = now_ms();
    for i in 0..200 {
        assert!(sink.record(ev("w", now + i, "allow", "a.test")));
    }
    // Flush returns only once everything queued before it is in the table, even though
    // the flush interval is an hour.
    sink.flush().await;
    let n = s
        .list_events(
            "w",
            &EventQuery {
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .len();
    assert_eq!(n, 200);
    for i in 0..5 {
        sink.record(ev("w", now + 300 + i, "deny", "b.test"));
    }
    assert_eq!(sink.dropped(), 0);
    drop(sink);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    // Closing wrote the last five and applied the per-sandbox cap.
    let left = s
        .list_events(
            "w",
            &EventQuery {
                limit: Some(1000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(left.len(), 150);
    assert_eq!(left[0].event.verdict, "deny");
}

#[tokio::test]
async fn full_queue_drops_instead_of_blocking() {
    let (_d, s) = store().await;
    let config = EventWriterConfig {
        capacity: 1,
        batch: 1,
        flush_every: Duration::from_millis(1),
        ..Default::default()
    };
    let (sink, _task) = EventWriter::spawn(s, config);
    // The test runtime has one thread and this loop never yields, so the writer cannot
    // drain the queue: one event fits, the rest must be dropped without blocking.
    let accepted = (0..1000)
        .filter(|&i| sink.record(ev("d", i, "allow", "a.test")))
        .count();
    assert_eq!(accepted, 1);
    assert_eq!(sink.dropped(), 999);
}
