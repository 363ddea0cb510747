//! Wire types: the JSON bodies of requests and responses, shaped as both Leap0 SDKs (0.6.1
//! and 0.8) send and read them, and their conversion to and from the control plane's types.

use std::collections::BTreeMap;

use palisade_policy::NetworkPolicySpec;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::control::{
    AfterSnapshot, CreateSandbox, CreateSnapshot, CreateTemplate, EnvVars, Execute, RestoreSnapshot,
};
use crate::error::{ApiError, FieldProblem};

pub const DEFAULT_TEMPLATE: &str = "system/debian:bookworm";
const DEFAULT_VCPU: i64 = 1;
const DEFAULT_MEMORY_MIB: i64 = 1024;
/// Five minutes, and at most eight hours: Leap0's default and limit.
const DEFAULT_TIMEOUT_SECS: i64 = 5 * 60;
const MAX_TIMEOUT_SECS: i64 = 8 * 3600;
const MAX_ENV_VARS: usize = 256;
const MAX_ENV_NAME: usize = 256;
const MAX_ENV_VALUE: usize = 32 * 1024;
const MAX_NAME: usize = 64;
const MAX_COMMAND: usize = 256 * 1024;

/// Collects problems so one answer lists every bad field.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<FieldProblem>);

impl Problems {
    pub(crate) fn add(&mut self, field: impl Into<String>, error: impl Into<String>) {
        self.0.push(FieldProblem {
            field: field.into(),
            error: error.into(),
        });
    }
    pub(crate) fn extend(&mut self, e: ApiError) {
        match e {
            ApiError::Validation(list) => self.0.extend(list),
            other => self.add("request", other.to_string()),
        }
    }
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ApiError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

/// The body of `POST …/network-policy/suggestion/apply` (optional).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplySuggestionRequest {
    /// Keep audit mode on in the applied policy (default: off, so the policy enforces).
    #[serde(default)]
    pub keep_audit: bool,
}

/// What `POST …/network-policy/suggestion/apply` applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplySuggestionResponse {
    /// The policy now enforced (redacted) and its version.
    pub policy: PolicyResponse,
    /// The suggestion it was built from.
    pub suggestion: crate::suggest::Suggestion,
}

/// Parse and validate a `network_policy` value (`null` or absent: none given).
pub(crate) fn parse_policy(
    value: Option<serde_json::Value>,
) -> Result<Option<palisade_policy::Policy>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bytes = serde_json::to_vec(&value)
        .map_err(|_| ApiError::field("network_policy", "is not valid JSON"))?;
    let spec = NetworkPolicySpec::from_json(&bytes)?;
    Ok(Some(spec.validate()?))
}

fn check_template_name(p: &mut Problems, field: &str, name: &str) -> String {
    let name = name.trim();
    if name.is_empty() {
        p.add(field, "must be a non-empty string");
    } else if name.len() > MAX_NAME {
        p.add(field, "must be at most 64 characters");
    }
    name.to_owned()
}

fn check_env(p: &mut Problems, field: &str, env: Option<BTreeMap<String, String>>) -> EnvVars {
    let env = env.unwrap_or_default();
    if env.len() > MAX_ENV_VARS {
        p.add(
            field,
            format!("must contain at most {MAX_ENV_VARS} entries"),
        );
    }
    for (k, v) in &env {
        let bad_name =
            k.is_empty() || k.len() > MAX_ENV_NAME || k.contains('=') || k.contains('\0');
        if bad_name {
            // The name is shown only when short and printable; values never are.
            let shown = if k.len() <= 64 && k.chars().all(|c| c.is_ascii_graphic()) {
                k.as_str()
            } else {
                "?"
            };
            p.add(
                format!("{field}.{shown}"),
                "must be a non-empty name without '=' or NUL, at most 256 bytes",
            );
        } else if v.len() > MAX_ENV_VALUE || v.contains('\0') {
            p.add(
                format!("{field}.{k}"),
                "value must be at most 32 KiB without NUL bytes",
            );
        }
    }
    EnvVars(env)
}

fn check_timeout(p: &mut Problems, secs: Option<i64>, minutes: Option<i64>) -> Option<u32> {
    match (secs, minutes) {
        (Some(_), Some(_)) => {
            p.add(
                "timeout",
                "give either timeout (seconds) or timeout_min, not both",
            );
            None
        }
        (Some(s), None) => {
            if (1..=MAX_TIMEOUT_SECS).contains(&s) {
                u32::try_from(s).ok()
            } else {
                p.add("timeout", "must be between 1 and 28800");
                None
            }
        }
        (None, Some(m)) => {
            if (1..=MAX_TIMEOUT_SECS / 60).contains(&m) {
                u32::try_from(m * 60).ok()
            } else {
                p.add("timeout_min", "must be between 1 and 480");
                None
            }
        }
        (None, None) => None,
    }
}

