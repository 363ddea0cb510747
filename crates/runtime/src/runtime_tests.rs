//! The runtime's logic against the recording fake platform: no root, no containers.

use super::*;
use crate::platform::FakePlatform;
use crate::types::TemplateProgress;

fn fake() -> (tempfile::TempDir, Runtime<FakePlatform>) {
    let dir = tempfile::tempdir().unwrap();
    let rt =
        Runtime::with_platform(RuntimeConfig::new(dir.path()), FakePlatform::default()).unwrap();
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
    s.env = vec![("A".into(), "1".into()), ("PATH".into(), "/custom".into())];
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
    s.env = vec![("BAD=NAME".into(), "v".into())];
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
    let r = Runtime::with_platform(RuntimeConfig::new(&bad), FakePlatform::default());
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
