//! Timeouts: a sandbox past its deadline is deleted, or, with `auto_pause`, snapshotted and
//! stopped (restorable with `/v1/snapshot/resume`).

use std::sync::Arc;
use std::time::Duration;

use palisade_store::{SandboxState, now_ms};
use tokio::task::JoinHandle;

use super::Plane;
use crate::control::{AfterSnapshot, CreateSnapshot, OrgId};

/// Checks deadlines every `every` until the task is aborted.
pub fn spawn_sweeper(plane: Arc<Plane>, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            plane.sweep_once().await;
        }
    })
}

/// The snapshot a timed-out `auto_pause` sandbox is stopped into.
pub fn auto_pause_name(sandbox_id: &str) -> String {
    format!("auto-pause-{sandbox_id}")
}

impl Plane {
    /// One pass over the sandboxes past their deadline.
    pub async fn sweep_once(&self) {
        let due = match self.store.sandboxes_past_deadline(now_ms()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "timeout sweep could not read the store");
                return;
            }
        };
        for rec in due {
            let org = OrgId(rec.sandbox.org_id.clone());
            let res = if rec.sandbox.auto_pause && rec.sandbox.state == SandboxState::Running {
                // Snapshotted and stopped (its resources freed), resumable by this name.
                let req = CreateSnapshot {
                    name: Some(auto_pause_name(&rec.sandbox.id)),
                    after: AfterSnapshot::Stop,
                };
                self.create_snapshot(&org, &rec.sandbox.id, req)
                    .await
                    .map(|_| ())
            } else if rec.sandbox.auto_pause {
                self.store
                    .set_sandbox_deadline(&rec.sandbox.id, None)
                    .await
                    .map_err(Into::into)
            } else {
                self.delete_sandbox(&org, &rec.sandbox.id).await
            };
            match res {
                Ok(()) => {
                    tracing::info!(sandbox = %rec.sandbox.id, auto_pause = rec.sandbox.auto_pause, "sandbox timed out")
                }
                Err(e) => {
                    tracing::warn!(sandbox = %rec.sandbox.id, error = %e.chain(), "timeout handling failed")
                }
            }
        }
    }
}
