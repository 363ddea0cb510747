use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;
use crate::SandboxCa;

/// A stand-in for the distro's own roots, so we can check they survive.
fn system_root() -> anyhow::Result<String> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Distro Root CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate()?;
    Ok(format!(
        "# Distro Root CA\n{}",
        params.self_signed(&key)?.pem()
    ))
}

fn write(root: &Path, path: &str, data: &str) -> anyhow::Result<()> {
    let full = root.join(path.trim_start_matches('/'));
    if let Some(parent) = full.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(full, data)?;
    Ok(())
}

fn read(root: &Path, path: &str) -> anyhow::Result<String> {
    Ok(fs::read_to_string(root.join(path.trim_start_matches('/')))?)
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle.trim()).count()
}

fn hash_links(root: &Path, dir: &str) -> anyhow::Result<Vec<String>> {
    let mut links = Vec::new();
    for entry in fs::read_dir(root.join(dir.trim_start_matches('/')))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_hash_link_name(&name) {
            links.push(name);
        }
    }
    Ok(links)
}

#[test]
fn debian_layout() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let distro = system_root()?;
    write(root, DEBIAN_BUNDLE, &distro)?;
    fs::create_dir_all(root.join("usr/local/share/ca-certificates"))?;
    let ca = SandboxCa::generate("deb")?;

    let first = install(root, ca.cert_pem())?;
    assert_eq!(first.bundle_path, DEBIAN_BUNDLE);
    assert_eq!(first.cert_dir, "/etc/ssl/certs");
    let bundle = read(root, DEBIAN_BUNDLE)?;
    assert!(bundle.starts_with(&distro), "distro roots kept in place");
    assert_eq!(count(&bundle, ca.cert_pem()), 1);
    assert_eq!(read(root, LOCAL_CA_FILE)?.trim(), ca.cert_pem().trim());
    let links = hash_links(root, "/etc/ssl/certs")?;
    assert_eq!(links.len(), 1);
    let link = root.join("etc/ssl/certs").join(&links[0]);
    assert_eq!(fs::read_link(&link)?, Path::new("palisade-sandbox-ca.pem"));
    assert_eq!(fs::read_to_string(&link)?.trim(), ca.cert_pem().trim());
    assert!(first.files_written.contains(&PathBuf::from(LOCAL_CA_FILE)));

    // Idempotent: same bytes, same single link.
    let second = install(root, ca.cert_pem())?;
    assert_eq!(second, first);
    assert_eq!(read(root, DEBIAN_BUNDLE)?, bundle);
    assert_eq!(hash_links(root, "/etc/ssl/certs")?, links);

    // A new sandbox CA replaces the old one everywhere.
    let newer = SandboxCa::generate("deb-2")?;
    install(root, newer.cert_pem())?;
    let bundle = read(root, DEBIAN_BUNDLE)?;
    assert_eq!(count(&bundle, ca.cert_pem()), 0);
    assert_eq!(count(&bundle, newer.cert_pem()), 1);
    assert!(bundle.starts_with(&distro));
    let links = hash_links(root, "/etc/ssl/certs")?;
    assert_eq!(links.len(), 1, "old hash link removed: {links:?}");
    Ok(())
}

#[test]
fn hash_link_name_is_openssls() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = SandboxCa::generate("hash")?;
    install(tmp.path(), ca.cert_pem())?;
    let links = hash_links(tmp.path(), "/etc/ssl/certs")?;
    let pem_path = tmp.path().join("ca.pem");
    fs::write(&pem_path, ca.cert_pem())?;
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject_hash", "-in"])
        .arg(&pem_path)
        .output()?;
    assert!(out.status.success(), "openssl x509 failed");
    let expected = format!("{}.0", String::from_utf8(out.stdout)?.trim());
    assert_eq!(links, vec![expected]);
    Ok(())
}

#[test]
fn empty_rootfs_gets_the_debian_layout() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = SandboxCa::generate("empty")?;
    let done = install(tmp.path(), ca.cert_pem())?;
    assert_eq!(done.bundle_path, DEBIAN_BUNDLE);
    assert_eq!(
        read(tmp.path(), DEBIAN_BUNDLE)?
            .matches("BEGIN CERTIFICATE")
            .count(),
        1
    );
    assert!(
        tmp.path()
            .join(LOCAL_CA_FILE.trim_start_matches('/'))
            .is_file()
    );
    assert!(!tmp.path().join("etc/pki").exists());
    Ok(())
}

