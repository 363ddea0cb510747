use super::*;
use crate::testutil::store;
use crate::{Listing, Order, StoreError};

fn snap(id: &str, org: &str, name: &str, template: &str) -> NewSnapshot {
    NewSnapshot {
        id: id.into(),
        org_id: org.into(),
        name: name.into(),
        sandbox_id: Some("sb".into()),
        template_id: template.into(),
        resources: Resources {
            vcpu: 1,
            memory_mib: 512,
            disk_mib: 1024,
        },
        state: "ready".into(),
        archive_path: format!("/data/snapshots/{id}.tar.zst"),
        archive_bytes: 42,
    }
}

#[tokio::test]
async fn snapshots_crud_paging_and_sealed_policy() {
    let (_d, s) = store().await;
    let a = s.create_org("a", None).await.unwrap();
    let b = s.create_org("b", None).await.unwrap();
    let policy = Some((
        SecretString::new(r#"{"inject":"sk-snap-secret"}"#.into()),
        r#"{"inject":"[REDACTED]"}"#.into(),
    ));
    let env = EnvVars([("K".to_string(), "envsecret".to_string())].into());
    let rec = s
        .insert_snapshot(snap("n1", &a.id, "base_1", "tz"), policy, &env)
        .await
        .unwrap();
    assert!(matches!(
        s.insert_snapshot(snap("n2", &a.id, "base_1", "t"), None, &EnvVars::default())
            .await,
        Err(StoreError::Conflict(_))
    ));
    s.insert_snapshot(snap("n2", &a.id, "other%", "ta"), None, &EnvVars::default())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    s.insert_snapshot(snap("n3", &a.id, "base-2", "tb"), None, &EnvVars::default())
        .await
        .unwrap();
    s.insert_snapshot(snap("n4", &b.id, "base_1", "t"), None, &EnvVars::default())
        .await
        .unwrap();

    assert_eq!(s.get_snapshot(&a.id, "n1").await.unwrap(), rec);
    assert!(matches!(
        s.get_snapshot(&b.id, "n1").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.find_snapshot(&a.id, "base_1").await.unwrap().snapshot.id,
        "n1"
    );
    assert_eq!(
        s.find_snapshot(&a.id, "n3").await.unwrap().snapshot.id,
        "n3"
    );
    assert_eq!(
        s.find_snapshot(&b.id, "base_1").await.unwrap().snapshot.id,
        "n4"
    );
    assert!(s.find_snapshot(&b.id, "n1").await.is_err());

    let all = s
        .list_snapshots(
            &a.id,
            &SnapshotQuery {
                listing: Listing {
                    page: 1,
                    page_size: 10,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((all.total, all.items[0].snapshot.id.as_str()), (3, "n3"));
    // `_` and `%` in the query match literally.
    let q = s
        .list_snapshots(
            &a.id,
            &SnapshotQuery {
                query: "base_".into(),
                listing: Listing {
                    page: 1,
                    page_size: 10,
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
    assert_eq!((q.total, q.items[0].snapshot.id.as_str()), (1, "n1"));
    let q = s
        .list_snapshots(
            &a.id,
            &SnapshotQuery {
                query: "%".into(),
                listing: Listing {
                    page: 1,
                    page_size: 10,
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
    assert_eq!(q.total, 1);
    let by_tpl = s
        .list_snapshots(
            &a.id,
            &SnapshotQuery {
                listing: Listing {
                    sort: SnapshotSort::TemplateId,
                    order: Order::Asc,
                    page: 1,
                    page_size: 2,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        by_tpl
            .items
            .iter()
            .map(|r| r.snapshot.template_id.as_str())
            .collect::<Vec<_>>(),
        ["ta", "tb"]
    );
    assert_eq!(by_tpl.total, 3);

    let p = s.snapshot_policy("n1").await.unwrap().unwrap();
    assert!(p.expose().contains("sk-snap-secret"));
    assert_eq!(s.snapshot_policy("n2").await.unwrap(), None);
    assert_eq!(s.snapshot_env("n1").await.unwrap().0["K"], "envsecret");
    assert!(s.snapshot_env("n2").await.unwrap().0.is_empty());
    s.set_snapshot_state("n2", "failed", 0).await.unwrap();
    assert_eq!(
        s.get_snapshot(&a.id, "n2").await.unwrap().snapshot.state,
        "failed"
    );

    assert!(matches!(
        s.delete_snapshot(&b.id, "n1").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.delete_snapshot(&a.id, "n1")
            .await
            .unwrap()
            .snapshot
            .archive_path,
        "/data/snapshots/n1.tar.zst"
    );
    assert!(matches!(
        s.snapshot_policy("n1").await,
        Err(StoreError::NotFound(_))
    ));
}
