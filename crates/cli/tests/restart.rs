//! Threat 24: kill -9 the daemon with sandboxes running and a transfer in flight (it breaks).
//! While the daemon is down nothing leaves a sandbox (the nftables rules stay and redirect to a
//! dead proxy; DNS is dead) and no packet reaches the testbed's upstreams. After a restart on
//! the same data directory every sandbox is back under the same policy version and the same CA,
//! new connections follow the policy, and a sandbox whose container died while the daemon was
//! down is removed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a harness that cannot build its world is a failed test"
)]

mod common;

use common::Bed;

const SECRET: &str = "Bearer sk-restart-4b1d";
const CA_FILE: &str = "/usr/local/share/ca-certificates/palisade-sandbox-ca.crt";

/// Passthrough HTTPS (the testbed's own CA, so `-k`), bounded.
fn https_k(url: &str) -> String {
    format!("curl -fsS -k -o /dev/null --connect-timeout 5 --max-time 8 {url}")
}

fn http(url: &str) -> String {
    format!("curl -fsS -o /dev/null --connect-timeout 5 --max-time 8 {url}")
}

/// The transform host, verified with the sandbox's default trust (no `-k`).
const INTERCEPTED: &str = "curl -sS --connect-timeout 5 --max-time 8 -H 'Authorization: Bearer wrong' https://api.example.test/";

