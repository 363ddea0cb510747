//! Sandboxes: what was asked for (template, size, timeout), where they are (state, address) and
//! which policy version the data plane enforces for them.

use std::collections::BTreeMap;
use std::fmt;

use sqlx::Sqlite;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};

use crate::listing::{Listing, Page, SortKey};
use crate::seal::{Sealer, binding};
use crate::{CorruptValue, Result, Store, StoreError, now_ms};

/// Lifecycle states, spelled as Leap0 spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxState {
    Starting,
    Running,
    Snapshotting,
    Paused,
    Unpausing,
    Deleting,
    Deleted,
}

impl SandboxState {
    pub const ALL: [SandboxState; 7] = [
        Self::Starting,
        Self::Running,
        Self::Snapshotting,
        Self::Paused,
        Self::Unpausing,
        Self::Deleting,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Snapshotting => "snapshotting",
            Self::Paused => "paused",
            Self::Unpausing => "unpausing",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Holds resources (counts against the quota, is rebuilt after a restart).
    pub fn is_active(self) -> bool {
        !matches!(self, Self::Deleted)
    }
}

/// Stored as its name; a name no state has reads as a corrupt row.
impl sqlx::Type<Sqlite> for SandboxState {
    fn type_info() -> SqliteTypeInfo {
        <str as sqlx::Type<Sqlite>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, Sqlite> for SandboxState {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let name = <&str as sqlx::Decode<Sqlite>>::decode(value)?;
        Self::parse(name).ok_or_else(|| CorruptValue("sandbox state").into())
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Environment variables of a sandbox: may hold secrets, so sealed at rest and never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvVars(pub BTreeMap<String, String>);

impl fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl EnvVars {
    /// Sealed under `binding` for its column; `None` (a NULL column) when there are none.
    pub(crate) fn seal(&self, sealer: &Sealer, binding: &str) -> Result<Option<Vec<u8>>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec(&self.0).map_err(|_| StoreError::Invalid("environment"))?,
        );
        Ok(Some(sealer.seal(binding, &json)?))
    }

    /// What [`seal`](Self::seal) stored; `corrupt` names the column when it does not open.
    pub(crate) fn open(
        sealer: &Sealer,
        binding: &str,
        sealed: Option<Vec<u8>>,
        corrupt: &'static str,
    ) -> Result<Self> {
        let Some(sealed) = sealed else {
            return Ok(Self::default());
        };
        let plain = sealer.open(binding, &sealed)?;
        serde_json::from_slice(plain.expose())
            .map(Self)
            .map_err(|_| StoreError::Corrupt(corrupt))
    }
}

/// What a sandbox is given, and what a snapshot keeps of it: CPUs, memory and disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Resources {
    pub vcpu: i64,
    pub memory_mib: i64,
    pub disk_mib: i64,
}

/// The columns a sandbox is created with. Its environment goes in beside it, to be sealed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NewSandbox {
    pub id: String,
    pub org_id: String,
    pub template_id: String,
    #[sqlx(flatten)]
    pub resources: Resources,
    pub state: SandboxState,
    pub auto_pause: bool,
    pub timeout_secs: i64,
    pub deadline_at: Option<i64>,
    pub address: Option<String>,
}

/// A stored sandbox: those columns as they are now, and what the store keeps beside them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SandboxRecord {
    #[sqlx(flatten)]
    pub sandbox: NewSandbox,
    /// The policy version the data plane enforces (0 before the first one is applied).
    pub policy_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub state_changed_at: i64,
}

const COLUMNS: &str = "id, org_id, template_id, vcpu, memory_mib, disk_mib, state, auto_pause, \
     timeout_secs, deadline_at, address, policy_version, created_at, updated_at, state_changed_at";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxSort {
    #[default]
    CreatedAt,
    State,
}

impl SortKey for SandboxSort {
    fn lead(self) -> Option<&'static str> {
        (self == Self::State).then_some("state")
    }
}

#[derive(Debug, Clone, Default)]
pub struct SandboxQuery {
    pub state: Option<SandboxState>,
    pub listing: Listing<SandboxSort>,
}

