use super::*;
use crate::testutil::store;

pub(crate) fn tpl(id: &str, org: Option<&str>, name: &str) -> NewTemplate {
    NewTemplate {
        id: id.into(),
        org_id: org.map(Into::into),
        name: name.into(),
        source_kind: "host".into(),
        source_uri: "/".into(),
        digest: String::new(),
        image_config: None,
        state: "ready".into(),
    }
}

#[tokio::test]
async fn templates_scoped_and_renamed() {
    let (_d, s) = store().await;
    let a = s.create_org("a", None).await.unwrap();
    let b = s.create_org("b", None).await.unwrap();
    s.insert_template(tpl("sys", None, "system/debian:bookworm"))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_template(tpl("sys2", None, "system/debian:bookworm"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let mine = s
        .insert_template(tpl("t1", Some(&a.id), "mine"))
        .await
        .unwrap();
    assert!(!mine.is_system());
    // The same name in another organisation is fine, twice in one is a conflict.
    s.insert_template(tpl("t2", Some(&b.id), "mine"))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_template(tpl("t3", Some(&a.id), "mine")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get_template(&a.id, "t1").await.unwrap(), mine);
    assert!(s.get_template(&a.id, "sys").await.unwrap().is_system());
    assert!(matches!(
        s.get_template(&b.id, "t1").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.find_template_by_name(&a.id, "mine")
            .await
            .unwrap()
            .template
            .id,
        "t1"
    );
    assert_eq!(
        s.find_template_by_name(&b.id, "mine")
            .await
            .unwrap()
            .template
            .id,
        "t2"
    );
    assert_eq!(
        s.find_template_by_name(&b.id, "system/debian:bookworm")
            .await
            .unwrap()
            .template
            .id,
        "sys"
    );
    assert_eq!(s.list_templates(&a.id).await.unwrap().len(), 2);

    s.insert_template(tpl("t4", Some(&a.id), "other"))
        .await
        .unwrap();
    assert!(matches!(
        s.rename_template(&a.id, "t4", "mine").await,
        Err(StoreError::Conflict(_))
    ));
    s.rename_template(&a.id, "t4", "renamed").await.unwrap();
    assert!(matches!(
        s.rename_template(&b.id, "t4", "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.rename_template(&a.id, "sys", "x").await,
        Err(StoreError::NotFound(_))
    ));
    s.update_template_build("t4", "ready", "sha256:ab", Some("{\"user\":\"root\"}"))
        .await
        .unwrap();
    assert_eq!(
        s.get_template(&a.id, "t4").await.unwrap().template.digest,
        "sha256:ab"
    );
    assert!(matches!(
        s.delete_template(&b.id, "t4").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_template(&a.id, "sys").await,
        Err(StoreError::NotFound(_))
    ));
    s.delete_template(&a.id, "t4").await.unwrap();
    assert!(matches!(
        s.get_template(&a.id, "t4").await,
        Err(StoreError::NotFound(_))
    ));
}
