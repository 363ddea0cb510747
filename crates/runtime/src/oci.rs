//! Importing an image archive (`docker save` tarball or OCI image layout tarball) into a
//! template root file system, applying layers in order with their whiteouts. The archive is
//! untrusted user input: paths never escape the target, digests are verified.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result, RuntimeError};

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::BadArchive(msg.into())
}

/// An unpacking error: the archive's fault, unless the host's disk was full (or over quota),
/// which the caller must hear as a host fault and not as a bad archive.
fn unpack_err(dest: &Path, what: String, e: std::io::Error) -> RuntimeError {
    let full = matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || e.to_string().contains("No space left on device");
    if full {
        RuntimeError::io(dest, e)
    } else {
        bad(format!("{what}: {e}"))
    }
}

/// Opens a possibly compressed tar stream (gzip or zstd by magic bytes).
fn open_tar(path: &Path) -> Result<tar::Archive<Box<dyn Read>>> {
    let mut f = File::open(path).at(path)?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).at(path)?;
    let f = File::open(path).at(path)?;
    let r: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(f).at(path)?)
    } else {
        Box::new(BufReader::new(f))
    };
    Ok(tar::Archive::new(r))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    platform: Option<ImagePlatform>,
}

#[derive(Deserialize)]
struct ImagePlatform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ImageRunConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ImageRunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
}

/// The blob file of a digest, checked.
fn blob(root: &Path, digest: &str) -> Result<PathBuf> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| bad(format!("bad digest {digest:?}")))?;
    if alg != "sha256" || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("unsupported digest {digest:?}")));
    }
    let p = root.join("blobs").join(alg).join(hex);
    let mut h = Sha256::new();
    let mut f = File::open(&p).map_err(|_| bad(format!("blob {digest} missing")))?;
    std::io::copy(&mut f, &mut h).at(&p)?;
    if hex::encode(h.finalize()) != hex.to_ascii_lowercase() {
        return Err(bad(format!("blob {digest} does not match its digest")));
    }
    Ok(p)
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<T> {
    let f = File::open(p).map_err(|_| bad(format!("{} missing", p.display())))?;
    serde_json::from_reader(BufReader::new(f)).map_err(|e| bad(format!("{}: {e}", p.display())))
}

/// A path inside the unpacked archive named by the archive itself: relative, no `..`.
fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad(format!("path {rel:?} leaves the archive")));
    }
    Ok(root.join(p))
}

/// Layers (in order) and the image's environment, from an unpacked archive.
fn layers(root: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let env_of = |cfg: &Path| -> Vec<String> {
        read_json::<ImageConfig>(cfg)
            .ok()
            .and_then(|c| c.config)
            .and_then(|c| c.env)
            .unwrap_or_default()
    };
    if root.join("manifest.json").exists() {
        let m: Vec<DockerManifest> = read_json(&root.join("manifest.json"))?;
        let m = m
            .into_iter()
            .next()
            .ok_or_else(|| bad("manifest.json lists no image"))?;
        let layers = m
            .layers
            .iter()
            .map(|l| inside(root, l))
            .collect::<Result<Vec<_>>>()?;
        return Ok((layers, env_of(&inside(root, &m.config)?)));
    }
    if root.join("index.json").exists() {
        let mut idx: Index = read_json(&root.join("index.json"))?;
        // One level of nested index (multi-platform images): take linux/amd64.
        for _ in 0..2 {
            let pick = idx
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .or_else(|| idx.manifests.first())
                .ok_or_else(|| bad("index.json lists no manifest"))?;
            let path = blob(root, &pick.digest)?;
            let is_index = pick
                .media_type
                .as_deref()
                .is_some_and(|m| m.contains("index") || m.contains("manifest.list"));
            if is_index {
                idx = read_json(&path)?;
                continue;
            }
            let m: Manifest = read_json(&path)?;
            let layers = m
                .layers
                .iter()
                .map(|l| blob(root, &l.digest))
                .collect::<Result<Vec<_>>>()?;
            return Ok((layers, env_of(&blob(root, &m.config.digest)?)));
        }
        return Err(bad("index nesting too deep"));
    }
    Err(bad(
        "neither manifest.json (docker save) nor index.json (OCI layout) found",
    ))
}

/// Fails if any existing component of `rel` below `root` is a symlink (a whiteout must never
/// delete through a link to the host).
fn no_symlink_parents(root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(bad(format!("whiteout through symlink {}", rel.display())));
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).at(p),
        Ok(_) => std::fs::remove_file(p).at(p),
        Err(_) => Ok(()),
    }
}

/// Applies one layer tarball onto `rootfs`.
pub(crate) fn apply_layer(layer: &Path, rootfs: &Path) -> Result<()> {
    let mut ar = open_tar(layer)?;
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(|e| bad(format!("layer: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("layer entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("entry path: {e}")))?
            .into_owned();
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(bad(format!("entry {} leaves the root", path.display())));
        }
        let rel: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = rel.parent().unwrap_or(Path::new(""));
        if name == ".wh..wh..opq" {
            no_symlink_parents(rootfs, parent)?;
            let dir = rootfs.join(parent);
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    remove_any(&e.path())?;
                }
            }
            continue;
        }
        if let Some(victim) = name.strip_prefix(".wh.") {
            let target = parent.join(victim);
            no_symlink_parents(rootfs, parent)?;
            remove_any(&rootfs.join(target))?;
            continue;
        }
        // A directory replaced by a non-directory (or vice versa) in a later layer.
        let dest = rootfs.join(&rel);
        if let Ok(m) = std::fs::symlink_metadata(&dest)
            && m.is_dir() != entry.header().entry_type().is_dir()
        {
            no_symlink_parents(rootfs, parent)?;
            remove_any(&dest)?;
        }
        entry.unpack_in(rootfs).map_err(|e| {
            let what = format!(
                "unpacking {} ({:?})",
                rel.display(),
                std::error::Error::source(&e)
            );
            unpack_err(rootfs, what, e)
        })?;
    }
    Ok(())
}

