//! Snapshots: an archived upper directory with what is needed to restore it (template, size,
//! environment, and the policy, sealed).

use crate::listing::{Listing, Page, SortKey};
use crate::policies::{SecretString, secret_from};
use crate::sandboxes::{EnvVars, Resources};
use crate::seal::binding;
use crate::{Result, Store, now_ms};

/// The columns a snapshot is created with. Its policy and environment go in beside it, the
/// secrets in them to be sealed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NewSnapshot {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub sandbox_id: Option<String>,
    pub template_id: String,
    #[sqlx(flatten)]
    pub resources: Resources,
    pub state: String,
    pub archive_path: String,
    pub archive_bytes: i64,
}

/// A stored snapshot: those columns as they are now, and what the store keeps beside them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SnapshotRecord {
    #[sqlx(flatten)]
    pub snapshot: NewSnapshot,
    /// The snapshot's policy with injected values redacted (the full one is sealed).
    pub policy_redacted: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotSort {
    #[default]
    CreatedAt,
    TemplateId,
}

impl SortKey for SnapshotSort {
    fn lead(self) -> Option<&'static str> {
        (self == Self::TemplateId).then_some("template_id")
    }
}

#[derive(Debug, Clone, Default)]
pub struct SnapshotQuery {
    /// Substring of the name; empty matches all.
    pub query: String,
    pub listing: Listing<SnapshotSort>,
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
    /// Insert a snapshot with the sandbox's policy, (full JSON, redacted JSON), when it was
    /// taken, and its environment.
    pub async fn insert_snapshot(
        &self,
        s: NewSnapshot,
        policy: Option<(SecretString, String)>,
        env: &EnvVars,
    ) -> Result<SnapshotRecord> {
        let now = now_ms();
        let (policy_sealed, policy_redacted) = match policy {
            Some((full, redacted)) => (
                Some(
                    self.sealer
                        .seal(&binding::snapshot_policy(&s.id), full.expose().as_bytes())?,
                ),
                Some(redacted),
            ),
            None => (None, None),
        };
        let env_sealed = env.seal(&self.sealer, &binding::snapshot_env(&s.id))?;
        let q = sqlx::query(
            "INSERT INTO snapshots (id, org_id, name, sandbox_id, template_id, vcpu, memory_mib, \
             disk_mib, state, archive_path, archive_bytes, policy_sealed, policy_redacted, \
             env_sealed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.org_id)
        .bind(&s.name)
        .bind(&s.sandbox_id)
        .bind(&s.template_id)
        .bind(s.resources.vcpu)
        .bind(s.resources.memory_mib)
        .bind(s.resources.disk_mib)
        .bind(&s.state)
        .bind(&s.archive_path)
        .bind(s.archive_bytes)
        .bind(policy_sealed)
        .bind(&policy_redacted)
        .bind(env_sealed)
        .bind(now);
        self.insert(q, "snapshot name").await?;
        Ok(SnapshotRecord {
            snapshot: s,
            policy_redacted,
            created_at: now,
        })
    }

    pub async fn get_snapshot(&self, org_id: &str, id: &str) -> Result<SnapshotRecord> {
        let sql = format!("SELECT {COLUMNS} FROM snapshots WHERE id = ? AND org_id = ?");
        self.row(sqlx::AssertSqlSafe(sql), &[id, org_id], "snapshot")
            .await
    }

    /// Every snapshot's archive path, all organisations (daemon start: files not listed here
    /// are leftovers of a snapshot interrupted by a crash).
    pub async fn snapshot_archive_paths(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT archive_path FROM snapshots")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Restore requests name the snapshot (`snapshot_name`); accept its id there too.
    pub async fn find_snapshot(&self, org_id: &str, name_or_id: &str) -> Result<SnapshotRecord> {
        let sql = format!(
            "SELECT {COLUMNS} FROM snapshots WHERE org_id = ? AND (name = ? OR id = ?) \
             ORDER BY name = ? DESC LIMIT 1"
        );
        let args = [org_id, name_or_id, name_or_id, name_or_id];
        self.row(sqlx::AssertSqlSafe(sql), &args, "snapshot").await
    }

    pub async fn list_snapshots(
        &self,
        org_id: &str,
        q: &SnapshotQuery,
    ) -> Result<Page<SnapshotRecord>> {
        let pattern = like_pattern(&q.query);
        (q.listing)
            .fetch(&self.pool, ("snapshots", COLUMNS), org_id, |b| {
                b.push(" AND name LIKE ")
                    .push_bind(pattern.as_str())
                    .push(" ESCAPE '\\'");
            })
            .await
    }

    pub async fn set_snapshot_state(
        &self,
        id: &str,
        state: &str,
        archive_bytes: i64,
    ) -> Result<()> {
        let q = sqlx::query("UPDATE snapshots SET state = ?, archive_bytes = ? WHERE id = ?")
            .bind(state)
            .bind(archive_bytes)
            .bind(id);
        self.write_one(q, "snapshot").await
    }

    /// The full policy stored with the snapshot, opened; `None` when it had none.
    pub async fn snapshot_policy(&self, id: &str) -> Result<Option<SecretString>> {
        let sql = "SELECT policy_sealed FROM snapshots WHERE id = ?";
        let Some(sealed) = self.sealed_column(sql, id, "snapshot").await? else {
            return Ok(None);
        };
        let plain = self.sealer.open(&binding::snapshot_policy(id), &sealed)?;
        secret_from(plain, "snapshot policy").map(Some)
    }

    pub async fn snapshot_env(&self, id: &str) -> Result<EnvVars> {
        let sql = "SELECT env_sealed FROM snapshots WHERE id = ?";
        let sealed = self.sealed_column(sql, id, "snapshot").await?;
        let binding = binding::snapshot_env(id);
        EnvVars::open(&self.sealer, &binding, sealed, "snapshot environment")
    }

    /// Remove the row; the caller removes the archive it names.
    pub async fn delete_snapshot(&self, org_id: &str, id: &str) -> Result<SnapshotRecord> {
        let rec = self.get_snapshot(org_id, id).await?;
        self.delete_owned("snapshots", org_id, id).await?;
        Ok(rec)
    }
}

#[cfg(test)]
#[path = "snapshots_tests.rs"]
mod tests;
