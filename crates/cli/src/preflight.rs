//! What `palisade serve` needs from the host, checked before it touches anything (store,
//! nftables, containers): a daemon started in the wrong place (under `ip netns exec`, which
//! remounts `/sys` without the cgroup mounts; without root; without runc or nft) would
//! otherwise serve, recover sandboxes it cannot drive, and answer every create and exec with
//! a 500. The checks are pure functions of a [`HostView`], so they are unit-tested without root;
//! [`HostView::read`] fills one from this host.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The cgroup v1 controllers a sandbox uses: CPU quota, memory limit, pids limit, the freezer
/// (pause) and device rules. runc joins every hierarchy it finds, these must be there.
pub(crate) const V1_CONTROLLERS: [&str; 5] = ["cpu", "memory", "pids", "freezer", "devices"];
/// The cgroup v2 controllers a sandbox uses (freezing and devices are built into v2).
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Below this many open files the proxy runs out long before its per-sandbox caps.
pub(crate) const MIN_NOFILE: u64 = 4096;

/// What the checks look at, read from the host or made up by a test.
#[derive(Debug, Clone)]
pub(crate) struct HostView {
    /// Effective user id.
    pub euid: u32,
    /// `/proc/self/mountinfo`.
    pub mountinfo: String,
    /// `/proc/filesystems`.
    pub filesystems: String,
    /// `/sys/fs/cgroup/cgroup.controllers` when the unified hierarchy is at the root.
    pub v2_controllers: Option<String>,
    /// `runc --version`'s first line, or why it could not run.
    pub runc: Result<String, String>,
    /// `nft --version`, or why it could not run.
    pub nft: Result<String, String>,
    /// `ip -V`, or why it could not run.
    pub ip: Result<String, String>,
    /// RLIMIT_NOFILE (soft, hard) after the daemon raised the soft limit.
    pub nofile: (u64, u64),
}

/// The mount points of cgroup file systems under `/sys/fs/cgroup`: (v1 controllers by mount
/// point, whether cgroup2 is mounted at the root itself).
fn cgroup_mounts(mountinfo: &str) -> (Vec<(String, Vec<String>)>, bool) {
    let mut v1 = Vec::new();
    let mut v2_root = false;
    for line in mountinfo.lines() {
        // `id parent maj:min root mountpoint opts [optional…] - fstype source superopts`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let (fstype, superopts) = (r.next().unwrap_or(""), r.nth(1).unwrap_or(""));
        let under_root = point == CGROUP_ROOT || point.starts_with(&format!("{CGROUP_ROOT}/"));
        if !under_root {
            continue;
        }
        match fstype {
            "cgroup" => v1.push((
                point.to_owned(),
                superopts.split(',').map(str::to_owned).collect(),
            )),
            "cgroup2" if point == CGROUP_ROOT => v2_root = true,
            _ => {}
        }
    }
    (v1, v2_root)
}

/// Every problem found, each a sentence saying what is missing and what to do. Empty: go.
pub(crate) fn problems(v: &HostView) -> Vec<String> {
    let mut out = Vec::new();
    if v.euid != 0 {
        out.push(format!(
            "palisade serve must run as root (uid 0, this is uid {}): it makes network \
             namespaces, nftables rules, overlay mounts and runc containers",
            v.euid
        ));
    }
    let (v1, v2_root) = cgroup_mounts(&v.mountinfo);
    if v2_root {
        let have = v.v2_controllers.as_deref().unwrap_or("");
        let missing: Vec<&str> = V2_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !have.split_whitespace().any(|h| h == *c))
            .collect();
        if !missing.is_empty() {
            out.push(format!(
                "cgroup v2 controllers not enabled at {CGROUP_ROOT}: {}",
                missing.join(", ")
            ));
        }
    } else {
        let missing: Vec<String> = V1_CONTROLLERS
            .iter()
            .filter(|c| !v1.iter().any(|(_, opts)| opts.iter().any(|o| o == *c)))
            .map(|c| format!("{CGROUP_ROOT}/{c}"))
            .collect();
        if !missing.is_empty() {
            let hint = if v1.is_empty() {
                " (no cgroup file system is mounted in this mount namespace: `ip netns exec` \
                 remounts /sys without them; join only the network namespace instead, with \
                 `nsenter --net=/var/run/netns/NAME palisade serve`)"
            } else {
                ""
            };
            out.push(format!(
                "cgroup mounts missing: {}{hint}",
                missing.join(", ")
            ));
        }
    }
    if !v
        .filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
    {
        out.push("the kernel has no overlay file system (modprobe overlay)".to_owned());
    }
    for (name, res, pkg) in [
        ("runc", &v.runc, "runc"),
        ("nft", &v.nft, "nftables"),
        ("ip", &v.ip, "iproute2"),
    ] {
        if let Err(e) = res {
            out.push(format!(
                "{name} cannot run ({e}); install the Debian package {pkg}"
            ));
        }
    }
    if v.nofile.0 < MIN_NOFILE {
        out.push(format!(
            "the open-files limit is {} (hard limit {}); palisade needs at least {MIN_NOFILE}: \
             raise it (ulimit -Hn, or LimitNOFILE= in a systemd unit)",
            v.nofile.0, v.nofile.1
        ));
    }
    out
}

