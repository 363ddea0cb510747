//! Per-sandbox synthetic addresses: how a name-less protocol is bound to a name, not to an
//! address (issue 11.4).
//!
//! In `custom` mode the filtering DNS answers an allowed name with an address of the sandbox's
//! own from a reserved range (default 198.18.0.0/15) instead of the name's real addresses. A
//! connection to that address reaches the proxy like every TCP connection; the proxy maps it
//! back to the name, checks the name against the live policy and dials the name's real address.
//! A shared address (virtual hosting, a CDN) therefore opens only the names the policy allows,
//! never the other tenants behind the same address.
//!
//! A table is per sandbox (the proxy knows the sandbox by its source address, so two sandboxes
//! may use the same synthetic address for different names), bounded, and stable for the
//! sandbox's life: a name keeps its address, and an address is handed to another name only
//! when the table is full and the address went unused for [`REUSE_AFTER`]. Every new mapping is
//! appended to a journal file (one per sandbox) before the sandbox is told the address, so a
//! daemon killed with `kill -9` finds them again; the journal is replayed when the sandbox is
//! registered and removed when it is deleted.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use palisade_policy::CanonicalName;

/// A mapping unused for this long may be reused for another name once the table is full.
/// Far longer than any TTL the DNS hands out (60 s), so a well-behaved client never holds it.
pub const REUSE_AFTER: Duration = Duration::from_secs(15 * 60);

/// Journal lines beyond this multiple of the live mappings trigger a rewrite.
const COMPACT_FACTOR: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error("all {0} synthetic addresses of this sandbox are in use")]
    Full(usize),
    #[error("cannot record the synthetic address in {path}: {source}")]
    Journal { path: PathBuf, source: io::Error },
}

#[derive(Debug, Clone)]
struct Slot {
    name: CanonicalName,
    used: Instant,
}

/// One sandbox's synthetic addresses.
#[derive(Debug)]
pub(crate) struct SynthTable {
    range: Ipv4Net,
    cap: usize,
    by_addr: HashMap<Ipv4Addr, Slot>,
    by_name: HashMap<CanonicalName, Ipv4Addr>,
    /// The offset in `range` tried next, so addresses are reused as late as possible.
    next: u32,
    reuse_after: Duration,
    journal: Option<Journal>,
}

impl SynthTable {
    /// An empty table; with `journal`, mappings already recorded there are loaded first.
    pub(crate) fn new(range: Ipv4Net, cap: usize, journal: Option<PathBuf>) -> Self {
        let mut table = Self {
            range,
            cap: cap.min(usable(range)).max(1),
            by_addr: HashMap::new(),
            by_name: HashMap::new(),
            next: 1,
            reuse_after: REUSE_AFTER,
            journal: None,
        };
        if let Some(path) = journal {
            let lines = table.replay(&path);
            table.journal = Some(Journal { path, lines });
        }
        table
    }

    /// The name `addr` stands for in this sandbox, if it was handed out; marks it used.
    pub(crate) fn name_of(&mut self, addr: Ipv4Addr) -> Option<CanonicalName> {
        let slot = self.by_addr.get_mut(&addr)?;
        slot.used = Instant::now();
        Some(slot.name.clone())
    }

    /// The address that stands for `name`, handed out now if it has none yet (recorded in the
    /// journal before it is returned).
    pub(crate) fn addr_for(&mut self, name: &CanonicalName) -> Result<Ipv4Addr, SyntheticError> {
        let now = Instant::now();
        if let Some(addr) = self.by_name.get(name).copied() {
            if let Some(slot) = self.by_addr.get_mut(&addr) {
                slot.used = now;
            }
            return Ok(addr);
        }
        let addr = if self.by_addr.len() >= self.cap {
            self.least_recently_used(now)
                .ok_or(SyntheticError::Full(self.cap))?
        } else {
            self.free_addr().ok_or(SyntheticError::Full(self.cap))?
        };
        if let Some(journal) = &mut self.journal {
            journal.append(addr, name)?;
        }
        self.insert(addr, name.clone(), now);
        self.compact_if_long();
        Ok(addr)
    }

