//! Snapshots: an archived upper directory with what is needed to restore it (template, size,
//! environment, and the policy, sealed).

use sqlx::{QueryBuilder, Sqlite};

use crate::policies::SecretString;
use crate::sandboxes::{EnvVars, Order};
use crate::seal::binding;
use crate::{Page, Store, StoreError, conflict_or_db, limit_offset, now_ms};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SnapshotRecord {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub sandbox_id: Option<String>,
    pub template_id: String,
    pub vcpu: i64,
    pub memory_mib: i64,
    pub disk_mib: i64,
    pub state: String,
    pub archive_path: String,
    pub archive_bytes: i64,
    /// The snapshot's policy with injected values redacted (the full one is sealed).
    pub policy_redacted: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewSnapshot {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub sandbox_id: Option<String>,
    pub template_id: String,
    pub vcpu: i64,
    pub memory_mib: i64,
    pub disk_mib: i64,
    pub state: String,
    pub archive_path: String,
    pub archive_bytes: i64,
    /// (full JSON, redacted JSON) of the sandbox's policy when the snapshot was taken.
    pub policy: Option<(SecretString, String)>,
    pub env: EnvVars,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotSort {
    #[default]
    CreatedAt,
    TemplateId,
}

#[derive(Debug, Clone, Default)]
pub struct SnapshotQuery {
    /// Substring of the name; empty matches all.
    pub query: String,
    pub sort: SnapshotSort,
    pub order: Order,
    pub page: u32,
    pub page_size: u32,
}

const COLUMNS: &str = "id, org_id, name, sandbox_id, template_id, vcpu, memory_mib, disk_mib, \
     state, archive_path, archive_bytes, policy_redacted, created_at";

/// Escape LIKE wildcards so a user's query matches literally.
fn like_pattern(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 2);
    out.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Store {
    pub async fn insert_snapshot(&self, s: NewSnapshot) -> Result<SnapshotRecord, StoreError> {
        let now = now_ms();
        let (policy_sealed, policy_redacted) = match &s.policy {
            Some((full, redacted)) => (
                Some(
                    self.sealer
                        .seal(&binding::snapshot_policy(&s.id), full.expose().as_bytes())?,
                ),
                Some(redacted.clone()),
            ),
            None => (None, None),
        };
        let env_sealed = if s.env.0.is_empty() {
            None
        } else {
            let json = zeroize::Zeroizing::new(
                serde_json::to_vec(&s.env.0).map_err(|_| StoreError::Invalid("environment"))?,
            );
            Some(self.sealer.seal(&binding::snapshot_env(&s.id), &json)?)
        };
        sqlx::query(
            "INSERT INTO snapshots (id, org_id, name, sandbox_id, template_id, vcpu, memory_mib, \
             disk_mib, state, archive_path, archive_bytes, policy_sealed, policy_redacted, \
             env_sealed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.org_id)
        .bind(&s.name)
        .bind(&s.sandbox_id)
        .bind(&s.template_id)
        .bind(s.vcpu)
        .bind(s.memory_mib)
        .bind(s.disk_mib)
        .bind(&s.state)
        .bind(&s.archive_path)
        .bind(s.archive_bytes)
        .bind(policy_sealed)
        .bind(&policy_redacted)
        .bind(env_sealed)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(conflict_or_db("snapshot name"))?;
        Ok(SnapshotRecord {
            id: s.id,
            org_id: s.org_id,
            name: s.name,
            sandbox_id: s.sandbox_id,
            template_id: s.template_id,
            vcpu: s.vcpu,
            memory_mib: s.memory_mib,
            disk_mib: s.disk_mib,
            state: s.state,
            archive_path: s.archive_path,
            archive_bytes: s.archive_bytes,
            policy_redacted,
            created_at: now,
        })
    }

    pub async fn get_snapshot(&self, org_id: &str, id: &str) -> Result<SnapshotRecord, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM snapshots WHERE id = ? AND org_id = ?"
        )))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("snapshot"))
    }

    /// Every snapshot's archive path, all organisations (daemon start: files not listed here
    /// are leftovers of a snapshot interrupted by a crash).
    pub async fn snapshot_archive_paths(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT archive_path FROM snapshots")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Restore requests name the snapshot (`snapshot_name`); accept its id there too.
    pub async fn find_snapshot(
        &self,
        org_id: &str,
        name_or_id: &str,
    ) -> Result<SnapshotRecord, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM snapshots WHERE org_id = ? AND (name = ? OR id = ?) \
             ORDER BY name = ? DESC LIMIT 1"
        )))
        .bind(org_id)
        .bind(name_or_id)
        .bind(name_or_id)
        .bind(name_or_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("snapshot"))
    }

    pub async fn list_snapshots(
        &self,
        org_id: &str,
        q: &SnapshotQuery,
    ) -> Result<Page<SnapshotRecord>, StoreError> {
        let pattern = like_pattern(&q.query);
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM snapshots WHERE org_id = ? AND name LIKE ? ESCAPE '\\'",
        )
        .bind(org_id)
        .bind(&pattern)
        .fetch_one(&self.pool)
        .await?;
        let (limit, offset) = limit_offset(q.page, q.page_size);
        let mut b: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM snapshots WHERE org_id = "));
        b.push_bind(org_id);
        b.push(" AND name LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
        let order = q.order.sql();
        match q.sort {
            SnapshotSort::CreatedAt => b.push(format!(" ORDER BY created_at {order}, id {order}")),
            SnapshotSort::TemplateId => b.push(format!(
                " ORDER BY template_id {order}, created_at {order}, id {order}"
            )),
        };
        b.push(" LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let items = b.build_query_as().fetch_all(&self.pool).await?;
        Ok(Page { items, total })
    }

    pub async fn set_snapshot_state(
        &self,
        id: &str,
        state: &str,
        archive_bytes: i64,
    ) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE snapshots SET state = ?, archive_bytes = ? WHERE id = ?")
            .bind(state)
            .bind(archive_bytes)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("snapshot"));
        }
        Ok(())
    }

    /// The full policy stored with the snapshot, opened; `None` when it had none.
    pub async fn snapshot_policy(&self, id: &str) -> Result<Option<SecretString>, StoreError> {
        let sealed: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT policy_sealed FROM snapshots WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(sealed) = sealed.ok_or(StoreError::NotFound("snapshot"))? else {
            return Ok(None);
        };
        let plain = self.sealer.open(&binding::snapshot_policy(id), &sealed)?;
        std::str::from_utf8(plain.expose())
            .map(|s| Some(SecretString::new(s.to_owned())))
            .map_err(|_| StoreError::Corrupt("snapshot policy"))
    }

    pub async fn snapshot_env(&self, id: &str) -> Result<EnvVars, StoreError> {
        let sealed: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT env_sealed FROM snapshots WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let Some(sealed) = sealed.ok_or(StoreError::NotFound("snapshot"))? else {
            return Ok(EnvVars::default());
        };
        let plain = self.sealer.open(&binding::snapshot_env(id), &sealed)?;
        serde_json::from_slice(plain.expose())
            .map(EnvVars)
            .map_err(|_| StoreError::Corrupt("snapshot environment"))
    }

    /// Remove the row; the caller removes the archive it names.
    pub async fn delete_snapshot(
        &self,
        org_id: &str,
        id: &str,
    ) -> Result<SnapshotRecord, StoreError> {
        let rec = self.get_snapshot(org_id, id).await?;
        sqlx::query("DELETE FROM snapshots WHERE id = ? AND org_id = ?")
            .bind(id)
            .bind(org_id)
            .execute(&self.pool)
            .await?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::store;

    fn snap(id: &str, org: &str, name: &str, template: &str) -> NewSnapshot {
        NewSnapshot {
            id: id.into(),
            org_id: org.into(),
            name: name.into(),
            sandbox_id: Some("sb".into()),
            template_id: template.into(),
            vcpu: 1,
            memory_mib: 512,
            disk_mib: 1024,
            state: "ready".into(),
            archive_path: format!("/data/snapshots/{id}.tar.zst"),
            archive_bytes: 42,
            policy: None,
            env: EnvVars::default(),
        }
    }

    #[tokio::test]
    async fn snapshots_crud_paging_and_sealed_policy() {
        let (_d, s) = store().await;
        let a = s.create_org("a", None).await.unwrap();
        let b = s.create_org("b", None).await.unwrap();
        let mut first = snap("n1", &a.id, "base_1", "tz");
        first.policy = Some((
            SecretString::new(r#"{"inject":"sk-snap-secret"}"#.into()),
            r#"{"inject":"[REDACTED]"}"#.into(),
        ));
        first.env = EnvVars([("K".to_string(), "envsecret".to_string())].into());
        let rec = s.insert_snapshot(first).await.unwrap();
        assert!(matches!(
            s.insert_snapshot(snap("n2", &a.id, "base_1", "t")).await,
            Err(StoreError::Conflict(_))
        ));
        s.insert_snapshot(snap("n2", &a.id, "other%", "ta"))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        s.insert_snapshot(snap("n3", &a.id, "base-2", "tb"))
            .await
            .unwrap();
        s.insert_snapshot(snap("n4", &b.id, "base_1", "t"))
            .await
            .unwrap();

        assert_eq!(s.get_snapshot(&a.id, "n1").await.unwrap(), rec);
        assert!(matches!(
            s.get_snapshot(&b.id, "n1").await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.find_snapshot(&a.id, "base_1").await.unwrap().id, "n1");
        assert_eq!(s.find_snapshot(&a.id, "n3").await.unwrap().id, "n3");
        assert_eq!(s.find_snapshot(&b.id, "base_1").await.unwrap().id, "n4");
        assert!(s.find_snapshot(&b.id, "n1").await.is_err());

        let all = s
            .list_snapshots(
                &a.id,
                &SnapshotQuery {
                    page: 1,
                    page_size: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!((all.total, all.items[0].id.as_str()), (3, "n3"));
        // `_` and `%` in the query match literally.
        let q = s
            .list_snapshots(
                &a.id,
                &SnapshotQuery {
                    query: "base_".into(),
                    page: 1,
                    page_size: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!((q.total, q.items[0].id.as_str()), (1, "n1"));
        let q = s
            .list_snapshots(
                &a.id,
                &SnapshotQuery {
                    query: "%".into(),
                    page: 1,
                    page_size: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(q.total, 1);
        let by_tpl = s
            .list_snapshots(
                &a.id,
                &SnapshotQuery {
                    sort: SnapshotSort::TemplateId,
                    order: Order::Asc,
                    page: 1,
                    page_size: 2,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            by_tpl
                .items
                .iter()
                .map(|r| r.template_id.as_str())
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
        assert_eq!(s.get_snapshot(&a.id, "n2").await.unwrap().state, "failed");

        assert!(matches!(
            s.delete_snapshot(&b.id, "n1").await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            s.delete_snapshot(&a.id, "n1").await.unwrap().archive_path,
            "/data/snapshots/n1.tar.zst"
        );
        assert!(matches!(
            s.snapshot_policy("n1").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
