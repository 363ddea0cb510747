//! Template management on the runtime (checks that no sandbox uses a template it changes).

use std::path::Path;

use super::Runtime;
use crate::error::{Result, RuntimeError};
use crate::platform::ContainerPlatform;
use crate::types::{TemplateInfo, TemplateProgress};

impl<P: ContainerPlatform> Runtime<P> {
    /// All templates, ready or not.
    pub fn templates(&self) -> Vec<TemplateInfo> {
        self.templates.list()
    }

    /// Makes a built-in template ready, building it once (the Debian one takes minutes; its
    /// progress goes to `progress`). A failed build leaves nothing behind and can be retried.
    pub async fn ensure_template(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(TemplateProgress) + Send),
    ) -> Result<TemplateInfo> {
        self.templates.ensure(name, progress).await
    }

    /// A template from a local root file system directory (copied).
    pub async fn create_template_from_dir(&self, name: &str, dir: &Path) -> Result<TemplateInfo> {
        self.templates.import_dir(name, dir).await
    }

    /// A template from a `docker save` or OCI image layout tarball (works offline).
    pub async fn create_template_from_oci_archive(
        &self,
        name: &str,
        archive: &Path,
    ) -> Result<TemplateInfo> {
        self.templates.import_oci_archive(name, archive).await
    }

    fn template_user(&self, name: &str) -> Option<String> {
        let rd = std::fs::read_dir(&self.sandboxes).ok()?;
        rd.flatten().find_map(|e| {
            let r = self.read_record(&e.file_name().to_string_lossy()).ok()?;
            (r.template == name).then_some(r.id)
        })
    }

    /// Renames a template no sandbox uses.
    pub fn rename_template(&self, from: &str, to: &str) -> Result<()> {
        if let Some(id) = self.template_user(from) {
            return Err(RuntimeError::TemplateInUse(from.to_owned(), id));
        }
        self.templates.rename(from, to)
    }

    /// Deletes a template no sandbox uses.
    pub fn delete_template(&self, name: &str) -> Result<()> {
        if let Some(id) = self.template_user(name) {
            return Err(RuntimeError::TemplateInUse(name.to_owned(), id));
        }
        self.templates.delete(name)
    }
}