    /// Forgets every mapping and removes the journal (the sandbox is gone).
    pub(crate) fn discard(&mut self) {
        self.by_addr.clear();
        self.by_name.clear();
        if let Some(journal) = self.journal.take()
            && let Err(e) = std::fs::remove_file(&journal.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %journal.path.display(), error = %e, "synthetic journal not removed");
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    fn insert(&mut self, addr: Ipv4Addr, name: CanonicalName, used: Instant) {
        if let Some(old) = self.by_addr.remove(&addr) {
            self.by_name.remove(&old.name);
        }
        if let Some(old_addr) = self.by_name.remove(&name) {
            self.by_addr.remove(&old_addr);
        }
        self.by_name.insert(name.clone(), addr);
        self.by_addr.insert(addr, Slot { name, used });
    }

    fn least_recently_used(&self, now: Instant) -> Option<Ipv4Addr> {
        self.by_addr
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.used) >= self.reuse_after)
            .min_by_key(|(_, s)| s.used)
            .map(|(a, _)| *a)
    }

    fn free_addr(&mut self) -> Option<Ipv4Addr> {
        let n = usable(self.range);
        for _ in 0..n {
            let offset = self.next;
            self.next = if offset >= n as u32 { 1 } else { offset + 1 };
            let addr = self.at(offset);
            if !self.by_addr.contains_key(&addr) {
                return Some(addr);
            }
        }
        None
    }

    /// The address `offset` places into the range (1 ..= usable).
    fn at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.range.network()).wrapping_add(offset))
    }

    fn offset_of(&self, addr: Ipv4Addr) -> Option<u32> {
        let offset = u32::from(addr).checked_sub(u32::from(self.range.network()))?;
        (1..=usable(self.range) as u32)
            .contains(&offset)
            .then_some(offset)
    }

    /// Loads a journal: one `ADDR NAME` line per mapping handed out, the later line winning.
    /// Lines that do not parse (a line torn by a crash) are skipped. Returns the line count.
    fn replay(&mut self, path: &Path) -> usize {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return 0,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "synthetic journal unreadable");
                return 0;
            }
        };
        let now = Instant::now();
        let mut lines = 0;
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            lines += 1;
            let Some((addr, name)) = line.split_once(' ') else {
                continue;
            };
            let (Ok(addr), Ok(name)) = (addr.parse::<Ipv4Addr>(), name.parse::<CanonicalName>())
            else {
                continue;
            };
            let Some(offset) = self.offset_of(addr) else {
                // Recorded under another configured range: no longer ours to hand out.
                continue;
            };
            self.insert(addr, name, now);
            self.next = offset.wrapping_add(1);
        }
        if self.next as usize > usable(self.range) {
            self.next = 1;
        }
        lines
    }

    fn compact_if_long(&mut self) {
        let live = self.by_addr.len();
        let Some(journal) = &mut self.journal else {
            return;
        };
        if journal.lines <= COMPACT_FACTOR * live + 64 {
            return;
        }
        let mut entries: Vec<(Ipv4Addr, &CanonicalName)> = self
            .by_addr
            .iter()
            .map(|(addr, slot)| (*addr, &slot.name))
            .collect();
        entries.sort_by_key(|(addr, _)| *addr);
        if let Err(e) = journal.rewrite(&entries) {
            // The long journal still holds every mapping; only its size suffers.
            tracing::warn!(path = %journal.path.display(), error = %e, "synthetic journal not compacted");
        }
    }
}

/// Host addresses of a range: the first and last are left out, as in a subnet.
fn usable(range: Ipv4Net) -> usize {
    let size = 1u64 << (32 - u32::from(range.prefix_len()));
    usize::try_from(size.saturating_sub(2)).unwrap_or(usize::MAX)
}

#[derive(Debug)]
struct Journal {
    path: PathBuf,
    lines: usize,
}

impl Journal {
    /// Appends one mapping. One `write` of a short line: a `kill -9` leaves it whole or absent
    /// (the page cache outlives the process; a host crash ends the sandboxes too).
    fn append(&mut self, addr: Ipv4Addr, name: &CanonicalName) -> Result<(), SyntheticError> {
        let line = format!("{addr} {}\n", name.as_str());
        let write = || {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            f.write_all(line.as_bytes())
        };
        write().map_err(|source| SyntheticError::Journal {
            path: self.path.clone(),
            source,
        })?;
        self.lines += 1;
        Ok(())
    }

    /// Replaces the journal with `entries`, atomically (a temporary file renamed over it).
    fn rewrite(&mut self, entries: &[(Ipv4Addr, &CanonicalName)]) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut text = String::with_capacity(entries.len() * 32);
        for (addr, name) in entries {
            text.push_str(&format!("{addr} {}\n", name.as_str()));
        }
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)?;
        self.lines = entries.len();
        Ok(())
    }
}

