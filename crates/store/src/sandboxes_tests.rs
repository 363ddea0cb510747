//! Tests of the sandbox rows (a submodule of `sandboxes.rs`).
use super::*;
use crate::testutil::store;
use crate::{Listing, Order};

pub(crate) fn new_sandbox(id: &str, org: &str) -> NewSandbox {
    NewSandbox {
        id: id.into(),
        org_id: org.into(),
        template_id: "tpl".into(),
        resources: Resources {
            vcpu: 2,
            memory_mib: 1024,
            disk_mib: 4096,
        },
        state: SandboxState::Running,
        auto_pause: false,
        timeout_secs: 300,
        deadline_at: Some(1_000),
        address: Some("100.96.0.2".into()),
    }
}

#[tokio::test]
async fn sandbox_lifecycle_scoping_and_paging() {
    let (_d, s) = store().await;
    let a = s.create_org("a", None).await.unwrap();
    let b = s.create_org("b", None).await.unwrap();
    let env = EnvVars([("TOKEN".to_string(), "hunter2".to_string())].into());
    let rec = s
        .insert_sandbox(new_sandbox("s1", &a.id), &env)
        .await
        .unwrap();
    assert!(matches!(
        s.insert_sandbox(new_sandbox("s1", &a.id), &EnvVars::default())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_sandbox(&a.id, "s1").await.unwrap(), rec);
    assert!(matches!(
        s.get_sandbox(&b.id, "s1").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.get_sandbox_unscoped("s1").await.unwrap(), rec);
    let env = s.sandbox_env("s1").await.unwrap();
    assert_eq!(env.0["TOKEN"], "hunter2");
    assert!(!format!("{env:?}").contains("hunter2"));
    assert_eq!(
        s.sandbox_env("nope").await.unwrap_err().to_string(),
        "sandbox not found"
    );

    for i in 2..=5 {
        s.insert_sandbox(new_sandbox(&format!("s{i}"), &a.id), &EnvVars::default())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    s.insert_sandbox(new_sandbox("sb", &b.id), &EnvVars::default())
        .await
        .unwrap();
    s.set_sandbox_state("s2", SandboxState::Paused)
        .await
        .unwrap();

    let page = s
        .list_sandboxes(
            &a.id,
            &SandboxQuery {
                listing: Listing {
                    page: 1,
                    page_size: 2,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(
        page.items
            .iter()
            .map(|r| r.sandbox.id.as_str())
            .collect::<Vec<_>>(),
        ["s5", "s4"]
    );
    let page3 = s
        .list_sandboxes(
            &a.id,
            &SandboxQuery {
                listing: Listing {
                    page: 3,
                    page_size: 2,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page3.items.len(), 1);
    let asc = s
        .list_sandboxes(
            &a.id,
            &SandboxQuery {
                listing: Listing {
                    order: Order::Asc,
                    page: 1,
                    page_size: 100,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(asc.items[0].sandbox.id, "s1");
    let paused = s
        .list_sandboxes(
            &a.id,
            &SandboxQuery {
                state: Some(SandboxState::Paused),
                listing: Listing {
                    page: 1,
                    page_size: 10,
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (paused.total, paused.items[0].sandbox.id.as_str()),
        (1, "s2")
    );
    let by_state = s
        .list_sandboxes(
            &a.id,
            &SandboxQuery {
                listing: Listing {
                    sort: SandboxSort::State,
                    order: Order::Asc,
                    page: 1,
                    page_size: 10,
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_state.items[0].sandbox.state, SandboxState::Paused);

    assert_eq!(s.count_active_sandboxes(&a.id).await.unwrap(), 5);
    s.set_sandbox_state("s5", SandboxState::Deleted)
        .await
        .unwrap();
    assert_eq!(s.count_active_sandboxes(&a.id).await.unwrap(), 4);
    s.set_sandbox_address("s3", None).await.unwrap();
    assert_eq!(
        s.get_sandbox(&a.id, "s3").await.unwrap().sandbox.address,
        None
    );
    assert_eq!(s.count_active_sandboxes(&a.id).await.unwrap(), 3);
    s.set_sandbox_deadline("s4", Some(10_000)).await.unwrap();
    // s1, s3 and b's sb are running with deadline 1000; s2 paused; s4 later; s5 deleted.
    let mut due: Vec<_> = s
        .sandboxes_past_deadline(5_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sandbox.id)
        .collect();
    due.sort();
    assert_eq!(due, ["s1", "s3", "sb"]);
    let recover = s.sandboxes_to_recover().await.unwrap();
    assert_eq!(recover.len(), 5); // s1..s4 of a, sb of b
    assert!(matches!(
        s.delete_sandbox(&b.id, "s1").await,
        Err(StoreError::NotFound(_))
    ));
    s.delete_sandbox(&a.id, "s1").await.unwrap();
    assert!(matches!(
        s.get_sandbox(&a.id, "s1").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.set_sandbox_state("s1", SandboxState::Running).await,
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn states_round_trip() {
    for st in SandboxState::ALL {
        assert_eq!(SandboxState::parse(st.as_str()), Some(st));
    }
    assert_eq!(SandboxState::parse("Running"), None);
}

#[tokio::test]
async fn unknown_state_reads_as_corrupt() {
    let (_d, s) = store().await;
    let org = s.create_org("a", None).await.unwrap();
    s.insert_sandbox(new_sandbox("s1", &org.id), &EnvVars::default())
        .await
        .unwrap();
    sqlx::query("UPDATE sandboxes SET state = 'melted' WHERE id = 's1'")
        .execute(s.pool())
        .await
        .unwrap();
    let e = s.get_sandbox(&org.id, "s1").await.unwrap_err();
    assert!(matches!(e, StoreError::Corrupt("sandbox state")), "{e:?}");
    assert_eq!(e.to_string(), "stored sandbox state is corrupt");
}
