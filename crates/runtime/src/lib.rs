//! Sandboxes as runc containers: OCI spec, overlay root filesystem, templates, exec, pause and snapshot archives.
//!
//! A sandbox is a runc container whose root is an overlay (a template read-only below, a
//! per-sandbox upper directory), in a network namespace the caller made (or an empty one),
//! with cgroup CPU, memory and pids limits and a static init (catatonit) as PID 1. Commands run
//! through `runc exec`. The data directory holds `templates/`, `sandboxes/<id>/` and `runc/`.
//!
//! Platform effects (mounts, runc) sit behind [`ContainerPlatform`]; [`RecordingContainerPlatform`] records them so
//! the logic and the generated `config.json` are tested without root.

#![deny(unsafe_code)]

mod backend;
mod debian;
mod error;
mod exec;
#[expect(
    unsafe_code,
    reason = "mount_setattr(2) and its siblings have no safe wrapper"
)]
mod idmap;
mod names;
mod oci;
mod platform;
#[cfg(any(test, feature = "fake"))]
mod recording;
mod runtime;
mod seccomp;
mod snapshot;
mod spec;
mod templates;
mod trust;
mod types;
mod userns;

pub use backend::SandboxRuntime;
pub use error::{Result, RuntimeError};
pub use names::{DEBIAN_TEMPLATE, HOST_TEMPLATE};
pub use platform::{
    ContainerPlatform, HostContainerPlatform, OverlayMount, RecordingContainerPlatform,
};
#[cfg(any(test, feature = "fake"))]
pub use recording::{ExecHold, RecordingRuntime, RuntimeCall};
pub use runtime::{ReconcileReport, Runtime};
pub use spec::INIT_IN_SANDBOX;
pub use types::{
    DEFAULT_OUTPUT_CAP, Env, ExecRequest, ExecResult, RuntimeConfig, Sandbox, SandboxSpec,
    SandboxState, SnapshotManifest, TRUNCATION_MARKER, TemplateInfo, TemplateProgress,
};
pub use userns::{IDS_PER_SANDBOX, UsernsConfig};
