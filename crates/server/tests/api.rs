//! API tests through the real router (tower `oneshot`) against the real control plane over
//! recording platforms (`TestPlane`: no runc, no netns, no root): both SDK generations' field
//! names, every error path in the Leap0 shape, org scoping, redaction of injected header values
//! in every answer, and what the plane asked of the runtime.

#![expect(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use palisade_runtime::{ExecResult, RuntimeCall};
use palisade_server::testing::TestPlane;
use palisade_server::{Metrics, admin_router, api_router};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "sk-proj-TOPSECRET-123";

/// The plane and the fakes under it, and an API key of each of two organisations.
struct Api {
    bed: TestPlane,
    a: String,
    b: String,
    _dir: tempfile::TempDir,
}

async fn app_with(metrics: Arc<Metrics>) -> (Api, Router) {
    let dir = tempfile::tempdir().unwrap();
    let bed = TestPlane::new(dir.path()).await.unwrap();
    let a = bed.add_org("org-a", None).await.unwrap();
    let b = bed.add_org("org-b", None).await.unwrap();
    let router = api_router(bed.plane.clone(), metrics);
    let api = Api {
        bed,
        a,
        b,
        _dir: dir,
    };
    (api, router)
}

async fn app() -> (Api, Router) {
    app_with(Arc::new(Metrics::default())).await
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, text)
}

fn transform_policy() -> Value {
    json!({
        "mode": "custom",
        "allow_domains": ["pypi.org"],
        "transforms": [{"domain": "api.openai.com", "inject_headers": {"Authorization": format!("Bearer {SECRET}")}, "strip_headers": ["X-Debug"]}]
    })
}

fn assert_error_shape(body: &Value) {
    assert!(body["message"].is_string(), "{body}");
    assert!(body["errors"].is_array(), "{body}");
}

