//! Response bodies, shaped as both Leap0 SDKs read them (a submodule of `model.rs`).

use palisade_policy::NetworkPolicySpec;
use palisade_store::{EgressEventFields, EgressEventRecord, NewSnapshot, Resources};
use serde::Serialize;
use utoipa::ToSchema;

use crate::control::{
    BuildStatus, ExecResult, Page, PolicyInfo, SandboxInfo, SnapshotInfo, TemplateInfo,
};
use crate::time::{rfc3339, unix_secs};

/// The size of a sandbox or snapshot under both SDK generations' field names (`memory` and
/// `memory_mib`, `disk` and `disk_mib`). Flattened, so its fields stand in the response where
/// the field holding it is declared and the JSON is the same as if they were written there.
#[derive(Debug, Serialize, ToSchema)]
pub struct SizeFields {
    pub vcpu: u32,
    pub memory: u32,
    pub memory_mib: u32,
    pub disk: u32,
    pub disk_mib: u32,
}

impl From<Resources> for SizeFields {
    fn from(r: Resources) -> Self {
        let (memory_mib, disk_mib) = (unsigned(r.memory_mib), unsigned(r.disk_mib));
        Self {
            vcpu: unsigned(r.vcpu),
            memory: memory_mib,
            memory_mib,
            disk: disk_mib,
            disk_mib,
        }
    }
}

/// A stored count (stored from a validated request) as the API's unsigned field.
fn unsigned(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// A sandbox; `network_policy` has every injected value redacted.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxResponse {
    pub id: String,
    pub template_id: String,
    #[serde(flatten)]
    pub size: SizeFields,
    /// Seconds.
    pub timeout: u32,
    pub state: String,
    pub auto_pause: bool,
    pub created_at: String,
    pub network_policy: Option<NetworkPolicySpec>,
    /// The policy version the data plane enforces (beyond Leap0).
    pub policy_version: i64,
}

