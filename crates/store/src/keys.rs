//! Organisations and API keys. A key is `pl_` and 64 hex digits, shown once when created; the
//! store keeps only its SHA-256, so a copy of the database does not hold usable keys.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Store, StoreError, conflict_or_db, new_id, now_ms};

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
    pub async fn create_org(
        &self,
        name: &str,
        max_sandboxes: Option<i64>,
    ) -> Result<Org, StoreError> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(StoreError::Invalid("organisation name"));
        }
        let org = Org {
            id: new_id(),
            name: name.to_owned(),
            max_sandboxes,
            created_at: now_ms(),
        };
        sqlx::query("INSERT INTO orgs (id, name, max_sandboxes, created_at) VALUES (?, ?, ?, ?)")
            .bind(&org.id)
            .bind(&org.name)
            .bind(org.max_sandboxes)
            .bind(org.created_at)
            .execute(&self.pool)
            .await
            .map_err(conflict_or_db("organisation"))?;
        Ok(org)
    }

    pub async fn get_org(&self, id: &str) -> Result<Org, StoreError> {
        sqlx::query_as("SELECT id, name, max_sandboxes, created_at FROM orgs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("organisation"))
    }

    pub async fn get_org_by_name(&self, name: &str) -> Result<Org, StoreError> {
        sqlx::query_as("SELECT id, name, max_sandboxes, created_at FROM orgs WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("organisation"))
    }

    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        Ok(
            sqlx::query_as("SELECT id, name, max_sandboxes, created_at FROM orgs ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn set_org_quota(
        &self,
        org_id: &str,
        max_sandboxes: Option<i64>,
    ) -> Result<(), StoreError> {
        let r = sqlx::query("UPDATE orgs SET max_sandboxes = ? WHERE id = ?")
            .bind(max_sandboxes)
            .bind(org_id)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("organisation"));
        }
        Ok(())
    }

    /// Create a key for `org_id`. The clear key is returned once and not kept.
    pub async fn create_api_key(
        &self,
        org_id: &str,
        name: &str,
    ) -> Result<(ApiKeyRecord, ApiKeySecret), StoreError> {
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
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Option<AuthenticatedKey>, StoreError> {
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

    pub async fn list_api_keys(&self, org_id: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, org_id, name, key_prefix, created_at, last_used_at, revoked_at \
             FROM api_keys WHERE org_id = ? ORDER BY created_at, id",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn revoke_api_key(&self, org_id: &str, key_id: &str) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND org_id = ? AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(key_id)
        .bind(org_id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound("api key"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::StoreError;
    use crate::testutil::store;

    #[tokio::test]
    async fn orgs_and_keys() {
        let (_d, s) = store().await;
        let org = s.create_org("acme", Some(3)).await.unwrap();
        assert!(matches!(
            s.create_org("acme", None).await,
            Err(StoreError::Conflict("organisation"))
        ));
        assert!(s.create_org(" ", None).await.is_err());
        assert_eq!(s.get_org(&org.id).await.unwrap(), org);
        assert_eq!(s.get_org_by_name("acme").await.unwrap(), org);
        s.set_org_quota(&org.id, None).await.unwrap();
        assert_eq!(s.get_org(&org.id).await.unwrap().max_sandboxes, None);
        assert_eq!(s.list_orgs().await.unwrap().len(), 1);

        let (rec, key) = s.create_api_key(&org.id, "ci").await.unwrap();
        assert!(key.expose().starts_with("pl_") && key.expose().len() == 67);
        assert!(!format!("{key:?}").contains(&key.expose()[3..]));
        let auth = s.authenticate(key.expose()).await.unwrap().unwrap();
        assert_eq!(
            (auth.key_id.as_str(), auth.org_id.as_str()),
            (rec.id.as_str(), org.id.as_str())
        );
        assert!(
            s.list_api_keys(&org.id).await.unwrap()[0]
                .last_used_at
                .is_some()
        );
        assert_eq!(s.authenticate("pl_nope").await.unwrap(), None);
        assert_eq!(s.authenticate("Bearer x").await.unwrap(), None);
        assert_eq!(s.authenticate(&"pl_".repeat(200)).await.unwrap(), None);

        // The clear key is nowhere in the database.
        let hashes: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
            .fetch_all(s.pool())
            .await
            .unwrap();
        assert!(!hashes[0].contains(&key.expose()[3..]));

        // Another organisation cannot revoke it; its owner can, and then it stops working.
        let other = s.create_org("other", None).await.unwrap();
        assert!(matches!(
            s.revoke_api_key(&other.id, &rec.id).await,
            Err(StoreError::NotFound(_))
        ));
        s.revoke_api_key(&org.id, &rec.id).await.unwrap();
        assert_eq!(s.authenticate(key.expose()).await.unwrap(), None);
        assert!(matches!(
            s.create_api_key("missing-org", "x").await,
            Err(StoreError::NotFound("organisation"))
        ));
    }
}
