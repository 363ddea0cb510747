//! Crash recovery and snapshot archives on the runtime.

use std::path::Path;

use super::{ReconcileReport, Runtime, now_unix};
use crate::error::{IoContext, Result, RuntimeError};
use crate::platform::ContainerPlatform;
use crate::snapshot;
use crate::types::validate_id;
use crate::types::{SandboxState, SnapshotManifest};

impl<P: ContainerPlatform> Runtime<P> {
    /// Removes everything not in `known`: runc containers, overlay mounts, sandbox directories
    /// and interrupted template builds. Call at start-up, after a crash.
    pub async fn reconcile(&self, known: &[String]) -> Result<ReconcileReport> {
        let mut removed = Vec::new();
        for st in self.runc_list().await? {
            if !known.contains(&st.id) {
                self.teardown_checked(&st.id).await?;
                removed.push(st.id);
            }
        }
        for e in std::fs::read_dir(&self.sandboxes)
            .at(&self.sandboxes)?
            .flatten()
        {
            let id = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&id) && !removed.contains(&id) {
                if validate_id(&id).is_ok() {
                    self.teardown_checked(&id).await?;
                } else {
                    let p = e.path();
                    for m in [p.join("rootfs"), p.join("lower")] {
                        if self.platform.is_mounted(&m) {
                            self.platform.unmount(&m).at(&p)?;
                        }
                    }
                    std::fs::remove_dir_all(&p).at(&p)?;
                }
                removed.push(id);
            }
        }
        for id in self.reach_ids() {
            if !known.contains(&id) && validate_id(&id).is_ok() {
                self.unreach_bundle(&id)?;
            }
        }
        // Namespaces prepared for sandboxes that never came to be.
        for id in self.userns_ids() {
            if !known.contains(&id) && validate_id(&id).is_ok() {
                self.release_userns(&id)?;
                if !removed.contains(&id) {
                    removed.push(id);
                }
            }
        }
        self.templates.clean_staging();
        removed.sort();
        if !removed.is_empty() {
            tracing::info!(
                count = removed.len(),
                "reconcile removed orphaned sandboxes"
            );
        }
        Ok(ReconcileReport { removed })
    }

    /// Archives the sandbox's upper directory to `dest` (tar + zstd). A running sandbox is
    /// frozen while its files are read, so the archive is consistent.
    pub async fn snapshot(&self, id: &str, dest: &Path) -> Result<SnapshotManifest> {
        let sbx = self.get(id).await?;
        let freeze = sbx.state == SandboxState::Running;
        if freeze {
            self.pause(id).await?;
        }
        let manifest = SnapshotManifest {
            version: 1,
            source_sandbox: id.to_owned(),
            template: sbx.template.clone(),
            created_unix: now_unix(),
            entries: 0,
            upper_bytes: 0,
            archive_bytes: 0,
        };
        let (upper, d) = (self.dir(id).join("upper"), dest.to_path_buf());
        let base = self.host_id_base(id);
        let res = tokio::task::spawn_blocking(move || snapshot::write(&upper, &d, manifest, base))
            .await
            .map_err(|e| RuntimeError::Spec(e.to_string()));
        if freeze {
            self.resume(id).await?;
        }
        res?
    }
}