impl From<SandboxInfo> for SandboxResponse {
    fn from(info: SandboxInfo) -> Self {
        let s = info.record.sandbox;
        Self {
            id: s.id,
            template_id: s.template_id,
            size: s.resources.into(),
            timeout: unsigned(s.timeout_secs),
            state: s.state.as_str().to_owned(),
            auto_pause: s.auto_pause,
            created_at: rfc3339(info.record.created_at),
            network_policy: info.network_policy,
            policy_version: info.record.policy_version,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxListItem {
    pub id: String,
    pub template_id: String,
    pub state: String,
    pub launch_time: String,
    pub state_change_time: String,
    /// Unix seconds when the timeout fires, if it is armed.
    pub timeout_at: Option<i64>,
    pub created_at: String,
    /// Beyond Leap0: the policy mode (`allow-all`, `deny-all`, `custom`), for lists and the console.
    pub policy_mode: Option<String>,
}

impl From<SandboxInfo> for SandboxListItem {
    fn from(
        SandboxInfo {
            record,
            network_policy,
        }: SandboxInfo,
    ) -> Self {
        let s = record.sandbox;
        Self {
            id: s.id,
            template_id: s.template_id,
            state: s.state.as_str().to_owned(),
            launch_time: rfc3339(record.created_at),
            state_change_time: rfc3339(record.state_changed_at),
            timeout_at: s.deadline_at.map(unix_secs),
            created_at: rfc3339(record.created_at),
            policy_mode: network_policy.map(|p| p.mode.as_str().to_owned()),
        }
    }
}

/// One page of a listing (`GET /v1/sandboxes`, `GET /v1/snapshots`) and how many items the
/// whole listing has.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total_items: i64,
}

impl<T, B: From<T>> From<Page<T>> for Paged<B> {
    fn from(page: Page<T>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            total_items: page.total,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotResponse {
    pub id: String,
    pub name: String,
    pub sandbox_id: Option<String>,
    pub template_id: String,
    #[serde(flatten)]
    pub size: SizeFields,
    pub state: String,
    pub network_policy: Option<NetworkPolicySpec>,
    pub created_at: String,
}

impl From<SnapshotInfo> for SnapshotResponse {
    fn from(
        SnapshotInfo {
            record,
            network_policy,
        }: SnapshotInfo,
    ) -> Self {
        // Named one by one: the archive's path and size stay on the host.
        let NewSnapshot {
            id,
            name,
            sandbox_id,
            template_id,
            resources,
            state,
            ..
        } = record.snapshot;
        Self {
            id,
            name,
            sandbox_id,
            template_id,
            size: resources.into(),
            state,
            network_policy,
            created_at: rfc3339(record.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateResponse {
    pub id: String,
    pub name: String,
    pub digest: String,
    #[schema(value_type = Option<Object>)]
    pub image_config: Option<serde_json::Value>,
    pub is_system: bool,
    pub created_at: String,
    #[serde(flatten)]
    pub build: BuildStatus,
}

impl From<TemplateInfo> for TemplateResponse {
    fn from(t: TemplateInfo) -> Self {
        Self {
            id: t.id,
            name: t.name,
            digest: t.digest,
            image_config: t.image_config,
            is_system: t.is_system,
            created_at: rfc3339(t.created_at_ms),
            build: t.build,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateListResponse {
    pub items: Vec<TemplateResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessResponse {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Beyond Leap0 (the SDKs read only the three above): output cut at the cap.
    pub truncated: bool,
    /// Beyond Leap0: the command was killed at its timeout.
    pub timed_out: bool,
}

impl From<ExecResult> for ProcessResponse {
    fn from(r: ExecResult) -> Self {
        Self {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            truncated: r.truncated,
            timed_out: r.timed_out,
        }
    }
}

/// The policy a sandbox's data plane enforces, redacted, and its version.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyResponse {
    pub sandbox_id: String,
    /// The live version: answered only once the data plane enforces it.
    pub version: i64,
    pub network_policy: NetworkPolicySpec,
}

impl From<PolicyInfo> for PolicyResponse {
    fn from(p: PolicyInfo) -> Self {
        Self {
            sandbox_id: p.sandbox_id,
            version: p.version,
            network_policy: p.network_policy,
        }
    }
}

/// One egress decision: the event as stored, with its time also in RFC 3339 and its detail
/// as an object.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResponse {
    pub id: i64,
    pub sandbox_id: String,
    pub at: String,
    #[serde(flatten)]
    pub event: EgressEventFields,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

impl From<EgressEventRecord> for EventResponse {
    fn from(e: EgressEventRecord) -> Self {
        Self {
            id: e.id,
            sandbox_id: e.sandbox_id,
            at: rfc3339(e.event.at_ms),
            event: e.event,
            detail: e
                .detail
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventListResponse {
    pub items: Vec<EventResponse>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::BuildState;

    /// The build status flattens into the template as `build_*`, with RFC 3339 times.
    #[test]
    fn a_template_carries_its_build_as_build_fields() {
        let info = TemplateInfo {
            id: "t1".into(),
            name: "system/debian:bookworm".into(),
            digest: "d".into(),
            image_config: None,
            is_system: true,
            created_at_ms: 0,
            build: BuildStatus {
                state: BuildState::Failed,
                error: Some("no mirror".into()),
                started_at_ms: Some(1_700_000_000_123),
                finished_at_ms: None,
                progress: Some("I: Retrieving".into()),
                progress_lines: 3,
            },
        };
        let json = serde_json::to_value(TemplateResponse::from(info)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "t1",
                "name": "system/debian:bookworm",
                "digest": "d",
                "image_config": null,
                "is_system": true,
                "created_at": "1970-01-01T00:00:00Z",
                "build_state": "failed",
                "build_error": "no mirror",
                "build_started_at": "2023-11-14T22:13:20.123Z",
                "build_finished_at": null,
                "build_progress": "I: Retrieving",
                "build_progress_lines": 3,
            })
        );
    }
}
