//! Issue 11.4 across a crash: a sandbox whose resolver holds a synthetic address (the filtering
//! DNS's answer for an allowed name in `custom` mode) still reaches that name through it after
//! the daemon is killed with `kill -9` and started again, with no new DNS answer; the address
//! still stands for the same name; and a deleted sandbox's mappings are removed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a harness that cannot build its world is a failed test"
)]

mod common;

use std::net::Ipv4Addr;

use common::Bed;
use palisade_testbed::addrs;

/// One A record as the sandbox's resolver gets it.
fn resolve(bed: &Bed, id: &str, name: &str) -> Ipv4Addr {
    let (code, out) = bed.exec(id, &format!("getent ahostsv4 {name} | head -n 1"));
    assert_eq!(code, 0, "{out}");
    out.split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address for {name}: {out}"))
}

fn echo(bed: &Bed, id: &str, host: &str, payload: &str) -> String {
    let (_, out) = bed.exec(
        id,
        &format!("printf '{payload}' | nc -N -w 3 {host} 7 2>/dev/null"),
    );
    out
}

#[test]
fn synthetic_addresses_survive_kill_nine() {
    let mut bed = Bed::new("synthetic", "");
    bed.start();
    let id = bed.create(
        r#"{"template_name":"system/host","network_policy":{"mode":"custom","allow_domains":["shared-a.test","tcp.test"]}}"#,
    );
    let gone = bed.create(
        r#"{"template_name":"system/host","network_policy":{"mode":"custom","allow_domains":["tcp.test"]}}"#,
    );
    let shared = resolve(&bed, &id, "shared-a.test");
    let tcp = resolve(&bed, &id, "tcp.test");
    let range: ipnet::Ipv4Net = "198.18.0.0/15".parse().unwrap();
    assert!(
        range.contains(&shared) && range.contains(&tcp),
        "{shared} {tcp}"
    );
    assert_ne!(shared, tcp);
    resolve(&bed, &gone, "tcp.test");
    let journals = bed.data_dir().join("synthetic");
    assert!(journals.join(format!("{gone}.map")).exists());
    assert_eq!(echo(&bed, &id, &shared.to_string(), "before"), "before");
    assert_eq!(
        echo(&bed, &id, &addrs::SHARED_V4.to_string(), "real"),
        "",
        "the real shared address took a name-less connection"
    );

    bed.kill9();
    // Deleted while the daemon is down: its container goes, so recovery drops it.
    bed.runc_ok(&["kill", &gone, "KILL"]);
    bed.world.log().clear();
    bed.start();

    // The addresses cached before the crash, used as they are: same names, same services.
    assert_eq!(echo(&bed, &id, &shared.to_string(), "after"), "after");
    assert_eq!(echo(&bed, &id, &tcp.to_string(), "tcp-after"), "tcp-after");
    assert_eq!(bed.world.log().bytes_received("shared-echo"), b"after");
    assert_eq!(bed.world.log().bytes_received("tcp"), b"tcp-after");
    // A new answer gives the same address.
    assert_eq!(resolve(&bed, &id, "shared-a.test"), shared);
    assert_eq!(resolve(&bed, &id, "tcp.test"), tcp);
    let mut recovered = false;
    for _ in 0..50 {
        recovered = !journals.join(format!("{gone}.map")).exists();
        if recovered {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(recovered, "the dropped sandbox's journal is still there");
    assert!(journals.join(format!("{id}.map")).exists());

    let r = bed.api("DELETE", &format!("/v1/sandbox/{id}"), "");
    assert!(r.status == 200 || r.status == 204, "{r:?}");
    assert!(!journals.join(format!("{id}.map")).exists());
}