#[test]
fn rhel_layout_follows_the_bundle_link_inside_the_rootfs() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let distro = system_root()?;
    let extracted = "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem";
    write(root, extracted, &distro)?;
    fs::create_dir_all(root.join("etc/pki/tls/certs"))?;
    fs::create_dir_all(root.join("etc/pki/ca-trust/source/anchors"))?;
    // As on Fedora: an absolute link, meaningful only inside the sandbox.
    symlink(extracted, root.join("etc/pki/tls/certs/ca-bundle.crt"))?;
    let ca = SandboxCa::generate("rhel")?;

    let done = install(root, ca.cert_pem())?;
    assert_eq!(done.bundle_path, RHEL_BUNDLE);
    assert_eq!(done.cert_dir, "/etc/pki/tls/certs");
    assert!(fs::symlink_metadata(root.join("etc/pki/tls/certs/ca-bundle.crt"))?.is_symlink());
    let bundle = read(root, extracted)?;
    assert!(bundle.starts_with(&distro));
    assert_eq!(count(&bundle, ca.cert_pem()), 1);
    assert_eq!(read(root, RHEL_ANCHOR_FILE)?.trim(), ca.cert_pem().trim());
    assert!(done.files_written.contains(&PathBuf::from(extracted)));
    assert_eq!(hash_links(root, "/etc/pki/tls/certs")?.len(), 1);
    assert!(
        !root.join("etc/ssl").exists(),
        "no Debian layout added to RHEL"
    );

    install(root, ca.cert_pem())?;
    assert_eq!(read(root, extracted)?, bundle);
    let newer = SandboxCa::generate("rhel-2")?;
    install(root, newer.cert_pem())?;
    let bundle = read(root, extracted)?;
    assert_eq!(
        (
            count(&bundle, ca.cert_pem()),
            count(&bundle, newer.cert_pem())
        ),
        (0, 1)
    );
    Ok(())
}

#[test]
fn alpine_layout_with_linked_and_plain_cert_pem() -> anyhow::Result<()> {
    for linked in [true, false] {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        let distro = system_root()?;
        write(root, "/etc/alpine-release", "3.20.0\n")?;
        write(root, DEBIAN_BUNDLE, &distro)?;
        if linked {
            symlink("certs/ca-certificates.crt", root.join("etc/ssl/cert.pem"))?;
        } else {
            write(root, ALPINE_CERT_PEM, &distro)?;
        }
        let ca = SandboxCa::generate("alpine")?;
        for _ in 0..2 {
            let done = install(root, ca.cert_pem())?;
            assert_eq!(done.bundle_path, DEBIAN_BUNDLE);
            for path in [DEBIAN_BUNDLE, ALPINE_CERT_PEM] {
                let bundle = read(root, path)?;
                assert!(bundle.starts_with(&distro));
                assert_eq!(count(&bundle, ca.cert_pem()), 1, "{path} linked={linked}");
            }
        }
        assert_eq!(
            fs::symlink_metadata(root.join("etc/ssl/cert.pem"))?.is_symlink(),
            linked
        );
    }
    Ok(())
}

#[test]
fn all_layouts_at_once() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    fs::create_dir_all(root.join("etc/ssl/certs"))?;
    fs::create_dir_all(root.join("etc/pki/tls/certs"))?;
    write(root, ALPINE_CERT_PEM, "")?;
    let ca = SandboxCa::generate("all")?;
    let done = install(root, ca.cert_pem())?;
    assert_eq!(done.bundle_path, DEBIAN_BUNDLE);
    for path in [
        DEBIAN_BUNDLE,
        ALPINE_CERT_PEM,
        RHEL_BUNDLE,
        RHEL_ANCHOR_FILE,
        LOCAL_CA_FILE,
    ] {
        assert_eq!(count(&read(root, path)?, ca.cert_pem()), 1, "{path}");
    }
    Ok(())
}

