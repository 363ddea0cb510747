//! The runtime: sandboxes as runc containers on overlay root file systems.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, RuntimeError};
use crate::platform::{ContainerPlatform, HostContainerPlatform, OverlayMount};
use crate::spec::{self, SpecInput};
use crate::templates::Templates;
use crate::types::{
    ExecRequest, ExecResult, RuntimeConfig, Sandbox, SandboxSpec, SandboxState, validate_env,
    validate_hostname, validate_id,
};
use crate::userns::{Slots, Userns};
use crate::{exec, snapshot};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What `sandbox.json` records about a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    template: String,
    created_unix: u64,
}

/// One entry of `runc list --format json` / `runc state`.
#[derive(Debug, Deserialize)]
struct RuncState {
    id: String,
    pid: i32,
    status: String,
}

/// What `reconcile` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Ids of sandboxes (containers, mounts, directories) removed.
    pub removed: Vec<String>,
}

/// Sandboxes on this host. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Runtime<P: ContainerPlatform = HostContainerPlatform> {
    cfg: RuntimeConfig,
    platform: P,
    templates: Templates,
    sandboxes: PathBuf,
    seq: AtomicU64,
    /// User namespace ranges (`None` when the configuration turns them off).
    slots: Option<Slots>,
    /// Where a sandbox's root reaches its bundle (see `runtime_userns.rs`).
    reach: PathBuf,
}

impl Runtime<HostContainerPlatform> {
    /// The runtime on this host, with runc state under `<data_dir>/runc`.
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        let data = prepare_data_dir(&cfg.data_dir)?;
        let platform = HostContainerPlatform::new(cfg.runc.clone(), data.join("runc"));
        Self::with_platform(cfg, platform)
    }
}

fn prepare_data_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).at(dir)?;
    let data = dir.canonicalize().at(dir)?;
    // The data directory appears in overlay mount options.
    let ok = data
        .to_str()
        .is_some_and(|s| !s.contains([',', ':', '\\', ' ', '\n']));
    if !ok {
        return Err(RuntimeError::Invalid(format!(
            "data directory {} must be UTF-8 without , : \\ or whitespace",
            data.display()
        )));
    }
    Ok(data)
}

/// This process's hard open-files limit, from `/proc/self/limits`.
fn own_nofile_hard() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = t.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn runc_message(out: &std::process::Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr);
    s.trim().chars().take(1000).collect()
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

/// Writes a file only root can read (a sandbox's spec holds its environment).
fn write_private(p: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .at(p)?;
    f.write_all(data).at(p)
}

