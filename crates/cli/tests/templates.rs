//! Issue 11.2, the first sandbox on the Debian template, against the real daemon: a create on a
//! template that is building or failed answers at once (503 with the state and the cause, never
//! a 500, never waiting for debootstrap); the templates API shows the build state and the last
//! error; one build at a time; a failed build is retried only on request, by the API or
//! `palisade template build`; `palisade serve --prepare-template` says a failed build and serves.
//!
//! The Debian mirror is a loopback port in the test's own namespace: a server that accepts and
//! never answers (to hold a build in `building`, and to count builds by their connections), or
//! nothing at all (connection refused). The real mirror is never asked.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a harness that cannot build its world is a failed test"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{Bed, bin};
use serde_json::Value;

const PORT: u16 = 18_099;
const DEBIAN: &str = "system/debian:bookworm";
const DEBIAN_ID: &str = "system-debian-bookworm";
const CREATE: &str = r#"{"template_name":"system/debian:bookworm"}"#;

/// A mirror that accepts connections and never answers, on loopback in the firewall namespace
/// (where the daemon and its debootstrap run); counts the connections. Bounded at 300 s.
const HOLD: &str = r#"
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); s.settimeout(0.5)
print("listening", flush=True)
held = []; end = time.time() + 300
while time.time() < end:
    try:
        c, _ = s.accept(); held.append(c); print("conn", flush=True)
    except socket.timeout:
        pass
"#;

struct Hold {
    child: Child,
    conns: Arc<AtomicUsize>,
}

impl Hold {
    fn start(bed: &Bed) -> Hold {
        let mut child = bed
            .world
            .fw
            .command("python3")
            .args(["-c", HOLD, &PORT.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let counter = Arc::clone(&conns);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match line.as_str() {
                    "listening" => {
                        let _ = tx.send(());
                    }
                    "conn" => {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("hold server did not start");
        Hold { child, conns }
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Waits (at most 60 s) for `n` connections: `n` builds have reached the mirror.
    fn wait_conns(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(60);
        while self.conns() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(self.conns(), n, "builds that reached the mirror");
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn debian(bed: &Bed) -> Value {
    let r = bed.api("GET", "/v1/templates", "");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == DEBIAN)
        .cloned()
        .unwrap()
}

/// Polls the templates API (at most 120 s) until the Debian template is in `state`.
fn wait_state(bed: &Bed, state: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let t = debian(bed);
        if t["build_state"] == state || Instant::now() > end {
            assert_eq!(t["build_state"], state, "{t}");
            return t;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A create on the Debian template: it must answer 503 at once (the build is held, so a create
/// that waited for it would never answer) with `words` in its message.
fn create_refused(bed: &Bed, words: &[&str]) -> String {
    let r = bed.api("POST", "/v1/sandbox", CREATE);
    assert_eq!(r.status, 503, "{r:?}");
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    for w in words {
        assert!(msg.contains(w), "{w:?} not in {msg:?}");
    }
    msg
}

fn mirror() -> String {
    format!("http://127.0.0.1:{PORT}/debian")
}

#[test]
fn a_template_building_or_failed_answers_at_once_and_is_retried_only_on_request() {
    let mut bed = Bed::new("tplb", &format!("debian_mirror = {:?}", mirror()));
    let hold = Hold::start(&bed);
    bed.start();
    assert_eq!(debian(&bed)["build_state"], "absent");

    // The first create starts the build and answers at once.
    create_refused(&bed, &[DEBIAN, "building"]);
    hold.wait_conns(1);
    let t = wait_state(&bed, "building");
    let started = t["build_started_at"].clone();
    assert!(started.is_string(), "{t}");

    // A second create and a build request join the running build: no second build.
    create_refused(&bed, &["building"]);
    let r = bed.api("POST", &format!("/v1/template/{DEBIAN_ID}/build"), "");
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["build_state"], "building");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hold.conns(), 1, "a second build reached the mirror");
    assert_eq!(debian(&bed)["build_started_at"], started);

    // The mirror goes away: the build fails, and says why.
    drop(hold);
    let t = wait_state(&bed, "failed");
    let err = t["build_error"].as_str().unwrap();
    assert!(
        err.contains(&format!("the Debian mirror {} cannot be reached", mirror())),
        "{err}"
    );

    // Creates now answer with the state and the cause, and start no build.
    let msg = create_refused(&bed, &["build failed", "cannot be reached", &mirror()]);
    assert!(msg.contains("retry"), "{msg}");
    std::thread::sleep(Duration::from_secs(2));
    let t = debian(&bed);
    assert_eq!(t["build_state"], "failed", "{t}");
    assert_eq!(t["build_started_at"], started, "a create started a build");

    // A retry on request starts exactly one build, however often it is asked for.
    let hold = Hold::start(&bed);
    for _ in 0..3 {
        let r = bed.api("POST", &format!("/v1/template/{DEBIAN_ID}/build"), "");
        assert_eq!(r.status, 202, "{r:?}");
        assert_eq!(r.json()["build_state"], "building");
    }
    hold.wait_conns(1);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hold.conns(), 1, "more than one build reached the mirror");
    let t = debian(&bed);
    assert_ne!(t["build_started_at"], started, "{t}");
    drop(hold);
    wait_state(&bed, "failed");

    // `palisade template build` retries too, and ends with the cause (exit status 1).
    let out = bed
        .world
        .fw
        .command(bin())
        .args(["template", "build", DEBIAN])
        .env("LEAP0_BASE_URL", common::API)
        .env("LEAP0_API_KEY", &bed.key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "template {DEBIAN} failed to build: the Debian mirror"
        )),
        "{stderr}"
    );
    let t = debian(&bed);
    assert_eq!(t["build_state"], "failed");
    assert_ne!(t["build_started_at"], started);

    // The host template never builds and is always ready.
    let r = bed.api("GET", "/v1/templates", "");
    let host = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "system/host")
        .cloned()
        .unwrap();
    assert_eq!(host["build_state"], "ready", "{host}");
    bed.create(r#"{"template_name":"system/host"}"#);
}

#[test]
fn serve_prepares_the_template_and_serves_when_its_build_fails() {
    // Nothing listens on the mirror's port: the build fails at once.
    let mut bed = Bed::new("tplp", &format!("debian_mirror = {:?}", mirror()));
    bed.start_with(&["--prepare-template", DEBIAN]);
    // It serves, and the template's failure is already known: the create says it at once.
    let t = debian(&bed);
    assert_eq!(t["build_state"], "failed", "{t}");
    create_refused(&bed, &["build failed", "cannot be reached"]);
}
