//! File operations confined to a sandbox root filesystem.
//!
//! A sandbox root can be hostile: any path component may be a symlink placed there to make the
//! host write elsewhere. Every lookup goes through `openat2(RESOLVE_IN_ROOT)`, so the kernel
//! resolves symlinks and `..` as if the rootfs were `/` (an absolute link to `/etc` means
//! `<rootfs>/etc`), and every final-component operation (create, rename, unlink, symlink) uses a
//! directory fd obtained that way plus a no-follow call. Nothing can reach outside the rootfs.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::CaError;

/// Symlinks followed for one final path component before giving up.
const MAX_LINKS: usize = 16;
/// Entries read from one directory before giving up (a real /etc/ssl/certs has a few hundred).
const MAX_DIR_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub(crate) struct Rootfs {
    root: OwnedFd,
}

/// What sits at a path (without following a final symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Missing,
    File,
    Dir,
    Symlink(String),
    Other,
}

impl Rootfs {
    pub(crate) fn open(rootfs: &Path) -> Result<Self, CaError> {
        let root = rustix::fs::open(
            rootfs,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("/", e))?;
        Ok(Self { root })
    }

    fn open_in(&self, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
        let rel = normalize(path);
        let rel = if rel == "/" {
            "."
        } else {
            rel.trim_start_matches('/')
        };
        rustix::fs::openat2(
            &self.root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// True when `path` resolves (inside the rootfs) to a directory.
    pub(crate) fn is_dir(&self, path: &str) -> bool {
        self.open_in(path, OFlags::PATH | OFlags::DIRECTORY).is_ok()
    }

    /// What is at `path`; the parent is resolved, the final component is not followed.
    pub(crate) fn entry(&self, path: &str) -> Result<Entry, CaError> {
        let (parent, name) = split(path);
        let dir = match self.open_in(&parent, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(dir) => dir,
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(Entry::Missing),
            Err(e) => return Err(io_err(&parent, e)),
        };
        entry_at(&dir, &name, path)
    }

    /// Opens the directory `path`, creating missing components (mode 0755) inside the rootfs.
    pub(crate) fn dir(&self, path: &str) -> Result<OwnedFd, CaError> {
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        match self.open_in(path, flags) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err(path, e)),
        }
        let mut current = String::from("/");
        for component in normalize(path).split('/').filter(|c| !c.is_empty()) {
            let next = join(&current, component);
            match self.open_in(&next, flags) {
                Ok(_) => {}
                Err(Errno::NOENT) => {
                    let parent = self
                        .open_in(&current, flags)
                        .map_err(|e| io_err(&current, e))?;
                    match rustix::fs::mkdirat(&parent, component, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_err(&next, e)),
                    }
                }
                Err(e) => return Err(io_err(&next, e)),
            }
            current = next;
        }
        self.open_in(path, flags).map_err(|e| io_err(path, e))
    }

    /// Reads the regular file at `path` (symlinks resolved inside the rootfs), at most `max`
    /// bytes; `None` when it does not exist. FIFOs, devices and directories are refused.
    pub(crate) fn read(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, CaError> {
        // O_NONBLOCK: opening a FIFO planted at this path must not hang us.
        let fd = match self.open_in(path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io_err(path, e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(path, e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(refused(path, "not a regular file"));
        }
        let mut data = Vec::new();
        File::from(fd)
            .take(max.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|source| CaError::TrustStore {
                path: path.into(),
                source,
            })?;
        if data.len() as u64 > max {
            return Err(refused(path, "file too large"));
        }
        Ok(Some(data))
    }

    /// Replaces the file at `path` with `data` atomically (temporary file, then rename). A
    /// symlink at `path` is followed inside the rootfs and its target is replaced, so distro
    /// links such as RHEL's `ca-bundle.crt` keep working. Returns the path actually written.
    pub(crate) fn write(&self, path: &str, data: &[u8], mode: u32) -> Result<String, CaError> {
        let mut path = normalize(path);
        for _ in 0..MAX_LINKS {
            let (parent, name) = split(&path);
            let dir = self.dir(&parent)?;
            match entry_at(&dir, &name, &path)? {
                Entry::Missing | Entry::File => {
                    write_replace(&dir, &name, &path, data, mode)?;
                    return Ok(path);
                }
                Entry::Symlink(target) => {
                    path = if target.starts_with('/') {
                        normalize(&target)
                    } else {
                        normalize(&join(&parent, &target))
                    };
                }
                Entry::Dir | Entry::Other => return Err(refused(&path, "not a regular file")),
            }
        }
        Err(refused(&path, "too many levels of symbolic links"))
    }

    /// Makes `path` a symlink to `target` (replacing a file or symlink there).
    pub(crate) fn symlink(&self, path: &str, target: &str) -> Result<(), CaError> {
        let (parent, name) = split(path);
        let dir = self.dir(&parent)?;
        match entry_at(&dir, &name, path)? {
            Entry::Symlink(existing) if existing == target => return Ok(()),
            Entry::Symlink(_) | Entry::File => {
                rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty())
                    .map_err(|e| io_err(path, e))?;
            }
            Entry::Missing => {}
            Entry::Dir | Entry::Other => return Err(refused(path, "not a file or symlink")),
        }
        rustix::fs::symlinkat(target, &dir, name.as_str()).map_err(|e| io_err(path, e))
    }

    /// Removes the file or symlink at `path` (never a directory); missing is fine.
    pub(crate) fn remove(&self, path: &str) -> Result<(), CaError> {
        let (parent, name) = split(path);
        let dir = match self.open_in(&parent, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io_err(&parent, e)),
        };
        match rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err(path, e)),
        }
    }

    /// Names in the directory `path` with what each is (final symlinks not followed).
    pub(crate) fn list(&self, path: &str) -> Result<Vec<(String, Entry)>, CaError> {
        let dir = self
            .open_in(path, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| io_err(path, e))?;
        let mut out = Vec::new();
        for item in rustix::fs::Dir::read_from(&dir).map_err(|e| io_err(path, e))? {
            let item = item.map_err(|e| io_err(path, e))?;
            if out.len() >= MAX_DIR_ENTRIES {
                return Err(refused(path, "too many directory entries"));
            }
            let Ok(name) = item.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let name = name.to_owned();
            let entry = entry_at(&dir, &name, &join(path, &name))?;
            out.push((name, entry));
        }
        Ok(out)
    }
}

