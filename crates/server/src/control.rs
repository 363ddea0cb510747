//! The control plane's commands and results as the API sees them: typed commands in, typed
//! results out. The HTTP layer parses and validates the request shape and calls one public
//! method of [`Plane`](crate::plane::Plane); everything else (templates, quotas, the runtime,
//! the firewall, the store) happens behind it. Every call takes the caller's organisation; a
//! resource of another organisation answers `NotFound`, exactly as a missing one.

use palisade_policy::{NetworkPolicySpec, Policy};
use palisade_store::{SandboxRecord, SnapshotRecord};
use serde::Serialize;
use utoipa::ToSchema;

pub use palisade_firewall::hold::{ApprovalUpdate, ApprovalView, Decision};

/// The organisation a request acts for, from its API key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrgId(pub String);

// The store's types where the API asks for exactly what the store keeps: environment variables
// (names only in `Debug`), list queries, event filters and pages pass through unchanged, and a
// command's result is the runtime's as it is.
pub use palisade_runtime::ExecResult;
pub use palisade_store::{
    EnvVars, EventQuery as EventFilter, Listing, Page, SandboxQuery as ListSandboxes,
    SnapshotQuery as ListSnapshots,
};

#[derive(Debug, Clone)]
pub struct CreateSandbox {
    pub template_name: String,
    pub vcpu: u32,
    pub memory_mib: u32,
    pub timeout_secs: u32,
    pub auto_pause: bool,
    pub env_vars: EnvVars,
    /// `None`: the default (allow-all).
    pub network_policy: Option<Policy>,
}

/// A sandbox as the API shows it: as stored, with its policy, already redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxInfo {
    pub record: SandboxRecord,
    pub network_policy: Option<NetworkPolicySpec>,
}

#[derive(Debug, Clone)]
pub struct Execute {
    pub command: String,
    pub cwd: Option<String>,
    pub env: EnvVars,
    pub timeout_secs: Option<u32>,
}

/// What happens to the sandbox once its snapshot is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSnapshot {
    KeepRunning,
    /// `POST /snapshot/pause` (SDK 0.6.1): the sandbox is stopped.
    Stop,
    /// `kill_sandbox_after` (SDK 0.8): the sandbox is deleted.
    Delete,
}

#[derive(Debug, Clone)]
pub struct CreateSnapshot {
    pub name: Option<String>,
    pub after: AfterSnapshot,
}

/// A snapshot as the API shows it: as stored, with its policy parsed (it is stored redacted).
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    pub record: SnapshotRecord,
    pub network_policy: Option<NetworkPolicySpec>,
}

#[derive(Debug, Clone)]
pub struct RestoreSnapshot {
    /// A snapshot name (or id).
    pub snapshot: String,
    pub auto_pause: bool,
    pub timeout_secs: Option<u32>,
    /// `None`: the snapshot's own policy.
    pub network_policy: Option<Policy>,
}

#[derive(Debug, Clone)]
pub struct CreateTemplate {
    pub name: String,
    /// Where the rootfs comes from; which sources exist is the runtime's business.
    pub uri: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateInfo {
    pub id: String,
    pub name: String,
    pub digest: String,
    pub image_config: Option<serde_json::Value>,
    pub is_system: bool,
    pub created_at_ms: i64,
    /// Whether sandboxes can be made from it now, and how its last build went.
    pub build: BuildStatus,
}

/// Where a template's build stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuildState {
    /// Built: sandboxes can be made from it.
    #[default]
    Ready,
    /// A build is running.
    Building,
    /// The last build failed (`BuildStatus::error` says why); it is retried only on request.
    Failed,
    /// Never built on this host yet (the first create or a build request starts it).
    Absent,
}

impl BuildState {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Ready => "ready",
            BuildState::Building => "building",
            BuildState::Failed => "failed",
            BuildState::Absent => "absent",
        }
    }
}

/// On the wire as its name.
impl Serialize for BuildState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A template's build state and what its last build said. It is also the wire form: a
/// template response carries these fields flattened, named `build_*`, with the times in
/// RFC 3339.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct BuildStatus {
    /// Sandboxes are made only from a `ready` template; a create on another answers 503
    /// saying why. `absent`: never built on this host.
    #[serde(rename = "build_state")]
    #[schema(value_type = String)]
    pub state: BuildState,
    /// Why the last build failed (with `failed`).
    #[serde(rename = "build_error")]
    pub error: Option<String>,
    #[serde(
        rename = "build_started_at",
        serialize_with = "crate::time::rfc3339_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub started_at_ms: Option<i64>,
    #[serde(
        rename = "build_finished_at",
        serialize_with = "crate::time::rfc3339_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub finished_at_ms: Option<i64>,
    /// The builder's latest progress line while building (debootstrap's `I: Retrieving ...`).
    #[serde(rename = "build_progress")]
    pub progress: Option<String>,
    /// Progress lines so far in the running (or last) build.
    #[serde(rename = "build_progress_lines")]
    pub progress_lines: u64,
}

/// The live policy of a sandbox (redacted) and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInfo {
    pub sandbox_id: String,
    pub version: i64,
    pub network_policy: NetworkPolicySpec,
}

/// A decision taken on a pending approval.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalDecided {
    /// The approval as it was when decided.
    pub approval: ApprovalView,
    pub decision: Decision,
    /// The policy version that now enforces an allow-always or deny-always.
    pub policy_version: Option<i64>,
}
