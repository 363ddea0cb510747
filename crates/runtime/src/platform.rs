//! Container effects (mounts and runc) behind a small trait, with the real implementation and
//! a recording fake for unit tests without root.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags};

/// An overlay mount: read-only lower layers, per-sandbox upper and work directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// The template's root file system.
    pub lower: PathBuf,
    /// The sandbox's writable layer.
    pub upper: PathBuf,
    /// overlayfs' scratch directory (same file system as `upper`).
    pub work: PathBuf,
    /// Where the merged root appears.
    pub target: PathBuf,
}

/// The runtime's system effects.
pub trait ContainerPlatform: fmt::Debug + Send + Sync + 'static {
    /// Mounts an overlay.
    fn mount_overlay(&self, m: &OverlayMount) -> std::io::Result<()>;
    /// Unmounts `target` (lazily, so a busy mount never blocks a delete).
    fn unmount(&self, target: &Path) -> std::io::Result<()>;
    /// Whether `target` is a mount point.
    fn is_mounted(&self, target: &Path) -> bool;
    /// Kills every process left in the cgroup `path` (relative to each hierarchy) and removes
    /// it: the backstop when runc has lost a container's state.
    fn remove_cgroup(&self, path: &str) -> std::io::Result<()>;
    /// Runs runc with these arguments to completion.
    fn runc(&self, args: Vec<OsString>) -> impl Future<Output = std::io::Result<Output>> + Send;
    /// Runs `runc run --detach`: the container's init inherits runc's stdout and stderr, so
    /// they go to `log` (never a pipe this process would wait on); runc's own errors land there
    /// too and are returned as the output's stderr.
    fn runc_detached(
        &self,
        args: Vec<OsString>,
        log: &Path,
    ) -> impl Future<Output = std::io::Result<Output>> + Send;
    /// Starts `runc exec` with these arguments, stdout and stderr piped, stdin closed.
    fn spawn_exec(&self, args: Vec<OsString>) -> std::io::Result<tokio::process::Child>;
    /// Makes a user namespace mapping ids `0..size` to host ids `base..base+size`, pinned at
    /// `ns_file` (created) by a bind mount.
    fn create_userns(&self, ns_file: &Path, base: u32, size: u32) -> std::io::Result<()>;
    /// Mounts the mount at `source`, read-only and shifted into the user namespace at
    /// `userns`, on `target`.
    fn idmapped_bind(&self, source: &Path, target: &Path, userns: &Path) -> std::io::Result<()>;
    /// Bind-mounts `source` and every mount below it on `target`.
    fn rbind(&self, source: &Path, target: &Path) -> std::io::Result<()>;
}

/// The real host: nix mounts and the runc binary.
#[derive(Debug, Clone)]
pub struct HostContainerPlatform {
    runc: PathBuf,
    runc_root: PathBuf,
}

impl HostContainerPlatform {
    /// runc at `runc`, keeping its state under `runc_root`.
    pub fn new(runc: PathBuf, runc_root: PathBuf) -> Self {
        Self { runc, runc_root }
    }

    fn command(&self, args: Vec<OsString>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.runc);
        c.arg("--root").arg(&self.runc_root).args(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.kill_on_drop(true);
        c
    }
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Bound on one runc call (not exec): a wedged runc must not hang the control plane.
const RUNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn runc_timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "runc did not finish within 60 s",
    )
}

/// The cgroup `rel` in every hierarchy under `root` (v1 controllers, named and unified).
fn cgroup_dirs(root: &Path, rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
        return Vec::new();
    }
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path().join(rel))
        .filter(|d| d.is_dir())
        .collect();
    if root.join(rel).join("cgroup.procs").exists() {
        out.push(root.join(rel)); // pure cgroup v2 host
    }
    out
}

fn remove_cgroup_in(root: &Path, rel: &str) -> std::io::Result<()> {
    let dirs = cgroup_dirs(root, rel);
    if dirs.is_empty() {
        return Ok(());
    }
    for d in &dirs {
        // A frozen process cannot die: thaw first (v1 freezer, v2 cgroup.freeze).
        for (file, value) in [("freezer.state", "THAWED"), ("cgroup.freeze", "0")] {
            if d.join(file).exists() {
                let _ = std::fs::write(d.join(file), value);
            }
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut alive = false;
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                alive = true;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if !alive || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut last = Ok(());
    for d in &dirs {
        if let Err(e) = std::fs::remove_dir(d)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            last = Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", d.display()),
            ));
        }
    }
    last
}

