//! The seam between the control plane and whatever runs sandboxes. Today runc containers
//! ([`Runtime`]); a microVM backend (QEMU microvm or Firecracker on hosts with hardware KVM) is
//! one more implementation of [`SandboxRuntime`], with no change to the plane or the firewall:
//! both only see a network namespace, an address and a CA, never the runtime's insides.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::platform::ContainerPlatform;
use crate::runtime::{ReconcileReport, Runtime};
use crate::types::{
    ExecRequest, ExecResult, Sandbox, SandboxSpec, SnapshotManifest, TemplateInfo, TemplateProgress,
};

/// What the control plane asks of a sandbox runtime. Every method is as documented on
/// [`Runtime`], the runc implementation.
#[async_trait::async_trait]
pub trait SandboxRuntime: std::fmt::Debug + Send + Sync + 'static {
    /// Makes what must exist before the sandbox's network namespace, and returns the user
    /// namespace that namespace is to be made in (`None`: the host's). A VM backend, whose
    /// guest never enters the namespace (its tap device does), returns `None`.
    async fn prepare_userns(&self, id: &str) -> Result<Option<PathBuf>>;
    /// Creates and starts a sandbox.
    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox>;
    /// Creates a sandbox from a snapshot archive.
    async fn restore(&self, archive: &Path, spec: SandboxSpec) -> Result<Sandbox>;
    /// One sandbox and its state.
    async fn get(&self, id: &str) -> Result<Sandbox>;
    /// Runs a command inside.
    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecResult>;
    /// Freezes every process.
    async fn pause(&self, id: &str) -> Result<()>;
    /// Thaws a paused sandbox.
    async fn resume(&self, id: &str) -> Result<()>;
    /// Archives the sandbox's files.
    async fn snapshot(&self, id: &str, dest: &Path) -> Result<SnapshotManifest>;
    /// Removes the sandbox and everything the runtime made for it.
    async fn delete(&self, id: &str) -> Result<()>;
    /// At start-up: removes every sandbox not in `known`.
    async fn recover(&self, known: &[String]) -> Result<ReconcileReport>;
    /// Makes a built-in template ready.
    async fn ensure_template(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(TemplateProgress) + Send),
    ) -> Result<TemplateInfo>;
    /// A template from an image archive.
    async fn create_template_from_oci_archive(
        &self,
        name: &str,
        archive: &Path,
    ) -> Result<TemplateInfo>;
    /// Deletes a template no sandbox uses.
    fn delete_template(&self, name: &str) -> Result<()>;
    /// All templates.
    fn templates(&self) -> Vec<TemplateInfo>;
}

#[async_trait::async_trait]
impl<P: ContainerPlatform> SandboxRuntime for Runtime<P> {
    async fn prepare_userns(&self, id: &str) -> Result<Option<PathBuf>> {
        Runtime::prepare_userns(self, id).await
    }
    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
        Runtime::create(self, spec).await
    }
    async fn restore(&self, archive: &Path, spec: SandboxSpec) -> Result<Sandbox> {
        Runtime::restore(self, archive, spec).await
    }
    async fn get(&self, id: &str) -> Result<Sandbox> {
        Runtime::get(self, id).await
    }
    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecResult> {
        Runtime::exec(self, id, req).await
    }
    async fn pause(&self, id: &str) -> Result<()> {
        Runtime::pause(self, id).await
    }
    async fn resume(&self, id: &str) -> Result<()> {
        Runtime::resume(self, id).await
    }
    async fn snapshot(&self, id: &str, dest: &Path) -> Result<SnapshotManifest> {
        Runtime::snapshot(self, id, dest).await
    }
    async fn delete(&self, id: &str) -> Result<()> {
        Runtime::delete(self, id).await
    }
    async fn recover(&self, known: &[String]) -> Result<ReconcileReport> {
        Runtime::reconcile(self, known).await
    }
    async fn ensure_template(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(TemplateProgress) + Send),
    ) -> Result<TemplateInfo> {
        Runtime::ensure_template(self, name, progress).await
    }
    async fn create_template_from_oci_archive(
        &self,
        name: &str,
        archive: &Path,
    ) -> Result<TemplateInfo> {
        Runtime::create_template_from_oci_archive(self, name, archive).await
    }
    fn delete_template(&self, name: &str) -> Result<()> {
        Runtime::delete_template(self, name)
    }
    fn templates(&self) -> Vec<TemplateInfo> {
        Runtime::templates(self)
    }
}
