//! The real leap0 SDKs (0.6.1 and 0.8.0, venvs made by `make venv`) against `palisade serve`
//! running inside a testbed world's firewall namespace: tests/compat/ with pytest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a harness that cannot build its world is a failed test"
)]

mod common;

use common::{API, Bed, root};

const VENVS: [&str; 2] = [".venv-leap0-0.6.1", ".venv-leap0-0.8.0"];

#[test]
fn leap0_sdks_run_the_firewall_spec() {
    let mut bed = Bed::new("compat", "");
    bed.start();
    let t = bed.api(
        "POST",
        "/v1/template",
        r#"{"name":"my-template","uri":"system/host"}"#,
    );
    assert!(t.body.contains("my-template"), "{t:?}");

    let mut failures = Vec::new();
    for venv in VENVS {
        let python = root().join(venv).join("bin/python");
        assert!(
            python.exists(),
            "{} missing: run `make venv`",
            python.display()
        );
        let out = bed
            .world
            .fw
            .command("timeout")
            .args(["-s", "KILL", "900"])
            .arg(&python)
            .args(["-m", "pytest", "-q", "-x", "tests/compat"])
            .current_dir(root())
            .env("LEAP0_BASE_URL", API)
            .env("LEAP0_API_KEY", &bed.key)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("=== {venv} ===\n{text}");
        if !out.status.success() {
            failures.push(venv);
        }
        bed.clean_up();
    }
    // Secrets never reach the daemon's own answers: the whole sandbox list is redacted.
    let list = bed.api("GET", "/v1/sandboxes?page=1&page-size=100", "");
    assert!(!list.body.contains("sk-proj"), "{list:?}");
    assert!(failures.is_empty(), "pytest failed for {failures:?}");
}
