//! Templates: the root filesystems sandboxes start from. System templates (`org_id` NULL) are
//! visible to every organisation and changed by none.

use crate::{Result, Store, StoreError, conflict_or_db, found, now_ms};

/// The columns a template is created with.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct NewTemplate {
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
}

/// A stored template: those columns as they are now, and when it was made and last changed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TemplateRecord {
    #[sqlx(flatten)]
    pub template: NewTemplate,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TemplateRecord {
    pub fn is_system(&self) -> bool {
        self.template.org_id.is_none()
    }
}

const COLUMNS: &str = "id, org_id, name, source_kind, source_uri, digest, image_config, state, \
                       created_at, updated_at";

impl Store {
    pub async fn insert_template(&self, t: NewTemplate) -> Result<TemplateRecord> {
        let now = now_ms();
        let q = sqlx::query(
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
        .bind(now);
        self.insert(q, "template name").await?;
        Ok(TemplateRecord {
            template: t,
            created_at: now,
            updated_at: now,
        })
    }

    /// A template `org_id` may use: its own or a system one.
    pub async fn get_template(&self, org_id: &str, id: &str) -> Result<TemplateRecord> {
        let sql = format!(
            "SELECT {COLUMNS} FROM templates WHERE id = ? AND (org_id = ? OR org_id IS NULL)"
        );
        self.row(sqlx::AssertSqlSafe(sql), &[id, org_id], "template")
            .await
    }

    /// Resolve a name as a sandbox create request gives it: the organisation's own template
    /// first, then a system template of that name.
    pub async fn find_template_by_name(&self, org_id: &str, name: &str) -> Result<TemplateRecord> {
        let sql = format!(
            "SELECT {COLUMNS} FROM templates WHERE name = ? AND (org_id = ? OR org_id IS NULL) \
             ORDER BY org_id IS NULL LIMIT 1"
        );
        self.row(sqlx::AssertSqlSafe(sql), &[name, org_id], "template")
            .await
    }

    pub async fn list_templates(&self, org_id: &str) -> Result<Vec<TemplateRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM templates WHERE org_id = ? OR org_id IS NULL \
             ORDER BY org_id IS NULL, name"
        );
        self.rows(sqlx::AssertSqlSafe(sql), &[org_id]).await
    }

    /// Rename one of the organisation's templates (system templates read as missing here).
    pub async fn rename_template(&self, org_id: &str, id: &str, name: &str) -> Result<()> {
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
        found(r, "template")
    }

    /// Record the outcome of building a template (state, digest, image configuration).
    pub async fn update_template_build(
        &self,
        id: &str,
        state: &str,
        digest: &str,
        image_config: Option<&str>,
    ) -> Result<()> {
        let q = sqlx::query(
            "UPDATE templates SET state = ?, digest = ?, image_config = ?, updated_at = ? WHERE id = ?",
        )
        .bind(state)
        .bind(digest)
        .bind(image_config)
        .bind(now_ms())
        .bind(id);
        self.write_one(q, "template").await
    }

    /// Delete one of the organisation's templates; refused (Conflict) while a sandbox uses it.
    pub async fn delete_template(&self, org_id: &str, id: &str) -> Result<TemplateRecord> {
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
#[path = "templates_tests.rs"]
mod tests;
