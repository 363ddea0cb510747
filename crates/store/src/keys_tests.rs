use crate::StoreError;
use crate::testutil::store;

#[tokio::test]
async fn orgs_and_keys() {
    let (_d, s) = store().await;
    let org = s.create_org("acme", Some(3)).await.unwrap();
    assert!(matches!(
        s.create_org("acme", None).await,
        Err(StoreError::Conflict("organisation"))
    ));
    assert!(s.create_org(" ", None).await.is_err());
    assert_eq!(s.get_org(&org.id).await.unwrap(), org);
    assert_eq!(s.get_org_by_name("acme").await.unwrap(), org);
    s.set_org_quota(&org.id, None).await.unwrap();
    assert_eq!(s.get_org(&org.id).await.unwrap().max_sandboxes, None);
    assert_eq!(s.list_orgs().await.unwrap().len(), 1);

    let (rec, key) = s.create_api_key(&org.id, "ci").await.unwrap();
    assert!(key.expose().starts_with("pl_") && key.expose().len() == 67);
    assert!(!format!("{key:?}").contains(&key.expose()[3..]));
    let auth = s.authenticate(key.expose()).await.unwrap().unwrap();
    assert_eq!(
        (auth.key_id.as_str(), auth.org_id.as_str()),
        (rec.id.as_str(), org.id.as_str())
    );
    assert!(
        s.list_api_keys(&org.id).await.unwrap()[0]
            .last_used_at
            .is_some()
    );
    assert_eq!(s.authenticate("pl_nope").await.unwrap(), None);
    assert_eq!(s.authenticate("Bearer x").await.unwrap(), None);
    assert_eq!(s.authenticate(&"pl_".repeat(200)).await.unwrap(), None);

    // The clear key is nowhere in the database.
    let hashes: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_all(s.pool())
        .await
        .unwrap();
    assert!(!hashes[0].contains(&key.expose()[3..]));

    // Another organisation cannot revoke it; its owner can, and then it stops working.
    let other = s.create_org("other", None).await.unwrap();
    assert!(matches!(
        s.revoke_api_key(&other.id, &rec.id).await,
        Err(StoreError::NotFound(_))
    ));
    s.revoke_api_key(&org.id, &rec.id).await.unwrap();
    assert_eq!(s.authenticate(key.expose()).await.unwrap(), None);
    assert!(matches!(
        s.create_api_key("missing-org", "x").await,
        Err(StoreError::NotFound("organisation"))
    ));
}
