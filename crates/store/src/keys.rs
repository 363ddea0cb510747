//! Organisations and API keys. A key is `pl_` and 64 hex digits, shown once when created; the
//! store keeps only its SHA-256, so a copy of the database does not hold usable keys.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Result, Store, StoreError, new_id, now_ms};

/// Every API key starts with this.
pub const API_KEY_PREFIX: &str = "pl_";
const KEY_RANDOM_BYTES: usize = 32;
/// Longest presented key worth hashing; anything longer is not one of ours.
const MAX_PRESENTED_LEN: usize = 256;
/// `last_used_at` is refreshed at most this often, so authentication stays a read.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Org {
    pub id: String,
    pub name: String,
    /// Most sandboxes alive at once; `None` is unlimited.
    pub max_sandboxes: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A freshly created key, in clear. Printed once by the CLI, never stored, never logged.
pub struct ApiKeySecret(Zeroizing<String>);

impl ApiKeySecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

/// Who a valid key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedKey {
    pub key_id: String,
    pub org_id: String,
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Store {
    pub async fn create_org(&self, name: &str, max_sandboxes: Option<i64>) -> Result<Org> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(StoreError::Invalid("organisation name"));
        }
        let org = Org {
            id: new_id(),
            name: name.to_owned(),
            max_sandboxes,
            created_at: now_ms(),
        };
        let q = sqlx::query(
            "INSERT INTO orgs (id, name, max_sandboxes, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&org.id)
        .bind(&org.name)
        .bind(org.max_sandboxes)
        .bind(org.created_at);
        self.insert(q, "organisation").await?;
        Ok(org)
    }

    pub async fn get_org(&self, id: &str) -> Result<Org> {
        let sql = "SELECT id, name, max_sandboxes, created_at FROM orgs WHERE id = ?";
        self.row(sql, &[id], "organisation").await
    }

    pub async fn get_org_by_name(&self, name: &str) -> Result<Org> {
        let sql = "SELECT id, name, max_sandboxes, created_at FROM orgs WHERE name = ?";
        self.row(sql, &[name], "organisation").await
    }

    pub async fn list_orgs(&self) -> Result<Vec<Org>> {
        let sql = "SELECT id, name, max_sandboxes, created_at FROM orgs ORDER BY name";
        self.rows(sql, &[]).await
    }

    pub async fn set_org_quota(&self, org_id: &str, max_sandboxes: Option<i64>) -> Result<()> {
        let q = sqlx::query("UPDATE orgs SET max_sandboxes = ? WHERE id = ?")
            .bind(max_sandboxes)
            .bind(org_id);
        self.write_one(q, "organisation").await
    }

    /// Create a key for `org_id`. The clear key is returned once and not kept.
    pub async fn create_api_key(
        &self,
        org_id: &str,
        name: &str,
    ) -> Result<(ApiKeyRecord, ApiKeySecret)> {
        let mut random = Zeroizing::new([0u8; KEY_RANDOM_BYTES]);
        getrandom::fill(random.as_mut()).map_err(|_| crate::SealError::Random)?;
        let key = Zeroizing::new(format!("{API_KEY_PREFIX}{}", hex::encode(random.as_ref())));
        let record = ApiKeyRecord {
            id: new_id(),
            org_id: org_id.to_owned(),
            name: name.to_owned(),
            key_prefix: key.chars().take(API_KEY_PREFIX.len() + 6).collect(),
            created_at: now_ms(),
            last_used_at: None,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&record.id)
        .bind(&record.org_id)
        .bind(&record.name)
        .bind(hash_key(&key))
        .bind(&record.key_prefix)
        .bind(record.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::NotFound("organisation")
            }
            _ => StoreError::Db(e),
        })?;
        Ok((record, ApiKeySecret(key)))
    }

    /// The organisation a presented key belongs to, or `None` for an unknown, revoked or
    /// malformed key (the caller answers 401 either way).
    pub async fn authenticate(&self, presented: &str) -> Result<Option<AuthenticatedKey>> {
        if !presented.starts_with(API_KEY_PREFIX) || presented.len() > MAX_PRESENTED_LEN {
            return Ok(None);
        }
        let row: Option<(String, String, Option<i64>)> = sqlx::query_as(
            "SELECT id, org_id, last_used_at FROM api_keys \
             WHERE key_hash = ? AND revoked_at IS NULL",
        )
        .bind(hash_key(presented))
        .fetch_optional(&self.pool)
        .await?;
        let Some((key_id, org_id, last_used)) = row else {
            return Ok(None);
        };
        let now = now_ms();
        if last_used.is_none_or(|t| now - t > LAST_USED_GRANULARITY_MS) {
            sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
                .bind(now)
                .bind(&key_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(AuthenticatedKey { key_id, org_id }))
    }

    pub async fn list_api_keys(&self, org_id: &str) -> Result<Vec<ApiKeyRecord>> {
        let sql = "SELECT id, org_id, name, key_prefix, created_at, last_used_at, revoked_at \
                   FROM api_keys WHERE org_id = ? ORDER BY created_at, id";
        self.rows(sql, &[org_id]).await
    }

    pub async fn revoke_api_key(&self, org_id: &str, key_id: &str) -> Result<()> {
        let q = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND org_id = ? AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(key_id)
        .bind(org_id);
        self.write_one(q, "api key").await
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