/// Unpacks the image archive at `archive` into `rootfs` (an empty directory), using `scratch`
/// (an empty directory, removed by the caller) to hold the archive's blobs. Returns the
/// image's environment (`KEY=VALUE`).
pub(crate) fn import(archive: &Path, scratch: &Path, rootfs: &Path) -> Result<Vec<String>> {
    let mut ar = open_tar(archive)?;
    ar.set_preserve_permissions(false);
    ar.set_preserve_ownerships(false);
    ar.unpack(scratch)
        .map_err(|e| unpack_err(scratch, archive.display().to_string(), e))?;
    let (layers, env) = layers(scratch)?;
    for l in &layers {
        apply_layer(l, rootfs)?;
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn sha(d: &[u8]) -> String {
        hex::encode(Sha256::digest(d))
    }

    /// Builds an OCI layout tarball with two layers (the second gzip-compressed).
    fn oci_archive(dir: &Path) -> PathBuf {
        let l1 = layer(&[
            ("etc", None),
            ("etc/a", Some(b"1")),
            ("etc/b", Some(b"2")),
            ("opt", None),
            ("opt/x", Some(b"x")),
        ]);
        let l2raw = layer(&[
            ("etc/.wh.a", Some(b"")),
            ("opt/.wh..wh..opq", Some(b"")),
            ("opt/y", Some(b"y")),
            ("etc/c", Some(b"3")),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &l2raw).unwrap();
        let l2 = gz.finish().unwrap();
        let cfg = br#"{"config":{"Env":["PATH=/bin","FOO=bar"]}}"#.to_vec();
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{}"}},"layers":[{{"digest":"sha256:{}"}},{{"digest":"sha256:{}"}}]}}"#,
            sha(&cfg),
            sha(&l1),
            sha(&l2)
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}"}}]}}"#,
            sha(manifest.as_bytes())
        );
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |p: String, d: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(0o644);
            b.append_data(&mut h, p, d).unwrap();
        };
        add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json".into(), index.as_bytes());
        for d in [
            cfg.as_slice(),
            l1.as_slice(),
            l2.as_slice(),
            manifest.as_bytes(),
        ] {
            add(format!("blobs/sha256/{}", sha(d)), d);
        }
        let out = dir.join("image.tar");
        std::fs::write(&out, b.into_inner().unwrap()).unwrap();
        out
    }

    #[test]
    fn oci_layout_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let archive = oci_archive(dir.path());
        let (scratch, rootfs) = (dir.path().join("s"), dir.path().join("r"));
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::create_dir_all(&rootfs).unwrap();
        let env = import(&archive, &scratch, &rootfs).unwrap();
        assert_eq!(env, ["PATH=/bin", "FOO=bar"]);
        assert!(!rootfs.join("etc/a").exists(), "whiteout applied");
        assert_eq!(std::fs::read(rootfs.join("etc/b")).unwrap(), b"2");
        assert_eq!(std::fs::read(rootfs.join("etc/c")).unwrap(), b"3");
        assert!(!rootfs.join("opt/x").exists(), "opaque dir cleared");
        assert_eq!(std::fs::read(rootfs.join("opt/y")).unwrap(), b"y");
        assert!(!rootfs.join("etc/.wh.a").exists());
    }

    #[test]
    fn docker_save_format() {
        let dir = tempfile::tempdir().unwrap();
        let l1 = layer(&[("bin", None), ("bin/tool", Some(b"t"))]);
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in [
            (
                "manifest.json",
                br#"[{"Config":"cfg.json","RepoTags":["x:1"],"Layers":["l1/layer.tar"]}]"#.to_vec(),
            ),
            ("cfg.json", br#"{"config":{}}"#.to_vec()),
            ("l1/layer.tar", l1),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, p, d.as_slice()).unwrap();
        }
        let archive = dir.path().join("img.tar");
        std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
        let (scratch, rootfs) = (dir.path().join("s"), dir.path().join("r"));
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::create_dir_all(&rootfs).unwrap();
        assert!(import(&archive, &scratch, &rootfs).unwrap().is_empty());
        assert_eq!(std::fs::read(rootfs.join("bin/tool")).unwrap(), b"t");
    }

    #[test]
    fn hostile_archives_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("r");
        std::fs::create_dir_all(&rootfs).unwrap();
        // A symlink to the outside, then a whiteout through it.
        std::os::unix::fs::symlink(dir.path(), rootfs.join("escape")).unwrap();
        std::fs::write(dir.path().join("victim"), b"keep").unwrap();
        let l = dir.path().join("l.tar");
        std::fs::write(&l, layer(&[("escape/.wh.victim", Some(b""))])).unwrap();
        assert!(apply_layer(&l, &rootfs).is_err());
        assert!(dir.path().join("victim").exists());
        // A manifest naming a path outside the archive.
        assert!(inside(dir.path(), "../x").is_err());
        assert!(inside(dir.path(), "/etc/passwd").is_err());
        // Garbage is a clear error, not a panic.
        let g = dir.path().join("g.tar");
        std::fs::write(&g, b"not a tar at all").unwrap();
        let s = dir.path().join("s");
        std::fs::create_dir_all(&s).unwrap();
        assert!(matches!(
            import(&g, &s, &rootfs),
            Err(RuntimeError::BadArchive(_))
        ));
    }
}