impl Store {
    pub async fn insert_sandbox(&self, s: NewSandbox, env: &EnvVars) -> Result<SandboxRecord> {
        let now = now_ms();
        let env_sealed = env.seal(&self.sealer, &binding::sandbox_env(&s.id))?;
        let q = sqlx::query(
            "INSERT INTO sandboxes (id, org_id, template_id, vcpu, memory_mib, disk_mib, state, \
             auto_pause, timeout_secs, deadline_at, env_sealed, address, policy_version, \
             created_at, updated_at, state_changed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.org_id)
        .bind(&s.template_id)
        .bind(s.resources.vcpu)
        .bind(s.resources.memory_mib)
        .bind(s.resources.disk_mib)
        .bind(s.state.as_str())
        .bind(s.auto_pause)
        .bind(s.timeout_secs)
        .bind(s.deadline_at)
        .bind(env_sealed)
        .bind(&s.address)
        .bind(now)
        .bind(now)
        .bind(now);
        self.insert(q, "sandbox").await?;
        Ok(SandboxRecord {
            sandbox: s,
            policy_version: 0,
            created_at: now,
            updated_at: now,
            state_changed_at: now,
        })
    }

    /// A sandbox of `org_id`; another organisation's reads as missing.
    pub async fn get_sandbox(&self, org_id: &str, id: &str) -> Result<SandboxRecord> {
        let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ? AND org_id = ?");
        self.row(sqlx::AssertSqlSafe(sql), &[id, org_id], "sandbox")
            .await
    }

    /// A sandbox by id alone, for the daemon's own bookkeeping (never for a user request).
    pub async fn get_sandbox_unscoped(&self, id: &str) -> Result<SandboxRecord> {
        let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?");
        self.row(sqlx::AssertSqlSafe(sql), &[id], "sandbox").await
    }

    pub async fn list_sandboxes(
        &self,
        org_id: &str,
        q: &SandboxQuery,
    ) -> Result<Page<SandboxRecord>> {
        let state = q.state.map(SandboxState::as_str);
        (q.listing)
            .fetch(&self.pool, ("sandboxes", COLUMNS), org_id, |b| {
                if let Some(state) = state {
                    b.push(" AND state = ").push_bind(state);
                }
            })
            .await
    }

    /// Sandboxes of `org_id` that hold resources (for the quota): not deleted, and with an
    /// address (a sandbox stopped into a snapshot has given its address back).
    pub async fn count_active_sandboxes(&self, org_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM sandboxes WHERE org_id = ? AND state <> 'deleted' \
             AND address IS NOT NULL",
        )
        .bind(org_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Sets the state and answers when it changed (the row's new `state_changed_at`).
    pub async fn set_sandbox_state(&self, id: &str, state: SandboxState) -> Result<i64> {
        let now = now_ms();
        let q = sqlx::query(
            "UPDATE sandboxes SET state = ?, updated_at = ?, state_changed_at = ? WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(now)
        .bind(now)
        .bind(id);
        self.write_one(q, "sandbox").await?;
        Ok(now)
    }

    pub async fn set_sandbox_address(&self, id: &str, address: Option<&str>) -> Result<()> {
        self.set_sandbox_column("address", address, id).await
    }

    pub async fn set_sandbox_deadline(&self, id: &str, deadline_at: Option<i64>) -> Result<()> {
        self.set_sandbox_column("deadline_at", deadline_at, id)
            .await
    }

    /// Set one column (named by the caller, never by a user) of a sandbox row.
    async fn set_sandbox_column<'t, T>(
        &self,
        column: &'static str,
        value: T,
        id: &str,
    ) -> Result<()>
    where
        T: sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>,
    {
        let sql = format!("UPDATE sandboxes SET {column} = ?, updated_at = ? WHERE id = ?");
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .bind(now_ms())
            .bind(id);
        self.write_one(q, "sandbox").await
    }

    /// The sandbox's environment variables, unsealed.
    pub async fn sandbox_env(&self, id: &str) -> Result<EnvVars> {
        let sql = "SELECT env_sealed FROM sandboxes WHERE id = ?";
        let sealed = self.sealed_column(sql, id, "sandbox").await?;
        let binding = binding::sandbox_env(id);
        EnvVars::open(&self.sealer, &binding, sealed, "sandbox environment")
    }

    /// Running sandboxes whose deadline has passed at `now` (the timeout sweeper's work list).
    pub async fn sandboxes_past_deadline(&self, now: i64) -> Result<Vec<SandboxRecord>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sandboxes \
             WHERE deadline_at IS NOT NULL AND deadline_at <= ? AND state = 'running' \
             ORDER BY deadline_at"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every sandbox that must be brought back after a daemon restart (all organisations):
    /// anything not deleted, oldest first.
    pub async fn sandboxes_to_recover(&self) -> Result<Vec<SandboxRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE state <> 'deleted' ORDER BY created_at, id"
        );
        self.rows(sqlx::AssertSqlSafe(sql), &[]).await
    }

    /// Remove a sandbox row with its policies and CA. Returns what was removed.
    pub async fn delete_sandbox(&self, org_id: &str, id: &str) -> Result<SandboxRecord> {
        let rec = self.get_sandbox(org_id, id).await?;
        self.delete_owned("sandboxes", org_id, id).await?;
        Ok(rec)
    }
}

#[cfg(test)]
#[path = "sandboxes_tests.rs"]
pub(crate) mod tests;
