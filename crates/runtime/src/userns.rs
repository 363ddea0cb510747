//! Per-sandbox user namespaces: each sandbox's root is an unprivileged host uid/gid of a range
//! of its own. Ranges are slots of [`IDS_PER_SANDBOX`] ids from a configured first host id,
//! allocated like addresses from a pool; the slot is written beside the pinned namespace
//! (`<data>/userns/<id>/{ns,slot}`), so a restarted daemon recovers which are taken.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{IoContext, Result, RuntimeError};

/// Ids per sandbox: the 16-bit uid space a distribution expects (root, system users, nobody
/// at 65534).
pub const IDS_PER_SANDBOX: u32 = 65_536;

/// Where the sandboxes' id ranges come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsernsConfig {
    /// The first host uid/gid of the first slot. Ids from here on must belong to no one on
    /// the host.
    pub first_host_id: u32,
    /// How many sandboxes can have a range at once.
    pub slots: u32,
}

impl Default for UsernsConfig {
    /// 4096 ranges from host id 0x7000_0000 (1879048192): far above any login or system
    /// user, below the 32-bit overflow ids.
    fn default() -> Self {
        Self {
            first_host_id: 0x7000_0000,
            slots: 4096,
        }
    }
}

impl UsernsConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let end =
            u64::from(self.first_host_id) + u64::from(self.slots) * u64::from(IDS_PER_SANDBOX);
        if self.first_host_id < IDS_PER_SANDBOX || self.slots == 0 || end > u64::from(u32::MAX) {
            return Err(RuntimeError::Invalid(format!(
                "user namespace ranges {}+{}x{IDS_PER_SANDBOX} must lie within 65536..2^32",
                self.first_host_id, self.slots
            )));
        }
        Ok(())
    }

    /// The first host id of a slot.
    pub(crate) fn base(&self, slot: u32) -> u32 {
        self.first_host_id + slot * IDS_PER_SANDBOX
    }
}

/// A sandbox's namespace: the pinned nsfs file and the first host id of its range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Userns {
    pub ns_file: PathBuf,
    pub base: u32,
}

/// The slots in use.
#[derive(Debug)]
pub(crate) struct Slots {
    cfg: UsernsConfig,
    dir: PathBuf,
    used: Mutex<BTreeSet<u32>>,
}

impl Slots {
    /// The allocator over `dir` (`<data>/userns`), seeded from the slot files found there.
    pub(crate) fn recover(cfg: UsernsConfig, dir: PathBuf) -> Result<Self> {
        cfg.validate()?;
        std::fs::create_dir_all(&dir).at(&dir)?;
        let mut used = BTreeSet::new();
        for e in std::fs::read_dir(&dir).at(&dir)?.flatten() {
            if let Some(s) = read_slot(&e.path()) {
                used.insert(s);
            }
        }
        Ok(Self {
            cfg,
            dir,
            used: Mutex::new(used),
        })
    }

    pub(crate) fn home(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Takes the lowest free slot.
    pub(crate) fn allocate(&self) -> Result<u32> {
        let mut used = self
            .used
            .lock()
            .map_err(|_| RuntimeError::Spec("user namespace slots poisoned".into()))?;
        let slot = (0..self.cfg.slots)
            .find(|s| !used.contains(s))
            .ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "all {} user namespace ranges are in use",
                    self.cfg.slots
                ))
            })?;
        used.insert(slot);
        Ok(slot)
    }

    pub(crate) fn release(&self, slot: u32) {
        if let Ok(mut used) = self.used.lock() {
            used.remove(&slot);
        }
    }

    /// The sandbox's namespace, if one was made for it.
    pub(crate) fn get(&self, id: &str) -> Option<Userns> {
        let home = self.home(id);
        let slot = read_slot(&home)?;
        Some(Userns {
            ns_file: home.join("ns"),
            base: self.cfg.base(slot),
        })
    }

    pub(crate) fn base(&self, slot: u32) -> u32 {
        self.cfg.base(slot)
    }

    /// Ids with a namespace directory.
    pub(crate) fn ids(&self) -> Vec<String> {
        entry_names(&self.dir)
    }
}