fn first_field(body: &Value) -> &str {
    body["errors"][0]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn create_accepts_both_sdk_generations() {
    let (h, app) = app().await;
    // SDK 0.8 shape.
    let (s, v8, _) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.a.as_str()),
        Some(json!({
            "template_name": "system/debian:bookworm", "vcpu": 2, "memory": 2048, "timeout": 600,
            "auto_pause": false, "env_vars": {"A": "1"}, "network_policy": {"mode": "deny-all"}
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v8}");
    // Apart in time, so the list below has an order to check.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // SDK 0.6.1 shape.
    let (s, v6, _) = call(&app, "POST", "/v1/sandbox", Some(h.a.as_str()), Some(json!({
        "template_name": "system/debian:bookworm", "vcpu": 1, "memory_mib": 1024, "timeout_min": 5, "auto_pause": true
    }))).await;
    assert_eq!(s, StatusCode::CREATED, "{v6}");
    for v in [&v8, &v6] {
        for f in [
            "id",
            "template_id",
            "vcpu",
            "memory",
            "memory_mib",
            "disk",
            "disk_mib",
            "timeout",
            "state",
            "auto_pause",
            "created_at",
            "network_policy",
        ] {
            assert!(!v[f].is_null(), "missing {f} in {v}");
        }
        assert_eq!(v["memory"], v["memory_mib"]);
        assert_eq!(v["disk"], v["disk_mib"]);
        assert_eq!(v["state"], "running");
    }
    assert_eq!(v8["memory"], 2048);
    assert_eq!(v8["timeout"], 600);
    assert_eq!(v8["network_policy"]["mode"], "deny-all");
    assert_eq!(v6["timeout"], 300);
    assert_eq!(v6["network_policy"]["mode"], "allow-all");
    // What the runtime was asked to run; the timeout and auto-pause are the plane's own.
    let creates: Vec<_> = h
        .bed
        .runtime
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            RuntimeCall::Create(spec) => Some(spec),
            _ => None,
        })
        .collect();
    assert_eq!(
        (
            creates[0].memory_mib,
            v8["timeout"].as_i64(),
            creates[0].vcpu
        ),
        (Some(2048), Some(600), Some(2.0))
    );
    assert_eq!(
        (
            creates[1].memory_mib,
            v6["timeout"].as_i64(),
            v6["auto_pause"].as_bool()
        ),
        (Some(1024), Some(300), Some(true))
    );
    assert!(creates[0].env.contains(&("A".to_owned(), "1".to_owned())));

    // get with and without the SDK's trailing slash, list, delete.
    let id = v8["id"].as_str().unwrap();
    for path in [format!("/v1/sandbox/{id}/"), format!("/v1/sandbox/{id}")] {
        let (s, got, _) = call(&app, "GET", &path, Some(h.a.as_str()), None).await;
        assert_eq!((s, got["id"].as_str()), (StatusCode::OK, Some(id)));
    }
    let (s, list, _) = call(
        &app,
        "GET",
        "/v1/sandboxes?sort=created_at&order-by=desc&page=1&page-size=1",
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["total_items"], 2);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], v6["id"]);
    for f in [
        "id",
        "template_id",
        "state",
        "created_at",
        "launch_time",
        "state_change_time",
        "timeout_at",
    ] {
        assert!(!list["items"][0][f].is_null(), "missing {f}");
    }
    let (s, paused, _) = call(
        &app,
        "GET",
        "/v1/sandboxes?state=paused",
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(
        (s, paused["total_items"].as_i64()),
        (StatusCode::OK, Some(0))
    );
    let (s, _, body) = call(
        &app,
        "DELETE",
        &format!("/v1/sandbox/{id}/"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!((s, body.as_str()), (StatusCode::NO_CONTENT, ""));
    let (s, e, _) = call(
        &app,
        "GET",
        &format!("/v1/sandbox/{id}/"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_shape(&e);
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let (h, app) = app().await;
    let cases = [
        (json!({"vcpu": 0}), "vcpu"),
        (json!({"vcpu": 9}), "vcpu"),
        (json!({"vcpu": "two"}), "vcpu"),
        (json!({"memory": 511}), "memory"),
        (json!({"memory": 1025}), "memory"),
        (json!({"memory_mib": 9000}), "memory_mib"),
        (json!({"memory": 1024, "memory_mib": 2048}), "memory"),
        (json!({"timeout": 0}), "timeout"),
        (json!({"timeout": 28801}), "timeout"),
        (json!({"timeout_min": 481}), "timeout_min"),
        (json!({"template_name": ""}), "template_name"),
        (json!({"template_name": "x".repeat(65)}), "template_name"),
        (
            json!({"network_policy": {"mode": "open"}}),
            "network_policy.mode",
        ),
        (
            json!({"network_policy": {"mode": "custom", "allow_domains": ["*"]}}),
            "network_policy.allow_domains[0]",
        ),
        (
            json!({"network_policy": {"mode": "custom", "allow_cidrs": ["10.0.0.0/33"]}}),
            "network_policy.allow_cidrs[0]",
        ),
        (
            json!({"network_policy": {"mode": "custom", "transforms": [{"domain": "a.test", "inject_headers": {"X": "a\r\nb"}}]}}),
            "network_policy.transforms[0]",
        ),
        (json!({"mounts": [{"type": "object-storage"}]}), "mounts"),
        (json!({"env_vars": {"A=B": "x"}}), "env_vars"),
        (json!({"unexpected": 1}), ""),
    ];
    for (body, field) in cases {
        let (s, e, _) = call(
            &app,
            "POST",
            "/v1/sandbox",
            Some(h.a.as_str()),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} → {e}");
        assert_error_shape(&e);
        assert!(
            first_field(&e).starts_with(field),
            "{body}: field {} not {field}",
            first_field(&e)
        );
    }
    // Several problems at once are all reported.
    let (_, e, _) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.a.as_str()),
        Some(json!({"vcpu": 0, "memory": 3})),
    )
    .await;
    assert_eq!(e["errors"].as_array().unwrap().len(), 2);
    // Not JSON at all.
    let req = Request::post("/v1/sandbox")
        .header("authorization", format!("Bearer {}", h.a))
        .body(Body::from("{nope"))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // A bad secret value never comes back in the error.
    let (_, e, text) = call(&app, "POST", "/v1/sandbox", Some(h.a.as_str()), Some(json!({"network_policy": {"mode": "custom",
        "transforms": [{"domain": "a.test", "inject_headers": {"Authorization": format!("{SECRET}\r\n")}}]}}))).await;
    assert!(!text.contains("TOPSECRET"), "{text}");
    assert_error_shape(&e);
    // None of the bad requests reached the control plane: nothing stored, nothing run.
    assert!(h.bed.runtime.calls().is_empty());
    let (_, list, _) = call(&app, "GET", "/v1/sandboxes", Some(h.a.as_str()), None).await;
    assert_eq!(list["total_items"], 0);
    // Unknown template: the control plane's 400 on template_name.
    let (s, e, _) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.a.as_str()),
        Some(json!({"template_name": "nope"})),
    )
    .await;
    assert_eq!(
        (s, first_field(&e)),
        (StatusCode::BAD_REQUEST, "template_name")
    );
    // Query parameters.
    for (q, field) in [
        ("page=0", "page"),
        ("page-size=101", "page-size"),
        ("sort=id", "sort"),
        ("order-by=up", "order-by"),
        ("state=zombie", "state"),
    ] {
        let (s, e, _) = call(
            &app,
            "GET",
            &format!("/v1/sandboxes?{q}"),
            Some(h.a.as_str()),
            None,
        )
        .await;
        assert_eq!(
            (s, first_field(&e)),
            (StatusCode::BAD_REQUEST, field),
            "{q}"
        );
    }
}

