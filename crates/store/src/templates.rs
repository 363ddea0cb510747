//! Templates: the root filesystems sandboxes start from. System templates (`org_id` NULL) are
//! visible to every organisation and changed by none.

use crate::{Store, StoreError, conflict_or_db, now_ms};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TemplateRecord {
    pub id: String,
    pub org_id: Option<String>,
    pub name: String,
    /// Which kind of source the runtime builds it from (`debootstrap`, `host`, `oci-archive`...).
    pub source_kind: String,
    pub source_uri: String,
    pub digest: String,
    /// Image configuration (entrypoint, env, workdir...) as JSON, when the source has one.
    pub image_config: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TemplateRecord {
    pub fn is_system(&self) -> bool {
        self.org_id.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct NewTemplate {
    pub id: String,
    pub org_id: Option<String>,
    pub name: String,
    pub source_kind: String,
    pub source_uri: String,
    pub digest: String,
    pub image_config: Option<String>,
    pub state: String,
}

const COLUMNS: &str = "id, org_id, name, source_kind, source_uri, digest, image_config, state, \
                       created_at, updated_at";

impl Store {
    pub async fn insert_template(&self, t: NewTemplate) -> Result<TemplateRecord, StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO templates (id, org_id, name, source_kind, source_uri, digest, \
             image_config, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.org_id)
        .bind(&t.name)
        .bind(&t.source_kind)
        .bind(&t.source_uri)
        .bind(&t.digest)
        .bind(&t.image_config)
        .bind(&t.state)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(conflict_or_db("template name"))?;
        Ok(TemplateRecord {
            id: t.id,
            org_id: t.org_id,
            name: t.name,
            source_kind: t.source_kind,
            source_uri: t.source_uri,
            digest: t.digest,
            image_config: t.image_config,
            state: t.state,
            created_at: now,
            updated_at: now,
        })
    }

    /// A template `org_id` may use: its own or a system one.
    pub async fn get_template(&self, org_id: &str, id: &str) -> Result<TemplateRecord, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM templates WHERE id = ? AND (org_id = ? OR org_id IS NULL)"
        )))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("template"))
    }

    /// Resolve a name as a sandbox create request gives it: the organisation's own template
    /// first, then a system template of that name.
    pub async fn find_template_by_name(
        &self,
        org_id: &str,
        name: &str,
    ) -> Result<TemplateRecord, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM templates WHERE name = ? AND (org_id = ? OR org_id IS NULL) \
             ORDER BY org_id IS NULL LIMIT 1"
        )))
        .bind(name)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("template"))
    }

    pub async fn list_templates(&self, org_id: &str) -> Result<Vec<TemplateRecord>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM templates WHERE org_id = ? OR org_id IS NULL \
             ORDER BY org_id IS NULL, name"
        )))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Rename one of the organisation's templates (system templates read as missing here).
    pub async fn rename_template(
        &self,
        org_id: &str,
        id: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE templates SET name = ?, updated_at = ? WHERE id = ? AND org_id = ?",
        )
        .bind(name)
        .bind(now_ms())
        .bind(id)
        .bind(org_id)
        .execute(&self.pool)
        .await
        .map_err(conflict_or_db("template name"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("template"));
        }
        Ok(())
    }

    /// Record the outcome of building a template (state, digest, image configuration).
    pub async fn update_template_build(
        &self,
        id: &str,
        state: &str,
        digest: &str,
        image_config: Option<&str>,
    ) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE templates SET state = ?, digest = ?, image_config = ?, updated_at = ? WHERE id = ?",
        )
        .bind(state)
        .bind(digest)
        .bind(image_config)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("template"));
        }
        Ok(())
    }

    /// Delete one of the organisation's templates; refused (Conflict) while a sandbox uses it.
    pub async fn delete_template(
        &self,
        org_id: &str,
        id: &str,
    ) -> Result<TemplateRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let rec: TemplateRecord = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM templates WHERE id = ? AND org_id = ?"
        )))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("template"))?;
        let in_use: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sandboxes WHERE template_id = ?")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if in_use > 0 {
            return Err(StoreError::Conflict("sandbox using this template"));
        }
        sqlx::query("DELETE FROM templates WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
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
            s.find_template_by_name(&a.id, "mine").await.unwrap().id,
            "t1"
        );
        assert_eq!(
            s.find_template_by_name(&b.id, "mine").await.unwrap().id,
            "t2"
        );
        assert_eq!(
            s.find_template_by_name(&b.id, "system/debian:bookworm")
                .await
                .unwrap()
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
            s.get_template(&a.id, "t4").await.unwrap().digest,
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
}
