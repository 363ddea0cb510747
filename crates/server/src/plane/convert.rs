//! Store and runtime records into API types, and their errors into [`ApiError`].

use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_runtime::RuntimeError;
use palisade_store::{SandboxRecord, SnapshotRecord, TemplateRecord};

use crate::control::{SandboxInfo, SnapshotInfo, TemplateInfo};
use crate::error::ApiError;

pub(super) fn clamp_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// A stored redacted policy back into its wire form (stored by us, so a failure is internal).
pub(super) fn redacted_spec(json: &str) -> Result<NetworkPolicySpec, ApiError> {
    serde_json::from_str(json).map_err(|_| ApiError::internal("stored policy is corrupt"))
}

/// A stored full policy back into a validated policy.
pub(super) fn full_policy(json: &str) -> Result<Policy, ApiError> {
    Policy::from_json(json.as_bytes()).map_err(|_| ApiError::internal("stored policy is corrupt"))
}

/// (full JSON, redacted JSON) of a policy, for the store.
pub(super) fn policy_json(p: &Policy) -> Result<(String, String), ApiError> {
    let full = serde_json::to_string(&p.to_spec()).map_err(ApiError::internal)?;
    let redacted = serde_json::to_string(&p.redacted_spec()).map_err(ApiError::internal)?;
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

pub(super) fn snapshot_info(r: &SnapshotRecord) -> Result<SnapshotInfo, ApiError> {
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

/// Runtime failures: the caller's mistakes keep their status, host failures become 500s.
pub(super) fn runtime_err(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::Invalid(m) => ApiError::field("request", m),
        RuntimeError::NotFound(_) => ApiError::NotFound("sandbox"),
        RuntimeError::TemplateNotFound(_) => ApiError::NotFound("template"),
        RuntimeError::AlreadyExists(what) => ApiError::Conflict(format!("{what} already exists")),
        RuntimeError::TemplateInUse(..) => ApiError::Conflict("template is in use".into()),
        RuntimeError::BadArchive(m) => ApiError::field("uri", m),
        RuntimeError::State { .. } => ApiError::Conflict(e.to_string()),
        RuntimeError::Io { ref source, .. } if disk_full(source) => {
            tracing::error!(error = %e, "host disk full");
            ApiError::Unavailable(
                "the host's data disk is full: nothing was written (an archive begun is removed); \
                 free space and try again"
                    .into(),
            )
        }
        other => ApiError::internal(other),
    }
}

/// ENOSPC or EDQUOT, however deep in the error's sources (tar and zstd wrap their writer's).
fn disk_full(e: &std::io::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(28 | 122))
        {
            return true;
        }
        cur = err.source();
    }
    e.to_string().contains("No space left on device")
}