impl<P: ContainerPlatform> Runtime<P> {
    /// The runtime with the given platform (tests pass a `RecordingContainerPlatform`).
    pub fn with_platform(mut cfg: RuntimeConfig, platform: P) -> Result<Self> {
        let data = prepare_data_dir(&cfg.data_dir)?;
        cfg.data_dir = data.clone();
        for sub in ["templates", "sandboxes", "runc"] {
            let p = data.join(sub);
            std::fs::create_dir_all(&p).at(&p)?;
            // Sandbox configs hold the caller's environment (possibly secrets): root only.
            if sub != "templates" {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).at(&p)?;
            }
        }
        if cfg.cgroup_parent.is_empty()
            || !cfg
                .cgroup_parent
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(RuntimeError::Invalid(format!(
                "bad cgroup parent {:?}",
                cfg.cgroup_parent
            )));
        }
        // runc cannot raise a hard limit above its own.
        if let Some(hard) = own_nofile_hard() {
            cfg.nofile_limit = cfg.nofile_limit.min(hard);
        }
        let templates = Templates::new(
            data.join("templates"),
            cfg.apt_dir.clone(),
            cfg.debian_mirror.clone(),
        );
        let slots = cfg
            .userns
            .map(|u| Slots::recover(u, data.join("userns")))
            .transpose()?;
        Ok(Self {
            templates,
            sandboxes: data.join("sandboxes"),
            cfg,
            platform,
            seq: AtomicU64::new(0),
            slots,
            reach: crate::userns::reach_dir(&data),
        })
    }

    /// The platform (for tests).
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The configuration in force (with the data directory made absolute).
    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.sandboxes.join(id)
    }

    // ---- lifecycle ----

    /// Creates and starts a sandbox.
    pub async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
        self.create_inner(spec, None).await
    }

    /// Creates a sandbox whose upper layer is unpacked from a snapshot archive. An empty
    /// `spec.template` takes the snapshot's.
    pub async fn restore(&self, archive: &Path, mut spec: SandboxSpec) -> Result<Sandbox> {
        let a = archive.to_path_buf();
        let manifest = tokio::task::spawn_blocking(move || snapshot::read_manifest(&a))
            .await
            .map_err(|e| RuntimeError::Spec(e.to_string()))??;
        if spec.template.is_empty() {
            spec.template = manifest.template;
        }
        self.create_inner(spec, Some(archive)).await
    }

    async fn create_inner(&self, spec: SandboxSpec, archive: Option<&Path>) -> Result<Sandbox> {
        validate_id(&spec.id)?;
        let hostname = spec.hostname.clone().unwrap_or_else(|| spec.id.clone());
        validate_hostname(&hostname)?;
        for (k, v) in &spec.env {
            validate_env(k, v)?;
        }
        let pids = spec.pids_limit.unwrap_or(self.cfg.pids_limit);
        spec::validate_limits(spec.vcpu, spec.memory_mib, pids)?;
        if let Some(ns) = &spec.netns_path
            && !ns.is_file()
        {
            return Err(RuntimeError::Invalid(format!(
                "network namespace {} does not exist",
                ns.display()
            )));
        }
        let template = self.templates.resolve(&spec.template)?;
        let dir = self.dir(&spec.id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::AlreadyExists(spec.id.clone()));
            }
            Err(e) => return Err(RuntimeError::io(&dir, e)),
        }
        let result = match self.userns_for_create(&spec).await {
            Ok(userns) => {
                self.start(&spec, &dir, hostname, pids, template, archive, userns)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.teardown(&spec.id).await;
            return Err(e);
        }
        self.get(&spec.id).await
    }

    #[expect(clippy::too_many_arguments, reason = "one private step of create")]
    async fn start(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        hostname: String,
        pids: i64,
        template: crate::templates::Resolved,
        archive: Option<&Path>,
        userns: Option<Userns>,
    ) -> Result<()> {
        let record = Record {
            id: spec.id.clone(),
            template: spec.template.clone(),
            created_unix: now_unix(),
        };
        let json = serde_json::to_vec(&record).map_err(|e| RuntimeError::Spec(e.to_string()))?;
        std::fs::write(dir.join("sandbox.json"), json).at(dir)?;
        let (upper, work, rootfs, etc) = (
            dir.join("upper"),
            dir.join("work"),
            dir.join("rootfs"),
            dir.join("etc"),
        );
        for d in [&upper, &work, &rootfs, &etc] {
            std::fs::create_dir(d).at(d)?;
        }
        if let Some(a) = archive {
            let (a, u) = (a.to_path_buf(), upper.clone());
            let base = userns.as_ref().map(|u| u.base);
            tokio::task::spawn_blocking(move || {
                snapshot::unpack(&a, &u)?;
                // The archive holds ids as the sandbox saw them; this sandbox's are elsewhere.
                match base {
                    Some(b) => crate::userns::shift_tree(&u, b),
                    None => Ok(()),
                }
            })
            .await
            .map_err(|e| RuntimeError::Spec(e.to_string()))??;
        }
        let lower = match &userns {
            Some(u) => self.idmapped_lower(dir, &template.rootfs, u, &upper, &work)?,
            None => template.rootfs.clone(),
        };
        // Resolver, hostname and hosts live beside the sandbox and are bind-mounted read-only,
        // so a restored archive's symlinks can never redirect these writes.
        let resolv = match spec.dns_server {
            Some(ip) => format!("nameserver {ip}\noptions ndots:0\n"),
            None => "# no network\n".to_owned(),
        };
        let hosts = format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n");
        let files = [
            ("resolv.conf", resolv),
            ("hostname", format!("{hostname}\n")),
            ("hosts", hosts),
        ];
        let mut etc_files = Vec::new();
        for (name, content) in files {
            let p = etc.join(name);
            std::fs::write(&p, content).at(&p)?;
            etc_files.push((
                p,
                match name {
                    "resolv.conf" => "/etc/resolv.conf",
                    "hostname" => "/etc/hostname",
                    _ => "/etc/hosts",
                },
            ));
        }
        let mount = OverlayMount {
            lower,
            upper,
            work,
            target: rootfs.clone(),
        };
        self.platform
            .mount_overlay(&mount)
            .map_err(|e| RuntimeError::io(&rootfs, e))?;

        // Environment: defaults, the image's, the CA's, then the caller's (later wins).
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut set = |k: &str, v: &str| {
            if env.insert(k.to_owned(), v.to_owned()).is_none() {
                order.push(k.to_owned());
            }
        };
        set("PATH", DEFAULT_PATH);
        set("HOME", "/root");
        set("HOSTNAME", &hostname);
        set("LANG", "C.UTF-8");
        for kv in &template.env {
            if let Some((k, v)) = kv.split_once('=') {
                set(k, v);
            }
        }
        if let Some(pem) = &spec.ca_pem {
            for (k, v) in crate::trust::install(&rootfs, pem)? {
                set(&k, &v);
            }
        }
        for (k, v) in &spec.env {
            set(k, v);
        }
        let env: Vec<String> = order
            .iter()
            .filter_map(|k| env.get(k).map(|v| format!("{k}={v}")))
            .collect();

        let mut masked = Vec::new();
        if template.is_host {
            // The host root shows the data directory (templates, other sandboxes, runc state)
            // and the directory through which sandboxes reach their bundles.
            for d in [&self.cfg.data_dir, &self.reach] {
                if let Some(d) = d.to_str() {
                    masked.push(d.to_owned());
                }
            }
        }
        // With a user namespace, runc sets the root up as the sandbox's root, which cannot
        // traverse a private data directory: it reaches the bundle through `reach`.
        let (rootfs, etc_files) = match &userns {
            Some(u) => self.reach_bundle(&spec.id, dir, u, etc_files)?,
            None => (rootfs, etc_files),
        };
        let input = SpecInput {
            rootfs,
            hostname,
            env,
            init: self.cfg.init.clone(),
            init_args: self.cfg.init_args.clone(),
            netns_path: spec.netns_path.clone(),
            cgroups_path: format!("/{}/{}", self.cfg.cgroup_parent, spec.id),
            vcpu: spec.vcpu,
            memory_mib: spec.memory_mib,
            pids_limit: pids,
            nofile: self.cfg.nofile_limit,
            etc_files,
            masked,
            userns: userns.map(|u| (u.ns_file, u.base)),
            net_raw: spec.net_raw,
        };
        let config = spec::render(&spec::build(&input)?)?;
        write_private(&dir.join("config.json"), config.as_bytes())?;

        let args = vec![
            os("run"),
            os("--detach"),
            os("--bundle"),
            dir.as_os_str().to_owned(),
            os(&spec.id),
        ];
        let out = self
            .platform
            .runc_detached(args, &dir.join("init.log"))
            .await
            .at("runc run")?;
        if !out.status.success() {
            return Err(RuntimeError::Runc {
                op: "run",
                id: spec.id.clone(),
                message: runc_message(&out),
            });
        }
        Ok(())
    }

    fn read_record(&self, id: &str) -> Result<Record> {
        validate_id(id)?;
        let p = self.dir(id).join("sandbox.json");
        let t = std::fs::read_to_string(&p).map_err(|_| RuntimeError::NotFound(id.to_owned()))?;
        serde_json::from_str(&t).map_err(|_| RuntimeError::NotFound(id.to_owned()))
    }

    async fn runc_list(&self) -> Result<Vec<RuncState>> {
        let out = self
            .platform
            .runc(vec![os("list"), os("--format"), os("json")])
            .await
            .at("runc list")?;
        if !out.status.success() {
            return Err(RuntimeError::Runc {
                op: "list",
                id: String::new(),
                message: runc_message(&out),
            });
        }
        let t = String::from_utf8_lossy(&out.stdout);
        if t.trim().is_empty() || t.trim() == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(&t).map_err(|e| RuntimeError::Runc {
            op: "list",
            id: String::new(),
            message: e.to_string(),
        })
    }

    fn to_sandbox(&self, r: Record, st: Option<&RuncState>) -> Sandbox {
        let state = match st.map(|s| s.status.as_str()) {
            Some("created") => SandboxState::Created,
            Some("running") => SandboxState::Running,
            Some("paused") => SandboxState::Paused,
            Some("stopped") => SandboxState::Stopped,
            _ => SandboxState::Missing,
        };
        let init_pid = st.map(|s| s.pid).filter(|p| *p > 0);
        Sandbox {
            rootfs: self.dir(&r.id).join("rootfs"),
            id: r.id,
            template: r.template,
            created_unix: r.created_unix,
            init_pid,
            state,
        }
    }

    /// One sandbox and its current state.
    pub async fn get(&self, id: &str) -> Result<Sandbox> {
        let r = self.read_record(id)?;
        let out = self
            .platform
            .runc(vec![os("state"), os(id)])
            .await
            .at("runc state")?;
        let st: Option<RuncState> = if out.status.success() {
            serde_json::from_slice(&out.stdout).ok()
        } else {
            None
        };
        Ok(self.to_sandbox(r, st.as_ref()))
    }

    /// Every sandbox with a record on disk.
    pub async fn list(&self) -> Result<Vec<Sandbox>> {
        let states = self.runc_list().await?;
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.sandboxes)
            .at(&self.sandboxes)?
            .flatten()
        {
            if let Ok(r) = self.read_record(&e.file_name().to_string_lossy()) {
                let st = states.iter().find(|s| s.id == r.id);
                out.push(self.to_sandbox(r, st));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Runs `/bin/sh -c COMMAND` in the sandbox. Concurrent execs are fine.
    pub async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecResult> {
        self.read_record(id)?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let pid_file = self.dir(id).join(format!("exec-{n}.pid"));
        let timeout = req.timeout.unwrap_or(self.cfg.default_exec_timeout);
        exec::run(
            &self.platform,
            id,
            &req,
            self.cfg.output_cap,
            timeout,
            &pid_file,
        )
        .await
    }

    async fn simple(&self, op: &'static str, id: &str) -> Result<()> {
        self.read_record(id)?;
        let out = self.platform.runc(vec![os(op), os(id)]).await.at(op)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Runc {
                op,
                id: id.to_owned(),
                message: runc_message(&out),
            })
        }
    }

    /// Freezes every process of the sandbox (cgroup freezer).
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.simple("pause", id).await
    }

    /// Thaws a paused sandbox.
    pub async fn resume(&self, id: &str) -> Result<()> {
        self.simple("resume", id).await
    }

    /// Waits until the sandbox answers a trivial exec (for callers that need "ready").
    pub async fn wait_ready(&self, id: &str, within: Duration) -> Result<()> {
        let req = ExecRequest {
            command: "true".into(),
            timeout: Some(within),
            ..Default::default()
        };
        let r = self.exec(id, req).await?;
        if r.exit_code == 0 {
            Ok(())
        } else {
            Err(RuntimeError::State {
                id: id.to_owned(),
                state: "unready".into(),
                op: "exec",
            })
        }
    }
}

#[path = "runtime_recovery.rs"]
mod recovery;
#[path = "runtime_teardown.rs"]
mod teardown;
#[path = "runtime_templates.rs"]
mod template_ops;
#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
#[path = "runtime_userns.rs"]
mod userns_ops;