/// The overlay option string; paths with `,` `:` or `\` would be misparsed by the kernel.
pub(crate) fn overlay_options(m: &OverlayMount) -> std::io::Result<String> {
    let mut parts = Vec::with_capacity(3);
    for (k, p) in [
        ("lowerdir", &m.lower),
        ("upperdir", &m.upper),
        ("workdir", &m.work),
    ] {
        let s = p.to_str().ok_or_else(|| bad_path(p))?;
        if s.contains([',', ':', '\\']) {
            return Err(bad_path(p));
        }
        parts.push(format!("{k}={s}"));
    }
    Ok(parts.join(","))
}

fn bad_path(p: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "path {} cannot be an overlay layer (non-UTF-8, or has , : or \\)",
            p.display()
        ),
    )
}

impl ContainerPlatform for HostContainerPlatform {
    fn mount_overlay(&self, m: &OverlayMount) -> std::io::Result<()> {
        let opts = overlay_options(m)?;
        nix::mount::mount(
            Some("overlay"),
            &m.target,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(std::io::Error::from)
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(std::io::Error::from)
    }

    fn is_mounted(&self, target: &Path) -> bool {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return false;
        };
        let Some(t) = target.to_str() else {
            return false;
        };
        // Field 5 is the mount point, with spaces etc. octal-escaped; our paths have none.
        info.lines().any(|l| l.split(' ').nth(4) == Some(t))
    }

    fn remove_cgroup(&self, path: &str) -> std::io::Result<()> {
        remove_cgroup_in(Path::new(CGROUP_ROOT), path)
    }

    async fn runc(&self, args: Vec<OsString>) -> std::io::Result<Output> {
        // kill_on_drop ends a runc that outlives the bound.
        tokio::time::timeout(RUNC_TIMEOUT, self.command(args).output())
            .await
            .map_err(|_| runc_timed_out())?
    }

    async fn runc_detached(&self, args: Vec<OsString>, log: &Path) -> std::io::Result<Output> {
        let f = std::fs::File::create(log)?;
        let mut c = self.command(args);
        c.stdout(Stdio::null()).stderr(f.try_clone()?);
        let status = tokio::time::timeout(RUNC_TIMEOUT, c.status())
            .await
            .map_err(|_| runc_timed_out())??;
        let mut stderr = std::fs::read(log)?;
        stderr.truncate(4096);
        Ok(Output {
            status,
            stdout: Vec::new(),
            stderr,
        })
    }

    fn spawn_exec(&self, args: Vec<OsString>) -> std::io::Result<tokio::process::Child> {
        self.command(args).spawn()
    }

    fn create_userns(&self, ns_file: &Path, base: u32, size: u32) -> std::io::Result<()> {
        crate::idmap::create_userns(ns_file, base, size)
    }

    fn idmapped_bind(&self, source: &Path, target: &Path, userns: &Path) -> std::io::Result<()> {
        crate::idmap::idmapped_bind(source, target, userns)
    }

    fn rbind(&self, source: &Path, target: &Path) -> std::io::Result<()> {
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(std::io::Error::from)
    }
}

/// A recording fake: mounts and runc calls are logged, not performed. `runc exec` runs the
/// command on the host as `/bin/sh -c` in its own process group, writing `--pid-file`, so the
/// exec logic (caps, timeouts, process-group kill) is tested without root or containers.
#[derive(Debug, Default)]
pub struct RecordingContainerPlatform {
    calls: Mutex<Vec<String>>,
    mounted: Mutex<Vec<PathBuf>>,
    /// Canned stdout for `runc state` / `runc list` (JSON), keyed by subcommand.
    pub canned: Mutex<Vec<(String, String)>>,
    /// runc subcommands that fail (exit 1, stderr "fake failure").
    pub failing: Mutex<Vec<String>>,
}

impl RecordingContainerPlatform {
    /// The calls so far, one line each (`mount …`, `umount …`, `runc …`).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, line: String) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(line);
        }
    }
}