/// Waits (bounded, 60 s; liveness only) until `check` succeeds inside the sandbox.
fn eventually(bed: &Bed, id: &str, check: &str) {
    for _ in 0..300 {
        if bed.runc_exec(id, check).0 == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (_, state) = bed.runc_exec(id, "cat /tmp/sse.*");
    panic!("never true in {id}: {check}\n{state}");
}

fn version(bed: &Bed, id: &str) -> i64 {
    let r = bed.api("GET", &format!("/v1/sandbox/{id}/network-policy"), "");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["version"].as_i64().unwrap()
}

fn policy_of(bed: &Bed, id: &str) -> serde_json::Value {
    let r = bed.api("GET", &format!("/v1/sandbox/{id}"), "");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["network_policy"].clone()
}

/// The echo shows the upstream got the secret (by its digest) while the sandbox got only the
/// marker: responses from a transform domain are scrubbed of injected values.
fn assert_injected(out: &str) {
    let digest = palisade_testbed::sha256_hex(SECRET.as_bytes());
    assert!(out.contains(&digest), "secret not injected: {out}");
    assert!(!out.contains(SECRET), "secret reached the sandbox: {out}");
    assert!(out.contains("[REDACTED]"), "{out}");
}

/// Both sandboxes behave as their policies say (through the daemon's exec).
fn assert_policies_hold(bed: &Bed, custom: &str, transform: &str) {
    let (code, out) = bed.exec(custom, &https_k("https://alpha.test/"));
    assert_eq!(code, 0, "allowed name refused: {out}");
    let (code, out) = bed.exec(custom, &http("http://alpha.test/"));
    assert_eq!(code, 0, "allowed name refused: {out}");
    let (code, _) = bed.exec(custom, &https_k("https://beta.test/"));
    assert_ne!(code, 0, "denied name reached");
    let (code, out) = bed.exec(transform, INTERCEPTED);
    assert_eq!(code, 0, "intercepted request failed: {out}");
    assert_injected(&out);
    assert!(!out.contains("Bearer wrong"), "client value kept: {out}");
    let (code, _) = bed.exec(transform, &https_k("https://alpha.test/"));
    assert_ne!(
        code, 0,
        "transform sandbox reached a name outside its policy"
    );
}

#[test]
fn kill_nine_then_restart_keeps_policies_and_cas() {
    let mut bed = Bed::new("restart", "");
    bed.start();
    let custom = bed.create(
        r#"{"template_name":"system/host","network_policy":{"mode":"custom","allow_domains":["alpha.test"]}}"#,
    );
    let transform = bed.create(&format!(
        r#"{{"template_name":"system/host","network_policy":{{"mode":"custom","transforms":[{{"domain":"api.example.test","inject_headers":{{"Authorization":"{SECRET}"}}}}]}}}}"#
    ));
    let doomed = bed.create(r#"{"template_name":"system/host"}"#);
    // Frozen (cgroup freezer) across the restart: it must come back frozen, then thaw.
    let frozen = bed.create(
        r#"{"template_name":"system/host","network_policy":{"mode":"custom","allow_domains":["beta.test"]}}"#,
    );
    let r = bed.api("POST", &format!("/v1/sandbox/{frozen}/pause"), "");
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (201, "paused".into()),
        "{r:?}"
    );
    // A policy update before the crash, so "same version" is not just "version 1".
    let r = bed.api(
        "PUT",
        &format!("/v1/sandbox/{custom}/network-policy"),
        r#"{"mode":"custom","allow_domains":["alpha.test"],"allow_cidrs":["198.51.100.20/32"]}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_policies_hold(&bed, &custom, &transform);
    let versions = (version(&bed, &custom), version(&bed, &transform));
    assert_eq!(versions.0, 2);
    let policies = (policy_of(&bed, &custom), policy_of(&bed, &transform));
    let snap = bed.api(
        "POST",
        &format!("/v1/sandbox/{custom}/snapshot/create"),
        r#"{"name":"before-crash"}"#,
    );
    assert_eq!(snap.status, 201, "{snap:?}");
    let (code, ca_before) = bed.exec(&transform, &format!("cat {CA_FILE}"));
    assert_eq!(code, 0, "{ca_before}");
    assert!(ca_before.contains("BEGIN CERTIFICATE"));

    // A transfer in flight when the daemon dies: an SSE stream of 600 events, 100 ms apart.
    let (code, out) = bed.runc_exec(
        &custom,
        "rm -f /tmp/sse.*; nohup sh -c 'curl -sN --max-time 120 \"http://alpha.test/sse?n=600&ms=100\" \
         > /tmp/sse.out 2>/tmp/sse.err; echo $? > /tmp/sse.rc' >/dev/null 2>&1 &",
    );
    assert_eq!(code, 0, "{out}");
    eventually(
        &bed,
        &custom,
        "test \"$(grep -c '^data:' /tmp/sse.out)\" -ge 3",
    );

    bed.kill9();
    bed.world.log().clear();
    // The stream breaks with the proxy's sockets: curl fails, short of the 600 events.
    eventually(&bed, &custom, "test -s /tmp/sse.rc");
    let (_, rc) = bed.runc_exec(&custom, "cat /tmp/sse.rc");
    assert_ne!(rc.trim(), "0", "the stream ended cleanly without its proxy");
    let (_, n) = bed.runc_exec(&custom, "grep -c '^data:' /tmp/sse.out");
    let n: u32 = n.trim().parse().unwrap();
    assert!((3..600).contains(&n), "{n} events");

    // While it is down: the sandboxes still run, nothing gets out, nothing reaches upstream.
    let (code, out) = bed.runc_exec(&custom, "echo alive");
    assert_eq!((code, out.trim()), (0, "alive"));
    for (id, cmd) in [
        (&custom, https_k("https://alpha.test/")),
        (&custom, http("http://alpha.test/")),
        (&custom, https_k("https://beta.test/")),
        // The firewall's own answer is gone, so the sandbox dials the upstream itself.
        (
            &custom,
            http("--resolve alpha.test:80:198.51.100.10 http://alpha.test/"),
        ),
        (&custom, http("http://198.51.100.10/")),
        (&transform, INTERCEPTED.to_owned()),
        (
            &transform,
            https_k("--resolve api.example.test:443:198.51.100.10 https://api.example.test/"),
        ),
        (&transform, http("http://198.51.100.20:80/")),
    ] {
        let (code, out) = bed.runc_exec(id, &cmd);
        assert_ne!(code, 0, "{cmd} got out while the daemon was down: {out}");
    }
    // DNS: the sandbox's resolver (the host side) is dead; a direct query is redirected to it.
    let (code, out) = bed.runc_exec(&custom, "getent hosts alpha.test");
    assert_ne!(code, 0, "DNS answered while the daemon was down: {out}");
    let (code, out) = bed.runc_exec(
        &custom,
        "command -v dig >/dev/null || { echo 'dig missing (dnsutils)'; exit 0; }; \
         dig +time=2 +tries=1 @198.51.100.53 alpha.test || exit 9",
    );
    assert_ne!(
        code, 0,
        "direct DNS answered while the daemon was down: {out}"
    );
    let leaked: Vec<String> = bed
        .world
        .log()
        .entries()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        leaked.is_empty(),
        "upstreams saw traffic while the daemon was down:\n{}",
        leaked.join("\n")
    );

    // A daemon killed mid-snapshot leaves its sandbox frozen (done to the transform one) and
    // a half-written archive with no row.
    let orphan = bed.data_dir().join("snapshots/0123456789abcdef.tar.zst");
    std::fs::write(&orphan, b"half an archive").unwrap();
    bed.runc_ok(&["pause", &transform]);

    // A container dies while nobody watches.
    bed.runc_ok(&["kill", &doomed, "KILL"]);
    for _ in 0..50 {
        let st = bed.runc().args(["state", &doomed]).output().unwrap();
        if String::from_utf8_lossy(&st.stdout).contains("\"stopped\"") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    bed.start();
    assert_eq!(
        (version(&bed, &custom), version(&bed, &transform)),
        versions
    );
    assert_eq!(
        (policy_of(&bed, &custom), policy_of(&bed, &transform)),
        policies
    );
    assert!(!policies.1.to_string().contains(SECRET));
    // The orphan archive went; the snapshot taken before the crash is whole and restorable.
    assert!(!orphan.exists());
    let r = bed.api(
        "POST",
        "/v1/snapshot/restore",
        r#"{"snapshot_name":"before-crash","auto_pause":false}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let restored = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        bed.api("DELETE", &format!("/v1/sandbox/{restored}"), "")
            .status,
        204
    );
    // The frozen one reads paused (runc's word), and the next exec thaws it.
    let r = bed.api("GET", &format!("/v1/sandbox/{transform}"), "");
    assert_eq!(r.json()["state"], "paused", "{r:?}");
    // Same CA: the file in the sandbox is untouched, and the leaf the restarted daemon mints
    // verifies against exactly that certificate (and nothing else).
    let (_, ca_after) = bed.exec(&transform, &format!("cat {CA_FILE}"));
    assert_eq!(ca_before, ca_after);
    let (code, out) = bed.exec(
        &transform,
        &format!(
            "curl -sS --connect-timeout 5 --max-time 8 --cacert {CA_FILE} --capath /nonexistent https://api.example.test/"
        ),
    );
    assert_eq!(code, 0, "leaf does not chain to the sandbox's CA: {out}");
    assert_injected(&out);
    assert_policies_hold(&bed, &custom, &transform);
    // The allow_cidrs of version 2 came back too (TCP to the echo server by address).
    let (code, out) = bed.exec(&custom, &http("http://198.51.100.20/"));
    assert_eq!(code, 0, "allow_cidrs lost in the restart: {out}");
    let logged = bed.world.log().entries();
    assert!(logged.iter().any(|e| e.server == "good"));
    assert!(bed.world.log().is_untouched("attacker"));

    // The dead sandbox was reconciled: gone from the API, the runtime, the kernel.
    let r = bed.api("GET", &format!("/v1/sandbox/{doomed}"), "");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!bed.runc_ids().contains(&doomed));
    assert!(!Bed::netns_exists(&doomed));
    assert!(!bed.nft_ruleset().contains(&doomed));
    // The frozen one is still frozen, and an exec thaws it under its own policy.
    let r = bed.api("GET", &format!("/v1/sandbox/{frozen}"), "");
    assert_eq!(r.json()["state"], "paused", "{r:?}");
    let (code, out) = bed.exec(&frozen, &http("http://beta.test/"));
    assert_eq!(code, 0, "thawed sandbox lost its policy: {out}");
    let (code, _) = bed.exec(&frozen, &http("http://alpha.test/"));
    assert_ne!(code, 0);
    let r = bed.api("GET", &format!("/v1/sandbox/{frozen}"), "");
    assert_eq!(r.json()["state"], "running", "{r:?}");

    let list = bed.api("GET", "/v1/sandboxes?page=1&page-size=100", "");
    assert_eq!(list.json()["total_items"], 3, "{list:?}");
}

/// Every use the API offers, on a sandbox recovered by a restart: exec, its files, a policy
/// update, a snapshot, a pause (and the exec that thaws it).
fn assert_usable(bed: &Bed, id: &str, generation: usize) {
    let (code, out) = bed.exec(id, &format!("cat /root/gen && echo more >> /root/gen-{id}"));
    assert_eq!(code, 0, "exec in {id}: {out}");
    assert_eq!(out.trim(), generation.to_string(), "files of {id}");
    let before = version(bed, id);
    let r = bed.api(
        "PUT",
        &format!("/v1/sandbox/{id}/network-policy"),
        r#"{"mode":"custom","allow_domains":["alpha.test"]}"#,
    );
    assert_eq!(r.status, 200, "policy update of {id}: {r:?}");
    assert_eq!(version(bed, id), before + 1);
    let (code, out) = bed.exec(id, &http("http://alpha.test/"));
    assert_eq!(code, 0, "allowed name refused in {id}: {out}");
    let r = bed.api(
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        &format!(r#"{{"name":"snap-{id}-{before}"}}"#),
    );
    assert_eq!(r.status, 201, "snapshot of {id}: {r:?}");
    let r = bed.api("POST", &format!("/v1/sandbox/{id}/pause"), "");
    assert_eq!(r.status, 201, "pause of {id}: {r:?}");
    let (code, out) = bed.exec(id, "echo thawed");
    assert_eq!((code, out.trim()), (0, "thawed"), "{id}");
}

/// Issue 11.1: after kill -9 and a restart, every recovered sandbox stays usable, whichever
/// daemon run made it, over several cycles (a sandbox is made in each generation).
#[test]
fn every_generation_stays_usable_over_kill_nine_cycles() {
    let mut bed = Bed::new("cycles", "");
    let mut ids: Vec<String> = Vec::new();
    for generation in 0..4 {
        // Restarted in the wrong place first (the fault behind the issue: `ip netns exec`
        // remounts /sys without the cgroup mounts, so runc could not put an exec into the
        // containers' cgroups and every exec answered 500). It must refuse and touch nothing.
        let (status, err) = bed.serve_under_ip_netns_exec();
        assert!(!status.success(), "started under ip netns exec:\n{err}");
        assert!(
            err.contains("cgroup mounts missing") && err.contains("/sys/fs/cgroup/memory"),
            "{err}"
        );
        for id in &ids {
            assert!(
                Bed::netns_exists(id) && bed.runc_ids().contains(id),
                "{id} touched"
            );
        }
        bed.start();
        // A second daemon on the same data directory would reconcile the first one's work.
        let (status, err) = bed.serve_refused();
        assert!(!status.success());
        assert!(
            err.contains(&format!(
                "in use by another palisade serve (pid {})",
                bed.daemon_pid()
            )),
            "{err}"
        );
        for (g, id) in ids.iter().enumerate() {
            assert_usable(&bed, id, g);
        }
        let id = bed.create(
            r#"{"template_name":"system/host","network_policy":{"mode":"custom","allow_domains":["beta.test"]}}"#,
        );
        let (code, out) = bed.exec(&id, &format!("echo {generation} > /root/gen"));
        assert_eq!(code, 0, "{out}");
        ids.push(id);
        bed.kill9();
    }
    bed.start();
    for (g, id) in ids.iter().enumerate() {
        assert_usable(&bed, id, g);
    }
    for id in &ids {
        let r = bed.api("DELETE", &format!("/v1/sandbox/{id}"), "");
        assert_eq!(r.status, 204, "delete of {id}: {r:?}");
        assert!(!bed.runc_ids().contains(id));
        assert!(!Bed::netns_exists(id));
    }
}
