//! Templates: read-only root file systems below the sandboxes' overlays.
//!
//! Layout under the templates directory: `<dir_name>/template.json` and `<dir_name>/rootfs/`.
//! Builds happen in a `.staging-*` directory renamed into place only when complete, so a failed
//! or interrupted build leaves nothing that looks ready and is simply retried.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::debian;
use crate::error::{IoContext, Result, RuntimeError};
use crate::names::{DEBIAN_TEMPLATE, HOST_TEMPLATE, dir_name, validate_template_name};
use crate::oci;
use crate::types::{TemplateInfo, TemplateProgress};

static STAGING: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateMeta {
    name: String,
    source: String,
    /// Environment the image asks for (`KEY=VALUE`), placed before the sandbox's own.
    #[serde(default)]
    env: Vec<String>,
}

/// The template store.
#[derive(Debug)]
pub(crate) struct Templates {
    dir: PathBuf,
    apt_dir: PathBuf,
    /// Overrides the mirror of `apt_dir`.
    debian_mirror: Option<String>,
    build_lock: tokio::sync::Mutex<()>,
}

/// A resolved template: what a sandbox needs from it.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub rootfs: PathBuf,
    pub env: Vec<String>,
    /// Whether the template is the host's root (which can see the data directory).
    pub is_host: bool,
}