fn join(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

impl ContainerPlatform for RecordingContainerPlatform {
    fn mount_overlay(&self, m: &OverlayMount) -> std::io::Result<()> {
        self.record(format!(
            "mount overlay {} on {}",
            overlay_options(m)?,
            m.target.display()
        ));
        if let Ok(mut v) = self.mounted.lock() {
            v.push(m.target.clone());
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        self.record(format!("umount {}", target.display()));
        if let Ok(mut v) = self.mounted.lock() {
            v.retain(|t| t != target);
        }
        Ok(())
    }

    fn is_mounted(&self, target: &Path) -> bool {
        self.mounted
            .lock()
            .map(|v| v.iter().any(|t| t == target))
            .unwrap_or(false)
    }

    fn remove_cgroup(&self, path: &str) -> std::io::Result<()> {
        self.record(format!("remove cgroup {path}"));
        Ok(())
    }

    async fn runc(&self, args: Vec<OsString>) -> std::io::Result<Output> {
        let line = join(&args);
        self.record(format!("runc {line}"));
        let sub = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stdout = self
            .canned
            .lock()
            .ok()
            .and_then(|c| c.iter().find(|(k, _)| *k == sub).map(|(_, v)| v.clone()))
            .unwrap_or_default();
        let fail = self
            .failing
            .lock()
            .map(|f| f.contains(&sub))
            .unwrap_or(false);
        let status = tokio::process::Command::new(if fail { "false" } else { "true" })
            .status()
            .await?;
        let stderr = if fail {
            b"fake failure".to_vec()
        } else {
            Vec::new()
        };
        Ok(Output {
            status,
            stdout: stdout.into_bytes(),
            stderr,
        })
    }

    async fn runc_detached(&self, args: Vec<OsString>, _log: &Path) -> std::io::Result<Output> {
        self.runc(args).await
    }

    fn create_userns(&self, ns_file: &Path, base: u32, size: u32) -> std::io::Result<()> {
        self.record(format!("userns {} 0:{base}:{size}", ns_file.display()));
        std::fs::write(ns_file, b"")?;
        if let Ok(mut v) = self.mounted.lock() {
            v.push(ns_file.to_path_buf());
        }
        Ok(())
    }

    fn idmapped_bind(&self, source: &Path, target: &Path, userns: &Path) -> std::io::Result<()> {
        self.record(format!(
            "idmap {} on {} by {}",
            source.display(),
            target.display(),
            userns.display()
        ));
        if let Ok(mut v) = self.mounted.lock() {
            v.push(target.to_path_buf());
        }
        Ok(())
    }

    fn rbind(&self, source: &Path, target: &Path) -> std::io::Result<()> {
        self.record(format!(
            "rbind {} on {}",
            source.display(),
            target.display()
        ));
        if let Ok(mut v) = self.mounted.lock() {
            v.push(target.to_path_buf());
        }
        Ok(())
    }

    fn spawn_exec(&self, args: Vec<OsString>) -> std::io::Result<tokio::process::Child> {
        self.record(format!("runc {}", join(&args)));
        let strs: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut cmd = tokio::process::Command::new("/bin/sh");
        let mut pid_file = None;
        let mut i = 1; // skip "exec"
        while i < strs.len() {
            match strs[i].as_str() {
                "--pid-file" => pid_file = strs.get(i + 1).cloned(),
                "--cwd" => {
                    if let Some(d) = strs.get(i + 1) {
                        cmd.current_dir(d);
                    }
                }
                "--env" => {
                    if let Some((k, v)) = strs.get(i + 1).and_then(|e| e.split_once('=')) {
                        cmd.env(k, v);
                    }
                }
                _ => break,
            }
            i += 2;
        }
        // strs[i] is the container id, then /bin/sh -c COMMAND.
        let command = strs.last().cloned().unwrap_or_default();
        cmd.arg("-c").arg(command);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.process_group(0).kill_on_drop(true);
        let child = cmd.spawn()?;
        if let (Some(f), Some(pid)) = (pid_file, child.id()) {
            std::fs::write(f, pid.to_string())?;
        }
        Ok(child)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_stay_inside_the_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        for c in ["pids", "memory", "unified"] {
            std::fs::create_dir_all(root.path().join(c).join("palisade/sbx")).unwrap();
        }
        assert_eq!(cgroup_dirs(root.path(), "/palisade/sbx").len(), 3);
        assert!(cgroup_dirs(root.path(), "/palisade/../..").is_empty());
        assert!(cgroup_dirs(root.path(), "/").is_empty());
        // Plain directories stand in for cgroups: no processes, so they are just removed.
        remove_cgroup_in(root.path(), "/palisade/sbx").unwrap();
        assert!(!root.path().join("pids/palisade/sbx").exists());
        assert!(root.path().join("pids/palisade").exists());
    }
}
