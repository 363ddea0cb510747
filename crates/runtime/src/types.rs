//! Typed requests and answers of the runtime.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// Default cap on each of stdout and stderr of one exec.
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;
/// Appended to a stream cut at the cap.
pub const TRUNCATION_MARKER: &str = "\n[palisade: output truncated]\n";

/// How the runtime is set up on this host.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where templates, sandboxes and runc state live. Must be on a file system that can hold
    /// overlayfs upper directories (ext4, xfs, tmpfs; not overlayfs itself).
    pub data_dir: PathBuf,
    /// The runc binary.
    pub runc: PathBuf,
    /// A statically linked init bind-mounted into every sandbox as PID 1.
    pub init: PathBuf,
    /// Arguments of the init (catatonit's pause mode by default).
    pub init_args: Vec<String>,
    /// Cgroup parent of every sandbox (`/<parent>/<id>` in each v1 hierarchy).
    pub cgroup_parent: String,
    /// Default pids limit of a sandbox.
    pub pids_limit: i64,
    /// Open-files limit of sandbox processes (clamped to this process's own hard limit).
    pub nofile_limit: u64,
    /// Cap on stdout and on stderr of one exec.
    pub output_cap: usize,
    /// Timeout of an exec that names none.
    pub default_exec_timeout: Duration,
    /// APT configuration directory read for the Debian mirror (`sources.list`, `sources.list.d`).
    pub apt_dir: PathBuf,
    /// Host id ranges for the sandboxes' user namespaces; `None` runs sandboxes as host root
    /// (weaker; for hosts without user namespaces or idmapped mounts).
    pub userns: Option<crate::userns::UsernsConfig>,
    /// The Debian mirror the Debian template is built from; `None`: the one `apt_dir` names.
    pub debian_mirror: Option<String>,
}

impl RuntimeConfig {
    /// The defaults for this host (Debian packages `runc` and `catatonit`).
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            runc: PathBuf::from("/usr/sbin/runc"),
            init: PathBuf::from("/usr/bin/catatonit"),
            init_args: vec!["-P".to_owned()],
            cgroup_parent: "palisade".to_owned(),
            pids_limit: 1024,
            nofile_limit: 65_536,
            output_cap: DEFAULT_OUTPUT_CAP,
            default_exec_timeout: Duration::from_secs(600),
            apt_dir: PathBuf::from("/etc/apt"),
            userns: Some(crate::userns::UsernsConfig::default()),
            debian_mirror: None,
        }
    }
}

/// What a new sandbox looks like.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// Unique id: 1–64 of `[A-Za-z0-9_-]`, starting with an alphanumeric.
    pub id: String,
    /// Template name, e.g. `system/debian:bookworm` or `system/host`.
    pub template: String,
    /// CPUs (cgroup CPU quota); `None` means unlimited.
    pub vcpu: Option<f64>,
    /// Memory limit in MiB; `None` means unlimited.
    pub memory_mib: Option<u64>,
    /// Process limit; `None` takes the runtime's default.
    pub pids_limit: Option<i64>,
    /// Environment of every process in the sandbox.
    pub env: Env,
    /// Hostname inside (defaults to the id).
    pub hostname: Option<String>,
    /// Network namespace to join (made by the caller); `None` gives an empty one.
    pub netns_path: Option<PathBuf>,
    /// The resolver written into `/etc/resolv.conf`.
    pub dns_server: Option<Ipv4Addr>,
    /// The sandbox CA certificate (PEM) to trust inside.
    pub ca_pem: Option<String>,
    /// Grant `CAP_NET_RAW` (raw and packet sockets): only for a policy that lets ICMP out to
    /// some `allow_cidrs`, because the distributions' `ping` carries that file capability
    /// and cannot even start without it.
    #[serde(default)]
    pub net_raw: bool,
}

/// A command to run in a sandbox.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// Run as `/bin/sh -c COMMAND`.
    pub command: String,
    /// Working directory inside (default `/`).
    pub cwd: Option<String>,
    /// Extra environment for this command.
    pub envs: Env,
    /// Kill the command's whole process group after this long.
    pub timeout: Option<Duration>,
}

