//! Versioned network policies and the per-sandbox CA.
//!
//! Each policy version keeps the full policy sealed (it holds `inject_headers` secrets) and a
//! redacted copy in clear for listings. `sandboxes.policy_version` names the version the data
//! plane enforces; it only moves forward, once the caller has seen enforcement happen.

use std::fmt;

use zeroize::Zeroizing;

use crate::seal::binding;
use crate::{Store, StoreError, now_ms};

/// Text that came out of a sealed column: zeroed on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

fn secret_from(plain: crate::SecretBytes, what: &'static str) -> Result<SecretString, StoreError> {
    std::str::from_utf8(plain.expose())
        .map(|s| SecretString::new(s.to_owned()))
        .map_err(|_| StoreError::Corrupt(what))
}

/// One version of a sandbox's policy, opened.
#[derive(Debug, Clone)]
pub struct PolicyRecord {
    pub sandbox_id: String,
    pub version: i64,
    /// The full policy JSON, secrets included.
    pub full: SecretString,
    /// The same policy with injected values redacted.
    pub redacted: String,
    pub created_at: i64,
    pub applied_at: Option<i64>,
}

/// A policy version without its secrets, for listings.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PolicyVersionInfo {
    pub version: i64,
    pub redacted: String,
    pub created_at: i64,
    pub applied_at: Option<i64>,
}

/// A sandbox's CA: the certificate in clear, the private key opened from its seal.
#[derive(Debug, Clone)]
pub struct CaRecord {
    pub sandbox_id: String,
    pub cert_pem: String,
    pub key_pem: SecretString,
    pub created_at: i64,
}

impl Store {
    /// Store a new policy version for `sandbox_id` (not yet enforced) and return its number.
    pub async fn add_policy_version(
        &self,
        sandbox_id: &str,
        full_json: &str,
        redacted_json: &str,
    ) -> Result<i64, StoreError> {
        let mut tx = self.write_tx().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM sandboxes WHERE id = ?")
            .bind(sandbox_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound("sandbox"));
        }
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM sandbox_policies WHERE sandbox_id = ?",
        )
        .bind(sandbox_id)
        .fetch_one(&mut *tx)
        .await?;
        let sealed = self
            .sealer
            .seal(&binding::policy(sandbox_id, version), full_json.as_bytes())?;
        sqlx::query(
            "INSERT INTO sandbox_policies (sandbox_id, version, sealed, redacted, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(sandbox_id)
        .bind(version)
        .bind(sealed)
        .bind(redacted_json)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Record that the data plane now enforces `version`. Never moves the live version back.
    pub async fn mark_policy_applied(
        &self,
        sandbox_id: &str,
        version: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query(
            "UPDATE sandbox_policies SET applied_at = COALESCE(applied_at, ?) \
             WHERE sandbox_id = ? AND version = ?",
        )
        .bind(now_ms())
        .bind(sandbox_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("policy version"));
        }
        sqlx::query(
            "UPDATE sandboxes SET policy_version = ?, updated_at = ? \
             WHERE id = ? AND policy_version < ?",
        )
        .bind(version)
        .bind(now_ms())
        .bind(sandbox_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One version, opened.
    pub async fn policy(&self, sandbox_id: &str, version: i64) -> Result<PolicyRecord, StoreError> {
        let row: Option<(Vec<u8>, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT sealed, redacted, created_at, applied_at FROM sandbox_policies \
             WHERE sandbox_id = ? AND version = ?",
        )
        .bind(sandbox_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        let (sealed, redacted, created_at, applied_at) =
            row.ok_or(StoreError::NotFound("policy version"))?;
        let plain = self
            .sealer
            .open(&binding::policy(sandbox_id, version), &sealed)?;
        Ok(PolicyRecord {
            sandbox_id: sandbox_id.to_owned(),
            version,
            full: secret_from(plain, "policy")?,
            redacted,
            created_at,
            applied_at,
        })
    }

    /// The version the data plane enforces (what a restart must restore).
    pub async fn live_policy(&self, sandbox_id: &str) -> Result<PolicyRecord, StoreError> {
        let version: i64 = sqlx::query_scalar("SELECT policy_version FROM sandboxes WHERE id = ?")
            .bind(sandbox_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("sandbox"))?;
        self.policy(sandbox_id, version).await
    }

    /// The newest version, enforced or not.
    pub async fn latest_policy(&self, sandbox_id: &str) -> Result<PolicyRecord, StoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM sandbox_policies WHERE sandbox_id = ?")
                .bind(sandbox_id)
                .fetch_one(&self.pool)
                .await?;
        self.policy(
            sandbox_id,
            version.ok_or(StoreError::NotFound("policy version"))?,
        )
        .await
    }

    pub async fn list_policy_versions(
        &self,
        sandbox_id: &str,
    ) -> Result<Vec<PolicyVersionInfo>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT version, redacted, created_at, applied_at FROM sandbox_policies \
             WHERE sandbox_id = ? ORDER BY version",
        )
        .bind(sandbox_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Store the sandbox's CA; the private key is sealed. A sandbox has one CA for life.
    pub async fn put_ca(
        &self,
        sandbox_id: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(), StoreError> {
        let sealed = self
            .sealer
            .seal(&binding::ca_key(sandbox_id), key_pem.as_bytes())?;
        sqlx::query(
            "INSERT INTO sandbox_cas (sandbox_id, cert_pem, key_sealed, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(sandbox_id)
        .bind(cert_pem)
        .bind(sealed)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict("sandbox CA"),
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound("sandbox"),
            _ => StoreError::Db(e),
        })?;
        Ok(())
    }

    pub async fn get_ca(&self, sandbox_id: &str) -> Result<CaRecord, StoreError> {
        let row: Option<(String, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT cert_pem, key_sealed, created_at FROM sandbox_cas WHERE sandbox_id = ?",
        )
        .bind(sandbox_id)
        .fetch_optional(&self.pool)
        .await?;
        let (cert_pem, sealed, created_at) = row.ok_or(StoreError::NotFound("sandbox CA"))?;
        let plain = self.sealer.open(&binding::ca_key(sandbox_id), &sealed)?;
        Ok(CaRecord {
            sandbox_id: sandbox_id.to_owned(),
            cert_pem,
            key_pem: secret_from(plain, "CA key")?,
            created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::sandboxes::tests::new_sandbox;
    use crate::testutil::store;
    use crate::{SealError, StoreError};

    /// Concurrent writers (other sandboxes' updates, the event writer) on the pool's several
    /// connections wait their turn; none fails with SQLITE_BUSY_SNAPSHOT.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_policy_versions_all_land() {
        let (_d, s) = store().await;
        let org = s.create_org("a", None).await.unwrap();
        for i in 0..4 {
            s.insert_sandbox(new_sandbox(&format!("s{i}"), &org.id))
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
        s.insert_sandbox(new_sandbox("sx", &org.id)).await.unwrap();
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
        s.insert_sandbox(new_sandbox("c1", &org.id)).await.unwrap();
        s.insert_sandbox(new_sandbox("c2", &org.id)).await.unwrap();
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
}
