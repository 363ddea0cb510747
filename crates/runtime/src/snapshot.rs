//! Snapshot archives: a sandbox's overlay upper directory as tar + zstd, with a manifest first.
//! Overlay whiteouts (character devices 0/0) and opaque directories (`trusted.overlay.opaque`)
//! are kept, so deletions made in the sandbox survive a restore. Memory is not captured.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::error::{IoContext, Result, RuntimeError};
use crate::types::SnapshotManifest;

const MANIFEST: &str = "manifest.json";
const UPPER: &str = "upper";
const OPAQUE: &str = "trusted.overlay.opaque";
const PAX_OPAQUE: &str = "SCHILY.xattr.trusted.overlay.opaque";
/// Bound on the manifest entry: it is untrusted input on restore.
const MAX_MANIFEST: u64 = 64 * 1024;

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::BadArchive(msg.into())
}

#[derive(Debug, Default)]
struct Counts {
    entries: u64,
    bytes: u64,
}

/// Ids as the sandbox sees them: the archive is portable to a sandbox with another range.
fn inside_ids(h: &mut tar::Header, meta: &std::fs::Metadata, base: Option<u32>) {
    if let Some(base) = base {
        h.set_uid(u64::from(crate::userns::to_inside(meta.uid(), base)));
        h.set_gid(u64::from(crate::userns::to_inside(meta.gid(), base)));
    }
}

fn walk(
    b: &mut tar::Builder<impl Write>,
    root: &Path,
    rel: &Path,
    c: &mut Counts,
    base: Option<u32>,
) -> Result<()> {
    let full = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&full)
        .at(&full)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).at(&path)?;
        let arname = Path::new(UPPER).join(&rel);
        let ft = meta.file_type();
        c.entries += 1;
        if ft.is_char_device() {
            if meta.rdev() != 0 {
                continue; // only overlay whiteouts are kept, never device nodes
            }
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&meta);
            inside_ids(&mut h, &meta, base);
            h.set_entry_type(tar::EntryType::Char);
            h.set_size(0);
            h.set_device_major(0).at(&path)?;
            h.set_device_minor(0).at(&path)?;
            b.append_data(&mut h, &arname, std::io::empty()).at(&path)?;
        } else if ft.is_socket() || ft.is_fifo() || ft.is_block_device() {
            continue;
        } else {
            if ft.is_dir()
                && xattr::get(&path, OPAQUE)
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == b"y")
            {
                b.append_pax_extensions([(PAX_OPAQUE, &b"y"[..])])
                    .at(&path)?;
            }
            if ft.is_file() {
                c.bytes += meta.len();
            }
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            inside_ids(&mut h, &meta, base);
            if ft.is_symlink() {
                let target = std::fs::read_link(&path).at(&path)?;
                h.set_size(0);
                b.append_link(&mut h, &arname, &target).at(&path)?;
            } else if ft.is_dir() {
                h.set_size(0);
                b.append_data(&mut h, &arname, std::io::empty()).at(&path)?;
                walk(b, root, &rel, c, base)?;
            } else {
                let f = File::open(&path).at(&path)?;
                b.append_data(&mut h, &arname, f).at(&path)?;
            }
        }
    }
    Ok(())
}

/// Writes the archive of `upper` to `dest` (via a temporary file renamed at the end).
/// `base` is the first host id of the sandbox's user namespace range, if it has one.
pub(crate) fn write(
    upper: &Path,
    dest: &Path,
    mut manifest: SnapshotManifest,
    base: Option<u32>,
) -> Result<SnapshotManifest> {
    // Count first so the manifest, which comes first in the archive, is complete.
    let mut counts = Counts::default();
    walk(
        &mut tar::Builder::new(std::io::sink()),
        upper,
        Path::new(""),
        &mut counts,
        base,
    )?;
    manifest.entries = counts.entries;
    manifest.upper_bytes = counts.bytes;
    manifest.archive_bytes = 0; // unknown inside the archive itself

    let tmp = dest.with_extension(format!("partial-{}", std::process::id()));
    let result = (|| {
        let f = BufWriter::new(File::create(&tmp).at(&tmp)?);
        let enc = zstd::stream::write::Encoder::new(f, 3).at(&tmp)?;
        let mut b = tar::Builder::new(enc);
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| RuntimeError::Spec(e.to_string()))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(json.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, MANIFEST, json.as_slice()).at(&tmp)?;
        walk(&mut b, upper, Path::new(""), &mut Counts::default(), base)?;
        let enc = b.into_inner().at(&tmp)?;
        let file = enc
            .finish()
            .at(&tmp)?
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .at(&tmp)?;
        // On disk before it takes the snapshot's name: a crash never leaves a truncated
        // archive under it.
        file.sync_all().at(&tmp)?;
        std::fs::rename(&tmp, dest).at(dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    manifest.archive_bytes = std::fs::metadata(dest).at(dest)?.len();
    Ok(manifest)
}

fn open(
    archive: &Path,
) -> Result<tar::Archive<zstd::stream::read::Decoder<'static, BufReader<File>>>> {
    let f = File::open(archive).at(archive)?;
    let dec = zstd::stream::read::Decoder::new(f)
        .map_err(|e| bad(format!("{}: {e}", archive.display())))?;
    Ok(tar::Archive::new(dec))
}

/// Reads the manifest (the archive's first entry).
pub(crate) fn read_manifest(archive: &Path) -> Result<SnapshotManifest> {
    let mut ar = open(archive)?;
    let mut entries = ar.entries().map_err(|e| bad(e.to_string()))?;
    let first = entries
        .next()
        .ok_or_else(|| bad("empty archive"))?
        .map_err(|e| bad(e.to_string()))?;
    let path = first.path().map_err(|e| bad(e.to_string()))?.into_owned();
    if path != Path::new(MANIFEST) {
        return Err(bad(format!(
            "first entry is {}, not {MANIFEST}",
            path.display()
        )));
    }
    let mut json = Vec::new();
    first
        .take(MAX_MANIFEST)
        .read_to_end(&mut json)
        .map_err(|e| bad(e.to_string()))?;
    let m: SnapshotManifest =
        serde_json::from_slice(&json).map_err(|e| bad(format!("manifest: {e}")))?;
    if m.version != 1 {
        return Err(bad(format!("unsupported snapshot version {}", m.version)));
    }
    Ok(m)
}

fn no_symlink_parents(root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel.parent().map(Path::components).into_iter().flatten() {
        cur.push(c);
        if std::fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(bad(format!("{} goes through a symlink", rel.display())));
        }
    }
    Ok(())
}

