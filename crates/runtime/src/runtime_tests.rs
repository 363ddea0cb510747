//! The runtime's logic against the recording fake platform: no root, no containers.

use super::*;
use crate::platform::RecordingContainerPlatform;
use crate::types::TemplateProgress;

/// Without user namespaces: the calls stay few and no test needs root for a chown.
fn fake() -> (tempfile::TempDir, Runtime<RecordingContainerPlatform>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RuntimeConfig::new(dir.path());
    cfg.userns = None;
    let rt = Runtime::with_platform(cfg, RecordingContainerPlatform::default()).unwrap();
    (dir, rt)
}

fn spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        template: crate::HOST_TEMPLATE.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_mounts_writes_config_and_runs_then_delete_undoes_it() {
    let (dir, rt) = fake();
    let data = dir.path().canonicalize().unwrap();
    let mut s = spec("sbx-1");
    s.dns_server = Some("100.96.0.1".parse().unwrap());
    s.env = vec![("A".into(), "1".into()), ("PATH".into(), "/custom".into())].into();
    rt.create(s).await.unwrap();
    let sdir = data.join("sandboxes/sbx-1");
    let calls = rt.platform().calls();
    let rootfs = sdir.join("rootfs");
    assert_eq!(
        calls[0],
        format!(
            "mount overlay lowerdir=/,upperdir={u},workdir={w} on {r}",
            u = sdir.join("upper").display(),
            w = sdir.join("work").display(),
            r = rootfs.display()
        )
    );
    assert_eq!(
        calls[1],
        format!("runc run --detach --bundle {} sbx-1", sdir.display())
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sdir.join("config.json")).unwrap()).unwrap();
    let env = cfg.pointer("/process/env").unwrap().to_string();
    // The caller's PATH replaces the default (one entry per name).
    assert!(
        env.contains("\"PATH=/custom\"")
            && !env.contains("/usr/local/sbin")
            && env.contains("\"A=1\""),
        "{env}"
    );
    // The host template sees the data directory: it is masked.
    let masked = cfg.pointer("/linux/maskedPaths").unwrap().to_string();
    assert!(masked.contains(data.to_str().unwrap()), "{masked}");
    assert_eq!(
        std::fs::read_to_string(sdir.join("etc/resolv.conf")).unwrap(),
        "nameserver 100.96.0.1\noptions ndots:0\n"
    );
    assert!(matches!(
        rt.create(spec("sbx-1")).await,
        Err(RuntimeError::AlreadyExists(_))
    ));

    rt.delete("sbx-1").await.unwrap();
    let calls = rt.platform().calls();
    assert!(calls.contains(&"runc delete --force sbx-1".to_owned()));
    assert!(calls.contains(&format!("umount {}", rootfs.display())));
    assert!(!sdir.exists());
}

#[tokio::test]
async fn failed_start_leaves_nothing() {
    let (dir, rt) = fake();
    rt.platform().failing.lock().unwrap().push("run".into());
    let err = rt.create(spec("sbx-2")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Runc { op: "run", .. }), "{err}");
    assert!(!dir.path().join("sandboxes/sbx-2").exists());
    assert!(
        rt.platform()
            .calls()
            .iter()
            .any(|c| c.starts_with("umount "))
    );
}

#[tokio::test]
async fn bad_requests_are_rejected_before_any_effect() {
    let (_dir, rt) = fake();
    let mut cases = vec![spec("../x"), spec("ok")];
    cases[1].template = "no/such:template".into();
    let mut s = spec("ok2");
    s.vcpu = Some(0.0);
    cases.push(s);
    let mut s = spec("ok3");
    s.env = vec![("BAD=NAME".into(), "v".into())].into();
    cases.push(s);
    let mut s = spec("ok4");
    s.netns_path = Some("/nonexistent/netns".into());
    cases.push(s);
    let mut s = spec("ok5");
    s.hostname = Some("bad host".into());
    cases.push(s);
    for c in cases {
        assert!(rt.create(c).await.is_err());
    }
    assert!(
        rt.platform().calls().is_empty(),
        "{:?}",
        rt.platform().calls()
    );
}

#[tokio::test]
async fn reconcile_removes_unknown_containers_and_directories() {
    let (dir, rt) = fake();
    rt.create(spec("keep")).await.unwrap();
    rt.create(spec("orphan")).await.unwrap();
    rt.platform().canned.lock().unwrap().push((
        "list".into(),
        r#"[{"id":"keep","pid":10,"status":"running"},{"id":"ghost","pid":11,"status":"running"}]"#
            .into(),
    ));
    let r = rt.reconcile(&["keep".to_owned()]).await.unwrap();
    assert_eq!(r.removed, ["ghost", "orphan"]);
    assert!(dir.path().join("sandboxes/keep").exists());
    assert!(!dir.path().join("sandboxes/orphan").exists());
    assert!(
        rt.platform()
            .calls()
            .contains(&"runc delete --force ghost".to_owned())
    );
}

