//! Concurrent state changes on one sandbox (exec, policy update, pause, snapshot, delete, all at
//! once, against the real plane) end cleanly: every answer is 2xx, 404 or 409, never a 500, and
//! once the dust settles the sandbox is gone from the store, runc, the runtime's directories,
//! the kernel (veth, nftables chains) and the firewall's registry (a later update is a 404).
//! Concurrent creates cannot overrun the organisation's quota.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a harness that cannot build its world is a failed test"
)]

mod common;

use std::thread;

use common::Bed;

const ROUNDS: usize = 3;
const QUOTA: usize = 3;

fn op(bed: &Bed, id: &str, kind: usize) -> (String, u16, String) {
    let (name, method, path, body) = match kind % 7 {
        0 | 1 => (
            "exec",
            "POST",
            format!("/v1/sandbox/{id}/process/execute"),
            r#"{"command":"echo hi","timeout":20}"#.to_owned(),
        ),
        2 => (
            "policy",
            "PUT",
            format!("/v1/sandbox/{id}/network-policy"),
            format!(
                r#"{{"mode":"custom","allow_domains":["alpha.test"],"allow_cidrs":["198.51.100.{}/32"]}}"#,
                kind % 200
            ),
        ),
        3 => (
            "pause",
            "POST",
            format!("/v1/sandbox/{id}/pause"),
            String::new(),
        ),
        4 => (
            "snapshot",
            "POST",
            format!("/v1/sandbox/{id}/snapshot/create"),
            format!(r#"{{"name":"race-{id}-{kind}"}}"#),
        ),
        5 => (
            "delete",
            "DELETE",
            format!("/v1/sandbox/{id}"),
            String::new(),
        ),
        _ => ("get", "GET", format!("/v1/sandbox/{id}"), String::new()),
    };
    let r = bed.api(method, &path, &body);
    (name.to_owned(), r.status, r.body)
}

#[test]
fn concurrent_changes_on_one_sandbox_serialise() {
    let mut bed = Bed::new("race", &format!("default_quota = {QUOTA}"));
    bed.start();
    for round in 0..ROUNDS {
        let id = bed.create(
            r#"{"template_name":"system/host","network_policy":{"mode":"custom","allow_domains":["alpha.test"]}}"#,
        );
        // Fourteen operations, two of each kind, all in flight together; the deletes start
        // last-but-not-least so some land before and some after the others.
        let results: Vec<(String, u16, String)> = thread::scope(|s| {
            let handles: Vec<_> = (0..14)
                .map(|k| {
                    let (bed, id) = (&bed, id.as_str());
                    s.spawn(move || op(bed, id, k + round))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut deletes_ok = 0;
        for (name, status, body) in &results {
            assert!(
                matches!(status, 200 | 201 | 204 | 404 | 409),
                "round {round}: {name} answered {status}: {body}"
            );
            if name == "delete" && *status == 204 {
                deletes_ok += 1;
            }
        }
        assert_eq!(deletes_ok, 1, "round {round}: {results:?}");
        // Gone everywhere, and nothing can bring it back.
        let r = bed.api("GET", &format!("/v1/sandbox/{id}"), "");
        assert_eq!(r.status, 404, "{r:?}");
        let r = bed.api(
            "PUT",
            &format!("/v1/sandbox/{id}/network-policy"),
            r#"{"mode":"allow-all"}"#,
        );
        assert_eq!(r.status, 404, "{r:?}");
        assert!(!bed.runc_ids().contains(&id), "runc still has {id}");
        assert!(
            !bed.data_dir().join("runtime/sandboxes").join(&id).exists(),
            "runtime directory of {id} left"
        );
        assert!(!Bed::netns_exists(&id), "netns of {id} left");
        assert!(
            !bed.nft_ruleset().contains(&id),
            "nftables chains of {id} left"
        );
        let links = bed.world.fw.ip(["-o", "link", "show"]).unwrap();
        assert!(!links.contains(&format!("plh-{id}")), "veth of {id} left");
    }
    let list = bed.api("GET", "/v1/sandboxes?page=1&page-size=100", "");
    assert_eq!(list.json()["total_items"], 0, "{list:?}");

    // Concurrent creates cannot overrun the quota: exactly QUOTA of 2 × QUOTA get in.
    let statuses: Vec<(u16, String)> = thread::scope(|s| {
        let handles: Vec<_> = (0..2 * QUOTA)
            .map(|_| {
                let bed = &bed;
                s.spawn(move || {
                    let r = bed.api("POST", "/v1/sandbox", r#"{"template_name":"system/host"}"#);
                    (r.status, r.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = statuses.iter().filter(|(s, _)| *s == 201).count();
    let refused = statuses.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((created, refused), (QUOTA, QUOTA), "{statuses:?}");
    bed.clean_up();
    let list = bed.api("GET", "/v1/sandboxes?page=1&page-size=100", "");
    assert_eq!(list.json()["total_items"], 0, "{list:?}");
    // Snapshots taken before the delete are real and restorable-looking rows.
    let snaps = bed.api("GET", "/v1/snapshots?query=race&page=1&page-size=100", "");
    assert_eq!(snaps.status, 200, "{snaps:?}");
    for s in snaps.json()["items"].as_array().into_iter().flatten() {
        let sid = s["id"].as_str().unwrap();
        let r = bed.api("DELETE", &format!("/v1/snapshot/{sid}"), "");
        assert_eq!(r.status, 204, "{r:?}");
    }
}
