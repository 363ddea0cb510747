//! The harness the privileged `palisade` tests share: a testbed world, a data directory and a
//! config, API keys made with the CLI, and `palisade serve` running inside the world's firewall
//! namespace (joined with nsenter, so runc still sees the host's cgroup mounts). The API is
//! reached with curl run in that namespace; sandboxes can also be entered with `runc exec`
//! directly, for when the daemon is down.
//!
//! Dropping a [`Bed`] removes every sandbox the daemon made (through the API if it is up, with
//! runc and `ip netns` if it is not), kills the daemon, then the world tears itself down.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unreachable_pub,
    reason = "a harness that cannot build its world is a failed test; not every test binary uses every helper"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub use palisade_testbed::{World, addrs};
use serde_json::Value;

pub const API: &str = "http://127.0.0.1:8080";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

/// A world, a data directory with its config, and (while started) the daemon.
pub struct Bed {
    /// A tmpfs mounted on the data directory, unmounted last.
    mount: Option<PathBuf>,
    daemon: Option<Child>,
    /// Keys to clean up with (the first is [`Bed::key`]'s).
    keys: Vec<String>,
    pub key: String,
    pub config: PathBuf,
    pub data: tempfile::TempDir,
    pub world: World,
}

/// One API answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `errors[].field` values of a 400.
    pub fn fields(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Bed {
    /// A world and a config (`extra` is appended to its `[server]` section), with one key for
    /// organisation `org`. The daemon is not started yet.
    pub fn new(org: &str, extra_server: &str) -> Bed {
        Bed::build(org, extra_server, None)
    }

    /// [`Bed::new`] with the data directory on its own tmpfs of `mib` MiB (a disk that fills).
    pub fn on_small_disk(org: &str, mib: u32) -> Bed {
        Bed::build(org, "", Some(mib))
    }

    fn build(org: &str, extra_server: &str, tmpfs_mib: Option<u32>) -> Bed {
        let world = World::new().unwrap();
        let data = tempfile::tempdir().unwrap();
        let mount = tmpfs_mib.map(|mib| {
            let dir = data.path().join("data");
            std::fs::create_dir(&dir).unwrap();
            let st = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={mib}m,mode=700"),
                    "tmpfs",
                ])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success(), "mount tmpfs");
            dir
        });
        let config = data.path().join("palisade.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\ndata_dir = {:?}\n{extra_server}\n[firewall]\nextra_roots = [{:?}]\n\
                 [firewall.resolver]\nupstreams = [\"{}:53\"]\ntimeout = \"1s\"\n",
                data.path().join("data"),
                world.test_ca_path(),
                addrs::DNS_V4
            ),
        )
        .unwrap();
        let mut bed = Bed {
            mount,
            daemon: None,
            keys: Vec::new(),
            key: String::new(),
            config,
            data,
            world,
        };
        bed.key = bed.create_key(org);
        bed
    }

    /// A new API key for `org` (the organisation is made when missing), via the CLI.
    pub fn create_key(&mut self, org: &str) -> String {
        let out = self
            .world
            .fw
            .command(bin())
            .args(["keys", "create", "--org", org, "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert!(key.starts_with("pl_"), "{key}");
        self.keys.push(key.clone());
        key
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// `palisade serve` on this config; returns once it announces it is serving.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// [`Bed::start`] with more `palisade serve` arguments.
    pub fn start_with(&mut self, extra: &[&str]) {
        assert!(self.daemon.is_none(), "daemon already running");
        // nsenter joins only the network namespace: `ip netns exec` would also give the daemon
        // a mount namespace with /sys remounted, where runc finds no cgroup mounts.
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", self.world.fw.path().display()))
            .arg(bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.daemon = Some(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("serving on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(90))
            .expect("daemon did not start");
    }

    /// `palisade serve` on this config started under `ip netns exec` in the world's firewall
    /// namespace (a mount namespace with /sys remounted, no cgroup mounts), bounded at 60 s:
    /// (exit status, stderr). The daemon must refuse to start there.
    pub fn serve_under_ip_netns_exec(&self) -> (std::process::ExitStatus, String) {
        let name = self.world.fw.name().to_owned();
        let out = Command::new("timeout")
            .args([
                "-s",
                "KILL",
                "60",
                "ip",
                "netns",
                "exec",
                &name,
                bin(),
                "serve",
                "--config",
            ])
            .arg(&self.config)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `palisade serve` on this config, run to its exit (bounded at 60 s), for a daemon that
    /// must refuse to start: (exit status, stderr).
    pub fn serve_refused(&self) -> (std::process::ExitStatus, String) {
        let out = Command::new("timeout")
            .args(["-s", "KILL", "60", "nsenter"])
            .arg(format!("--net={}", self.world.fw.path().display()))
            .arg(bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The daemon's pid (while started).
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon not running").id()
    }

    /// SIGKILL: no shutdown code runs (nsenter without --pid execs, so this is the daemon).
    pub fn kill9(&mut self) {
        let mut child = self.daemon.take().expect("daemon not running");
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
    }

    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }

    /// An API call with this bed's key.
    pub fn api(&self, method: &str, path: &str, body: &str) -> Reply {
        self.api_as(Some(&self.key), method, path, body)
    }

    /// An API call with `key` (`None`: no credentials at all).
    pub fn api_as(&self, key: Option<&str>, method: &str, path: &str, body: &str) -> Reply {
        let mut cmd = self.world.fw.command("curl");
        cmd.args(["-sS", "--max-time", "120", "-X", method]);
        cmd.args(["-H", "content-type: application/json"]);
        cmd.args(["-w", "\n%{http_code}"]);
        if let Some(k) = key {
            cmd.arg("-H").arg(format!("Authorization: Bearer {k}"));
        }
        if !body.is_empty() {
            cmd.args(["--data-binary", body]);
        }
        let out = cmd.arg(format!("{API}{path}")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Reply {
            status: code.trim().parse().unwrap_or(0),
            body: body.to_owned(),
        }
    }

    /// Creates a sandbox from `body` and returns its id (asserting 201).
    pub fn create(&self, body: &str) -> String {
        let r = self.api("POST", "/v1/sandbox", body);
        assert_eq!(r.status, 201, "create {body}: {}", r.body);
        r.json()["id"].as_str().unwrap().to_owned()
    }

    /// Runs `cmd` in the sandbox through the API: (exit code, stdout + stderr).
    pub fn exec(&self, id: &str, cmd: &str) -> (i64, String) {
        let body = serde_json::json!({ "command": cmd, "timeout": 60 }).to_string();
        let r = self.api("POST", &format!("/v1/sandbox/{id}/process/execute"), &body);
        assert_eq!(r.status, 200, "exec {cmd}: {}", r.body);
        let v = r.json();
        (
            v["exit_code"].as_i64().unwrap_or(-1),
            format!(
                "{}{}",
                v["stdout"].as_str().unwrap_or(""),
                v["stderr"].as_str().unwrap_or("")
            ),
        )
    }

    pub fn runc_root(&self) -> PathBuf {
        self.data_dir().join("runtime/runc")
    }

    /// `runc --root <this daemon's root>`, to act on containers behind the daemon's back.
    pub fn runc(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(self.runc_root());
        c
    }

    /// Runs `runc ARGS` on this daemon's containers and asserts it succeeded.
    pub fn runc_ok(&self, args: &[&str]) {
        let out = self.runc().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "runc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `cmd` in the sandbox with `runc exec`, not through the daemon (which may be down):
    /// (exit code, stdout + stderr). Bounded by `timeout -s KILL 60`.
    pub fn runc_exec(&self, id: &str, cmd: &str) -> (i32, String) {
        let out = Command::new("timeout")
            .args(["-s", "KILL", "60", "runc", "--root"])
            .arg(self.runc_root())
            .args(["exec", id, "/bin/sh", "-c", cmd])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Ids of the runc containers under this data directory.
    pub fn runc_ids(&self) -> Vec<String> {
        let out = self
            .runc()
            .args(["list", "--format", "json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// The `pls-<id>` namespaces that exist right now.
    pub fn netns_exists(id: &str) -> bool {
        Path::new("/var/run/netns")
            .join(format!("pls-{id}"))
            .exists()
    }

    /// The daemon's nftables ruleset (in the firewall namespace).
    pub fn nft_ruleset(&self) -> String {
        let out = self
            .world
            .fw
            .command("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Removes every sandbox of every key: through the API when the daemon is up, then with
    /// runc and `ip netns` for anything left (a daemon that is down, or a failed delete).
    pub fn clean_up(&mut self) {
        if self.daemon.is_some() {
            for key in self.keys.clone() {
                let list = self.api_as(Some(&key), "GET", "/v1/sandboxes?page=1&page-size=100", "");
                for item in list.json()["items"].as_array().into_iter().flatten() {
                    if let Some(id) = item["id"].as_str() {
                        self.api_as(Some(&key), "DELETE", &format!("/v1/sandbox/{id}"), "");
                    }
                }
            }
        }
        let sandboxes = self.data_dir().join("runtime/sandboxes");
        let mut ids = self.runc_ids();
        for e in std::fs::read_dir(&sandboxes)
            .into_iter()
            .flatten()
            .flatten()
        {
            ids.push(e.file_name().to_string_lossy().into_owned());
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            let _ = self.runc().args(["delete", "--force", &id]).output();
            let rootfs = sandboxes.join(&id).join("rootfs");
            let _ = Command::new("umount").arg("-l").arg(&rootfs).output();
            let _ = Command::new("ip")
                .args(["netns", "delete", &format!("pls-{id}")])
                .output();
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.clean_up();
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.mount.take() {
            let _ = Command::new("umount").arg("-l").arg(&dir).status();
        }
    }
}
