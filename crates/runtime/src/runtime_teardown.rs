//! Removing a sandbox: container, cgroups, mounts, directory and user namespace, each step
//! tried even when one before it failed.

use super::{Runtime, os, runc_message};
use crate::error::{IoContext, Result, RuntimeError};
use crate::platform::ContainerPlatform;
use crate::types::validate_id;

impl<P: ContainerPlatform> Runtime<P> {
    /// Kills the sandbox and removes its container, cgroups, mount and directory. The caller
    /// removes the network namespace and firewall chain it made.
    pub async fn delete(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let known = self.dir(id).exists()
            || self.has_userns(id)
            || self.runc_list().await?.iter().any(|s| s.id == id);
        if !known {
            return Err(RuntimeError::NotFound(id.to_owned()));
        }
        self.teardown_checked(id).await
    }

    /// Removal that reports the first failure (but tries every step).
    pub(super) async fn teardown_checked(&self, id: &str) -> Result<()> {
        let out = self
            .platform
            .runc(vec![os("delete"), os("--force"), os(id)])
            .await
            .at("runc delete")?;
        let runc_err = (!out.status.success())
            .then(|| runc_message(&out))
            .filter(|m| !m.contains("does not exist") && !m.contains("not exist"));
        // runc removes the cgroups it knows; this catches those whose state it lost.
        let cgroup = format!("/{}/{id}", self.cfg.cgroup_parent);
        self.platform
            .remove_cgroup(&cgroup)
            .map_err(|e| RuntimeError::io(&cgroup, e))?;
        let dir = self.dir(id);
        let rootfs = dir.join("rootfs");
        self.unreach_bundle(id)?;
        if self.platform.is_mounted(&rootfs) {
            self.platform
                .unmount(&rootfs)
                .map_err(|e| RuntimeError::io(&rootfs, e))?;
        }
        let lower = dir.join("lower");
        if self.platform.is_mounted(&lower) {
            self.platform
                .unmount(&lower)
                .map_err(|e| RuntimeError::io(&lower, e))?;
        }
        for m in [&rootfs, &lower] {
            if self.platform.is_mounted(m) {
                // Never recurse into a live merged root or a template (the host's root).
                return Err(RuntimeError::io(m, std::io::Error::other("still mounted")));
            }
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).at(&dir)?;
        }
        self.release_userns(id)?;
        match runc_err {
            Some(message) => Err(RuntimeError::Runc {
                op: "delete",
                id: id.to_owned(),
                message,
            }),
            None => Ok(()),
        }
    }

    pub(super) async fn teardown(&self, id: &str) {
        if let Err(e) = self.teardown_checked(id).await {
            tracing::warn!(sandbox = id, error = %e, "cleaning up a sandbox failed");
        }
    }
}
