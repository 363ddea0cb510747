//! Versioned network policies and the per-sandbox CA.
//!
//! Each policy version keeps the full policy sealed (it holds `inject_headers` secrets) and a
//! redacted copy in clear for listings. `sandboxes.policy_version` names the version the data
//! plane enforces; it only moves forward, once the caller has seen enforcement happen.

use std::fmt;

use zeroize::Zeroizing;

use crate::seal::binding;
use crate::{Result, Store, StoreError, found, now_ms};

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

pub(crate) fn secret_from(plain: crate::SecretBytes, what: &'static str) -> Result<SecretString> {
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
    ) -> Result<i64> {
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
    pub async fn mark_policy_applied(&self, sandbox_id: &str, version: i64) -> Result<()> {
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
        found(r, "policy version")?;
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
    pub async fn policy(&self, sandbox_id: &str, version: i64) -> Result<PolicyRecord> {
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
    pub async fn live_policy(&self, sandbox_id: &str) -> Result<PolicyRecord> {
        let version: i64 = sqlx::query_scalar("SELECT policy_version FROM sandboxes WHERE id = ?")
            .bind(sandbox_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("sandbox"))?;
        self.policy(sandbox_id, version).await
    }

    /// The newest version, enforced or not.
    pub async fn latest_policy(&self, sandbox_id: &str) -> Result<PolicyRecord> {
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

    pub async fn list_policy_versions(&self, sandbox_id: &str) -> Result<Vec<PolicyVersionInfo>> {
        let sql = "SELECT version, redacted, created_at, applied_at FROM sandbox_policies \
                   WHERE sandbox_id = ? ORDER BY version";
        self.rows(sql, &[sandbox_id]).await
    }

    /// Store the sandbox's CA; the private key is sealed. A sandbox has one CA for life.
    pub async fn put_ca(&self, sandbox_id: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
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

    pub async fn get_ca(&self, sandbox_id: &str) -> Result<CaRecord> {
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
#[path = "policies_tests.rs"]
mod tests;
