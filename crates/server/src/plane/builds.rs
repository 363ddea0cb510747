//! Template builds in the background. A create never waits for one: a template that is not
//! ready answers 503 at once with its state and, after a failure, the cause. One build per
//! template at a time (a second request joins the running one; the runtime also builds one
//! template at a time); a failed build is retried only when asked (`POST
//! /v1/template/{id}/build`, `palisade template build`), or after a restart by the first create.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use palisade_runtime::{HOST_TEMPLATE, RuntimeError, SandboxRuntime, TemplateProgress};
use palisade_store::now_ms;

use super::PlaneError;
use crate::control::{BuildState, BuildStatus};

/// Builds by runtime template name; clones share them.
#[derive(Debug, Clone, Default)]
pub(super) struct Builds {
    inner: Arc<Mutex<HashMap<String, BuildStatus>>>,
}

type Map = HashMap<String, BuildStatus>;

fn lock(m: &Mutex<Map>) -> std::sync::MutexGuard<'_, Map> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Builds {
    /// Where `name` stands: ready when the runtime has it, else what its last build said.
    pub(super) fn status(&self, runtime: &dyn SandboxRuntime, name: &str) -> BuildStatus {
        let known = lock(&self.inner).get(name).cloned();
        let ready = name == HOST_TEMPLATE
            || runtime
                .templates()
                .iter()
                .any(|t| t.name == name && t.ready);
        match known {
            Some(s) if s.state == BuildState::Building => s,
            Some(s) if ready => BuildStatus {
                state: BuildState::Ready,
                error: None,
                ..s
            },
            _ if ready => BuildStatus::default(),
            Some(s) => s,
            None => BuildStatus {
                state: BuildState::Absent,
                ..BuildStatus::default()
            },
        }
    }

    /// Starts a build of `name` unless it is ready or already building; returns the state
    /// right after (never waits for the build).
    pub(super) fn start(&self, runtime: &Arc<dyn SandboxRuntime>, name: &str) -> BuildStatus {
        let current = self.status(runtime.as_ref(), name);
        if matches!(current.state, BuildState::Ready | BuildState::Building) {
            return current;
        }
        let started = BuildStatus {
            state: BuildState::Building,
            started_at_ms: Some(now_ms()),
            ..BuildStatus::default()
        };
        {
            let mut map = lock(&self.inner);
            // Checked again under the lock: two requests at once start one build.
            if map
                .get(name)
                .is_some_and(|s| s.state == BuildState::Building)
            {
                return map.get(name).cloned().unwrap_or_default();
            }
            map.insert(name.to_owned(), started.clone());
        }
        tracing::info!(template = %name, "template build started");
        let (inner, runtime, name) = (
            Arc::clone(&self.inner),
            Arc::clone(runtime),
            name.to_owned(),
        );
        tokio::spawn(async move {
            let progress_map = Arc::clone(&inner);
            let progress_name = name.clone();
            let mut progress = move |p: TemplateProgress| {
                let line = match p {
                    TemplateProgress::Started(what) => what,
                    TemplateProgress::Line(line) => line,
                    TemplateProgress::Done => return,
                };
                tracing::debug!(template = %progress_name, %line, "template build");
                if let Some(s) = lock(&progress_map).get_mut(&progress_name) {
                    s.progress_lines += 1;
                    s.progress = Some(line);
                }
            };
            let result = runtime.ensure_template(&name, &mut progress).await;
            let mut map = lock(&inner);
            let Some(s) = map.get_mut(&name) else {
                return;
            };
            s.finished_at_ms = Some(now_ms());
            match result {
                Ok(_) => {
                    tracing::info!(template = %name, "template build done");
                    s.state = BuildState::Ready;
                    s.error = None;
                }
                Err(e) => {
                    tracing::warn!(template = %name, error = %e, "template build failed");
                    s.state = BuildState::Failed;
                    // The cause alone: the state already says the build failed.
                    s.error = Some(match e {
                        RuntimeError::TemplateBuild(cause) => cause,
                        other => other.to_string(),
                    });
                }
            }
        });
        started
    }
}

/// The 503 a create gets on a template that is not ready: its state, and the cause or the way
/// to wait for it.
pub(super) fn not_ready(name: &str, id: &str, s: &BuildStatus) -> PlaneError {
    let retry = format!(
        "retry the build with POST /v1/template/{id}/build or `palisade template build {name}`"
    );
    let msg = match s.state {
        BuildState::Building => {
            let secs = s
                .started_at_ms
                .map(|t| (now_ms() - t).max(0) / 1000)
                .unwrap_or(0);
            let now = s
                .progress
                .as_deref()
                .map(|p| format!("; last step: {}", p.chars().take(160).collect::<String>()))
                .unwrap_or_default();
            format!(
                "template {name} is not ready: building (started {secs} s ago{now}); \
                 try again when GET /v1/templates shows its build_state ready"
            )
        }
        BuildState::Failed => format!(
            "template {name} is not ready: its build failed: {}; {retry}",
            s.error.as_deref().unwrap_or("unknown cause")
        ),
        BuildState::Absent => format!("template {name} is not built yet; {retry}"),
        BuildState::Ready => format!("template {name} is ready"),
    };
    PlaneError::TemplateNotReady(msg)
}