/// `POST /v1/sandbox`. SDK 0.6.1 sends `memory_mib`/`timeout_min`, 0.8 `memory`/`timeout`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    pub template_name: Option<String>,
    #[schema(minimum = 1, maximum = 8)]
    pub vcpu: Option<i64>,
    /// MiB (SDK 0.8).
    #[schema(minimum = 512, maximum = 8192, multiple_of = 2)]
    pub memory: Option<i64>,
    /// MiB (SDK 0.6.1).
    #[schema(minimum = 512, maximum = 8192, multiple_of = 2)]
    pub memory_mib: Option<i64>,
    /// Seconds (SDK 0.8).
    #[schema(minimum = 1, maximum = 28800)]
    pub timeout: Option<i64>,
    /// Minutes (SDK 0.6.1).
    #[schema(minimum = 1, maximum = 480)]
    pub timeout_min: Option<i64>,
    pub auto_pause: Option<bool>,
    /// Accepted and ignored (the SDKs strip it before sending).
    pub otel_export: Option<bool>,
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<NetworkPolicySpec>)]
    pub network_policy: Option<serde_json::Value>,
    /// Object-storage mounts (SDK 0.8): not supported; a non-empty list is refused.
    #[schema(value_type = Option<Vec<Object>>)]
    pub mounts: Option<Vec<serde_json::Value>>,
}

impl TryFrom<CreateSandboxRequest> for CreateSandbox {
    type Error = ApiError;
    fn try_from(r: CreateSandboxRequest) -> Result<Self, ApiError> {
        let mut p = Problems::default();
        let template_name = check_template_name(
            &mut p,
            "template_name",
            r.template_name.as_deref().unwrap_or(DEFAULT_TEMPLATE),
        );
        let vcpu = r.vcpu.unwrap_or(DEFAULT_VCPU);
        if !(1..=8).contains(&vcpu) {
            p.add("vcpu", "must be between 1 and 8");
        }
        let (mem_field, memory) = match (r.memory, r.memory_mib) {
            (Some(a), Some(b)) if a != b => {
                p.add("memory", "memory and memory_mib disagree; give one");
                ("memory", a)
            }
            (Some(a), _) => ("memory", a),
            (None, Some(b)) => ("memory_mib", b),
            (None, None) => ("memory", DEFAULT_MEMORY_MIB),
        };
        if !(512..=8192).contains(&memory) || memory % 2 != 0 {
            p.add(mem_field, "must be an even number between 512 and 8192");
        }
        let timeout_secs = check_timeout(&mut p, r.timeout, r.timeout_min);
        let env_vars = check_env(&mut p, "env_vars", r.env_vars);
        if r.mounts.is_some_and(|m| !m.is_empty()) {
            p.add(
                "mounts",
                "object storage mounts are not supported by this server",
            );
        }
        let network_policy = match parse_policy(r.network_policy) {
            Ok(policy) => policy,
            Err(e) => {
                p.extend(e);
                None
            }
        };
        let cmd = CreateSandbox {
            template_name,
            vcpu: u32::try_from(vcpu).unwrap_or(1),
            memory_mib: u32::try_from(memory).unwrap_or(0),
            timeout_secs: timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS as u32),
            auto_pause: r.auto_pause.unwrap_or(false),
            env_vars,
            network_policy,
        };
        p.finish(cmd)
    }
}

/// `POST /v1/sandbox/{id}/snapshot/create` and `/snapshot/pause`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    pub name: Option<String>,
    /// SDK 0.8: delete the sandbox once the snapshot is stored.
    pub kill_sandbox_after: Option<bool>,
}

impl TryFrom<CreateSnapshotRequest> for CreateSnapshot {
    type Error = ApiError;
    fn try_from(r: CreateSnapshotRequest) -> Result<Self, ApiError> {
        let mut p = Problems::default();
        let name = r.name.map(|n| check_template_name(&mut p, "name", &n));
        let after = if r.kill_sandbox_after.unwrap_or(false) {
            AfterSnapshot::Delete
        } else {
            AfterSnapshot::KeepRunning
        };
        p.finish(CreateSnapshot { name, after })
    }
}

impl CreateSnapshot {
    /// SDK 0.6.1's pause-snapshot: the sandbox stops once its snapshot is stored, unless
    /// `kill_sandbox_after` asked for it to be deleted.
    pub(crate) fn stopping(mut self) -> Self {
        if self.after == AfterSnapshot::KeepRunning {
            self.after = AfterSnapshot::Stop;
        }
        self
    }
}

/// `POST /v1/snapshot/restore` (SDK 0.8, `timeout` seconds) and `/v1/snapshot/resume`
/// (SDK 0.6.1, `timeout_min`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreSnapshotRequest {
    pub snapshot_name: String,
    pub auto_pause: Option<bool>,
    /// Seconds (SDK 0.8).
    #[schema(minimum = 1, maximum = 28800)]
    pub timeout: Option<i64>,
    /// Minutes (SDK 0.6.1).
    #[schema(minimum = 1, maximum = 480)]
    pub timeout_min: Option<i64>,
    #[schema(value_type = Option<NetworkPolicySpec>)]
    pub network_policy: Option<serde_json::Value>,
}

