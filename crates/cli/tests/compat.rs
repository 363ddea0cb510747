//! The real leap0 SDKs (0.6.1 and 0.8.0, venvs made by `make venv`) against `palisade serve`
//! running inside a testbed world's firewall namespace: tests/compat/ with pytest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a harness that cannot build its world is a failed test"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use palisade_testbed::{World, addrs};

const API: &str = "http://127.0.0.1:8080";
const VENVS: [&str; 2] = [".venv-leap0-0.6.1", ".venv-leap0-0.8.0"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Kills the daemon when dropped (also on panic); the world's own Drop then removes `fw`.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(world: &World, key: &str, method: &str, path: &str, body: &str) -> String {
    let out = world
        .fw
        .command("curl")
        .args(["-sS", "--max-time", "60", "-X", method, "-H"])
        .arg(format!("Authorization: Bearer {key}"))
        .args(["-H", "content-type: application/json", "--data", body])
        .arg(format!("{API}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes every sandbox the daemon still has (so no runc container or netns outlives us).
fn delete_all(world: &World, key: &str) {
    let list = curl(world, key, "GET", "/v1/sandboxes?page=1&page-size=100", "");
    let v: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
    for item in v["items"].as_array().into_iter().flatten() {
        if let Some(id) = item["id"].as_str() {
            curl(world, key, "DELETE", &format!("/v1/sandbox/{id}"), "");
        }
    }
}

#[test]
fn leap0_sdks_run_the_firewall_spec() {
    let world = World::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("palisade.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\n[firewall]\nextra_roots = [{:?}]\n\
             [firewall.resolver]\nupstreams = [\"{}:53\"]\ntimeout = \"1s\"\n",
            data.path().join("data"),
            world.test_ca_path(),
            addrs::DNS_V4
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_palisade");
    let key = world
        .fw
        .command(bin)
        .args(["keys", "create", "--org", "compat", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("pl_"));

    // nsenter joins only the network namespace: `ip netns exec` would also give the daemon a
    // mount namespace with /sys remounted, where runc finds no cgroup mounts.
    let mut child = std::process::Command::new("nsenter")
        .arg(format!("--net={}", world.fw.path().display()))
        .arg(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let daemon = Daemon(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("serving on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("daemon did not start");

    let t = curl(
        &world,
        &key,
        "POST",
        "/v1/template",
        r#"{"name":"my-template","uri":"system/host"}"#,
    );
    assert!(t.contains("my-template"), "{t}");

    let mut failures = Vec::new();
    for venv in VENVS {
        let python = root().join(venv).join("bin/python");
        assert!(
            python.exists(),
            "{} missing: run `make venv`",
            python.display()
        );
        let out = world
            .fw
            .command("timeout")
            .args(["-s", "KILL", "900"])
            .arg(&python)
            .args(["-m", "pytest", "-q", "-x", "tests/compat"])
            .current_dir(root())
            .env("LEAP0_BASE_URL", API)
            .env("LEAP0_API_KEY", &key)
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
        delete_all(&world, &key);
    }
    // Secrets never reach the daemon's own answers: the whole sandbox list is redacted.
    let list = curl(
        &world,
        &key,
        "GET",
        "/v1/sandboxes?page=1&page-size=100",
        "",
    );
    assert!(!list.contains("sk-proj"), "{list}");
    drop(daemon);
    assert!(failures.is_empty(), "pytest failed for {failures:?}");
}
