//! A recording [`SandboxRuntime`] for unprivileged tests of its callers (the control plane):
//! it keeps sandboxes and templates in memory with runc's states, records every call, answers
//! `exec` with a canned result, and fails any operation it is told to. It has no business
//! rules of its own: what a sandbox may do is the caller's to decide.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::SandboxRuntime;
use crate::error::{Result, RuntimeError};
use crate::names::{DEBIAN_TEMPLATE, HOST_TEMPLATE};
use crate::runtime::ReconcileReport;
use crate::types::{
    ExecRequest, ExecResult, Sandbox, SandboxSpec, SandboxState, SnapshotManifest, TemplateInfo,
    TemplateProgress,
};

/// One call as the runtime received it.
#[derive(Debug, Clone)]
pub enum RuntimeCall {
    PrepareUserns(String),
    Create(SandboxSpec),
    Restore(PathBuf, SandboxSpec),
    Exec(String, ExecRequest),
    Pause(String),
    Resume(String),
    Snapshot(String, PathBuf),
    Delete(String),
    Recover(Vec<String>),
    EnsureTemplate(String),
    ImportTemplate(String, PathBuf),
    DeleteTemplate(String),
}

impl RuntimeCall {
    /// The operation's name, as [`RecordingRuntime::fail`] takes it (`"create"`, `"exec"`…).
    pub fn op(&self) -> &'static str {
        match self {
            RuntimeCall::PrepareUserns(_) => "prepare_userns",
            RuntimeCall::Create(_) => "create",
            RuntimeCall::Restore(..) => "restore",
            RuntimeCall::Exec(..) => "exec",
            RuntimeCall::Pause(_) => "pause",
            RuntimeCall::Resume(_) => "resume",
            RuntimeCall::Snapshot(..) => "snapshot",
            RuntimeCall::Delete(_) => "delete",
            RuntimeCall::Recover(_) => "recover",
            RuntimeCall::EnsureTemplate(_) => "ensure_template",
            RuntimeCall::ImportTemplate(..) => "import_template",
            RuntimeCall::DeleteTemplate(_) => "delete_template",
        }
    }
}

#[derive(Debug)]
struct State {
    calls: Vec<RuntimeCall>,
    sandboxes: BTreeMap<String, Sandbox>,
    templates: BTreeMap<String, bool>,
    failing: HashSet<&'static str>,
    exec: ExecResult,
    hold: Option<ExecHold>,
}

/// The steps of an `exec` held by [`RecordingRuntime::hold_next_exec`], so that a test can
/// change the sandbox (or what fails) under a command: the `exec` says it is called, waits to
/// be let look (before it is recorded and looks at the container and at what is told to fail),
/// says it has looked, and waits to be let answer.
#[derive(Debug, Clone, Default)]
pub struct ExecHold {
    called: Arc<Notify>,
    look: Arc<Notify>,
    looked: Arc<Notify>,
    answer: Arc<Notify>,
}

impl ExecHold {
    /// Until the held `exec` has been called.
    pub async fn called(&self) {
        self.called.notified().await;
    }

    /// Lets it look.
    pub fn let_look(&self) {
        self.look.notify_one();
    }

    /// Until it has looked and knows its answer.
    pub async fn looked(&self) {
        self.looked.notified().await;
    }

    /// Lets it answer.
    pub fn let_answer(&self) {
        self.answer.notify_one();
    }
}

/// See the module doc.
#[derive(Debug)]
pub struct RecordingRuntime {
    state: Mutex<State>,
}

