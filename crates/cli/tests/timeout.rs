//! Sandbox timeouts against the real plane: without `auto_pause` a sandbox past its deadline is
//! deleted; with it, it is snapshotted (as `auto-pause-<id>`) and stopped: its row stays as
//! `paused`, it holds no container, network or quota, exec says 409, and
//! `/v1/snapshot/resume` brings back its files under the same policy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a harness that cannot build its world is a failed test"
)]

mod common;

use std::time::{Duration, Instant};

use common::Bed;

/// Polls `f` every 200 ms until it holds; liveness only (the bound is generous, never a speed
/// claim).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} did not happen within 90 s");
}

fn allowed(bed: &Bed, id: &str, url: &str) -> bool {
    let (code, _) = bed.exec(
        id,
        &format!("curl -fsS -o /dev/null --connect-timeout 5 --max-time 8 {url}"),
    );
    code == 0
}

#[test]
fn timeouts_delete_or_snapshot_and_stop() {
    // Quota 2: a stopped sandbox must not hold a place.
    let mut bed = Bed::new("timeouts", "sweep_interval_s = 1\ndefault_quota = 2");
    bed.start();
    let policy = r#""network_policy":{"mode":"custom","allow_domains":["alpha.test"]}"#;
    let paused = bed.create(&format!(
        r#"{{"template_name":"system/host","auto_pause":true,"timeout":4,{policy}}}"#
    ));
    let gone = bed.create(r#"{"template_name":"system/host","timeout":4}"#);
    let (code, _) = bed.exec(&paused, "echo kept > /root/marker");
    assert_eq!(code, 0);
    assert!(allowed(&bed, &paused, "http://alpha.test/"));

    eventually("the plain sandbox's deletion", || {
        bed.api("GET", &format!("/v1/sandbox/{gone}"), "").status == 404
    });
    eventually("the auto-pause snapshot", || {
        let r = bed.api("GET", &format!("/v1/sandbox/{paused}"), "");
        r.json()["state"] == "paused" && !bed.runc_ids().contains(&paused)
    });
    assert!(!bed.runc_ids().contains(&gone));
    assert!(!Bed::netns_exists(&gone));

    // Stopped: nothing held, the row and the snapshot stay.
    let name = format!("auto-pause-{paused}");
    let snaps = bed.api(
        "GET",
        &format!("/v1/snapshots?query={name}&page=1&page-size=10"),
        "",
    );
    assert_eq!(snaps.json()["total_items"], 1, "{snaps:?}");
    assert!(!Bed::netns_exists(&paused));
    assert!(!bed.nft_ruleset().contains(&paused));
    assert!(
        !bed.data_dir()
            .join("runtime/sandboxes")
            .join(&paused)
            .exists()
    );
    let r = bed.api(
        "POST",
        &format!("/v1/sandbox/{paused}/process/execute"),
        r#"{"command":"true"}"#,
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.body.contains("snapshot"), "{r:?}");
    let r = bed.api(
        "POST",
        &format!("/v1/sandbox/{paused}/snapshot/create"),
        "{}",
    );
    assert_eq!(r.status, 409, "{r:?}");
    let r = bed.api(
        "PUT",
        &format!("/v1/sandbox/{paused}/network-policy"),
        r#"{"mode":"allow-all"}"#,
    );
    assert_eq!(r.status, 409, "{r:?}");
    let r = bed.api("POST", &format!("/v1/sandbox/{paused}/pause"), "");
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (201, "paused".into()),
        "{r:?}"
    );

    // Resume (SDK 0.6.1's path): its files and its policy come back, in a new sandbox; the
    // stopped one does not count against the quota of 2.
    let other = bed.create(r#"{"template_name":"system/host"}"#);
    let r = bed.api(
        "POST",
        "/v1/snapshot/resume",
        &format!(r#"{{"snapshot_name":"{name}","auto_pause":false,"timeout_min":10}}"#),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let restored = r.json()["id"].as_str().unwrap().to_owned();
    assert_ne!(restored, paused);
    let (code, out) = bed.exec(&restored, "cat /root/marker");
    assert_eq!((code, out.trim()), (0, "kept"));
    assert!(allowed(&bed, &restored, "http://alpha.test/"));
    assert!(!allowed(&bed, &restored, "http://beta.test/"));
    // Now the quota is full.
    let r = bed.api("POST", "/v1/sandbox", r#"{"template_name":"system/host"}"#);
    assert_eq!(r.status, 429, "{r:?}");

    // The stopped row goes with a delete; a restart leaves stopped rows alone.
    bed.kill9();
    bed.start();
    let r = bed.api("GET", &format!("/v1/sandbox/{paused}"), "");
    assert_eq!(r.json()["state"], "paused", "{r:?}");
    assert!(allowed(&bed, &restored, "http://alpha.test/"));
    for id in [&paused, &restored, &other] {
        let r = bed.api("DELETE", &format!("/v1/sandbox/{id}"), "");
        assert_eq!(r.status, 204, "{r:?}");
    }
}