/// The names in `dir`; none when it cannot be read (absent until the first sandbox needs it).
pub(crate) fn entry_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The directory through which sandboxes with a user namespace reach their bundles: under
/// `/run/palisade` (traversable by anyone, listable by root), one per data directory so that
/// several runtimes on a host never meet.
pub(crate) fn reach_dir(data: &Path) -> PathBuf {
    use sha2::Digest;
    let h = sha2::Sha256::digest(data.as_os_str().as_encoded_bytes());
    PathBuf::from("/run/palisade").join(format!("sandboxes-{}", &hex::encode(h)[..12]))
}

pub(crate) fn read_slot(home: &Path) -> Option<u32> {
    std::fs::read_to_string(home.join("slot"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A host id seen from inside a namespace starting at `base`: ids outside the range (files
/// the host wrote) count as root's, the only owner such a file could have had before.
pub(crate) fn to_inside(host: u32, base: u32) -> u32 {
    match host.checked_sub(base) {
        Some(v) if v < IDS_PER_SANDBOX => v,
        _ => 0,
    }
}

/// An id from an archive, placed in the range at `base` (unknown ids become `nobody`).
pub(crate) fn to_host(inside: u64, base: u32) -> u32 {
    let v = u32::try_from(inside)
        .ok()
        .filter(|v| *v < IDS_PER_SANDBOX)
        .unwrap_or(65_534);
    base + v
}

/// Gives every entry below `root` (and `root` itself) the ids of the range at `base`,
/// reading the ids stored there as container-view ids (a restored archive).
pub(crate) fn shift_tree(root: &Path, base: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).at(&p)?;
        std::os::unix::fs::lchown(
            &p,
            Some(to_host(u64::from(m.uid()), base)),
            Some(to_host(u64::from(m.gid()), base)),
        )
        .at(&p)?;
        // lchown clears set-id bits on files; put the mode back.
        if !m.file_type().is_symlink() && m.mode() & 0o6000 != 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m.mode() & 0o7777))
                .at(&p)?;
        }
        if m.is_dir() {
            for e in std::fs::read_dir(&p).at(&p)?.flatten() {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_recovered_and_freed() {
        let d = tempfile::tempdir().unwrap();
        let cfg = UsernsConfig {
            first_host_id: 1 << 20,
            slots: 3,
        };
        let s = Slots::recover(cfg, d.path().join("userns")).unwrap();
        let (a, b) = (s.allocate().unwrap(), s.allocate().unwrap());
        assert_ne!(a, b);
        assert_eq!(s.base(b) - s.base(a), IDS_PER_SANDBOX);
        // A restarted allocator sees the slots written beside the namespaces.
        for (id, slot) in [("a", a), ("b", b)] {
            std::fs::create_dir_all(s.home(id)).unwrap();
            std::fs::write(s.home(id).join("slot"), slot.to_string()).unwrap();
        }
        let s2 = Slots::recover(cfg, d.path().join("userns")).unwrap();
        let c = s2.allocate().unwrap();
        assert!(c != a && c != b);
        assert!(s2.allocate().is_err(), "only three slots");
        s2.release(a);
        assert_eq!(s2.allocate().unwrap(), a);
        assert_eq!(s2.get("b").unwrap().base, s2.base(b));
        assert!(s2.get("zzz").is_none());
    }

    #[test]
    fn ranges_validated_and_ids_shifted() {
        assert!(UsernsConfig::default().validate().is_ok());
        for (first, slots) in [(0, 1), (1 << 20, 0), (u32::MAX - 10, 1), (1 << 31, 1 << 15)] {
            let c = UsernsConfig {
                first_host_id: first,
                slots,
            };
            assert!(c.validate().is_err(), "{first} {slots}");
        }
        let base = 0x7000_0000;
        assert_eq!(to_inside(base + 1000, base), 1000);
        assert_eq!(to_inside(0, base), 0);
        assert_eq!(to_inside(base + IDS_PER_SANDBOX, base), 0);
        assert_eq!(to_host(1000, base), base + 1000);
        assert_eq!(to_host(1 << 40, base), base + 65_534);
    }
}
