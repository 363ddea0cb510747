//! Durable state of the control plane: SQLite through sqlx, in the data directory.
//!
//! Organisations and API keys (only a SHA-256 of each key is kept), templates, sandboxes,
//! versioned network policies, per-sandbox CAs, snapshots and egress events. Secrets
//! (`inject_headers` values inside policies, CA private keys, environment variables) are sealed
//! with an AEAD key kept in `seal.key` beside the database (see [`seal`]). Every lookup a user
//! can reach takes the caller's organisation, so another organisation's rows read as missing.
//!
//! The schema (`migrations/`) sticks to what Postgres also has, so the store can move there.

#![forbid(unsafe_code)]

mod events;
mod ids;
mod keys;
mod listing;
mod policies;
mod sandboxes;
pub mod seal;
mod snapshots;
mod templates;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{SqlSafeStr, SqlitePool};

pub use events::{
    EgressEventFields, EgressEventRecord, EventQuery, EventSink, EventWriter, EventWriterConfig,
    Retention, retain_all,
};
pub use ids::new_id;
pub use keys::{API_KEY_PREFIX, ApiKeyRecord, ApiKeySecret, AuthenticatedKey, Org};
pub use listing::{Listing, Order, Page};
pub use policies::{CaRecord, PolicyRecord, PolicyVersionInfo, SecretString};
pub use sandboxes::{
    EnvVars, NewSandbox, Resources, SandboxQuery, SandboxRecord, SandboxSort, SandboxState,
};
pub use seal::{SealError, Sealer, SecretBytes};
pub use snapshots::{NewSnapshot, SnapshotQuery, SnapshotRecord, SnapshotSort};
pub use templates::{NewTemplate, TemplateRecord};

/// The database file inside the data directory.
pub const DB_FILE: &str = "palisade.db";

/// The embedded migrations (`crates/store/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What the store's calls return: most fail only with a [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed. Messages name the kind of row, never a secret or a value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("database: {0}")]
    Db(#[source] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stored {0} is corrupt")]
    Corrupt(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A stored value a column's decoder does not accept, named as [`StoreError::Corrupt`] names
/// it: the decoder returns it inside sqlx's column error, and the conversion below unwraps it.
#[derive(Debug, thiserror::Error)]
#[error("stored {0} is corrupt")]
pub(crate) struct CorruptValue(pub(crate) &'static str);

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::ColumnDecode { source, .. } = &e
            && let Some(CorruptValue(what)) = source.downcast_ref()
        {
            return StoreError::Corrupt(what);
        }
        StoreError::Db(e)
    }
}

/// A fault of the disk under the store rather than of the request or the code: the caller can
/// say so plainly (and try again later) instead of answering an opaque internal error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// Another process holds the database's lock past the busy timeout.
    Locked,
    /// The database or its directory cannot be written (read-only file system or file).
    ReadOnly,
    /// The file system is full.
    Full,
}

impl std::fmt::Display for StorageFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageFault::Locked => "the store is locked by another process",
            StorageFault::ReadOnly => "the store is read-only",
            StorageFault::Full => "the disk under the store is full",
        })
    }
}

fn io_fault(e: &std::io::Error) -> Option<StorageFault> {
    match e.raw_os_error() {
        Some(nix_codes::EROFS | nix_codes::EACCES | nix_codes::EPERM) => {
            Some(StorageFault::ReadOnly)
        }
        Some(nix_codes::ENOSPC | nix_codes::EDQUOT) => Some(StorageFault::Full),
        _ => None,
    }
}

/// errno values (Linux), without a libc dependency in a crate that makes no system calls.
mod nix_codes {
    pub(super) const EPERM: i32 = 1;
    pub(super) const EACCES: i32 = 13;
    pub(super) const ENOSPC: i32 = 28;
    pub(super) const EROFS: i32 = 30;
    pub(super) const EDQUOT: i32 = 122;
}

impl StoreError {
    /// The storage fault behind this error, if it is one.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        let db = match self {
            StoreError::Db(e) => e,
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => e,
            StoreError::Io { source, .. } => return io_fault(source),
            _ => return None,
        };
        match db {
            sqlx::Error::Database(d) => {
                // SQLite result codes; the extended code's low byte is the primary one.
                let code: i64 = d.code()?.parse().ok()?;
                match code & 0xff {
                    5 | 6 => Some(StorageFault::Locked), // SQLITE_BUSY, SQLITE_LOCKED
                    8 => Some(StorageFault::ReadOnly),   // SQLITE_READONLY
                    13 => Some(StorageFault::Full),      // SQLITE_FULL
                    14 => Some(StorageFault::ReadOnly),  // SQLITE_CANTOPEN
                    _ => None,
                }
            }
            sqlx::Error::Io(e) => io_fault(e),
            _ => None,
        }
    }
}

