//! Snapshots: the sandbox's upper directory archived by the runtime under
//! `<data_dir>/snapshots/<id>.tar.zst`, with a store row holding the sealed policy and env.
//! A restore is a new sandbox (new id, new CA) with the snapshot's policy unless overridden.

use palisade_policy::Policy;
use palisade_store::NewSnapshot;

use super::PlaneError;
use super::convert::{full_policy, snapshot_info};
use super::sandboxes::{Launch, Needs};
use super::{Plane, Result};
use crate::control::{
    AfterSnapshot, CreateSnapshot, ListSnapshots, OrgId, Page, RestoreSnapshot, SandboxInfo,
    SnapshotInfo,
};

/// A restored sandbox's timeout when the request names none.
const DEFAULT_TIMEOUT_SECS: u32 = 300;

impl Plane {
    pub async fn create_snapshot(
        &self,
        org: &OrgId,
        sandbox_id: &str,
        CreateSnapshot { name, after }: CreateSnapshot,
    ) -> Result<SnapshotInfo> {
        let (_guard, rec) = self.lock_sandbox(org, sandbox_id, Needs::Container).await?;
        let id = palisade_store::new_id();
        let name = name.unwrap_or_else(|| format!("snapshot-{}", &id[..8]));
        let dir = self.snapshot_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(PlaneError::SnapshotDir)?;
        let archive = dir.join(format!("{id}.tar.zst"));
        // Whatever fails once the archive is being written (the runtime, reading the sandbox's
        // policy or environment, the insert) takes the archive with it.
        let stored = async {
            let manifest = self.runtime.snapshot(sandbox_id, &archive).await?;
            let live = self.store.live_policy(sandbox_id).await?;
            let env = self.store.sandbox_env(sandbox_id).await?;
            let snapshot = NewSnapshot {
                id: id.clone(),
                org_id: org.0.clone(),
                name,
                sandbox_id: Some(sandbox_id.to_owned()),
                template_id: rec.sandbox.template_id.clone(),
                resources: rec.sandbox.resources,
                state: "ready".to_owned(),
                archive_path: archive.display().to_string(),
                archive_bytes: i64::try_from(manifest.archive_bytes).unwrap_or(i64::MAX),
            };
            let policy = Some((live.full, live.redacted));
            let snap = self.store.insert_snapshot(snapshot, policy, &env).await?;
            Ok::<_, PlaneError>(snap)
        };
        let snap = match stored.await {
            Ok(s) => s,
            Err(e) => {
                let _ = tokio::fs::remove_file(&archive).await;
                return Err(e);
            }
        };
        match after {
            AfterSnapshot::KeepRunning => {}
            AfterSnapshot::Stop => self.stop_locked(org, sandbox_id).await?,
            AfterSnapshot::Delete => self.delete_locked(org, sandbox_id).await?,
        }
        snapshot_info(&snap)
    }

    pub async fn list_snapshots(
        &self,
        org: &OrgId,
        q: ListSnapshots,
    ) -> Result<Page<SnapshotInfo>> {
        let page = self.store.list_snapshots(&org.0, &q).await?;
        Ok(Page {
            items: page
                .items
                .iter()
                .map(snapshot_info)
                .collect::<Result<_, _>>()?,
            total: page.total,
        })
    }

    pub async fn delete_snapshot(&self, org: &OrgId, id: &str) -> Result<()> {
        let rec = self.store.delete_snapshot(&org.0, id).await?;
        if let Err(e) = tokio::fs::remove_file(&rec.snapshot.archive_path).await {
            tracing::warn!(snapshot = %rec.snapshot.id, error = %e, "snapshot archive not removed");
        }
        Ok(())
    }

    pub async fn restore_snapshot(&self, org: &OrgId, req: RestoreSnapshot) -> Result<SandboxInfo> {
        let snap = self.store.find_snapshot(&org.0, &req.snapshot).await?;
        let template = self
            .store
            .get_template(&org.0, &snap.snapshot.template_id)
            .await?;
        let policy = match req.network_policy {
            Some(p) => p,
            None => match self.store.snapshot_policy(&snap.snapshot.id).await? {
                Some(full) => full_policy(full.expose())?,
                None => Policy::allow_all(),
            },
        };
        let env = self.store.snapshot_env(&snap.snapshot.id).await?;
        self.launch(
            org,
            Launch {
                template,
                vcpu: super::convert::clamp_u32(snap.snapshot.resources.vcpu),
                memory_mib: super::convert::clamp_u32(snap.snapshot.resources.memory_mib),
                timeout_secs: req.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS),
                auto_pause: req.auto_pause,
                env,
                policy,
                archive: Some(snap.snapshot.archive_path.into()),
            },
        )
        .await
    }
}