fn version_of(program: &Path, arg: &str) -> Result<String, String> {
    match Command::new(program).arg(arg).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()),
        Ok(o) => Err(format!(
            "`{} {arg}` failed: {}",
            program.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{}: {e}", program.display())),
    }
}

/// Raises the soft open-files limit to the hard one; returns (soft, hard) after.
pub(crate) fn raise_nofile() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return (hard, hard);
    }
    (soft, hard)
}

impl HostView {
    /// This host, as the daemon sees it (raising the open-files limit on the way).
    pub(crate) fn read(runc: &Path) -> HostView {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        HostView {
            euid: nix::unistd::geteuid().as_raw(),
            mountinfo: read("/proc/self/mountinfo"),
            filesystems: read("/proc/filesystems"),
            v2_controllers: std::fs::read_to_string(format!("{CGROUP_ROOT}/cgroup.controllers"))
                .ok(),
            runc: version_of(runc, "--version"),
            nft: version_of(&PathBuf::from("nft"), "--version"),
            ip: version_of(&PathBuf::from("ip"), "-V"),
            nofile: raise_nofile(),
        }
    }
}

/// Checks this host; the error lists every problem, one per line.
pub(crate) fn check(runc: &Path) -> anyhow::Result<()> {
    let view = HostView::read(runc);
    let p = problems(&view);
    if p.is_empty() {
        tracing::info!(
            runc = view.runc.as_deref().unwrap_or(""),
            nofile = view.nofile.0,
            "host checks passed"
        );
        return Ok(());
    }
    anyhow::bail!(
        "this host cannot run sandboxes; palisade serve refuses to start:\n  - {}",
        p.join("\n  - ")
    )
}

/// The data directory, held for as long as the daemon runs (an exclusive `flock` on
/// `<data_dir>/daemon.lock`, released by the kernel however the process ends).
#[derive(Debug)]
pub(crate) struct DataDirClaim {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Claims `dir` for this daemon: refused when it is read-only or another `palisade serve`
/// holds it (two daemons on one directory would each reconcile away the other's sandboxes).
pub(crate) fn claim_data_dir(dir: &Path) -> anyhow::Result<DataDirClaim> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::Write;
    let read_only = |e: &std::io::Error| {
        matches!(e.raw_os_error(), Some(30 | 13 | 1)) // EROFS, EACCES, EPERM
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        anyhow::bail!("cannot create the data directory {}: {e}", dir.display());
    }
    let path = dir.join("daemon.lock");
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if read_only(&e) => anyhow::bail!(
            "the data directory {} is read-only ({e}): palisade keeps its store, sandboxes and \
             snapshots there and must write to it",
            dir.display()
        ),
        Err(e) => anyhow::bail!("cannot open {}: {e}", path.display()),
    };
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "the data directory {} is in use by another palisade serve (pid {}); stop it \
                 first or give this one another --data-dir",
                dir.display(),
                holder.trim()
            )
        }
        Err((_, e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
    };
    // Who holds it, for the message above (best effort).
    let _ = lock.set_len(0);
    let _ = write!(lock, "{}", std::process::id());
    Ok(DataDirClaim { _lock: lock })
}

#[cfg(test)]
#[path = "preflight_tests.rs"]
mod tests;
