//! The host side of a sandbox's user namespace: making one with a fixed mapping (kept alive by
//! a bind mount of its nsfs file, so no process has to stay in it), and the idmapped mount
//! that shows a template owned by host root as owned by the sandbox's root.
//!
//! runc 1.1 cannot idmap a mount itself, and no maintained crate wraps `mount_setattr(2)`, so
//! the three new-mount-API calls are made here directly: the only `unsafe` in the crate.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Mounts a copy of the mount at `source` (that mount only, not those below it, which is all
/// overlayfs reads from a lower layer) at `target`, with the ids of the user namespace at
/// `userns` applied: a file owned by host uid N appears owned by the namespace's uid N.
/// Read-only: overlayfs never writes a lower layer, and a recursive delete that ever walked
/// into the copy (of the host's root, for the host template) stops at the first file.
pub(crate) fn idmapped_bind(source: &Path, target: &Path, userns: &Path) -> io::Result<()> {
    let (src, dst) = (cpath(source)?, cpath(target)?);
    let ns = std::fs::File::open(userns)?;
    // SAFETY: open_tree reads the NUL-terminated path `src`, alive for the call; a
    // non-negative result is a new file descriptor that nothing else owns.
    let tree = unsafe {
        check(libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        ))?
    };
    let tree = i32::try_from(tree).map_err(|_| io::Error::other("open_tree: bad descriptor"))?;
    // SAFETY: `tree` is a fresh descriptor returned above, owned from here on.
    let tree = unsafe { OwnedFd::from_raw_fd(tree) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(ns.as_raw_fd()).unwrap_or(u64::MAX),
    };
    let empty = c"";
    // SAFETY: the kernel reads `size_of::<MountAttr>()` bytes from `attr`, a live repr(C)
    // struct laid out as `struct mount_attr`; `empty` is NUL-terminated; both fds are open.
    unsafe {
        check(libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ))?;
    }
    // SAFETY: `empty` and `dst` are NUL-terminated and alive for the call; `tree` is open.
    unsafe {
        check(libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ))?;
    }
    Ok(())
}

/// Makes a user namespace mapping ids 0..size to host ids base..base+size (uids and gids) and
/// pins it at `ns_file` (created) with a bind mount of its nsfs file.
pub(crate) fn create_userns(ns_file: &Path, base: u32, size: u32) -> io::Result<()> {
    let own = std::fs::read_link("/proc/self/ns/user")?;
    // A child that only enters a new user namespace and waits; its maps are written from here
    // (host root may map any ids), then the namespace outlives it through the bind mount.
    let mut child = std::process::Command::new("unshare")
        .args(["--user", "--", "sleep", "30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = (|| {
        let proc = format!("/proc/{}", child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::read_link(format!("{proc}/ns/user")) {
                Ok(ns) if ns != own => break,
                _ if Instant::now() > deadline => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "unshare --user did not enter a new user namespace",
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        let map = format!("0 {base} {size}\n");
        std::fs::write(format!("{proc}/uid_map"), &map)?;
        std::fs::write(format!("{proc}/gid_map"), &map)?;
        std::fs::File::create(ns_file)?;
        nix::mount::mount(
            Some(Path::new(&format!("{proc}/ns/user"))),
            ns_file,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io::Error::from)
    })();
    let _ = child.kill();
    let _ = child.wait();
    if result.is_err() {
        let _ = std::fs::remove_file(ns_file);
    }
    result
}
