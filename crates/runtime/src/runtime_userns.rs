//! The runtime's user namespaces: made before the sandbox's network namespace (which must
//! belong to it, so that `runc exec` can enter both), used by the spec and the idmapped lower
//! layer, removed with the sandbox.

use std::path::{Path, PathBuf};

use super::Runtime;
use crate::error::{IoContext, Result, RuntimeError};
use crate::platform::ContainerPlatform;
use crate::types::{SandboxSpec, validate_id};
use crate::userns::{IDS_PER_SANDBOX, Userns};

impl<P: ContainerPlatform> Runtime<P> {
    /// Makes the sandbox's user namespace ahead of [`Runtime::create`] and returns its pinned
    /// file, or `None` when user namespaces are off. A caller that makes the network namespace
    /// itself makes it inside this one (`palisade-netns`'s `owner_userns`); `create` then
    /// joins both. Idempotent; [`Runtime::delete`] removes it, also when `create` never ran.
    pub async fn prepare_userns(&self, id: &str) -> Result<Option<PathBuf>> {
        validate_id(id)?;
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        if let Some(u) = slots.get(id)
            && self.platform.is_mounted(&u.ns_file)
        {
            return Ok(Some(u.ns_file));
        }
        let home = slots.home(id);
        std::fs::create_dir_all(&home).at(&home)?;
        // A namespace lost with its pin (a host reboot) is made again in the range it had.
        let slot = match crate::userns::read_slot(&home) {
            Some(s) => s,
            None => slots.allocate()?,
        };
        let ns_file = home.join("ns");
        let made = std::fs::write(home.join("slot"), slot.to_string())
            .at(&home)
            .and_then(|()| {
                self.platform
                    .create_userns(&ns_file, slots.base(slot), IDS_PER_SANDBOX)
                    .map_err(|e| RuntimeError::io(&ns_file, e))
            });
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&home);
            slots.release(slot);
            return Err(e);
        }
        Ok(Some(ns_file))
    }

    /// The namespace `create` uses: the prepared one, or one made now when runc makes the
    /// network namespace too. A network namespace made outside any prepared namespace belongs
    /// to the host's, which `runc exec` (1.1) could not enter from the sandbox's: refused.
    pub(super) async fn userns_for_create(&self, spec: &SandboxSpec) -> Result<Option<Userns>> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        if let Some(u) = slots.get(&spec.id) {
            return Ok(Some(u));
        }
        if spec.netns_path.is_some() {
            return Err(RuntimeError::Invalid(format!(
                "sandbox {}: its network namespace must be made inside its user namespace \
                 (Runtime::prepare_userns first)",
                spec.id
            )));
        }
        self.prepare_userns(&spec.id).await?;
        Ok(slots.get(&spec.id))
    }

    /// The first host id of the sandbox's range, if it has one.
    pub fn host_id_base(&self, id: &str) -> Option<u32> {
        self.slots.as_ref()?.get(id).map(|u| u.base)
    }

    pub(super) fn has_userns(&self, id: &str) -> bool {
        self.slots.as_ref().is_some_and(|s| s.home(id).exists())
    }

    /// The template seen through the sandbox's ids (`<dir>/lower`), and the writable layers
    /// owned by its root, so overlayfs' view is the sandbox's own.
    pub(super) fn idmapped_lower(
        &self,
        dir: &Path,
        template: &Path,
        u: &Userns,
        upper: &Path,
        work: &Path,
    ) -> Result<PathBuf> {
        for d in [upper, work] {
            std::os::unix::fs::chown(d, Some(u.base), Some(u.base)).at(d)?;
        }
        let lower = dir.join("lower");
        std::fs::create_dir(&lower).at(&lower)?;
        self.platform
            .idmapped_bind(template, &lower, &u.ns_file)
            .map_err(|e| RuntimeError::io(&lower, e))?;
        Ok(lower)
    }

    /// Makes the sandbox directory reachable to the sandbox's root: the host's data directory
    /// is private (0700, the store lives there), so runc, which sets the root file system up
    /// as the sandbox's root, could not even look its bundle up. The directory (0710, group
    /// of the sandbox's root) with its mounts is bind-mounted at `<reach>/<id>`, below
    /// directories anyone may traverse and only root may list. Returns the root file system
    /// and `/etc` files as seen there.
    pub(super) fn reach_bundle(
        &self,
        id: &str,
        dir: &Path,
        u: &Userns,
        etc_files: Vec<(PathBuf, &'static str)>,
    ) -> Result<(PathBuf, Vec<(PathBuf, &'static str)>)> {
        use std::os::unix::fs::PermissionsExt;
        let at = self.reach.join(id);
        // A delete of the last sandbox removes `reach` itself: try again if it went away.
        let mut tries = 0;
        loop {
            for d in [self.reach.parent().unwrap_or(&self.reach), &self.reach] {
                std::fs::create_dir_all(d).at(d)?;
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).at(d)?;
            }
            match std::fs::create_dir(&at) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
                r => break r.at(&at)?,
            }
        }
        std::os::unix::fs::chown(dir, Some(0), Some(u.base)).at(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710)).at(dir)?;
        self.platform
            .rbind(dir, &at)
            .map_err(|e| RuntimeError::io(&at, e))?;
        let etc = etc_files
            .into_iter()
            .map(|(p, dest)| {
                let rel = p.strip_prefix(dir).map(Path::to_path_buf).unwrap_or(p);
                (at.join(rel), dest)
            })
            .collect();
        Ok((at.join("rootfs"), etc))
    }

    /// Removes `<reach>/<id>`; idempotent. Never recursive: the mount below is the bundle.
    pub(super) fn unreach_bundle(&self, id: &str) -> Result<()> {
        let at = self.reach.join(id);
        if self.platform.is_mounted(&at) {
            self.platform
                .unmount(&at)
                .map_err(|e| RuntimeError::io(&at, e))?;
        }
        match std::fs::remove_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(RuntimeError::io(&at, e)),
        }
        // Empty once the last sandbox is gone (fails while others are there: fine).
        let _ = std::fs::remove_dir(&self.reach);
        Ok(())
    }

    /// Ids with an entry in the reach directory (for reconcile).
    pub(super) fn reach_ids(&self) -> Vec<String> {
        crate::userns::entry_names(&self.reach)
    }

    /// Unpins the namespace and frees its range. Idempotent.
    pub(super) fn release_userns(&self, id: &str) -> Result<()> {
        let Some(slots) = &self.slots else {
            return Ok(());
        };
        let home = slots.home(id);
        if !home.exists() {
            return Ok(());
        }
        let ns_file = home.join("ns");
        if self.platform.is_mounted(&ns_file) {
            self.platform
                .unmount(&ns_file)
                .map_err(|e| RuntimeError::io(&ns_file, e))?;
        }
        let slot = crate::userns::read_slot(&home);
        std::fs::remove_dir_all(&home).at(&home)?;
        if let Some(s) = slot {
            slots.release(s);
        }
        Ok(())
    }

    /// Ids with a user namespace directory (for reconcile).
    pub(super) fn userns_ids(&self) -> Vec<String> {
        self.slots.as_ref().map(|s| s.ids()).unwrap_or_default()
    }
}