impl TryFrom<RestoreSnapshotRequest> for RestoreSnapshot {
    type Error = ApiError;
    fn try_from(r: RestoreSnapshotRequest) -> Result<Self, ApiError> {
        let mut p = Problems::default();
        let snapshot = check_template_name(&mut p, "snapshot_name", &r.snapshot_name);
        let timeout_secs = check_timeout(&mut p, r.timeout, r.timeout_min);
        let network_policy = match parse_policy(r.network_policy) {
            Ok(policy) => policy,
            Err(e) => {
                p.extend(e);
                None
            }
        };
        p.finish(RestoreSnapshot {
            snapshot,
            auto_pause: r.auto_pause.unwrap_or(false),
            timeout_secs,
            network_policy,
        })
    }
}

/// `POST /v1/template`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplateRequest {
    pub name: String,
    pub uri: String,
    /// Registry credentials: not supported (no registry access); refused when given.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<serde_json::Value>,
}

fn check_user_template_name(p: &mut Problems, name: &str) -> String {
    let name = check_template_name(p, "name", name);
    if name.starts_with("system/") {
        p.add("name", "must not start with 'system/'");
    }
    if name.chars().any(char::is_whitespace) {
        p.add("name", "must not contain whitespace");
    }
    name
}

impl TryFrom<CreateTemplateRequest> for CreateTemplate {
    type Error = ApiError;
    fn try_from(r: CreateTemplateRequest) -> Result<Self, ApiError> {
        let mut p = Problems::default();
        let name = check_user_template_name(&mut p, &r.name);
        let uri = r.uri.trim().to_owned();
        if uri.is_empty() || uri.len() > 500 {
            p.add(
                "uri",
                "must be a non-empty string of at most 500 characters",
            );
        }
        if r.credentials.is_some_and(|c| !c.is_null()) {
            p.add(
                "credentials",
                "registry credentials are not supported by this server",
            );
        }
        p.finish(CreateTemplate { name, uri })
    }
}

/// `PATCH /v1/template/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameTemplateRequest {
    pub name: String,
}

impl RenameTemplateRequest {
    pub(crate) fn into_name(self) -> Result<String, ApiError> {
        let mut p = Problems::default();
        let name = check_user_template_name(&mut p, &self.name);
        p.finish(name)
    }
}

/// `POST /v1/sandbox/{id}/process/execute`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    pub command: String,
    pub cwd: Option<String>,
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub envs: Option<BTreeMap<String, String>>,
    /// Seconds.
    #[schema(minimum = 1, maximum = 28800)]
    pub timeout: Option<i64>,
}

impl TryFrom<ExecuteRequest> for Execute {
    type Error = ApiError;
    fn try_from(r: ExecuteRequest) -> Result<Self, ApiError> {
        let mut p = Problems::default();
        if r.command.trim().is_empty() || r.command.len() > MAX_COMMAND || r.command.contains('\0')
        {
            p.add(
                "command",
                "must be a non-empty shell command without NUL bytes, at most 256 KiB",
            );
        }
        if let Some(cwd) = &r.cwd
            && (!cwd.starts_with('/') || cwd.contains('\0') || cwd.len() > 4096)
        {
            p.add("cwd", "must be an absolute path");
        }
        let env = check_env(&mut p, "envs", r.envs);
        let timeout_secs = match r.timeout {
            None => None,
            Some(t) if (1..=MAX_TIMEOUT_SECS).contains(&t) => u32::try_from(t).ok(),
            Some(_) => {
                p.add("timeout", "must be between 1 and 28800");
                None
            }
        };
        p.finish(Execute {
            command: r.command,
            cwd: r.cwd,
            env,
            timeout_secs,
        })
    }
}

#[path = "model_responses.rs"]
mod responses;
pub use responses::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// What happens to the sandbox after its snapshot, by route and by `kill_sandbox_after`.
    #[test]
    fn a_snapshot_request_says_what_becomes_of_the_sandbox() {
        use AfterSnapshot::{Delete, KeepRunning, Stop};
        let cases = [
            (None, KeepRunning, Stop),
            (Some(false), KeepRunning, Stop),
            (Some(true), Delete, Delete),
        ];
        for (kill, create, pause) in cases {
            let req = || CreateSnapshotRequest {
                name: Some("nightly".into()),
                kill_sandbox_after: kill,
            };
            let cmd = CreateSnapshot::try_from(req()).unwrap();
            assert_eq!((cmd.name.as_deref(), cmd.after), (Some("nightly"), create));
            let paused = CreateSnapshot::try_from(req()).unwrap().stopping();
            assert_eq!(paused.after, pause, "kill_sandbox_after: {kill:?}");
        }
        let bad = CreateSnapshotRequest {
            name: Some("  ".into()),
            kill_sandbox_after: None,
        };
        let err = CreateSnapshot::try_from(bad).unwrap_err();
        assert!(format!("{err:?}").contains("\"name\""), "{err:?}");
    }
}
