//! Store and runtime records into API types.

use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_store::{SandboxRecord, SnapshotRecord, TemplateRecord};

use super::PlaneError;
use crate::control::{SandboxInfo, SnapshotInfo, TemplateInfo};

pub(super) fn clamp_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// A stored redacted policy back into its wire form (stored by us, so a failure is internal).
pub(super) fn redacted_spec(json: &str) -> Result<NetworkPolicySpec, PlaneError> {
    serde_json::from_str(json).map_err(|e| PlaneError::CorruptPolicy(Box::new(e)))
}

/// A stored full policy back into a validated policy.
pub(super) fn full_policy(json: &str) -> Result<Policy, PlaneError> {
    Policy::from_json(json.as_bytes()).map_err(|e| PlaneError::CorruptPolicy(Box::new(e)))
}

/// (full JSON, redacted JSON) of a policy, for the store.
pub(super) fn policy_json(p: &Policy) -> Result<(String, String), PlaneError> {
    let full = serde_json::to_string(&p.to_spec()).map_err(PlaneError::Serialize)?;
    let redacted = serde_json::to_string(&p.redacted_spec()).map_err(PlaneError::Serialize)?;
    Ok((full, redacted))
}

pub(super) fn sandbox_info(r: &SandboxRecord, policy: Option<NetworkPolicySpec>) -> SandboxInfo {
    SandboxInfo {
        id: r.id.clone(),
        template_id: r.template_id.clone(),
        vcpu: clamp_u32(r.vcpu),
        memory_mib: clamp_u32(r.memory_mib),
        disk_mib: clamp_u32(r.disk_mib),
        timeout_secs: clamp_u32(r.timeout_secs),
        state: r.state,
        auto_pause: r.auto_pause,
        created_at_ms: r.created_at,
        state_changed_at_ms: r.state_changed_at,
        deadline_at_ms: r.deadline_at,
        network_policy: policy,
        policy_version: r.policy_version,
    }
}

pub(super) fn snapshot_info(r: &SnapshotRecord) -> Result<SnapshotInfo, PlaneError> {
    Ok(SnapshotInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        sandbox_id: r.sandbox_id.clone(),
        template_id: r.template_id.clone(),
        vcpu: clamp_u32(r.vcpu),
        memory_mib: clamp_u32(r.memory_mib),
        disk_mib: clamp_u32(r.disk_mib),
        state: r.state.clone(),
        network_policy: r
            .policy_redacted
            .as_deref()
            .map(redacted_spec)
            .transpose()?,
        created_at_ms: r.created_at,
    })
}

pub(super) fn template_info(r: &TemplateRecord) -> TemplateInfo {
    TemplateInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        digest: r.digest.clone(),
        image_config: r
            .image_config
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok()),
        is_system: r.is_system(),
        created_at_ms: r.created_at,
        build: crate::control::BuildStatus::default(),
    }
}
