//! Store and runtime records into API types.

use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_store::{SandboxRecord, SnapshotRecord, TemplateRecord};

use super::{PlaneError, Result};
use crate::control::{SandboxInfo, SnapshotInfo, TemplateInfo};

pub(super) fn clamp_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// A stored redacted policy back into its wire form (stored by us, so a failure is internal).
pub(super) fn redacted_spec(json: &str) -> Result<NetworkPolicySpec> {
    serde_json::from_str(json).map_err(|e| PlaneError::CorruptPolicy(Box::new(e)))
}

/// A stored full policy back into a validated policy.
pub(super) fn full_policy(json: &str) -> Result<Policy> {
    Policy::from_json(json.as_bytes()).map_err(|e| PlaneError::CorruptPolicy(Box::new(e)))
}

/// (full JSON, redacted JSON) of a policy, for the store.
pub(super) fn policy_json(p: &Policy) -> Result<(String, String)> {
    let full = serde_json::to_string(&p.to_spec()).map_err(PlaneError::Serialize)?;
    let redacted = serde_json::to_string(&p.redacted_spec()).map_err(PlaneError::Serialize)?;
    Ok((full, redacted))
}

pub(super) fn sandbox_info(r: &SandboxRecord, policy: Option<NetworkPolicySpec>) -> SandboxInfo {
    SandboxInfo {
        record: r.clone(),
        network_policy: policy,
    }
}

pub(super) fn snapshot_info(r: &SnapshotRecord) -> Result<SnapshotInfo> {
    Ok(SnapshotInfo {
        record: r.clone(),
        network_policy: r
            .policy_redacted
            .as_deref()
            .map(redacted_spec)
            .transpose()?,
    })
}

pub(super) fn template_info(r: &TemplateRecord) -> TemplateInfo {
    let t = &r.template;
    TemplateInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        digest: t.digest.clone(),
        image_config: t
            .image_config
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok()),
        is_system: r.is_system(),
        created_at_ms: r.created_at,
        build: crate::control::BuildStatus::default(),
    }
}