fn entry_at(dir: &OwnedFd, name: &str, path: &str) -> Result<Entry, CaError> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(Entry::Missing),
        Err(e) => return Err(io_err(path, e)),
    };
    Ok(match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Entry::File,
        FileType::Directory => Entry::Dir,
        FileType::Symlink => {
            let target =
                rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| io_err(path, e))?;
            match target.into_string() {
                Ok(target) => Entry::Symlink(target),
                Err(_) => return Err(refused(path, "symlink target is not UTF-8")),
            }
        }
        _ => Entry::Other,
    })
}

fn write_replace(
    dir: &OwnedFd,
    name: &str,
    path: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), CaError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = format!(
        ".{name}.palisade-{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| io_err(path, e))?;
    let result = (|| -> std::io::Result<()> {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        let mut file = File::from(fd);
        file.write_all(data)?;
        file.sync_all()?;
        rustix::fs::renameat(dir, tmp.as_str(), dir, name)?;
        Ok(())
    })();
    if let Err(source) = result {
        // Best effort: a leftover temporary file is harmless, the error below is what matters.
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(CaError::TrustStore {
            path: path.into(),
            source,
        });
    }
    Ok(())
}

fn io_err(path: &str, e: Errno) -> CaError {
    CaError::TrustStore {
        path: PathBuf::from(path),
        source: e.into(),
    }
}

fn refused(path: &str, reason: &'static str) -> CaError {
    CaError::TrustStoreRefused {
        path: PathBuf::from(path),
        reason,
    }
}

/// Lexically normalises an in-sandbox path: absolute, no `.`, `..` clamped at `/` (as the kernel
/// does for RESOLVE_IN_ROOT).
pub(crate) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    normalize(&format!("{dir}/{name}"))
}

/// (parent, final component) of a normalised path; the root's final component is ".".
fn split(path: &str) -> (String, String) {
    let path = normalize(path);
    match path.rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() => (
            if parent.is_empty() {
                "/".to_owned()
            } else {
                parent.to_owned()
            },
            name.to_owned(),
        ),
        _ => ("/".to_owned(), ".".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_clamps_at_root() {
        assert_eq!(normalize("/etc/ssl/../ssl/./certs/"), "/etc/ssl/certs");
        assert_eq!(normalize("../../../../tmp/x"), "/tmp/x");
        assert_eq!(normalize(""), "/");
        assert_eq!(
            split("/etc/ssl/cert.pem"),
            ("/etc/ssl".to_owned(), "cert.pem".to_owned())
        );
        assert_eq!(split("/x"), ("/".to_owned(), "x".to_owned()));
    }
}
