//! Every error path of the API against the real control plane (`palisade serve` in a testbed
//! world, one daemon for all cases): 400 naming the field, 401, 404 (also for another
//! organisation's sandbox), 409, 429; a rejected policy update leaves the live policy in force;
//! a create that fails inside the runtime leaves nothing behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a harness that cannot build its world is a failed test"
)]

mod common;

use common::{Bed, Reply};

const QUOTA: usize = 3;

#[track_caller]
fn assert_field(r: &Reply, field: &str) {
    assert_eq!(r.status, 400, "expected 400 on {field}: {r:?}");
    let fields = r.fields();
    assert!(
        fields.iter().any(|f| f == field
            || f.starts_with(&format!("{field}."))
            || f.starts_with(&format!("{field}["))),
        "expected a problem with {field}, got {fields:?}: {}",
        r.body
    );
    assert!(r.json()["message"].is_string(), "{r:?}");
}

#[track_caller]
fn assert_status(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.json()["message"].is_string(), "no error body: {r:?}");
}

fn create_body(extra: &str) -> String {
    if extra.is_empty() {
        r#"{"template_name":"system/host"}"#.to_owned()
    } else {
        format!(r#"{{"template_name":"system/host",{extra}}}"#)
    }
}

/// What a sandbox leaves in the world: runc containers, runtime directories, host-side veths
/// and nftables chains (a leaked namespace keeps its veth pair alive, so the veths show it).
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    runc: Vec<String>,
    dirs: Vec<String>,
    veths: Vec<String>,
    chains: Vec<String>,
    rows: u64,
}

