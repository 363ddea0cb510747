//! Named network namespaces (`ip netns`), runtimes whose threads live inside one, and clients
//! run inside one through `ip netns exec`.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, CpuSet, sched_setaffinity, setns};
use nix::unistd::Pid;

/// Where `ip netns` keeps its bind mounts.
const NETNS_DIR: &str = "/var/run/netns";
/// Where `ip netns exec` looks for per-namespace `/etc` files.
const ETC_NETNS_DIR: &str = "/etc/netns";
/// Prefix of every namespace this crate makes: `pt<pid>x<counter><tag>`.
const PREFIX: &str = "pt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh unique name `pt<pid>x<n><tag>` (unique across processes and within this one).
pub(crate) fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}x{n}{tag}", std::process::id())
}

/// A named network namespace. Those this crate created are deleted on drop, with their
/// `/etc/netns/<name>` directory; [`Netns::open`] gives a handle that deletes nothing.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    owned: bool,
}

impl Netns {
    /// Creates a namespace named `pt<pid>x<n><tag>` with `lo` up. `tag` is a short suffix
    /// (letters and digits, at most 4) that says what the namespace is for.
    pub fn new(tag: &str) -> Result<Netns> {
        if tag.len() > 4 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
            bail!("namespace tag {tag:?} must be at most 4 ASCII letters or digits");
        }
        let name = unique_name(tag);
        ip(["netns", "add", &name]).with_context(|| format!("creating netns {name}"))?;
        let ns = Netns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
            owned: true,
        };
        // From here on, dropping `ns` deletes it, so a failure below leaves nothing behind.
        ip(["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace made by someone else (e.g. `pls-<id>` from
    /// palisade-netns). Dropping it deletes nothing.
    pub fn open(name: &str) -> Result<Netns> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            bail!("invalid namespace name {name:?}");
        }
        let path = Path::new(NETNS_DIR).join(name);
        if !path.exists() {
            bail!("network namespace {name:?} does not exist");
        }
        Ok(Netns {
            name: name.to_owned(),
            path,
            owned: false,
        })
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, `/var/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A multi-thread tokio runtime (2 workers) whose worker and blocking threads all live in
    /// this namespace, so sockets they create belong to it.
    ///
    /// Caveat: `Runtime::block_on` runs its future on the *calling* thread, which is not in the
    /// namespace. Create sockets inside tasks (`rt.spawn(...)`), e.g.
    /// `rt.block_on(rt.spawn(async { TcpListener::bind(..).await }))`.
    pub fn runtime(&self) -> Result<tokio::runtime::Runtime> {
        self.runtime_with(&RuntimeOptions::default())
    }

    /// [`Netns::runtime`] with a number of workers, a thread name and a CPU to pin every
    /// thread to (benchmarks find the firewall's CPU time by thread name and keep it off the
    /// load generators' CPUs).
    pub fn runtime_with(&self, opts: &RuntimeOptions) -> Result<tokio::runtime::Runtime> {
        ns_runtime(&self.path, &self.name, opts)
    }

    /// A command that runs `program` inside this namespace (`ip netns exec <name> program`),
    /// which also bind-mounts `/etc/netns/<name>/resolv.conf` over `/etc/resolv.conf` if present.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args…` inside the namespace to completion and returns its output
    /// (whatever its exit status). Errors only if it could not be started. Bound the client's
    /// own run time with its options (`curl -m`, `dig +time=`), or wrap it in `timeout`.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref().to_owned();
        self.command(&program)
            .args(args)
            .output()
            .with_context(|| format!("running {program:?} in netns {}", self.name))
    }

    /// Runs `ip <args>` with `-n <name>`, failing on a non-zero exit.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        ip(all)
    }

    /// Sets a sysctl inside the namespace, e.g. `("net.ipv4.ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let out = self.run("sysctl", ["-q", "-w", &format!("{key}={value}")])?;
        if !out.status.success() {
            bail!(
                "sysctl {key}={value} in {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Writes `/etc/netns/<name>/resolv.conf`, which `ip netns exec` shows to clients as
    /// `/etc/resolv.conf`; removed with the namespace.
    pub fn set_resolv_conf(&self, contents: &str) -> Result<()> {
        let dir = Path::new(ETC_NETNS_DIR).join(&self.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join("resolv.conf");
        std::fs::write(&file, contents).with_context(|| format!("writing {}", file.display()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            remove_netns(&self.name);
        }
    }
}

/// Deletes a namespace and its `/etc/netns` directory, logging (not failing) on error.
fn remove_netns(name: &str) {
    if let Err(e) = ip(["netns", "delete", name]) {
        tracing::warn!("deleting netns {name}: {e:#}");
    }
    let dir = Path::new(ETC_NETNS_DIR).join(name);
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

/// How [`Netns::runtime_with`] builds its runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Worker threads (`0`: two).
    pub workers: usize,
    /// Every thread's name (`None`: `ns-<namespace>`).
    pub thread_name: Option<String>,
    /// The CPU every thread is pinned to.
    pub cpu: Option<usize>,
}

fn ns_runtime(path: &Path, name: &str, opts: &RuntimeOptions) -> Result<tokio::runtime::Runtime> {
    let file = Arc::new(
        File::open(path).with_context(|| format!("opening {} (netns {name})", path.display()))?,
    );
    let cpus = match opts.cpu {
        Some(cpu) => {
            let mut set = CpuSet::new();
            set.set(cpu).context("CPU number")?;
            Some(set)
        }
        None => None,
    };
    // Prove setns (and the pinning) work here before handing them to threads that cannot
    // report an error.
    {
        let file = Arc::clone(&file);
        std::thread::spawn(move || -> nix::Result<()> {
            setns(&*file, CloneFlags::CLONE_NEWNET)?;
            if let Some(set) = cpus {
                sched_setaffinity(Pid::from_raw(0), &set)?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("setns probe thread panicked"))?
        .with_context(|| format!("entering netns {name}"))?;
    }
    let thread_name = opts
        .thread_name
        .clone()
        .unwrap_or_else(|| format!("ns-{name}"));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if opts.workers == 0 { 2 } else { opts.workers })
        .enable_all()
        .thread_name(thread_name)
        .on_thread_start(move || {
            if let Err(e) = setns(&*file, CloneFlags::CLONE_NEWNET) {
                // A thread left in the real network namespace could reach the real network:
                // fail closed, loudly.
                tracing::error!("setns into test namespace failed ({e}); aborting");
                std::process::abort();
            }
            if let Some(set) = cpus
                && let Err(e) = sched_setaffinity(Pid::from_raw(0), &set)
            {
                tracing::error!("pinning a namespace thread failed ({e}); aborting");
                std::process::abort();
            }
        })
        .build()
        .context("building namespace runtime")
}

/// Runs `ip args…`, returning stdout, failing with stderr on a non-zero exit.
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = Command::new("ip")
        .args(&args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pid encoded in a name this crate made (`pt<pid>x…`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, after) = rest.split_once('x')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let counter_len = after.bytes().take_while(u8::is_ascii_digit).count();
    if counter_len == 0 {
        return None;
    }
    pid.parse().ok()
}

/// Removes namespaces (and `/etc/netns` dirs) left by test processes that no longer exist.
/// Returns the names removed. Namespaces of live processes, and any not named by this crate,
/// are left alone.
pub fn cleanup_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for dir in [NETNS_DIR, ETC_NETNS_DIR] {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {dir}")),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {dir}"))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Some(pid) = owner_pid(&name) else {
                continue;
            };
            if Path::new("/proc").join(pid.to_string()).exists() || removed.contains(&name) {
                continue;
            }
            remove_netns(&name);
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        let a = unique_name("f");
        let b = unique_name("f");
        assert_ne!(a, b);
        assert_eq!(owner_pid(&a), Some(std::process::id()));
        assert!(a.len() <= 15);
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for n in [
            "pls-abc", "pt", "ptx1", "pt12x", "ptabcx1f", "pt12y1", "other",
        ] {
            assert_eq!(owner_pid(n), None, "{n}");
        }
        assert_eq!(owner_pid("pt4242x7sb"), Some(4242));
    }

    #[test]
    fn bad_tags_are_rejected_without_creating_anything() {
        assert!(Netns::new("toolong").is_err());
        assert!(Netns::new("a/b").is_err());
        assert!(Netns::open("../etc").is_err());
    }
}