#[test]
fn data_dir_with_overlay_separators_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("a:b");
    let r = Runtime::with_platform(
        RuntimeConfig::new(&bad),
        RecordingContainerPlatform::default(),
    );
    assert!(matches!(r, Err(RuntimeError::Invalid(_))));
}

/// The control plane awaits these inside spawned tasks: every future must be `Send`.
#[test]
fn futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let (_dir, rt) = fake();
    send(&rt);
    send(&rt.create(spec("x")));
    send(&rt.exec("x", ExecRequest::default()));
    send(&rt.snapshot("x", Path::new("/nonexistent")));
    send(&rt.restore(Path::new("/nonexistent"), spec("y")));
    send(&rt.reconcile(&[]));
    send(&rt.delete("x"));
    let mut progress = |_p: TemplateProgress| {};
    send(&rt.ensure_template("system/host", &mut progress));
}

fn fake_userns(dir: &Path) -> Runtime<RecordingContainerPlatform> {
    let mut cfg = RuntimeConfig::new(dir);
    cfg.userns = Some(crate::UsernsConfig {
        first_host_id: 1 << 20,
        slots: 2,
    });
    Runtime::with_platform(cfg, RecordingContainerPlatform::default()).unwrap()
}

#[tokio::test]
async fn each_sandbox_gets_its_own_id_range_and_gives_it_back() {
    if !nix::unistd::geteuid().is_root() {
        return; // the upper directory is chowned to the range
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().canonicalize().unwrap();
    let rt = fake_userns(&data);
    rt.create(spec("u1")).await.unwrap();
    let (sdir, ns) = (data.join("sandboxes/u1"), data.join("userns/u1/ns"));
    let calls = rt.platform().calls();
    assert_eq!(calls[0], format!("userns {} 0:1048576:65536", ns.display()));
    assert_eq!(
        calls[1],
        format!(
            "idmap / on {} by {}",
            sdir.join("lower").display(),
            ns.display()
        )
    );
    assert!(calls[2].starts_with(&format!(
        "mount overlay lowerdir={},",
        sdir.join("lower").display()
    )));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sdir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg.pointer("/linux/uidMappings/0/hostID").unwrap(), 1 << 20);
    assert_eq!(cfg.pointer("/linux/gidMappings/0/size").unwrap(), 65_536);
    let nss = cfg.pointer("/linux/namespaces").unwrap().to_string();
    assert!(
        nss.contains(&format!("\"path\":\"{}\"", ns.display())),
        "{nss}"
    );
    let mode = std::fs::metadata(sdir.join("config.json"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert_eq!(rt.host_id_base("u1"), Some(1 << 20));

    // A network namespace made outside the sandbox's user namespace is refused; one made
    // after prepare_userns is taken, with the next range.
    let netns = data.join("fake-netns");
    std::fs::write(&netns, b"").unwrap();
    let mut s = spec("u2");
    s.netns_path = Some(netns.clone());
    assert!(matches!(
        rt.create(s.clone()).await,
        Err(RuntimeError::Invalid(_))
    ));
    assert!(!data.join("sandboxes/u2").exists());
    assert!(rt.prepare_userns("u2").await.unwrap().is_some());
    rt.create(s).await.unwrap();
    assert_eq!(rt.host_id_base("u2"), Some((1 << 20) + 65_536));
    assert!(rt.prepare_userns("u3").await.is_err(), "two slots only");

    // A restarted runtime knows both ranges are taken.
    let rt2 = fake_userns(&data);
    assert!(rt2.prepare_userns("u3").await.is_err());

    rt.delete("u1").await.unwrap();
    let calls = rt.platform().calls();
    assert!(calls.contains(&format!("umount {}", sdir.join("lower").display())));
    assert!(calls.contains(&format!("umount {}", ns.display())));
    assert!(!data.join("userns/u1").exists());
    assert!(rt.prepare_userns("u3").await.is_ok());
    assert_eq!(rt.host_id_base("u3"), Some(1 << 20));
    // A prepared namespace whose sandbox never came is removed by delete, and by reconcile.
    rt.delete("u3").await.unwrap();
    assert!(!data.join("userns/u3").exists());
    rt.prepare_userns("u4").await.unwrap();
    let r = rt.reconcile(&["u2".to_owned()]).await.unwrap();
    assert_eq!(r.removed, ["u4"]);
    assert!(data.join("userns/u2").exists());
    // The bundle was reached through the run directory, which delete empties again.
    let reach = crate::userns::reach_dir(&data).join("u2");
    assert!(reach.is_dir());
    assert!(rt.platform().calls().contains(&format!(
        "rbind {} on {}",
        data.join("sandboxes/u2").display(),
        reach.display()
    )));
    rt.delete("u2").await.unwrap();
    assert!(!reach.exists());
}
