use crate::sandboxes::tests::new_sandbox;
use crate::testutil::store;
use crate::{EnvVars, SealError, StoreError};

/// Concurrent writers (other sandboxes' updates, the event writer) on the pool's several
/// connections wait their turn; none fails with SQLITE_BUSY_SNAPSHOT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_policy_versions_all_land() {
    let (_d, s) = store().await;
    let org = s.create_org("a", None).await.unwrap();
    for i in 0..4 {
        s.insert_sandbox(new_sandbox(&format!("s{i}"), &org.id), &EnvVars::default())
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for n in 0..40 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("s{}", n % 4);
            let v = s.add_policy_version(&id, "{}", "{}").await?;
            s.mark_policy_applied(&id, v).await?;
            Ok::<_, StoreError>(v)
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for i in 0..4 {
        assert_eq!(s.live_policy(&format!("s{i}")).await.unwrap().version, 10);
    }
}

#[tokio::test]
async fn policy_versions_and_live_pointer() {
    let (_d, s) = store().await;
    let org = s.create_org("a", None).await.unwrap();
    s.insert_sandbox(new_sandbox("sx", &org.id), &EnvVars::default())
        .await
        .unwrap();
    assert!(matches!(
        s.add_policy_version("missing", "{}", "{}").await,
        Err(StoreError::NotFound("sandbox"))
    ));
    let v1 = s
        .add_policy_version("sx", r#"{"mode":"allow-all"}"#, r#"{"mode":"allow-all"}"#)
        .await
        .unwrap();
    let v2 = s
        .add_policy_version(
            "sx",
            r#"{"mode":"custom","k":"sk-live-1"}"#,
            r#"{"mode":"custom","k":"[REDACTED]"}"#,
        )
        .await
        .unwrap();
    assert_eq!((v1, v2), (1, 2));
    // Nothing enforced yet: the live pointer is 0, which has no row.
    assert!(matches!(
        s.live_policy("sx").await,
        Err(StoreError::NotFound(_))
    ));
    s.mark_policy_applied("sx", 1).await.unwrap();
    assert_eq!(s.live_policy("sx").await.unwrap().version, 1);
    assert_eq!(s.latest_policy("sx").await.unwrap().version, 2);
    s.mark_policy_applied("sx", 2).await.unwrap();
    // Applying an older version late does not move the pointer back.
    s.mark_policy_applied("sx", 1).await.unwrap();
    let live = s.live_policy("sx").await.unwrap();
    assert_eq!(live.version, 2);
    assert!(live.full.expose().contains("sk-live-1"));
    assert!(!format!("{live:?}").contains("sk-live-1"));
    assert!(matches!(
        s.mark_policy_applied("sx", 9).await,
        Err(StoreError::NotFound(_))
    ));
    let versions = s.list_policy_versions("sx").await.unwrap();
    assert_eq!(versions.len(), 2);
    assert!(
        versions
            .iter()
            .all(|v| v.applied_at.is_some() && !v.redacted.contains("sk-live"))
    );

    // A ciphertext moved to another version's row does not open.
    sqlx::query("UPDATE sandbox_policies SET sealed = (SELECT sealed FROM sandbox_policies WHERE version = 2) WHERE version = 1")
        .execute(s.pool())
        .await
        .unwrap();
    assert!(matches!(
        s.policy("sx", 1).await,
        Err(StoreError::Seal(SealError::Open))
    ));
}

#[tokio::test]
async fn ca_sealed_and_bound_to_its_sandbox() {
    let (_d, s) = store().await;
    let org = s.create_org("a", None).await.unwrap();
    s.insert_sandbox(new_sandbox("c1", &org.id), &EnvVars::default())
        .await
        .unwrap();
    s.insert_sandbox(new_sandbox("c2", &org.id), &EnvVars::default())
        .await
        .unwrap();
    let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAc1secret\n-----END PRIVATE KEY-----\n";
    s.put_ca("c1", "CERT1", key).await.unwrap();
    assert!(matches!(
        s.put_ca("c1", "CERT1", key).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.put_ca("nope", "C", key).await,
        Err(StoreError::NotFound(_))
    ));
    let ca = s.get_ca("c1").await.unwrap();
    assert_eq!((ca.cert_pem.as_str(), ca.key_pem.expose()), ("CERT1", key));
    assert!(!format!("{ca:?}").contains("c1secret"));
    assert!(matches!(s.get_ca("c2").await, Err(StoreError::NotFound(_))));
    // Copy c1's sealed key into c2's row: refused.
    sqlx::query("INSERT INTO sandbox_cas SELECT 'c2', cert_pem, key_sealed, created_at FROM sandbox_cas WHERE sandbox_id = 'c1'")
        .execute(s.pool())
        .await
        .unwrap();
    assert!(matches!(
        s.get_ca("c2").await,
        Err(StoreError::Seal(SealError::Open))
    ));
    // Deleting the sandbox takes its CA and policies with it.
    s.delete_sandbox(&org.id, "c1").await.unwrap();
    assert!(matches!(s.get_ca("c1").await, Err(StoreError::NotFound(_))));
}