#[tokio::test]
async fn auth_headers_and_401() {
    let (h, app) = app().await;
    let (s, e, _) = call(&app, "GET", "/v1/sandboxes", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error_shape(&e);
    let (s, _, _) = call(&app, "GET", "/v1/sandboxes", Some("pl_wrong"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for (header, value) in [
        ("leap0-authorization", h.a.clone()),
        ("leap0-authorization", format!("Bearer {}", h.a)),
        ("authorization", h.a.clone()),
    ] {
        let req = Request::get("/v1/sandboxes")
            .header(header, value)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK,
            "{header}"
        );
    }
    // Every API route but /openapi.json needs a key, whatever the method (the console's
    // static files under /console/ are public; the data they show comes from these routes).
    for (m, p) in [
        ("POST", "/v1/sandbox"),
        ("DELETE", "/v1/sandbox/x/"),
        ("POST", "/v1/snapshot/restore"),
        ("PATCH", "/v1/template/x"),
        ("PUT", "/v1/sandbox/x/network-policy"),
        ("GET", "/v1/sandbox/x/network/events"),
    ] {
        let (s, _, _) = call(&app, m, p, None, Some(json!({}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {p}");
    }
    let (s, doc, _) = call(&app, "GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for p in [
        "/v1/sandbox",
        "/v1/sandboxes",
        "/v1/sandbox/{id}/",
        "/v1/sandbox/{id}/pause",
        "/v1/sandbox/{id}/process/execute",
        "/v1/sandbox/{id}/snapshot/create",
        "/v1/sandbox/{id}/snapshot/pause",
        "/v1/snapshots",
        "/v1/snapshot/{id}",
        "/v1/snapshot/restore",
        "/v1/snapshot/resume",
        "/v1/template",
        "/v1/template/{id}",
        "/v1/templates",
        "/v1/sandbox/{id}/network-policy",
        "/v1/sandbox/{id}/network/events",
    ] {
        assert!(doc["paths"][p].is_object(), "openapi lacks {p}");
    }
    // The policy's schema is the policy crate's own type, so it names every field it accepts.
    let schemas = &doc["components"]["schemas"];
    for (schema, fields) in [
        (
            "NetworkPolicySpec",
            &[
                "mode",
                "allow_domains",
                "allow_cidrs",
                "transforms",
                "budgets",
                "audit",
                "on_unknown",
                "deny_domains",
            ][..],
        ),
        (
            "TransformSpec",
            &[
                "domain",
                "inject_headers",
                "strip_headers",
                "http_rules",
                "placeholders",
            ][..],
        ),
    ] {
        for f in fields {
            let prop = &schemas[schema]["properties"][f];
            assert!(prop.is_object(), "openapi {schema} lacks {f}");
        }
    }
    // The bounds the API checks are published with the fields.
    let create = &schemas["CreateSandboxRequest"]["properties"];
    for (field, min, max) in [
        ("vcpu", 1, 8),
        ("memory", 512, 8192),
        ("memory_mib", 512, 8192),
        ("timeout", 1, 28800),
        ("timeout_min", 1, 480),
    ] {
        assert_eq!(create[field]["minimum"], min, "{field}");
        assert_eq!(create[field]["maximum"], max, "{field}");
    }
    assert_eq!(create["memory"]["multipleOf"], 2);
    let (s, e, _) = call(&app, "GET", "/v2/nothing", Some(h.a.as_str()), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_shape(&e);
}

#[tokio::test]
async fn other_org_gets_404_and_quota_429() {
    let (h, app) = app().await;
    let (_, sb, _) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.a.as_str()),
        Some(json!({})),
    )
    .await;
    let id = sb["id"].as_str().unwrap();
    let (_, snap, _) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        Some(h.a.as_str()),
        Some(json!({"name": "s1"})),
    )
    .await;
    let snap_id = snap["id"].as_str().unwrap();
    let (_, tpl, _) = call(
        &app,
        "POST",
        "/v1/template",
        Some(h.a.as_str()),
        Some(json!({"name": "mine", "uri": "system/host"})),
    )
    .await;
    let tpl_id = tpl["id"].as_str().unwrap();
    let other = [
        ("GET", format!("/v1/sandbox/{id}/"), None),
        ("DELETE", format!("/v1/sandbox/{id}/"), None),
        ("POST", format!("/v1/sandbox/{id}/pause"), None),
        (
            "POST",
            format!("/v1/sandbox/{id}/process/execute"),
            Some(json!({"command": "echo hi"})),
        ),
        (
            "POST",
            format!("/v1/sandbox/{id}/snapshot/create"),
            Some(json!({})),
        ),
        (
            "PUT",
            format!("/v1/sandbox/{id}/network-policy"),
            Some(json!({"mode": "deny-all"})),
        ),
        ("GET", format!("/v1/sandbox/{id}/network-policy"), None),
        ("GET", format!("/v1/sandbox/{id}/network/events"), None),
        ("DELETE", format!("/v1/snapshot/{snap_id}"), None),
        (
            "POST",
            "/v1/snapshot/restore".to_string(),
            Some(json!({"snapshot_name": "s1"})),
        ),
        (
            "PATCH",
            format!("/v1/template/{tpl_id}"),
            Some(json!({"name": "theirs"})),
        ),
        ("DELETE", format!("/v1/template/{tpl_id}"), None),
    ];
    for (m, p, body) in other {
        let (s, e, _) = call(&app, m, &p, Some(h.b.as_str()), body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {p}: {e}");
        assert_error_shape(&e);
    }
    let (_, list, _) = call(&app, "GET", "/v1/sandboxes", Some(h.b.as_str()), None).await;
    assert_eq!(list["total_items"], 0);
    let (_, list, _) = call(&app, "GET", "/v1/snapshots", Some(h.b.as_str()), None).await;
    assert_eq!(list["total_items"], 0);
    // Still there for its owner.
    let (s, _, _) = call(
        &app,
        "GET",
        &format!("/v1/sandbox/{id}/"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // 409 on names.
    let (s, e, _) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        Some(h.a.as_str()),
        Some(json!({"name": "s1"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error_shape(&e);
    let (s, _, _) = call(
        &app,
        "POST",
        "/v1/template",
        Some(h.a.as_str()),
        Some(json!({"name": "mine", "uri": "system/host"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // 429 over quota.
    h.bed.set_quota("org-b", 1).await.unwrap();
    let (s, _, _) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.b.as_str()),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e, _) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.b.as_str()),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_error_shape(&e);
}

#[tokio::test]
async fn injected_values_redacted_everywhere() {
    let (h, app) = app().await;
    let mut texts = Vec::new();
    let (s, sb, t) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.a.as_str()),
        Some(json!({"network_policy": transform_policy()})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    texts.push(t);
    let id = sb["id"].as_str().unwrap().to_owned();
    assert_eq!(
        sb["network_policy"]["transforms"][0]["inject_headers"]["authorization"],
        "[REDACTED]"
    );
    // The data plane gets the real value.
    let full = h.bed.full_policy(&id).await.unwrap();
    assert!(full.to_json().contains(SECRET));
    assert!(h.bed.registry.by_id(&id).is_some(), "the firewall knows it");
    texts.push(
        call(
            &app,
            "GET",
            &format!("/v1/sandbox/{id}/"),
            Some(h.a.as_str()),
            None,
        )
        .await
        .2,
    );
    texts.push(
        call(&app, "GET", "/v1/sandboxes", Some(h.a.as_str()), None)
            .await
            .2,
    );
    let (_, snap, t) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        Some(h.a.as_str()),
        Some(json!({"name": "with-secret"})),
    )
    .await;
    assert_eq!(
        snap["network_policy"]["transforms"][0]["inject_headers"]["authorization"],
        "[REDACTED]"
    );
    texts.push(t);
    texts.push(
        call(
            &app,
            "GET",
            "/v1/snapshots?query=with",
            Some(h.a.as_str()),
            None,
        )
        .await
        .2,
    );
    // Restore without a policy keeps the snapshot's (secret included, redacted in the answer).
    let (s, restored, t) = call(
        &app,
        "POST",
        "/v1/snapshot/restore",
        Some(h.a.as_str()),
        Some(json!({"snapshot_name": "with-secret", "timeout": 60})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    texts.push(t);
    let rid = restored["id"].as_str().unwrap();
    assert!(
        h.bed
            .full_policy(rid)
            .await
            .unwrap()
            .to_json()
            .contains(SECRET)
    );
    // Restore (0.6.1 path) with a policy override.
    let (s, r2, t) = call(&app, "POST", "/v1/snapshot/resume", Some(h.a.as_str()), Some(json!({"snapshot_name": "with-secret", "timeout_min": 2, "network_policy": {"mode": "deny-all"}}))).await;
    assert_eq!(
        (
            s,
            r2["network_policy"]["mode"].as_str(),
            r2["timeout"].as_i64()
        ),
        (StatusCode::CREATED, Some("deny-all"), Some(120))
    );
    texts.push(t);
    let (s, p, t) = call(
        &app,
        "PUT",
        &format!("/v1/sandbox/{id}/network-policy"),
        Some(h.a.as_str()),
        Some(transform_policy()),
    )
    .await;
    assert_eq!((s, p["version"].as_i64()), (StatusCode::OK, Some(2)), "{t}");
    texts.push(t);
    let (_, p, t) = call(
        &app,
        "GET",
        &format!("/v1/sandbox/{id}/network-policy"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(p["version"], 2);
    texts.push(t);
    for t in &texts {
        assert!(!t.contains("TOPSECRET"), "secret in response: {t}");
    }
}

#[tokio::test]
async fn snapshots_templates_process_and_events() {
    let (h, app) = app().await;
    let (_, sb, _) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.a.as_str()),
        Some(json!({})),
    )
    .await;
    let id = sb["id"].as_str().unwrap().to_owned();
    h.bed.runtime.answer_exec(ExecResult {
        exit_code: 0,
        stdout: "hi\n".into(),
        stderr: String::new(),
        truncated: false,
        timed_out: false,
    });
    let (s, out, _) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/process/execute"),
        Some(h.a.as_str()),
        Some(json!({"command": "echo hi", "cwd": "/tmp", "envs": {"X": "1"}, "timeout": 5})),
    )
    .await;
    assert_eq!(
        (s, out["exit_code"].as_i64(), out["stdout"].as_str()),
        (StatusCode::OK, Some(0), Some("hi\n"))
    );
    let execs: Vec<_> = h
        .bed
        .runtime
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            RuntimeCall::Exec(on, req) => Some((on, req)),
            _ => None,
        })
        .collect();
    let (on, req) = &execs[0];
    assert_eq!(
        (on, req.command.as_str(), req.cwd.as_deref(), req.timeout),
        (
            &id,
            "echo hi",
            Some("/tmp"),
            Some(std::time::Duration::from_secs(5))
        )
    );
    assert_eq!(req.envs, [("X".to_owned(), "1".to_owned())]);
    let (s, e, _) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/process/execute"),
        Some(h.a.as_str()),
        Some(json!({"command": ""})),
    )
    .await;
    assert_eq!((s, first_field(&e)), (StatusCode::BAD_REQUEST, "command"));
    let (s, e, _) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/process/execute"),
        Some(h.a.as_str()),
        Some(json!({"command": "ls", "cwd": "rel"})),
    )
    .await;
    assert_eq!((s, first_field(&e)), (StatusCode::BAD_REQUEST, "cwd"));

    // 0.6.1 pause-snapshot stops the sandbox; 0.8 kill_sandbox_after deletes it.
    let (s, snap, _) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/pause"),
        Some(h.a.as_str()),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    for f in [
        "id",
        "name",
        "template_id",
        "vcpu",
        "memory",
        "memory_mib",
        "disk",
        "disk_mib",
        "state",
        "created_at",
    ] {
        assert!(!snap[f].is_null(), "snapshot lacks {f}");
    }
    let (_, got, _) = call(
        &app,
        "GET",
        &format!("/v1/sandbox/{id}/"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(got["state"], "paused");
    // Its container is gone: pausing again changes nothing, and a snapshot of it is a 409
    // pointing at the resume.
    assert!(!h.bed.runtime.sandbox_ids().contains(&id));
    let (s, again, _) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/pause"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(
        (s, again["state"].as_str()),
        (StatusCode::CREATED, Some("paused"))
    );
    let (s, e, _) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        Some(h.a.as_str()),
        Some(json!({"name": "again"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("resume"), "{e}");
    // Resumed (a new sandbox from the snapshot), then snapshotted and deleted at once.
    let (s, resumed, _) = call(
        &app,
        "POST",
        "/v1/snapshot/resume",
        Some(h.a.as_str()),
        Some(json!({"snapshot_name": snap["name"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{resumed}");
    let rid = resumed["id"].as_str().unwrap().to_owned();
    let (s, _, _) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{rid}/snapshot/create"),
        Some(h.a.as_str()),
        Some(json!({"kill_sandbox_after": true, "name": "final"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, _) = call(
        &app,
        "GET",
        &format!("/v1/sandbox/{rid}/"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        h.bed.runtime.sandbox_ids().is_empty(),
        "its container went too"
    );
    let (_, list, _) = call(
        &app,
        "GET",
        "/v1/snapshots?query=&sort=created_at&order-by=asc&page=1&page-size=20",
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(list["total_items"], 2);
    assert_eq!(list["items"][1]["name"], "final");
    let (s, e, _) = call(
        &app,
        "GET",
        "/v1/snapshots?sort=name",
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!((s, first_field(&e)), (StatusCode::BAD_REQUEST, "sort"));
    // Each listing takes its own sort keys, and not the other's.
    for (path, ok) in [
        ("/v1/snapshots?sort=template_id", true),
        ("/v1/snapshots?sort=state", false),
        ("/v1/sandboxes?sort=state&order-by=asc", true),
        ("/v1/sandboxes?sort=template_id", false),
    ] {
        let (s, got, _) = call(&app, "GET", path, Some(h.a.as_str()), None).await;
        if ok {
            assert_eq!(s, StatusCode::OK, "{path}");
            assert!(got["total_items"].as_i64().is_some(), "{path}: {got}");
        } else {
            assert_eq!(
                (s, first_field(&got)),
                (StatusCode::BAD_REQUEST, "sort"),
                "{path}"
            );
        }
    }
    let (s, e, _) = call(
        &app,
        "POST",
        "/v1/snapshot/restore",
        Some(h.a.as_str()),
        Some(json!({"snapshot_name": "final", "timeout": 0})),
    )
    .await;
    assert_eq!((s, first_field(&e)), (StatusCode::BAD_REQUEST, "timeout"));
    let (s, _, _) = call(
        &app,
        "POST",
        "/v1/snapshot/restore",
        Some(h.a.as_str()),
        Some(json!({"snapshot_name": "missing"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let snap_id = snap["id"].as_str().unwrap();
    let (s, _, _) = call(
        &app,
        "DELETE",
        &format!("/v1/snapshot/{snap_id}"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Templates.
    let (s, tpl, _) = call(
        &app,
        "POST",
        "/v1/template",
        Some(h.a.as_str()),
        Some(json!({"name": "py", "uri": "system/host"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    for f in ["id", "name", "digest", "is_system", "created_at"] {
        assert!(!tpl[f].is_null(), "template lacks {f}");
    }
    let tid = tpl["id"].as_str().unwrap();
    for (body, field) in [
        (json!({"name": "system/x", "uri": "system/host"}), "name"),
        (json!({"name": "a b", "uri": "system/host"}), "name"),
        (json!({"name": "ok", "uri": ""}), "uri"),
        (
            json!({"name": "ok", "uri": "system/host", "credentials": {"type": "basic"}}),
            "credentials",
        ),
        (json!({"name": "ok", "uri": "docker.io/x"}), "uri"),
    ] {
        let (s, e, _) = call(
            &app,
            "POST",
            "/v1/template",
            Some(h.a.as_str()),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (s, first_field(&e)),
            (StatusCode::BAD_REQUEST, field),
            "{body}"
        );
    }
    let (s, _, _) = call(
        &app,
        "PATCH",
        &format!("/v1/template/{tid}"),
        Some(h.a.as_str()),
        Some(json!({"name": "py2"})),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, all, _) = call(&app, "GET", "/v1/templates", Some(h.a.as_str()), None).await;
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "py2")
    );
    let (s, _, _) = call(
        &app,
        "PATCH",
        "/v1/template/system-debian-bookworm",
        Some(h.a.as_str()),
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        &app,
        "DELETE",
        &format!("/v1/template/{tid}"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Egress events: JSON with filters, and the SSE stream.
    let (_, sb2, _) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.a.as_str()),
        Some(json!({})),
    )
    .await;
    let id2 = sb2["id"].as_str().unwrap();
    // Stored history, as the event pump writes it.
    let mut stored = Vec::new();
    for (i, verdict) in ["allow", "deny", "deny"].iter().enumerate() {
        stored.push(palisade_store::EgressEventRecord {
            id: 0,
            sandbox_id: id2.into(),
            event: palisade_store::EgressEventFields {
                at_ms: 1_700_000_000_000 + i as i64,
                verdict: (*verdict).into(),
                protocol: "tls".into(),
                dst_addr: Some("203.0.113.5".into()),
                dst_port: Some(443),
                name: Some("x.test".into()),
                rule: None,
                reason: None,
                bytes_up: 1,
                bytes_down: 2,
                duration_ms: 3,
            },
            detail: Some(r#"{"method":"GET"}"#.into()),
        });
    }
    h.bed.plane.store().insert_events(&stored).await.unwrap();
    let (s, ev, _) = call(
        &app,
        "GET",
        &format!("/v1/sandbox/{id2}/network/events?verdict=deny&limit=10"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ev["items"].as_array().unwrap().len(), 2);
    assert_eq!(ev["items"][0]["detail"]["method"], "GET");
    let (s, e, _) = call(
        &app,
        "GET",
        &format!("/v1/sandbox/{id2}/network/events?verdict=maybe"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!((s, first_field(&e)), (StatusCode::BAD_REQUEST, "verdict"));
    // Following streams live events from the firewall's ring (filters applied); the ones
    // recorded after the subscription come through, another sandbox's do not.
    let req = Request::get(format!(
        "/v1/sandbox/{id2}/network/events?follow=true&verdict=deny"
    ))
    .header("authorization", format!("Bearer {}", h.a))
    .body(Body::empty())
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    use palisade_firewall::events::{EventKind, EventVerdict};
    for (sandbox, verdict) in [
        ("someone-else", EventVerdict::Deny),
        (id2, EventVerdict::Allow),
        (id2, EventVerdict::Deny),
        (id2, EventVerdict::Deny),
    ] {
        let rule = palisade_firewall::decision::RuleRef::Address;
        let mut e = palisade_firewall::EgressEvent::new(sandbox, EventKind::Tcp, verdict, rule);
        e.name = Some("x.test".into());
        h.bed.events.record(e);
    }
    let mut body = resp.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while text.matches("event: egress").count() < 2 {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("two events did not come: {text}"))
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert_eq!(text.matches("event: egress").count(), 2, "{text}");
    assert!(
        !text.contains("someone-else") && !text.contains("\"allow\""),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_on_admin_router() {
    let metrics = Arc::new(Metrics::default());
    let (h, app) = app_with(metrics.clone()).await;
    for _ in 0..3 {
        call(&app, "GET", "/v1/sandbox/abc/", Some(h.a.as_str()), None).await;
    }
    let admin = admin_router(metrics);
    let (s, _, text) = call(&admin, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    // Counted by route template, not by the id in the path.
    assert!(
        text.contains(
            r#"palisade_api_requests_total{method="GET",route="/v1/sandbox/{id}/",status="404"} 3"#
        ),
        "{text}"
    );
    assert!(!text.contains("abc"));
}

/// Byte budgets (issue 15) go through the API like every policy field: validated with field
/// paths on create and on the live update, returned by GET, kept with snapshots, changed by PUT.
#[tokio::test]
async fn budgets_round_trip_through_create_get_put_and_snapshots() {
    let (h, app) = app().await;
    let budgets = json!({
        "sandbox": {"sent_bytes": 1000000, "received_bytes": 5000000, "window_secs": 3600},
        "domains": [{"domain": "API.openai.com", "sent_bytes": 100000, "window_secs": 60}]
    });
    let policy = json!({"mode": "custom", "allow_domains": ["api.openai.com"], "budgets": budgets});
    let (s, sb, t) = call(
        &app,
        "POST",
        "/v1/sandbox",
        Some(h.a.as_str()),
        Some(json!({"network_policy": policy})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let id = sb["id"].as_str().unwrap().to_owned();
    let mut want = budgets.clone();
    want["domains"][0]["domain"] = json!("api.openai.com");
    assert_eq!(sb["network_policy"]["budgets"], want, "{t}");
    let full = h.bed.full_policy(&id).await.unwrap();
    assert_eq!(
        full.budgets
            .as_ref()
            .and_then(|b| b.sandbox.as_ref())
            .and_then(|b| b.sent_bytes),
        Some(1000000)
    );
    let (_, got, t) = call(
        &app,
        "GET",
        &format!("/v1/sandbox/{id}/network-policy"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(got["network_policy"]["budgets"], want, "{t}");
    // A snapshot keeps them; a restore without a policy gets them back.
    let (_, snap, t) = call(
        &app,
        "POST",
        &format!("/v1/sandbox/{id}/snapshot/create"),
        Some(h.a.as_str()),
        Some(json!({"name": "with-budget"})),
    )
    .await;
    assert_eq!(snap["network_policy"]["budgets"], want, "{t}");
    let (s, restored, t) = call(
        &app,
        "POST",
        "/v1/snapshot/restore",
        Some(h.a.as_str()),
        Some(json!({"snapshot_name": "with-budget", "timeout": 60})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let rid = restored["id"].as_str().unwrap();
    assert_eq!(
        h.bed.full_policy(rid).await.unwrap().budgets,
        full.budgets,
        "restore keeps the budgets"
    );
    // The live update changes them, and refuses a bad one with the field's path.
    let changed =
        json!({"mode": "custom", "budgets": {"sandbox": {"received_bytes": 7, "window_secs": 1}}});
    let (s, p, t) = call(
        &app,
        "PUT",
        &format!("/v1/sandbox/{id}/network-policy"),
        Some(h.a.as_str()),
        Some(changed.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(p["network_policy"]["budgets"], changed["budgets"], "{t}");
    for (bad, field) in [
        (
            json!({"sandbox": {"sent_bytes": -5, "window_secs": 60}}),
            "network_policy.budgets.sandbox.sent_bytes",
        ),
        (
            json!({"sandbox": {"sent_bytes": 0, "window_secs": 60}}),
            "network_policy.budgets.sandbox.sent_bytes",
        ),
        (
            json!({"sandbox": {"sent_bytes": 5}}),
            "network_policy.budgets.sandbox.window_secs",
        ),
        (
            json!({"domains": [{"domain": "a.test", "sent_bytes": 5, "window_secs": 9, "x": 1}]}),
            "network_policy.budgets.domains[0].x",
        ),
    ] {
        for (method, path, body) in [
            (
                "POST",
                "/v1/sandbox".to_owned(),
                json!({"network_policy": {"mode": "custom", "budgets": bad}}),
            ),
            (
                "PUT",
                format!("/v1/sandbox/{id}/network-policy"),
                json!({"mode": "custom", "budgets": bad}),
            ),
        ] {
            let (s, e, t) = call(&app, method, &path, Some(h.a.as_str()), Some(body)).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {bad}: {t}");
            assert_error_shape(&e);
            assert_eq!(first_field(&e), field, "{method} {bad}: {t}");
        }
    }
    let (_, got, _) = call(
        &app,
        "GET",
        &format!("/v1/sandbox/{id}/network-policy"),
        Some(h.a.as_str()),
        None,
    )
    .await;
    assert_eq!(
        got["network_policy"]["budgets"], changed["budgets"],
        "a refused update changes nothing"
    );
}