#[test]
fn symlinks_never_lead_out_of_the_rootfs() -> anyhow::Result<()> {
    let outside = tempfile::tempdir()?;
    let outside_path = outside
        .path()
        .to_str()
        .ok_or(anyhow::anyhow!("utf8"))?
        .to_owned();
    let victim = outside.path().join("victim.crt");
    fs::write(&victim, "precious\n")?;
    let ca = SandboxCa::generate("escape")?;

    // (1) the certificate directory is an absolute link to a host directory;
    // (2) a relative link climbing past the root;
    // (3) the bundle itself links to a host file;
    // (4) the local CA directory links out.
    type Plant<'a> = Box<dyn Fn(&Path) -> anyhow::Result<()> + 'a>;
    let cases: Vec<(&str, Plant<'_>)> = vec![
        (
            "absolute dir link",
            Box::new(|r: &Path| {
                fs::create_dir_all(r.join("etc/ssl"))?;
                symlink(&outside_path, r.join("etc/ssl/certs"))?;
                Ok(())
            }),
        ),
        (
            "relative dir link",
            Box::new(|r: &Path| {
                fs::create_dir_all(r.join("etc/ssl"))?;
                let up = "../".repeat(40);
                symlink(
                    format!("{up}{}", outside_path.trim_start_matches('/')),
                    r.join("etc/ssl/certs"),
                )?;
                Ok(())
            }),
        ),
        (
            "bundle file link",
            Box::new(|r: &Path| {
                fs::create_dir_all(r.join("etc/ssl/certs"))?;
                symlink(&victim, r.join("etc/ssl/certs/ca-certificates.crt"))?;
                Ok(())
            }),
        ),
        (
            "local dir link",
            Box::new(|r: &Path| {
                fs::create_dir_all(r.join("usr/local/share"))?;
                symlink(&outside_path, r.join("usr/local/share/ca-certificates"))?;
                Ok(())
            }),
        ),
    ];
    for (what, plant) in cases {
        let tmp = tempfile::tempdir()?;
        plant(tmp.path())?;
        // Either refused or written inside the rootfs; never outside.
        let result = install(tmp.path(), ca.cert_pem());
        let mut outside_names: Vec<_> = fs::read_dir(outside.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        outside_names.sort();
        assert_eq!(
            outside_names,
            vec![std::ffi::OsString::from("victim.crt")],
            "{what}"
        );
        assert_eq!(fs::read_to_string(&victim)?, "precious\n", "{what}");
        if result.is_ok() {
            // The link was resolved as if the rootfs were `/`.
            let inside = tmp.path().join(outside_path.trim_start_matches('/'));
            assert!(inside.exists(), "{what}: written inside the rootfs");
        }
    }
    Ok(())
}

#[test]
fn odd_files_are_refused_not_followed() -> anyhow::Result<()> {
    let ca = SandboxCa::generate("odd")?;
    // A directory where the bundle should be.
    let tmp = tempfile::tempdir()?;
    fs::create_dir_all(tmp.path().join("etc/ssl/certs/ca-certificates.crt"))?;
    assert!(matches!(
        install(tmp.path(), ca.cert_pem()),
        Err(CaError::TrustStoreRefused { .. })
    ));
    // A FIFO: refused at once, never blocks.
    let tmp = tempfile::tempdir()?;
    fs::create_dir_all(tmp.path().join("etc/ssl/certs"))?;
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        tmp.path().join("etc/ssl/certs/ca-certificates.crt"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )?;
    assert!(matches!(
        install(tmp.path(), ca.cert_pem()),
        Err(CaError::TrustStoreRefused { .. })
    ));
    // A symlink loop.
    let tmp = tempfile::tempdir()?;
    fs::create_dir_all(tmp.path().join("etc/ssl/certs"))?;
    symlink(
        "ca-certificates.crt",
        tmp.path().join("etc/ssl/certs/ca-certificates.crt"),
    )?;
    assert!(install(tmp.path(), ca.cert_pem()).is_err());
    // A rootfs that does not exist.
    assert!(install(Path::new("/nonexistent/palisade/rootfs"), ca.cert_pem()).is_err());
    Ok(())
}

#[test]
fn only_one_ca_certificate_is_accepted() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ca = SandboxCa::generate("input")?;
    let other = SandboxCa::generate("input-2")?;
    for bad in [
        String::new(),
        "garbage".to_owned(),
        format!("{}{}", ca.cert_pem(), other.cert_pem()),
        format!("{BEGIN_MARKER}\n{}", ca.cert_pem()),
        ca.key_pem().to_owned(),
    ] {
        assert!(matches!(
            install(tmp.path(), &bad),
            Err(CaError::InvalidCaCert { .. })
        ));
    }
    assert!(
        !tmp.path().join("etc").exists(),
        "nothing written for bad input"
    );
    Ok(())
}

#[test]
fn env_vars_point_at_the_bundle() {
    let done = TrustInstall {
        bundle_path: DEBIAN_BUNDLE.to_owned(),
        cert_dir: "/etc/ssl/certs".to_owned(),
        files_written: Vec::new(),
    };
    let vars = env_vars(&done);
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected = vec![
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "DENO_CERT",
        "AWS_CA_BUNDLE",
        "PIP_CERT",
        "HTTPLIB2_CA_CERTS",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
        "NIX_SSL_CERT_FILE",
        "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
    ];
    let mut sorted = names.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected);
    for (k, v) in &vars {
        let want = if k == "SSL_CERT_DIR" {
            "/etc/ssl/certs"
        } else {
            DEBIAN_BUNDLE
        };
        assert_eq!(v, want, "{k}");
    }
}
