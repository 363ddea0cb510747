//! The approval queue end to end (issue 14), privileged, against `palisade serve`: real curl
//! and dig inside runc sandboxes whose policy says `on_unknown: "hold"`, the testbed's
//! authoritative DNS server logging every query that reaches it.
//!
//! Names: `alpha.test` is allowed; `beta.test` and `*.wild.test` exist in the test zone but are
//! not in the policy, so they are held.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;
#[path = "common/held.rs"]
mod held;

use std::time::{Duration, Instant};

use common::Bed;
use held::{add_names, background, bed_with, finished, pending, upstream_queries};
use serde_json::Value;

use held::HOLD_POLICY;

fn decide(bed: &Bed, id: &str, decision: &str) -> Value {
    let r = bed.api(
        "POST",
        &format!("/v1/approvals/{id}"),
        &format!(r#"{{"decision":"{decision}"}}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// Whether an event matching `query` and `pred` reaches the store within 10 s (events are
/// copied there in the background).
fn event_seen(bed: &Bed, id: &str, query: &str, pred: impl Fn(&Value) -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let r = bed.api(
            "GET",
            &format!("/v1/sandbox/{id}/network/events?{query}"),
            "",
        );
        assert_eq!(r.status, 200, "{r:?}");
        if r.json()["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(&pred)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

const CURL_HTTP: &str = "curl -sS -o /dev/null -w %{http_code} --max-time 25";

#[test]
fn held_requests_wait_for_a_person_and_their_names_reach_no_upstream_before() {
    let bed = bed_with("timeout = \"8s\"\ngrant_ttl = \"5s\"");
    let id = bed.create(HOLD_POLICY);
    let r = bed.api("GET", &format!("/v1/sandbox/{id}/network-policy"), "");
    assert_eq!(r.json()["network_policy"]["on_unknown"], "hold", "{r:?}");
    // Listed names go as before, without asking.
    let (code, out) = bed.exec(&id, &format!("{CURL_HTTP} http://alpha.test/"));
    assert_eq!((code, out.as_str()), (0, "200"));

    // 1. allow-once: curl's DNS query waits; the name has reached no upstream until the click.
    background(&bed, &id, "once", &format!("{CURL_HTTP} http://beta.test/"));
    let a = pending(&bed, "beta.test");
    assert_eq!(a["sandbox_id"], id.as_str());
    assert!(
        a["kinds"].as_array().unwrap().contains(&"dns".into()),
        "{a}"
    );
    assert!(a["expires_ms"].as_i64().unwrap() > a["first_seen_ms"].as_i64().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        upstream_queries(&bed, "beta.test"),
        0,
        "held name leaked upstream"
    );
    assert!(event_seen(&bed, &id, "verdict=hold", |e| e["name"] == "beta.test"));
    let d = decide(&bed, a["id"].as_str().unwrap(), "allow-once");
    assert_eq!(d["decision"], "allow-once");
    assert!(d["policy_version"].is_null());
    let (rc, out) = finished(&bed, &id, "once", Duration::from_secs(30));
    assert_eq!((rc, out.trim()), (0, "200"), "{out}");
    assert!(upstream_queries(&bed, "beta.test") > 0);
    // Decided: gone from the queue, and a second decision finds nothing.
    let r = bed.api(
        "POST",
        &format!("/v1/approvals/{}", a["id"].as_str().unwrap()),
        r#"{"decision":"deny"}"#,
    );
    assert_eq!(r.status, 404, "{r:?}");

    // 2. A TLS connection named only by its SNI (no DNS: --resolve) is held the same way.
    background(
        &bed,
        &id,
        "tls",
        "curl -sSk -o /dev/null -w %{http_code} --max-time 25 --resolve one.wild.test:443:198.51.100.10 https://one.wild.test/",
    );
    let a = pending(&bed, "one.wild.test");
    assert_eq!(a["kinds"], serde_json::json!(["tls"]), "{a}");
    assert_eq!(a["ports"], serde_json::json!([443]), "{a}");
    bed.world.log().clear();
    decide(&bed, a["id"].as_str().unwrap(), "allow-once");
    let (rc, out) = finished(&bed, &id, "tls", Duration::from_secs(30));
    let evs = bed.api(
        "GET",
        &format!("/v1/sandbox/{id}/network/events?name=one.wild.test"),
        "",
    );
    assert_eq!((rc, out.trim()), (0, "200"), "{out} {}", evs.body);

    // 3. deny: refused at once on the click, and the name never reached an upstream.
    background(
        &bed,
        &id,
        "deny",
        &format!("{CURL_HTTP} http://two.wild.test/"),
    );
    let a = pending(&bed, "two.wild.test");
    let t = Instant::now();
    decide(&bed, a["id"].as_str().unwrap(), "deny");
    let (rc, out) = finished(&bed, &id, "deny", Duration::from_secs(30));
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("resolve"), "curl could not resolve it: {out}");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "refused on the decision"
    );
    assert_eq!(upstream_queries(&bed, "two.wild.test"), 0);
    assert!(event_seen(
        &bed,
        &id,
        "verdict=deny&name=two.wild.test",
        |e| e["rule"] == "approval:deny"
    ));

    // 4. A plain HTTP request named by its Host to the real address: a readable 403 on deny.
    background(
        &bed,
        &id,
        "http403",
        "curl -sS --max-time 25 -H Host:three.wild.test http://198.51.100.10/",
    );
    let a = pending(&bed, "three.wild.test");
    assert_eq!(a["kinds"], serde_json::json!(["http"]), "{a}");
    decide(&bed, a["id"].as_str().unwrap(), "deny");
    let (_, out) = finished(&bed, &id, "http403", Duration::from_secs(30));
    assert!(
        out.contains("three.wild.test was held for approval and refused"),
        "{out}"
    );

    // 5. Nobody decides: denied at the timeout (8 s), nothing upstream, the queue empty again.
    let t = Instant::now();
    background(
        &bed,
        &id,
        "late",
        &format!("{CURL_HTTP} http://four.wild.test/"),
    );
    pending(&bed, "four.wild.test");
    let (rc, out) = finished(&bed, &id, "late", Duration::from_secs(40));
    assert_ne!(rc, 0, "{out}");
    assert!(t.elapsed() >= Duration::from_secs(7), "{:?}", t.elapsed());
    assert_eq!(upstream_queries(&bed, "four.wild.test"), 0);
    let r = bed.api("GET", "/v1/approvals", "");
    assert_eq!(r.json()["items"], serde_json::json!([]), "{r:?}");
    assert!(event_seen(&bed, &id, "name=four.wild.test", |e| {
        e["rule"] == "approval:timeout" && e["verdict"] == "deny"
    }));

    // Traffic that names no host (an address literal) is refused at once, never held.
    let t = Instant::now();
    let (_, out) = bed.exec(&id, &format!("{CURL_HTTP} http://198.51.100.30:22/"));
    assert_eq!(out, "403");
    assert!(t.elapsed() < Duration::from_secs(5));
    let r = bed.api("GET", "/v1/approvals", "");
    assert_eq!(r.json()["items"], serde_json::json!([]), "{r:?}");

    // The suggestion lists what a person allowed (the TLS name's only events carry
    // `approval:allow-once`), and none of what a person refused or nobody decided.
    let r = bed.api(
        "GET",
        &format!("/v1/sandbox/{id}/network-policy/suggestion"),
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let s = r.json();
    let mut domains: Vec<&str> = s["network_policy"]["allow_domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    domains.sort_unstable();
    assert_eq!(domains, ["alpha.test", "beta.test", "one.wild.test"], "{s}");
    let not: Vec<&str> = s["not_suggested"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["what"].as_str().unwrap())
        .collect();
    for refused in ["two.wild.test", "three.wild.test", "four.wild.test"] {
        assert!(not.contains(&refused), "{refused}: {s}");
    }
}

#[test]
fn always_decisions_survive_a_restart_and_a_snapshot_and_a_restart_drops_what_is_held() {
    let mut bed = bed_with("timeout = \"20s\"");
    let id = bed.create(HOLD_POLICY);

    // allow-always: the name joins allow_domains live, in a new stored policy version.
    background(
        &bed,
        &id,
        "always",
        &format!("{CURL_HTTP} http://beta.test/"),
    );
    let a = pending(&bed, "beta.test");
    let d = decide(&bed, a["id"].as_str().unwrap(), "allow-always");
    assert_eq!(d["policy_version"], 2, "{d}");
    let (rc, out) = finished(&bed, &id, "always", Duration::from_secs(30));
    assert_eq!((rc, out.trim()), (0, "200"), "{out}");
    // deny-always: the name joins deny_domains and is refused from now on without asking.
    background(
        &bed,
        &id,
        "never",
        &format!("{CURL_HTTP} http://nope.wild.test/"),
    );
    let a = pending(&bed, "nope.wild.test");
    let d = decide(&bed, a["id"].as_str().unwrap(), "deny-always");
    assert_eq!(d["policy_version"], 3, "{d}");
    let (rc, _) = finished(&bed, &id, "never", Duration::from_secs(30));
    assert_ne!(rc, 0);
    let policy = bed.api("GET", &format!("/v1/sandbox/{id}/network-policy"), "");
    let p = &policy.json()["network_policy"];
    assert_eq!(
        p["allow_domains"],
        serde_json::json!(["alpha.test", "beta.test"])
    );
    assert_eq!(p["deny_domains"], serde_json::json!(["nope.wild.test"]));

    // A request held when the daemon dies is dropped with it, and its approval is gone.
    background(
        &bed,
        &id,
        "crash",
        &format!("{CURL_HTTP} http://five.wild.test/"),
    );
    pending(&bed, "five.wild.test");
    bed.kill9();
    let (rc, out) = finished(&bed, &id, "crash", Duration::from_secs(40));
    assert_ne!(rc, 0, "{out}");
    bed.start();
    let r = bed.api("GET", "/v1/approvals", "");
    assert_eq!(r.json()["items"], serde_json::json!([]), "{r:?}");
    assert_eq!(upstream_queries(&bed, "five.wild.test"), 0);

    // After the restart: beta.test goes at once, nope.wild.test is refused at once.
    let check = |sandbox: &str| {
        let (code, out) = bed.exec(sandbox, &format!("{CURL_HTTP} http://beta.test/"));
        assert_eq!((code, out.as_str()), (0, "200"), "{sandbox}");
        let t = Instant::now();
        let (code, _) = bed.exec(sandbox, &format!("{CURL_HTTP} http://nope.wild.test/"));
        assert_ne!(code, 0);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let r = bed.api("GET", "/v1/approvals", "");
        assert_eq!(r.json()["items"], serde_json::json!([]), "{r:?}");
    };
    check(&id);

    // And in a sandbox restored from a snapshot, which keeps the whole policy.
    let r = bed.api(
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        r#"{"name":"approved"}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = bed.api(
        "POST",
        "/v1/snapshot/restore",
        r#"{"snapshot_name":"approved","auto_pause":false}"#,
    );
    assert_eq!(r.status, 201, "{r:?}");
    let restored = r.json()["id"].as_str().unwrap().to_owned();
    let p = &r.json()["network_policy"];
    assert_eq!(p["on_unknown"], "hold", "{p}");
    assert_eq!(p["deny_domains"], serde_json::json!(["nope.wild.test"]));
    check(&restored);
}

#[test]
fn the_queue_is_bounded_and_scoped_to_its_organisation() {
    let mut bed = Bed::new("hold-org", "");
    let other_key = bed.create_key("other-org");
    let mut config = std::fs::read_to_string(&bed.config).unwrap();
    config.push_str("\n[firewall.approvals]\ntimeout = \"15s\"\nmax_pending_per_sandbox = 2\n");
    std::fs::write(&bed.config, config).unwrap();
    bed.start();
    add_names(&bed);
    let id = bed.create(HOLD_POLICY);

    // Three names at once; only two may wait, the third is refused at once with an event.
    for n in ["a", "b", "c"] {
        background(
            &bed,
            &id,
            &format!("dig{n}"),
            &format!("dig +short +tries=1 +time=12 {n}.wild.test"),
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(1));
    let r = bed.api("GET", "/v1/approvals", "");
    let items = r.json()["items"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = items.iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["a.wild.test", "b.wild.test"], "{r:?}");
    assert!(event_seen(&bed, &id, "name=c.wild.test", |e| {
        e["rule"] == "hold-limit"
            && e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("max_pending_per_sandbox")
    }));
    assert_eq!(upstream_queries(&bed, "c.wild.test"), 0);

    // Another organisation sees none of them and cannot decide them.
    let first = items[0]["id"].as_str().unwrap();
    let r = bed.api_as(Some(&other_key), "GET", "/v1/approvals", "");
    assert_eq!(r.json()["items"], serde_json::json!([]), "{r:?}");
    let r = bed.api_as(
        Some(&other_key),
        "POST",
        &format!("/v1/approvals/{first}"),
        r#"{"decision":"allow-once"}"#,
    );
    assert_eq!(r.status, 404, "{r:?}");
    // Bad decisions name the field; unknown ids are 404; no key is 401.
    for body in [
        r#"{"decision":"allow"}"#,
        r#"{}"#,
        r#"{"decision":"deny","x":1}"#,
    ] {
        let r = bed.api("POST", &format!("/v1/approvals/{first}"), body);
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(!r.fields().is_empty(), "{r:?}");
    }
    let r = bed.api("POST", "/v1/approvals/apr-0-0", r#"{"decision":"deny"}"#);
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(bed.api_as(None, "GET", "/v1/approvals", "").status, 401);

    // The CLI lists and decides.
    let cli = |args: &[&str]| {
        let out = bed
            .world
            .fw
            .command(common::bin())
            .args(args)
            .env("LEAP0_BASE_URL", common::API)
            .env("LEAP0_API_KEY", &bed.key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = cli(&["approvals"]);
    assert!(
        listed.contains("a.wild.test") && listed.contains(first),
        "{listed}"
    );
    let said = cli(&["approvals", "deny", first]);
    assert!(said.contains("deny a.wild.test"), "{said}");
    let said = cli(&["approvals", "allow", items[1]["id"].as_str().unwrap()]);
    assert!(said.contains("allow-once b.wild.test"), "{said}");
    let (rc, a) = finished(&bed, &id, "diga", Duration::from_secs(20));
    assert!(rc == 0 && a.trim().is_empty(), "denied: no address: {a}");
    let (rc, b) = finished(&bed, &id, "digb", Duration::from_secs(20));
    assert!(
        rc == 0 && b.trim().starts_with("198.18."),
        "released with a synthetic address: {b}"
    );
}