/// Unpacks the archive's upper directory into `upper` (an empty directory).
pub(crate) fn unpack(archive: &Path, upper: &Path) -> Result<()> {
    let mut ar = open(archive)?;
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    for entry in ar.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        if path == Path::new(MANIFEST) {
            continue;
        }
        let rel: PathBuf = path
            .strip_prefix(UPPER)
            .map_err(|_| bad(format!("entry {} outside {UPPER}/", path.display())))?
            .to_path_buf();
        if rel.as_os_str().is_empty() {
            continue;
        }
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(bad(format!("entry {} leaves the archive", path.display())));
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() {
            let (maj, min) = (entry.header().device_major(), entry.header().device_minor());
            if !matches!((maj, min), (Ok(Some(0)), Ok(Some(0)))) {
                return Err(bad(format!("device node {} in snapshot", rel.display())));
            }
            no_symlink_parents(upper, &rel)?;
            let dest = upper.join(&rel);
            mknod(
                &dest,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o000),
                makedev(0, 0),
            )
            .map_err(|e| RuntimeError::io(&dest, e.into()))?;
            continue;
        }
        if kind.is_block_special() || kind.is_fifo() {
            return Err(bad(format!("special file {} in snapshot", rel.display())));
        }
        // Entry names are prefixed with `upper/`, so tar's `unpack_in` cannot be used: check
        // the parents ourselves (plain components, no symlinks) and unpack to the exact path.
        no_symlink_parents(upper, &rel)?;
        let dest = upper.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        if kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad(format!("hard link {} without target", rel.display())))?
                .into_owned();
            let target = link
                .strip_prefix(UPPER)
                .map_err(|_| bad(format!("hard link {} leaves {UPPER}/", rel.display())))?;
            if target
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(bad(format!(
                    "hard link {} leaves the archive",
                    rel.display()
                )));
            }
            no_symlink_parents(upper, target)?;
            let src = upper.join(target);
            if std::fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(bad(format!("hard link {} to a symlink", rel.display())));
            }
            std::fs::hard_link(&src, &dest).at(&dest)?;
            continue;
        }
        // tar sets no extended attributes on directories: carry the opaque marker ourselves.
        let opaque = kind.is_dir()
            && entry
                .pax_extensions()
                .ok()
                .flatten()
                .is_some_and(|mut exts| {
                    exts.any(|e| {
                        e.is_ok_and(|e| e.key() == Ok(PAX_OPAQUE) && e.value_bytes() == b"y")
                    })
                });
        entry.unpack(&dest).map_err(|e| {
            bad(format!(
                "{}: {e}: {:?}",
                rel.display(),
                std::error::Error::source(&e)
            ))
        })?;
        if opaque {
            xattr::set(&dest, OPAQUE, b"y").at(&dest)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> SnapshotManifest {
        SnapshotManifest {
            version: 1,
            source_sandbox: "a".into(),
            template: "system/host".into(),
            created_unix: 1,
            entries: 0,
            upper_bytes: 0,
            archive_bytes: 0,
        }
    }

    #[test]
    fn round_trip_files_links_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(upper.join("root/sub")).unwrap();
        std::fs::write(upper.join("root/sub/f.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", upper.join("root/link")).unwrap();
        let dest = dir.path().join("snap.tar.zst");
        let m = write(&upper, &dest, manifest(), None).unwrap();
        assert_eq!((m.entries, m.upper_bytes), (4, 5));
        assert!(m.archive_bytes > 0);
        let inner = read_manifest(&dest).unwrap();
        assert_eq!(inner.template, "system/host");
        assert_eq!(inner.entries, 4);

        let out = dir.path().join("restored");
        std::fs::create_dir(&out).unwrap();
        unpack(&dest, &out).unwrap();
        assert_eq!(std::fs::read(out.join("root/sub/f.txt")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(out.join("root/link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }

    #[test]
    fn garbage_and_hostile_archives_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("g");
        std::fs::write(&g, b"nope").unwrap();
        assert!(matches!(
            read_manifest(&g),
            Err(RuntimeError::BadArchive(_))
        ));

        // An archive whose first entry is not the manifest, then one escaping upper/.
        let mk = |entries: &[(&str, &[u8])]| {
            let p = dir.path().join("h.tar.zst");
            let enc = zstd::stream::write::Encoder::new(File::create(&p).unwrap(), 1).unwrap();
            let mut b = tar::Builder::new(enc);
            for (name, data) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            b.into_inner().unwrap().finish().unwrap();
            p
        };
        let p = mk(&[("upper/x", b"1")]);
        assert!(read_manifest(&p).is_err());
        let json = serde_json::to_vec(&manifest()).unwrap();
        let p = mk(&[("manifest.json", &json), ("upper/../../evil", b"1")]);
        let out = dir.path().join("o");
        std::fs::create_dir(&out).unwrap();
        assert!(unpack(&p, &out).is_err());
        assert!(!dir.path().join("evil").exists());
    }
}