/// Map a unique-constraint violation to `Conflict(what)`, anything else to `Db`.
pub(crate) fn conflict_or_db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Db(e),
    }
}

/// Whether an UPDATE or DELETE aimed at one row found it: none touched means it is missing.
pub(crate) fn found(r: sqlx::sqlite::SqliteQueryResult, what: &'static str) -> Result<()> {
    if r.rows_affected() == 0 {
        return Err(StoreError::NotFound(what));
    }
    Ok(())
}

/// The store: a connection pool and the sealing key.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    sealer: Sealer,
    dir: PathBuf,
}

impl Store {
    /// Open (creating when missing) the store in `data_dir`: the directory (0700), the seal key
    /// (0600, refused when wider) and the database, with every migration applied.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        create_private_dir(data_dir)?;
        let sealer = Sealer::open_or_create(data_dir)?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            sealer,
            dir: data_dir.to_path_buf(),
        })
    }

    /// A transaction that takes SQLite's write lock at once. A deferred one that reads first
    /// and writes later fails with SQLITE_BUSY_SNAPSHOT (no busy wait) when another connection
    /// wrote in between; an immediate one waits its turn under the busy timeout instead.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Run `q`, an INSERT: a row already there (a unique constraint) is `Conflict(what)`.
    pub(crate) async fn insert(
        &self,
        q: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
        what: &'static str,
    ) -> Result<()> {
        q.execute(&self.pool).await.map_err(conflict_or_db(what))?;
        Ok(())
    }

    /// Run `q`, a write aimed at one row: none touched means it is missing (`NotFound(what)`).
    pub(crate) async fn write_one(
        &self,
        q: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
        what: &'static str,
    ) -> Result<()> {
        found(q.execute(&self.pool).await?, what)
    }

    /// The one row `sql` selects with the text parameters `args`, or `NotFound(what)`.
    pub(crate) async fn row<T>(
        &self,
        sql: impl SqlSafeStr,
        args: &[&str],
        what: &'static str,
    ) -> Result<T>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        args.iter()
            .fold(sqlx::query_as(sql), |q, a| q.bind(*a))
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound(what))
    }

    /// Every row `sql` selects with the text parameters `args`.
    pub(crate) async fn rows<T>(&self, sql: impl SqlSafeStr, args: &[&str]) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, SqliteRow> + Send + Unpin,
    {
        Ok(args
            .iter()
            .fold(sqlx::query_as(sql), |q, a| q.bind(*a))
            .fetch_all(&self.pool)
            .await?)
    }

    /// The sealed value in the single-column `sql` of the row with this id (`None` when the
    /// column is NULL), or `NotFound(what)` when there is no such row.
    pub(crate) async fn sealed_column(
        &self,
        sql: &'static str,
        id: &str,
        what: &'static str,
    ) -> Result<Option<Vec<u8>>> {
        let sealed: Option<Option<Vec<u8>>> = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        sealed.ok_or(StoreError::NotFound(what))
    }

    /// Delete the row `id` of `org_id` from `table` (named by the caller, never by a user).
    pub(crate) async fn delete_owned(
        &self,
        table: &'static str,
        org_id: &str,
        id: &str,
    ) -> Result<()> {
        let sql = format!("DELETE FROM {table} WHERE id = ? AND org_id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(org_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The data directory this store lives in.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The pool, for callers that need a transaction across repositories.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Flush the write-ahead log into the database file and close every connection.
    pub async fn close(&self) {
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, the unit of every time column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub(crate) async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).await.unwrap();
        (dir, store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second connection to the store's database with these options.
    async fn raw(store: &Store, read_only: bool) -> SqlitePool {
        let o = SqliteConnectOptions::from_str("sqlite:")
            .unwrap()
            .filename(store.data_dir().join(DB_FILE))
            .read_only(read_only)
            .busy_timeout(Duration::from_millis(50));
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(o)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn locked_and_read_only_databases_are_storage_faults() {
        let (_d, s) = testutil::store().await;
        let insert = "INSERT INTO orgs (id, name, created_at) VALUES ('x', 'x', 0)";
        let ro = raw(&s, true).await;
        let e = StoreError::from(sqlx::query(insert).execute(&ro).await.unwrap_err());
        assert_eq!(e.storage_fault(), Some(StorageFault::ReadOnly), "{e:?}");
        // Another process holding the write lock past the busy timeout.
        let holder = raw(&s, false).await;
        let mut tx = holder.begin_with("BEGIN EXCLUSIVE").await.unwrap();
        sqlx::query("CREATE TABLE hold (x)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let other = raw(&s, false).await;
        let e = StoreError::from(sqlx::query(insert).execute(&other).await.unwrap_err());
        assert_eq!(e.storage_fault(), Some(StorageFault::Locked), "{e:?}");
        tx.rollback().await.unwrap();
        assert_eq!(StoreError::NotFound("sandbox").storage_fault(), None);
        let full = StoreError::Io {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert_eq!(full.storage_fault(), Some(StorageFault::Full));
    }

    #[tokio::test]
    async fn migrations_apply_fresh_and_are_idempotent() {
        let (dir, store) = testutil::store().await;
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(applied, MIGRATOR.iter().count() as i64);
        MIGRATOR.run(store.pool()).await.unwrap();
        store.close().await;
        // A second open of the same directory runs the migrator again: nothing changes.
        let again = Store::open(&dir.path().join("data")).await.unwrap();
        let applied2: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(again.pool())
            .await
            .unwrap();
        assert_eq!(applied, applied2);
        let mode = std::fs::metadata(dir.path().join("data"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o700);
    }

    #[tokio::test]
    async fn refuses_world_readable_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d");
        Store::open(&data).await.unwrap().close().await;
        std::fs::set_permissions(
            data.join(seal::KEY_FILE),
            std::fs::Permissions::from_mode(0o604),
        )
        .unwrap();
        let err = Store::open(&data).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Seal(SealError::KeyMode { .. })),
            "{err}"
        );
    }
    /// The whole point of sealing: no secret is readable in the files on disk, WAL included.
    #[tokio::test]
    async fn secrets_never_in_clear_on_disk() {
        let (dir, s) = testutil::store().await;
        let org = s.create_org("acme", None).await.unwrap();
        let (_, key) = s.create_api_key(&org.id, "k").await.unwrap();
        let sb = sandboxes::tests::new_sandbox("sb1", &org.id);
        let env = EnvVars([("DB_PASSWORD".to_string(), "ENV-SECRET-4f1b".to_string())].into());
        s.insert_sandbox(sb, &env).await.unwrap();
        let full = r#"{"mode":"custom","transforms":[{"domain":"api.test","inject_headers":{"authorization":"Bearer INJECT-SECRET-9a7c"}}]}"#;
        let redacted = r#"{"mode":"custom","transforms":[{"domain":"api.test","inject_headers":{"authorization":"[REDACTED]"}}]}"#;
        let v = s.add_policy_version("sb1", full, redacted).await.unwrap();
        s.mark_policy_applied("sb1", v).await.unwrap();
        s.put_ca(
            "sb1",
            "-----BEGIN CERTIFICATE-----\nCERT\n",
            "CA-KEY-SECRET-77d2",
        )
        .await
        .unwrap();
        let snapshot = NewSnapshot {
            id: "snap1".into(),
            org_id: org.id.clone(),
            name: "n".into(),
            sandbox_id: Some("sb1".into()),
            template_id: "t".into(),
            resources: Resources {
                vcpu: 1,
                memory_mib: 512,
                disk_mib: 1,
            },
            state: "ready".into(),
            archive_path: "/x".into(),
            archive_bytes: 0,
        };
        let policy = Some((SecretString::new(full.into()), redacted.into()));
        let env = EnvVars([("K".to_string(), "SNAPENV-SECRET-31aa".to_string())].into());
        s.insert_snapshot(snapshot, policy, &env).await.unwrap();
        let secrets = [
            "ENV-SECRET-4f1b",
            "INJECT-SECRET-9a7c",
            "CA-KEY-SECRET-77d2",
            "SNAPENV-SECRET-31aa",
            &key.expose()[3..],
        ];
        let scan = |when: &str| {
            let mut files = 0;
            for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                files += 1;
                for secret in &secrets {
                    let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                    assert!(!found, "{when}: {secret} in clear in {}", path.display());
                }
            }
            files
        };
        // The redacted copy is on disk, so the scan does look at real content.
        let before = scan("with WAL");
        assert!(before >= 2);
        s.close().await;
        scan("after checkpoint");
        let db = std::fs::read(dir.path().join("data").join(DB_FILE)).unwrap();
        assert!(db.windows(10).any(|w| w == b"[REDACTED]"));
        // And everything still opens after a restart with the same key file.
        let again = Store::open(&dir.path().join("data")).await.unwrap();
        assert!(
            again
                .live_policy("sb1")
                .await
                .unwrap()
                .full
                .expose()
                .contains("INJECT-SECRET-9a7c")
        );
        assert_eq!(
            again.get_ca("sb1").await.unwrap().key_pem.expose(),
            "CA-KEY-SECRET-77d2"
        );
        assert_eq!(
            again.sandbox_env("sb1").await.unwrap().0["DB_PASSWORD"],
            "ENV-SECRET-4f1b"
        );
        assert!(again.authenticate(key.expose()).await.unwrap().is_some());
    }
}