/// Environment variables in order, `NAME` → value. Values may be secrets: `Debug` shows the
/// names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Env(pub Vec<(String, String)>);

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| format!("{k}=<redacted>")))
            .finish()
    }
}

impl From<Vec<(String, String)>> for Env {
    fn from(vars: Vec<(String, String)>) -> Self {
        Self(vars)
    }
}

impl FromIterator<(String, String)> for Env {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl std::ops::Deref for Env {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Env {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<const N: usize> PartialEq<[(String, String); N]> for Env {
    fn eq(&self, other: &[(String, String); N]) -> bool {
        self.0 == other
    }
}

impl std::fmt::Debug for SandboxSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxSpec")
            .field("id", &self.id)
            .field("template", &self.template)
            .field("vcpu", &self.vcpu)
            .field("memory_mib", &self.memory_mib)
            .field("pids_limit", &self.pids_limit)
            .field("env", &self.env)
            .field("hostname", &self.hostname)
            .field("netns_path", &self.netns_path)
            .field("dns_server", &self.dns_server)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<certificate>"))
            .field("net_raw", &self.net_raw)
            .finish()
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Exit code; `128 + signal` when killed by a signal; `-1` if unknown.
    pub exit_code: i32,
    /// Standard output (lossy UTF-8), capped, with [`TRUNCATION_MARKER`] when cut.
    pub stdout: String,
    /// Standard error, likewise.
    pub stderr: String,
    /// Whether either stream was cut.
    pub truncated: bool,
    /// Whether the timeout fired (the process group was killed).
    pub timed_out: bool,
}

/// Lifecycle state of a sandbox as runc reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Created but not started.
    Created,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Its init has exited.
    Stopped,
    /// runc does not know it (e.g. after a host reboot).
    Missing,
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Missing => "missing",
        };
        f.write_str(s)
    }
}

/// A sandbox the runtime knows about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    /// Its id.
    pub id: String,
    /// Its template.
    pub template: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// The merged root file system on the host (for the caller's diagnostics only).
    pub rootfs: PathBuf,
    /// Init's PID in the host's PID namespace, when running.
    pub init_pid: Option<i32>,
    /// State at the time of the call.
    pub state: SandboxState,
}

/// A template on this host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Its name.
    pub name: String,
    /// Where it came from (`host`, `debootstrap <mirror>`, `dir <path>`, `oci <path>`).
    pub source: String,
    /// The root file system used as the lower layer.
    pub rootfs: PathBuf,
    /// Whether it is ready to use.
    pub ready: bool,
}

/// Progress of a template build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateProgress {
    /// A build starts (what it runs).
    Started(String),
    /// One line of the builder's progress output.
    Line(String),
    /// The build finished and the template is ready.
    Done,
}

/// Describes a snapshot archive (also stored inside it as `manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotManifest {
    /// Format version (1).
    pub version: u32,
    /// The sandbox it was taken from.
    pub source_sandbox: String,
    /// Its template (needed to restore).
    pub template: String,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// Files (entries) in the upper directory.
    pub entries: u64,
    /// Bytes of file content in the upper directory.
    pub upper_bytes: u64,
    /// Bytes of the compressed archive.
    pub archive_bytes: u64,
}

/// Checks a sandbox id: it becomes a path component, a runc id and a cgroup name.
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && id.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!(
            "sandbox id {id:?} must be 1-64 of [A-Za-z0-9_-] starting with a letter or digit"
        )))
    }
}

/// Checks a hostname (RFC 1123 labels).
pub(crate) fn validate_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(format!("bad hostname {h:?}")))
    }
}

/// Checks an environment variable: no `=` or NUL in the name, no NUL in the value.
pub(crate) fn validate_env(k: &str, v: &str) -> Result<()> {
    let bad_name = k.is_empty() || k.contains('=') || k.contains('\0');
    if bad_name || v.contains('\0') {
        // The value may be a secret: never echo it.
        return Err(RuntimeError::Invalid(format!(
            "bad environment variable {k:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "types_tests.rs"]
mod tests;
