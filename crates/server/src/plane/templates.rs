//! Templates: store rows that name a runtime template. A user template is either an alias of a
//! system template (`uri` = `system/host` or `system/debian:bookworm`) or an image imported
//! from an OCI/`docker save` archive on the host (`uri` = `oci-archive:/path.tar`).

use std::path::PathBuf;

use palisade_runtime::{DEBIAN_TEMPLATE, HOST_TEMPLATE};
use palisade_store::{NewTemplate, StoreError, TemplateRecord};

use super::PlaneError;
use super::builds::not_ready;
use super::convert::template_info;
use super::{Plane, Result};
use crate::control::{BuildState, CreateTemplate, OrgId, TemplateInfo};

const SYSTEM: [(&str, &str); 2] = [
    ("system-host", HOST_TEMPLATE),
    ("system-debian-bookworm", DEBIAN_TEMPLATE),
];
const KIND_SYSTEM: &str = "system";
const KIND_ALIAS: &str = "alias";
const KIND_OCI: &str = "oci-archive";

/// The runtime's name for a stored template.
pub(super) fn runtime_name(t: &TemplateRecord) -> String {
    match t.template.source_kind.as_str() {
        KIND_SYSTEM | KIND_ALIAS => t.template.source_uri.clone(),
        _ => format!("org/{}", t.template.id),
    }
}

impl Plane {
    pub(super) async fn seed_system_templates(&self) -> Result<()> {
        for (id, name) in SYSTEM {
            let res = self
                .store
                .insert_template(NewTemplate {
                    id: id.to_owned(),
                    org_id: None,
                    name: name.to_owned(),
                    source_kind: KIND_SYSTEM.to_owned(),
                    source_uri: name.to_owned(),
                    digest: String::new(),
                    image_config: None,
                    state: "ready".to_owned(),
                })
                .await;
            match res {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Ok when sandboxes can be made from `t` now. Otherwise a 503 at once, saying where its
    /// build stands; a template never built on this host starts building in the background.
    pub(super) fn require_template(&self, t: &TemplateRecord) -> Result<()> {
        let name = runtime_name(t);
        if name != DEBIAN_TEMPLATE {
            // The host template is always there; imported ones are built when created (one
            // missing on disk is the runtime's `not found`, as before).
            return Ok(());
        }
        let mut status = self.builds.status(self.runtime.as_ref(), &name);
        if status.state == BuildState::Absent {
            status = self.builds.start(&self.runtime, &name);
        }
        match status.state {
            BuildState::Ready => Ok(()),
            _ => Err(not_ready(&t.template.name, &t.template.id, &status)),
        }
    }

    /// The API's view of a template: the stored record and its build state.
    pub(super) fn template_view(&self, t: &TemplateRecord) -> TemplateInfo {
        let mut info = template_info(t);
        info.build = self.builds.status(self.runtime.as_ref(), &runtime_name(t));
        info
    }

    pub async fn list_templates(&self, org: &OrgId) -> Result<Vec<TemplateInfo>> {
        Ok(self
            .store
            .list_templates(&org.0)
            .await?
            .iter()
            .map(|t| self.template_view(t))
            .collect())
    }

    pub async fn rename_template(&self, org: &OrgId, id: &str, name: String) -> Result<()> {
        Ok(self.store.rename_template(&org.0, id, &name).await?)
    }

    /// Starts building a template that is not ready (one build at a time: a build already
    /// running is joined, not doubled) and returns at once with its state.
    pub async fn build_template(&self, org: &OrgId, id: &str) -> Result<TemplateInfo> {
        let rec = self.store.get_template(&org.0, id).await?;
        let name = runtime_name(&rec);
        if name != DEBIAN_TEMPLATE && name != HOST_TEMPLATE {
            // Imported templates are built when they are created; there is nothing to redo.
            return Ok(self.template_view(&rec));
        }
        self.builds.start(&self.runtime, &name);
        Ok(self.template_view(&rec))
    }

    /// Builds `name` (a system template name) and waits for the result, reporting the build's
    /// state to `watch` as it goes: for `palisade serve --prepare-template`, before serving.
    pub async fn prepare_template(
        &self,
        name: &str,
        mut watch: impl FnMut(&crate::control::BuildStatus),
    ) -> crate::control::BuildStatus {
        let mut status = self.builds.start(&self.runtime, name);
        while status.state == BuildState::Building {
            watch(&status);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            status = self.builds.status(self.runtime.as_ref(), name);
        }
        watch(&status);
        status
    }

    pub(super) async fn template_by_name(&self, org: &OrgId, name: &str) -> Result<TemplateRecord> {
        match self.store.find_template_by_name(&org.0, name).await {
            Ok(t) => Ok(t),
            Err(StoreError::NotFound(_)) => Err(PlaneError::invalid(
                "template_name",
                "no template with this name",
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create_template(&self, org: &OrgId, req: CreateTemplate) -> Result<TemplateInfo> {
        let id = palisade_store::new_id();
        let (kind, uri) = if SYSTEM.iter().any(|(_, n)| *n == req.uri) {
            (KIND_ALIAS, req.uri.clone())
        } else if let Some(path) = req.uri.strip_prefix("oci-archive:") {
            (KIND_OCI, path.to_owned())
        } else {
            return Err(PlaneError::invalid(
                "uri",
                "unsupported source: use system/host, system/debian:bookworm or \
                 oci-archive:/path/to/image.tar",
            ));
        };
        let rec = self
            .store
            .insert_template(NewTemplate {
                id: id.clone(),
                org_id: Some(org.0.clone()),
                name: req.name,
                source_kind: kind.to_owned(),
                source_uri: uri.clone(),
                digest: String::new(),
                image_config: None,
                state: if kind == KIND_ALIAS {
                    "ready"
                } else {
                    "building"
                }
                .to_owned(),
            })
            .await?;
        if kind == KIND_OCI {
            let name = runtime_name(&rec);
            let built = self
                .runtime
                .create_template_from_oci_archive(&name, &PathBuf::from(&uri))
                .await;
            if let Err(e) = built {
                let _ = self.store.delete_template(&org.0, &id).await;
                return Err(e.into());
            }
            self.store
                .update_template_build(&id, "ready", "", None)
                .await?;
        }
        let rec = self.store.get_template(&org.0, &id).await?;
        Ok(self.template_view(&rec))
    }

    pub async fn delete_template(&self, org: &OrgId, id: &str) -> Result<()> {
        let rec = self.store.delete_template(&org.0, id).await?;
        if rec.template.source_kind == KIND_OCI
            && let Err(e) = self.runtime.delete_template(&runtime_name(&rec))
        {
            tracing::warn!(template = %rec.template.id, error = %e, "runtime template left behind");
        }
        Ok(())
    }
}
