//! Helpers of the approval-queue tests: a bed with `[firewall.approvals]`, commands left
//! running in a sandbox, the queue and the upstream DNS log.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    dead_code,
    unreachable_pub,
    reason = "test helpers fail loudly; not every test binary uses every helper"
)]

use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::Bed;

/// `alpha.test` allowed, every other name held.
pub const HOLD_POLICY: &str = r#"{"template_name":"system/host","network_policy":{"mode":"custom","allow_domains":["alpha.test"],"on_unknown":"hold"}}"#;

/// A bed whose queue times out after `timeout` (and other `[firewall.approvals]` lines).
pub fn bed_with(approvals: &str) -> Bed {
    let mut bed = Bed::new("hold-org", "");
    let mut config = std::fs::read_to_string(&bed.config).unwrap();
    config.push_str(&format!("\n[firewall.approvals]\n{approvals}\n"));
    std::fs::write(&bed.config, config).unwrap();
    bed.start();
    add_names(&bed);
    bed
}

/// Names the held tests ask for, all at the good server (198.51.100.10), none in the policy.
pub fn add_names(bed: &Bed) {
    for n in ["one", "two", "three", "four", "five", "nope", "a", "b", "c"] {
        bed.world
            .dns()
            .set_a(&format!("{n}.wild.test"), &[super::common::addrs::GOOD_V4]);
    }
}

/// Starts `cmd` in the background inside the sandbox; [`finished`] collects it.
pub fn background(bed: &Bed, id: &str, tag: &str, cmd: &str) {
    let (code, out) = bed.runc_exec(
        id,
        &format!(
            "rm -f /tmp/{tag}.*; nohup sh -c '{cmd} > /tmp/{tag}.out 2>/tmp/{tag}.err; \
             echo $? > /tmp/{tag}.rc' >/dev/null 2>&1 &"
        ),
    );
    assert_eq!(code, 0, "{out}");
}

/// The exit status and output of a [`background`] command, waiting for it (bounded).
pub fn finished(bed: &Bed, id: &str, tag: &str, within: Duration) -> (i32, String) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        let (code, rc) = bed.runc_exec(id, &format!("cat /tmp/{tag}.rc"));
        if code == 0 && !rc.trim().is_empty() {
            let (_, out) = bed.runc_exec(id, &format!("cat /tmp/{tag}.out /tmp/{tag}.err"));
            return (rc.trim().parse().unwrap_or(-1), out);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{tag} did not finish within {within:?}");
}

/// Waits (bounded) until the organisation's queue holds an approval for `name`.
pub fn pending(bed: &Bed, name: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let r = bed.api("GET", "/v1/approvals", "");
        assert_eq!(r.status, 200, "{r:?}");
        if let Some(a) = r.json()["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["name"] == name)
        {
            return a.clone();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no approval for {name} appeared");
}

/// Queries for `name` that reached the upstream (authoritative) DNS server.
pub fn upstream_queries(bed: &Bed, name: &str) -> usize {
    let fqdn = format!("{name}.");
    bed.world
        .log()
        .dns_queries()
        .iter()
        .filter(|q| q.name.eq_ignore_ascii_case(&fqdn))
        .count()
}