/// Where a sandbox's journal lives in `dir`; `None` for an id that cannot be a file name.
pub(crate) fn journal_path(dir: &Path, sandbox: &str) -> Option<PathBuf> {
    let ok = !sandbox.is_empty()
        && sandbox.len() <= 128
        && sandbox
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| dir.join(format!("{sandbox}.map")))
}

/// Removes the journals in `dir` of sandboxes not in `live` (deleted while the daemon was down).
/// Returns the ids whose journals were removed.
pub fn remove_stale_journals(dir: &Path, live: &[&str]) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".map").or_else(|| n.strip_suffix(".tmp")))
        else {
            continue;
        };
        if !live.contains(&id) && std::fs::remove_file(&path).is_ok() {
            removed.push(id.to_owned());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> CanonicalName {
        s.parse().unwrap()
    }

    fn range() -> Ipv4Net {
        "198.18.0.0/15".parse().unwrap()
    }

    #[test]
    fn a_name_keeps_its_address_and_names_do_not_share() {
        let mut t = SynthTable::new(range(), 16, None);
        let a = t.addr_for(&name("a.test")).unwrap();
        let b = t.addr_for(&name("b.test")).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.addr_for(&name("a.test")).unwrap(), a);
        assert_eq!(a, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(t.name_of(a), Some(name("a.test")));
        assert_eq!(t.name_of(b), Some(name("b.test")));
        assert_eq!(t.name_of(Ipv4Addr::new(198, 18, 0, 9)), None);
    }

    #[test]
    fn a_full_table_refuses_until_an_address_is_old_enough() {
        let mut t = SynthTable::new("198.18.0.0/29".parse().unwrap(), 100, None);
        // A /29 has 6 usable addresses, and the cap follows.
        for i in 0..6 {
            t.addr_for(&name(&format!("n{i}.test"))).unwrap();
        }
        assert!(matches!(
            t.addr_for(&name("more.test")),
            Err(SyntheticError::Full(6))
        ));
        // Once unused long enough, the least recently used address goes to the new name.
        t.reuse_after = Duration::ZERO;
        let victim = t.by_name[&name("n3.test")];
        for i in [0, 1, 2, 4, 5] {
            let addr = t.by_name[&name(&format!("n{i}.test"))];
            t.name_of(addr).unwrap();
        }
        let reused = t.addr_for(&name("more.test")).unwrap();
        assert_eq!(reused, victim);
        assert_eq!(t.name_of(victim), Some(name("more.test")));
        assert_eq!(t.len(), 6);
        assert!(!t.by_name.contains_key(&name("n3.test")));
    }

    #[test]
    fn the_journal_brings_every_mapping_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "sb-1").unwrap();
        let mut t = SynthTable::new(range(), 8, Some(path.clone()));
        let a = t.addr_for(&name("a.test")).unwrap();
        let b = t.addr_for(&name("b.test")).unwrap();
        // A line torn by a crash and junk are skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"junk\n198.18.0.")
            .unwrap();
        let mut back = SynthTable::new(range(), 8, Some(path.clone()));
        assert_eq!(back.name_of(a), Some(name("a.test")));
        assert_eq!(back.name_of(b), Some(name("b.test")));
        // New names continue after the recovered ones instead of reusing them.
        let c = back.addr_for(&name("c.test")).unwrap();
        assert!(c != a && c != b, "{c}");
        back.discard();
        assert!(!path.exists());
    }

    #[test]
    fn a_long_journal_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "sb-2").unwrap();
        let mut t = SynthTable::new("198.18.0.0/28".parse().unwrap(), 4, Some(path.clone()));
        t.reuse_after = Duration::ZERO;
        for i in 0..200 {
            t.addr_for(&name(&format!("n{i}.test"))).unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 2 * 4 + 64 + 1, "{lines} lines");
        let mut back = SynthTable::new("198.18.0.0/28".parse().unwrap(), 4, Some(path));
        let last = t.by_name[&name("n199.test")];
        assert_eq!(back.name_of(last), Some(name("n199.test")));
        assert_eq!(back.len(), 4);
    }

    #[test]
    fn only_plain_ids_get_a_journal_and_stale_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        assert!(journal_path(dir.path(), "../x").is_none());
        assert!(journal_path(dir.path(), "").is_none());
        for id in ["keep", "gone"] {
            std::fs::write(journal_path(dir.path(), id).unwrap(), "").unwrap();
        }
        assert_eq!(remove_stale_journals(dir.path(), &["keep"]), ["gone"]);
        assert!(journal_path(dir.path(), "keep").unwrap().exists());
    }
}