impl Templates {
    pub(crate) fn new(dir: PathBuf, apt_dir: PathBuf, debian_mirror: Option<String>) -> Self {
        Self {
            dir,
            apt_dir,
            debian_mirror,
            build_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn home(&self, name: &str) -> PathBuf {
        self.dir.join(dir_name(name))
    }

    fn read_meta(&self, home: &Path) -> Option<TemplateMeta> {
        let t = std::fs::read_to_string(home.join("template.json")).ok()?;
        serde_json::from_str(&t).ok()
    }

    /// The template a sandbox would use, if ready.
    pub(crate) fn resolve(&self, name: &str) -> Result<Resolved> {
        validate_template_name(name)?;
        if name == HOST_TEMPLATE {
            return Ok(Resolved {
                rootfs: PathBuf::from("/"),
                env: Vec::new(),
                is_host: true,
            });
        }
        let home = self.home(name);
        let meta = self
            .read_meta(&home)
            .ok_or_else(|| RuntimeError::TemplateNotFound(name.to_owned()))?;
        Ok(Resolved {
            rootfs: home.join("rootfs"),
            env: meta.env,
            is_host: false,
        })
    }

    /// Every template: the built-in ones (ready or not) and those on disk.
    pub(crate) fn list(&self) -> Vec<TemplateInfo> {
        let mut out = vec![TemplateInfo {
            name: HOST_TEMPLATE.to_owned(),
            source: "host".to_owned(),
            rootfs: PathBuf::from("/"),
            ready: true,
        }];
        let mut debian_seen = false;
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if let Some(m) = self.read_meta(&e.path()) {
                    debian_seen |= m.name == DEBIAN_TEMPLATE;
                    out.push(TemplateInfo {
                        name: m.name,
                        source: m.source,
                        rootfs: e.path().join("rootfs"),
                        ready: true,
                    });
                }
            }
        }
        if !debian_seen {
            out.push(TemplateInfo {
                name: DEBIAN_TEMPLATE.to_owned(),
                source: "debootstrap (not built yet)".to_owned(),
                rootfs: self.home(DEBIAN_TEMPLATE).join("rootfs"),
                ready: false,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A fresh staging directory for a build.
    fn staging(&self, name: &str) -> Result<PathBuf> {
        let n = STAGING.fetch_add(1, Ordering::Relaxed);
        let p = self.dir.join(format!(
            ".staging-{}-{}-{n}",
            dir_name(name),
            std::process::id()
        ));
        std::fs::create_dir_all(p.join("rootfs")).at(&p)?;
        Ok(p)
    }

    /// Moves a finished staging directory into place, writing its metadata last-but-one.
    fn commit(&self, staging: &Path, meta: &TemplateMeta) -> Result<TemplateInfo> {
        let json =
            serde_json::to_vec_pretty(meta).map_err(|e| RuntimeError::Spec(e.to_string()))?;
        std::fs::write(staging.join("template.json"), json).at(staging)?;
        let home = self.home(&meta.name);
        if home.exists() {
            return Err(RuntimeError::AlreadyExists(meta.name.clone()));
        }
        std::fs::rename(staging, &home).at(&home)?;
        Ok(TemplateInfo {
            name: meta.name.clone(),
            source: meta.source.clone(),
            rootfs: home.join("rootfs"),
            ready: true,
        })
    }

    async fn build<F>(&self, name: &str, source: String, f: F) -> Result<TemplateInfo>
    where
        F: AsyncFnOnce(&Path) -> Result<Vec<String>>,
    {
        validate_template_name(name)?;
        if name == HOST_TEMPLATE || self.home(name).exists() {
            return Err(RuntimeError::AlreadyExists(name.to_owned()));
        }
        let staging = self.staging(name)?;
        let result = match f(&staging).await {
            Ok(env) => self.commit(
                &staging,
                &TemplateMeta {
                    name: name.to_owned(),
                    source,
                    env,
                },
            ),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }

    /// Makes sure a built-in template is ready, building it (once) if needed.
    pub(crate) async fn ensure(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(TemplateProgress) + Send),
    ) -> Result<TemplateInfo> {
        validate_template_name(name)?;
        let _guard = self.build_lock.lock().await;
        if let Some(t) = self.list().into_iter().find(|t| t.name == name && t.ready) {
            progress(TemplateProgress::Done);
            return Ok(t);
        }
        if name != DEBIAN_TEMPLATE {
            return Err(RuntimeError::TemplateNotFound(name.to_owned()));
        }
        let mirror = match &self.debian_mirror {
            Some(m) => m.clone(),
            None => debian::mirror_from_apt(&self.apt_dir, debian::SUITE)?,
        };
        let source = format!("debootstrap {} {mirror}", debian::SUITE);
        let info = self
            .build(name, source, async |staging: &Path| {
                let rootfs = staging.join("rootfs");
                // debootstrap wants to create its target itself.
                std::fs::remove_dir(&rootfs).at(&rootfs)?;
                debian::debootstrap(&mirror, &rootfs, progress).await?;
                // Downloaded packages are not needed at run time.
                let cache = rootfs.join("var/cache/apt/archives");
                if let Ok(rd) = std::fs::read_dir(&cache) {
                    for e in rd
                        .flatten()
                        .filter(|e| e.path().extension().is_some_and(|x| x == "deb"))
                    {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
                Ok(Vec::new())
            })
            .await?;
        progress(TemplateProgress::Done);
        Ok(info)
    }

    /// A template copied from a local root file system directory (`cp -a`, keeping owners,
    /// modes, links, devices and extended attributes).
    pub(crate) async fn import_dir(&self, name: &str, dir: &Path) -> Result<TemplateInfo> {
        if !dir.is_dir() {
            return Err(RuntimeError::Invalid(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let source = format!("dir {}", dir.display());
        self.build(name, source, async |staging: &Path| {
            let status = tokio::process::Command::new("cp")
                .arg("-a")
                .arg("--")
                .arg(dir.join("."))
                .arg(staging.join("rootfs"))
                .status()
                .await
                .at("cp")?;
            if !status.success() {
                return Err(RuntimeError::TemplateBuild(format!(
                    "copying {} failed: {status}",
                    dir.display()
                )));
            }
            Ok(Vec::new())
        })
        .await
    }

    /// A template from a `docker save` or OCI layout tarball.
    pub(crate) async fn import_oci_archive(
        &self,
        name: &str,
        archive: &Path,
    ) -> Result<TemplateInfo> {
        let source = format!("oci {}", archive.display());
        let archive = archive.to_path_buf();
        self.build(name, source, async |staging: &Path| {
            let (scratch, rootfs) = (staging.join("blobs-scratch"), staging.join("rootfs"));
            std::fs::create_dir_all(&scratch).at(&scratch)?;
            let s2 = scratch.clone();
            let env = tokio::task::spawn_blocking(move || oci::import(&archive, &s2, &rootfs))
                .await
                .map_err(|e| RuntimeError::TemplateBuild(e.to_string()))??;
            std::fs::remove_dir_all(&scratch).at(&scratch)?;
            Ok(env)
        })
        .await
    }

    /// Renames a template (the caller has checked no sandbox uses it).
    pub(crate) fn rename(&self, from: &str, to: &str) -> Result<()> {
        validate_template_name(to)?;
        let mut meta = self.user_template(from)?;
        let (old, new) = (self.home(from), self.home(to));
        if to == HOST_TEMPLATE || new.exists() {
            return Err(RuntimeError::AlreadyExists(to.to_owned()));
        }
        to.clone_into(&mut meta.name);
        let json =
            serde_json::to_vec_pretty(&meta).map_err(|e| RuntimeError::Spec(e.to_string()))?;
        std::fs::rename(&old, &new).at(&new)?;
        std::fs::write(new.join("template.json"), json).at(&new)
    }

    /// Deletes a template (the caller has checked no sandbox uses it).
    pub(crate) fn delete(&self, name: &str) -> Result<()> {
        self.user_template(name)?;
        let home = self.home(name);
        // Drop the metadata first: a half-deleted template is never mistaken for a ready one.
        std::fs::remove_file(home.join("template.json")).at(&home)?;
        std::fs::remove_dir_all(&home).at(&home)
    }

    fn user_template(&self, name: &str) -> Result<TemplateMeta> {
        validate_template_name(name)?;
        if name == HOST_TEMPLATE {
            return Err(RuntimeError::Invalid(
                "the host template is built in".into(),
            ));
        }
        self.read_meta(&self.home(name))
            .ok_or_else(|| RuntimeError::TemplateNotFound(name.to_owned()))
    }

    /// Removes staging directories left by an interrupted build of this process or another.
    pub(crate) fn clean_staging(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(".staging-") {
                    continue;
                }
                // `.staging-<dir>-<pid>-<n>`: keep builds of live processes.
                let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
                let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
                if !alive {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}