fn footprint(bed: &Bed) -> Footprint {
    let mut runc = bed.runc_ids();
    runc.sort();
    let mut dirs: Vec<String> = std::fs::read_dir(bed.data_dir().join("runtime/sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let links = bed.world.fw.ip(["-o", "link", "show"]).unwrap();
    let mut veths: Vec<String> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter(|n| n.starts_with("plh-"))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect();
    veths.sort();
    let mut chains: Vec<String> = bed
        .nft_ruleset()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain sb_"))
        .map(str::to_owned)
        .collect();
    chains.sort();
    let list = bed.api("GET", "/v1/sandboxes?page=1&page-size=100", "");
    let rows = list.json()["total_items"].as_u64().unwrap();
    Footprint {
        runc,
        dirs,
        veths,
        chains,
        rows,
    }
}

#[test]
fn every_error_path_of_the_real_plane() {
    let mut bed = Bed::new("errors", &format!("default_quota = {QUOTA}"));
    let other_key = bed.create_key("someone-else");
    bed.start();

    // ---- auth ----------------------------------------------------------------------------
    assert_status(&bed.api_as(None, "GET", "/v1/sandboxes", ""), 401);
    assert_status(
        &bed.api_as(Some("pl_not-a-key"), "GET", "/v1/sandboxes", ""),
        401,
    );
    assert_status(&bed.api_as(Some(""), "POST", "/v1/sandbox", "{}"), 401);

    // ---- create: each invalid field ---------------------------------------------------------
    let cases: &[(&str, &str)] = &[
        (r#"{"template_name":"no-such-template"}"#, "template_name"),
        (r#"{"template_name":""}"#, "template_name"),
        (&create_body(r#""vcpu":0"#), "vcpu"),
        (&create_body(r#""vcpu":9"#), "vcpu"),
        (&create_body(r#""vcpu":"two""#), "vcpu"),
        (&create_body(r#""memory":511"#), "memory"),
        (&create_body(r#""memory":1023"#), "memory"),
        (&create_body(r#""memory":16384"#), "memory"),
        (&create_body(r#""memory_mib":256"#), "memory_mib"),
        (&create_body(r#""memory":1024,"memory_mib":2048"#), "memory"),
        (&create_body(r#""timeout":0"#), "timeout"),
        (&create_body(r#""timeout":28801"#), "timeout"),
        (&create_body(r#""timeout_min":0"#), "timeout_min"),
        (&create_body(r#""timeout_min":481"#), "timeout_min"),
        (&create_body(r#""timeout":60,"timeout_min":1"#), "timeout"),
        (&create_body(r#""env_vars":{"A=B":"x"}"#), "env_vars"),
        (&create_body(r#""env_vars":{"":"x"}"#), "env_vars"),
        (&create_body(r#""env_vars":{"X":"a\u0000b"}"#), "env_vars"),
        (&create_body(r#""env_vars":["X"]"#), "env_vars"),
        (&create_body(r#""env_vars":{"X":1}"#), "env_vars"),
        (&create_body(r#""mounts":[{"x":1}]"#), "mounts"),
        (&create_body(r#""no_such_field":1"#), "no_such_field"),
        (
            &create_body(r#""network_policy":{"mode":"open"}"#),
            "network_policy.mode",
        ),
        (
            &create_body(r#""network_policy":"allow-all""#),
            "network_policy",
        ),
        (
            &create_body(r#""network_policy":{"mode":"custom","allow_domains":["*"]}"#),
            "network_policy.allow_domains",
        ),
        (
            &create_body(r#""network_policy":{"mode":"custom","allow_domains":["*.com"]}"#),
            "network_policy.allow_domains",
        ),
        (
            &create_body(r#""network_policy":{"mode":"custom","allow_domains":["bad..name"]}"#),
            "network_policy.allow_domains",
        ),
        (
            &create_body(r#""network_policy":{"mode":"custom","allow_domains":["a b.test"]}"#),
            "network_policy.allow_domains",
        ),
        (
            &create_body(r#""network_policy":{"mode":"custom","allow_cidrs":["10.0.0.0/33"]}"#),
            "network_policy.allow_cidrs",
        ),
        (
            &create_body(r#""network_policy":{"mode":"custom","allow_cidrs":["not-a-cidr"]}"#),
            "network_policy.allow_cidrs",
        ),
        (
            &create_body(
                r#""network_policy":{"mode":"custom","transforms":[{"domain":"api.example.test","inject_headers":{"Bad Header":"x"}}]}"#,
            ),
            "network_policy.transforms",
        ),
        (
            &create_body(
                r#""network_policy":{"mode":"custom","transforms":[{"domain":"api.example.test","strip_headers":["bad:name"]}]}"#,
            ),
            "network_policy.transforms",
        ),
        (
            &create_body(
                r#""network_policy":{"mode":"custom","transforms":[{"domain":"*","inject_headers":{"X":"y"}}]}"#,
            ),
            "network_policy.transforms",
        ),
        (
            &create_body(r#""network_policy":{"mode":"custom","surprise":true}"#),
            "network_policy",
        ),
    ];
    for (body, field) in cases {
        let r = bed.api("POST", "/v1/sandbox", body);
        assert_field(&r, field);
    }
    // A secret with CR/LF is refused, and never echoed back.
    let r = bed.api(
        "POST",
        "/v1/sandbox",
        &create_body(
            r#""network_policy":{"mode":"custom","transforms":[{"domain":"api.example.test","inject_headers":{"Authorization":"sk-crlf-secret\r\nX-Evil: 1"}}]}"#,
        ),
    );
    assert_field(&r, "network_policy.transforms");
    assert!(!r.body.contains("sk-crlf-secret"), "{r:?}");
    // Not JSON at all.
    assert_status(&bed.api("POST", "/v1/sandbox", "{not json"), 400);
    assert_eq!(footprint(&bed).rows, 0, "a rejected create left a row");

    // ---- a working sandbox for the rest ---------------------------------------------------
    let sb = bed.create(&create_body(
        r#""network_policy":{"mode":"custom","allow_domains":["alpha.test"]}"#,
    ));
    let exec_path = format!("/v1/sandbox/{sb}/process/execute");

    // ---- exec ---------------------------------------------------------------------------
    assert_status(
        &bed.api(
            "POST",
            "/v1/sandbox/0000000000/process/execute",
            r#"{"command":"true"}"#,
        ),
        404,
    );
    assert_status(
        &bed.api_as(
            Some(&other_key),
            "POST",
            &exec_path,
            r#"{"command":"true"}"#,
        ),
        404,
    );
    assert_status(
        &bed.api_as(Some(&other_key), "GET", &format!("/v1/sandbox/{sb}"), ""),
        404,
    );
    assert_status(
        &bed.api_as(Some(&other_key), "DELETE", &format!("/v1/sandbox/{sb}"), ""),
        404,
    );
    for (body, field) in [
        (r#"{"command":""}"#, "command"),
        (r#"{"command":"true","timeout":0}"#, "timeout"),
        (r#"{"command":"true","timeout":28801}"#, "timeout"),
        (r#"{"command":"true","cwd":"relative"}"#, "cwd"),
        (r#"{"command":"true","envs":{"A=B":"x"}}"#, "envs"),
        (r#"{"command":"true","what":1}"#, "what"),
        (r#"{"cmd":"true"}"#, "cmd"),
        (r#"{}"#, "command"),
    ] {
        assert_field(&bed.api("POST", &exec_path, body), field);
    }
    assert_status(&bed.api("POST", &exec_path, "nope"), 400);

    // Exec reports a timeout and a cut output (fields beyond Leap0's three).
    let r = bed.api("POST", &exec_path, r#"{"command":"sleep 30","timeout":1}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["timed_out"], true, "{r:?}");
    let r = bed.api(
        "POST",
        &exec_path,
        r#"{"command":"yes x | head -c 20000000","timeout":60}"#,
    );
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    let v = r.json();
    assert_eq!(
        (v["truncated"].clone(), v["timed_out"].clone()),
        (true.into(), false.into())
    );
    assert!(v["stdout"].as_str().unwrap().len() < 20_000_000);

    // ---- live policy: a bad update is refused and changes nothing ---------------------------
    let policy_path = format!("/v1/sandbox/{sb}/network-policy");
    let before = bed.api("GET", &policy_path, "");
    assert_eq!(before.status, 200, "{before:?}");
    for (body, field) in [
        (r#"{"mode":"everything"}"#, "mode"),
        (
            r#"{"mode":"custom","allow_domains":["*"]}"#,
            "allow_domains",
        ),
        (
            r#"{"mode":"custom","allow_cidrs":["300.1.1.1/32"]}"#,
            "allow_cidrs",
        ),
        (
            r#"{"mode":"custom","transforms":[{"domain":"alpha.test","inject_headers":{"A":"x\ny"}}]}"#,
            "transforms",
        ),
    ] {
        let r = bed.api("PUT", &policy_path, body);
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.fields().iter().any(|f| f.contains(field)),
            "{field}: {r:?}"
        );
    }
    assert_status(&bed.api("PUT", &policy_path, "[]"), 400);
    assert_status(
        &bed.api(
            "PUT",
            "/v1/sandbox/0000000000/network-policy",
            r#"{"mode":"deny-all"}"#,
        ),
        404,
    );
    assert_status(
        &bed.api_as(
            Some(&other_key),
            "PUT",
            &policy_path,
            r#"{"mode":"allow-all"}"#,
        ),
        404,
    );
    let after = bed.api("GET", &policy_path, "");
    assert_eq!(
        before.json(),
        after.json(),
        "a refused update changed the policy"
    );
    let (code, out) = bed.exec(
        &sb,
        "curl -fsS -o /dev/null --connect-timeout 5 --max-time 8 http://alpha.test/",
    );
    assert_eq!(
        code, 0,
        "allowed name refused after a refused update: {out}"
    );
    let (code, _) = bed.exec(
        &sb,
        "curl -fsS -o /dev/null --connect-timeout 5 --max-time 8 http://beta.test/",
    );
    assert_ne!(code, 0, "a refused allow-all took effect");

    // ---- snapshots and templates ------------------------------------------------------------
    assert_status(
        &bed.api("POST", "/v1/sandbox/0000000000/snapshot/create", "{}"),
        404,
    );
    assert_status(
        &bed.api_as(
            Some(&other_key),
            "POST",
            &format!("/v1/sandbox/{sb}/snapshot/create"),
            "{}",
        ),
        404,
    );
    assert_status(
        &bed.api(
            "POST",
            "/v1/snapshot/restore",
            r#"{"snapshot_name":"no-such-snapshot"}"#,
        ),
        404,
    );
    assert_status(
        &bed.api(
            "POST",
            "/v1/snapshot/resume",
            r#"{"snapshot_name":"no-such-snapshot"}"#,
        ),
        404,
    );
    assert_field(
        &bed.api("POST", "/v1/snapshot/restore", r#"{"snapshot_name":""}"#),
        "snapshot_name",
    );
    assert_status(&bed.api("DELETE", "/v1/snapshot/no-such-snapshot", ""), 404);
    let t = bed.api(
        "POST",
        "/v1/template",
        r#"{"name":"mine","uri":"system/host"}"#,
    );
    assert_eq!(t.status, 201, "{t:?}");
    assert_status(
        &bed.api(
            "POST",
            "/v1/template",
            r#"{"name":"mine","uri":"system/host"}"#,
        ),
        409,
    );
    let t2 = bed.api(
        "POST",
        "/v1/template",
        r#"{"name":"theirs","uri":"system/host"}"#,
    );
    assert_eq!(t2.status, 201, "{t2:?}");
    let t2_id = t2.json()["id"].as_str().unwrap().to_owned();
    assert_status(
        &bed.api(
            "PATCH",
            &format!("/v1/template/{t2_id}"),
            r#"{"name":"mine"}"#,
        ),
        409,
    );
    assert_field(
        &bed.api(
            "POST",
            "/v1/template",
            r#"{"name":"system/x","uri":"system/host"}"#,
        ),
        "name",
    );
    assert_field(
        &bed.api(
            "POST",
            "/v1/template",
            r#"{"name":"has space","uri":"system/host"}"#,
        ),
        "name",
    );
    assert_status(&bed.api("DELETE", "/v1/template/no-such-template", ""), 404);

    // ---- a create that fails inside the runtime leaves nothing ------------------------------
    // A template row whose image is not on disk: the store and the API accept it, runc cannot.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = palisade_store::Store::open(&bed.data_dir()).await.unwrap();
        let org = store.get_org_by_name("errors").await.unwrap();
        store
            .insert_template(palisade_store::NewTemplate {
                id: "0000deadbeef".into(),
                org_id: Some(org.id),
                name: "vanished".into(),
                source_kind: "oci-archive".into(),
                source_uri: "/nonexistent.tar".into(),
                digest: String::new(),
                image_config: None,
                state: "ready".into(),
            })
            .await
            .unwrap();
        store.close().await;
    });
    let clean = footprint(&bed);
    let r = bed.api("POST", "/v1/sandbox", r#"{"template_name":"vanished"}"#);
    assert_status(&r, 404);
    assert!(r.body.contains("template"), "{r:?}");
    assert_eq!(
        footprint(&bed),
        clean,
        "a failed create left something behind"
    );

    // ---- quota ------------------------------------------------------------------------------
    let mut extra = Vec::new();
    for _ in 1..QUOTA {
        extra.push(bed.create(&create_body("")));
    }
    let r = bed.api("POST", "/v1/sandbox", &create_body(""));
    assert_status(&r, 429);
    // Another organisation has its own quota.
    let theirs = bed.api_as(Some(&other_key), "POST", "/v1/sandbox", &create_body(""));
    assert_eq!(theirs.status, 201, "{theirs:?}");
    let theirs = theirs.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        bed.api_as(
            Some(&other_key),
            "DELETE",
            &format!("/v1/sandbox/{theirs}"),
            ""
        )
        .status,
        204
    );

    // A container that exited on its own: exec is a 409 naming its state, not a 500.
    bed.runc_ok(&["kill", &extra[0], "KILL"]);
    let mut last = None;
    for _ in 0..50 {
        let r = bed.api(
            "POST",
            &format!("/v1/sandbox/{}/process/execute", extra[0]),
            r#"{"command":"true"}"#,
        );
        if r.status != 200 {
            last = Some(r);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = last.expect("exec kept working in a killed container");
    assert_status(&r, 409);
    assert!(r.body.contains("stopped"), "{r:?}");

    // ---- delete twice -----------------------------------------------------------------------
    for id in &extra {
        let r = bed.api("DELETE", &format!("/v1/sandbox/{id}"), "");
        assert_eq!(r.status, 204, "{r:?}");
        assert_status(&bed.api("DELETE", &format!("/v1/sandbox/{id}"), ""), 404);
        assert_status(&bed.api("GET", &format!("/v1/sandbox/{id}"), ""), 404);
        assert_status(
            &bed.api(
                "POST",
                &format!("/v1/sandbox/{id}/process/execute"),
                r#"{"command":"true"}"#,
            ),
            404,
        );
        assert_status(
            &bed.api("POST", &format!("/v1/sandbox/{id}/pause"), ""),
            404,
        );
    }
    // With the quota freed, creation works again.
    let again = bed.create(&create_body(""));
    assert_eq!(
        bed.api("DELETE", &format!("/v1/sandbox/{again}"), "")
            .status,
        204
    );
    // Nothing but the one sandbox left anywhere.
    let fp = footprint(&bed);
    assert_eq!(
        (fp.rows, fp.runc.len(), fp.dirs.len(), fp.veths.len()),
        (1, 1, 1, 1),
        "{fp:?}"
    );
}