impl Default for RecordingRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordingRuntime {
    /// A runtime whose system templates (`system/host`, `system/debian:bookworm`) are built.
    pub fn new() -> Self {
        let templates = [HOST_TEMPLATE, DEBIAN_TEMPLATE]
            .into_iter()
            .map(|t| (t.to_owned(), true))
            .collect();
        Self {
            state: Mutex::new(State {
                calls: Vec::new(),
                sandboxes: BTreeMap::new(),
                templates,
                failing: HashSet::new(),
                hold: None,
                exec: ExecResult {
                    exit_code: 0,
                    stdout: String::new(),
                    stderr: String::new(),
                    truncated: false,
                    timed_out: false,
                },
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked mid-call leaves consistent maps behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<RuntimeCall> {
        self.lock().calls.clone()
    }

    /// Makes `op` (a [`RuntimeCall::op`] name) fail from now on, like runc would.
    pub fn fail(&self, op: &'static str) {
        self.lock().failing.insert(op);
    }

    /// Makes `op` succeed again.
    pub fn heal(&self, op: &'static str) {
        self.lock().failing.remove(op);
    }

    /// What every `exec` answers from now on.
    pub fn answer_exec(&self, result: ExecResult) {
        self.lock().exec = result;
    }

    /// Holds the next `exec` at its steps (see [`ExecHold`]); the ones after it run freely.
    pub fn hold_next_exec(&self) -> ExecHold {
        let hold = ExecHold::default();
        self.lock().hold = Some(hold.clone());
        hold
    }

    /// Forgets a template (or marks it not built), as on a fresh host.
    pub fn set_template(&self, name: &str, ready: Option<bool>) {
        let mut s = self.lock();
        match ready {
            Some(r) => s.templates.insert(name.to_owned(), r),
            None => s.templates.remove(name),
        };
    }

    /// Changes a sandbox's state behind the caller's back (its init died, a reboot).
    pub fn set_state(&self, id: &str, state: SandboxState) {
        if let Some(s) = self.lock().sandboxes.get_mut(id) {
            s.state = state;
        }
    }

    /// Ids of the sandboxes that exist.
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.lock().sandboxes.keys().cloned().collect()
    }

    /// Records `call`; fails it when told to.
    fn record(&self, call: RuntimeCall) -> Result<MutexGuard<'_, State>> {
        let mut s = self.lock();
        let op = call.op();
        s.calls.push(call);
        if s.failing.contains(op) {
            return Err(RuntimeError::Runc {
                op,
                id: String::new(),
                message: "injected failure".into(),
            });
        }
        Ok(s)
    }

    fn start(&self, s: &mut State, spec: &SandboxSpec) -> Result<Sandbox> {
        if s.sandboxes.contains_key(&spec.id) {
            return Err(RuntimeError::AlreadyExists(spec.id.clone()));
        }
        let sbx = Sandbox {
            id: spec.id.clone(),
            template: spec.template.clone(),
            created_unix: 0,
            rootfs: PathBuf::from("/nonexistent").join(&spec.id),
            init_pid: None,
            state: SandboxState::Running,
        };
        s.sandboxes.insert(spec.id.clone(), sbx.clone());
        Ok(sbx)
    }
}

fn set(s: &mut State, id: &str, to: SandboxState) -> Result<()> {
    let sbx = s
        .sandboxes
        .get_mut(id)
        .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
    sbx.state = to;
    Ok(())
}

fn template(name: &str, source: &str) -> TemplateInfo {
    TemplateInfo {
        name: name.to_owned(),
        source: source.to_owned(),
        rootfs: PathBuf::from("/nonexistent"),
        ready: true,
    }
}

#[async_trait::async_trait]
impl SandboxRuntime for RecordingRuntime {
    async fn prepare_userns(&self, id: &str) -> Result<Option<PathBuf>> {
        drop(self.record(RuntimeCall::PrepareUserns(id.to_owned()))?);
        Ok(None)
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
        let mut s = self.record(RuntimeCall::Create(spec.clone()))?;
        if !s.templates.get(&spec.template).copied().unwrap_or(false) {
            return Err(RuntimeError::TemplateNotFound(spec.template));
        }
        self.start(&mut s, &spec)
    }

    async fn restore(&self, archive: &Path, spec: SandboxSpec) -> Result<Sandbox> {
        let mut s = self.record(RuntimeCall::Restore(archive.to_owned(), spec.clone()))?;
        self.start(&mut s, &spec)
    }

    async fn get(&self, id: &str) -> Result<Sandbox> {
        self.lock()
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecResult> {
        let hold = self.lock().hold.take();
        if let Some(h) = &hold {
            h.called.notify_one();
            h.look.notified().await;
        }
        let answer = self
            .record(RuntimeCall::Exec(id.to_owned(), req))
            .and_then(|s| match s.sandboxes.get(id).map(|x| x.state) {
                Some(SandboxState::Running) => Ok(s.exec.clone()),
                Some(state) => Err(RuntimeError::State {
                    id: id.to_owned(),
                    state: state.to_string(),
                    op: "exec",
                }),
                None => Err(RuntimeError::NotFound(id.to_owned())),
            });
        if let Some(h) = &hold {
            h.looked.notify_one();
            h.answer.notified().await;
        }
        answer
    }

    async fn pause(&self, id: &str) -> Result<()> {
        let mut s = self.record(RuntimeCall::Pause(id.to_owned()))?;
        set(&mut s, id, SandboxState::Paused)
    }

    async fn resume(&self, id: &str) -> Result<()> {
        let mut s = self.record(RuntimeCall::Resume(id.to_owned()))?;
        set(&mut s, id, SandboxState::Running)
    }

    async fn snapshot(&self, id: &str, dest: &Path) -> Result<SnapshotManifest> {
        let s = self.record(RuntimeCall::Snapshot(id.to_owned(), dest.to_owned()))?;
        let sbx = s
            .sandboxes
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
        // The archive exists afterwards, as with the real runtime (callers remove it).
        std::fs::write(dest, b"recorded snapshot").map_err(|e| RuntimeError::io(dest, e))?;
        Ok(SnapshotManifest {
            version: 1,
            source_sandbox: id.to_owned(),
            template: sbx.template.clone(),
            created_unix: 0,
            entries: 0,
            upper_bytes: 0,
            archive_bytes: 17,
        })
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let mut s = self.record(RuntimeCall::Delete(id.to_owned()))?;
        s.sandboxes
            .remove(id)
            .map(drop)
            .ok_or_else(|| RuntimeError::NotFound(id.to_owned()))
    }

    async fn recover(&self, known: &[String]) -> Result<ReconcileReport> {
        let mut s = self.record(RuntimeCall::Recover(known.to_vec()))?;
        let removed: Vec<String> = s
            .sandboxes
            .keys()
            .filter(|id| !known.contains(id))
            .cloned()
            .collect();
        for id in &removed {
            s.sandboxes.remove(id);
        }
        Ok(ReconcileReport { removed })
    }

    async fn ensure_template(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(TemplateProgress) + Send),
    ) -> Result<TemplateInfo> {
        {
            let mut s = self.record(RuntimeCall::EnsureTemplate(name.to_owned()))?;
            s.templates.insert(name.to_owned(), true);
        }
        progress(TemplateProgress::Started(format!("build {name}")));
        progress(TemplateProgress::Done);
        Ok(template(name, "recorded"))
    }

    async fn create_template_from_oci_archive(
        &self,
        name: &str,
        archive: &Path,
    ) -> Result<TemplateInfo> {
        let mut s = self.record(RuntimeCall::ImportTemplate(
            name.to_owned(),
            archive.to_owned(),
        ))?;
        s.templates.insert(name.to_owned(), true);
        Ok(template(name, &format!("oci {}", archive.display())))
    }

    fn delete_template(&self, name: &str) -> Result<()> {
        let mut s = self.record(RuntimeCall::DeleteTemplate(name.to_owned()))?;
        s.templates
            .remove(name)
            .map(drop)
            .ok_or_else(|| RuntimeError::TemplateNotFound(name.to_owned()))
    }

    fn templates(&self) -> Vec<TemplateInfo> {
        self.lock()
            .templates
            .iter()
            .map(|(name, ready)| TemplateInfo {
                ready: *ready,
                ..template(name, "recorded")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_keeps_states_and_fails_on_request() {
        let rt = RecordingRuntime::new();
        let spec = SandboxSpec {
            id: "a1".into(),
            template: HOST_TEMPLATE.into(),
            ..SandboxSpec::default()
        };
        rt.create(spec.clone()).await.unwrap();
        assert!(matches!(
            rt.create(spec).await,
            Err(RuntimeError::AlreadyExists(_))
        ));
        rt.pause("a1").await.unwrap();
        assert!(matches!(
            rt.exec("a1", ExecRequest::default()).await,
            Err(RuntimeError::State { .. })
        ));
        rt.fail("resume");
        assert!(rt.resume("a1").await.is_err());
        assert_eq!(rt.get("a1").await.unwrap().state, SandboxState::Paused);
        let ops: Vec<_> = rt.calls().iter().map(RuntimeCall::op).collect();
        assert_eq!(ops, ["create", "create", "pause", "exec", "resume"]);
        rt.delete("a1").await.unwrap();
        assert!(rt.sandbox_ids().is_empty());
    }
}
