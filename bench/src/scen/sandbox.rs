//! Scenario 9: sandbox create → first exec on the host template (`system/host`), through
//! palisade-runtime's API, against bare runc running the very bundle the runtime wrote (its
//! config.json and merged root): `runc run -d` then `runc exec /bin/true`. 50 of each,
//! interleaved; runs in the host mount namespace (the runtime needs the host's cgroups). The
//! runtime is also measured with user namespaces off (issue 16: the boundary's cost).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use palisade_runtime::{ExecRequest, HOST_TEMPLATE, Runtime, RuntimeConfig, SandboxSpec};

use super::{Comparison, Sample, rows};

const COUNT: usize = 50;

/// The data directory; on drop every container of it (runtime's and bare) is killed, roots are
/// unmounted and the directory removed, whatever state a failure left.
struct Data {
    dir: PathBuf,
}

impl Drop for Data {
    fn drop(&mut self) {
        for root in ["runc", "bare-runc", "plain/runc"] {
            let root = self.dir.join(root);
            if let Ok(rd) = std::fs::read_dir(&root) {
                for e in rd.flatten() {
                    let _ = Command::new("runc")
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force"])
                        .arg(e.file_name())
                        .output();
                }
            }
        }
        for sub in ["sandboxes", "plain/sandboxes"] {
            if let Ok(rd) = std::fs::read_dir(self.dir.join(sub)) {
                for e in rd.flatten() {
                    for m in ["rootfs", "lower"] {
                        let _ = Command::new("umount")
                            .arg("-l")
                            .arg(e.path().join(m))
                            .output();
                    }
                    // Where the sandbox's root reached its bundle (`/run/palisade/sandboxes-*/<id>`).
                    for r in std::fs::read_dir("/run/palisade")
                        .into_iter()
                        .flatten()
                        .flatten()
                    {
                        let at = r.path().join(e.file_name());
                        if at.exists() {
                            let _ = Command::new("umount").arg("-l").arg(&at).output();
                            let _ = std::fs::remove_dir(&at);
                            // Its runtime's directory too, once empty (a runtime making a sandbox retries).
                            let _ = std::fs::remove_dir(r.path());
                        }
                    }
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.join("userns")) {
            for e in rd.flatten() {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(e.path().join("ns"))
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `runc --root root args…` under a time limit. Its output goes to /dev/null: a detached
/// container inherits runc's stdio and would hold a captured pipe open forever. What runc says
/// goes to its log file in `root` instead, whose last lines a failure quotes.
fn runc(root: &Path, args: &[&str]) -> Result<()> {
    let log = root.join("runc.log");
    let status = Command::new("timeout")
        .args(["-s", "KILL", "20", "runc", "--root"])
        .arg(root)
        .arg("--log")
        .arg(&log)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running runc")?;
    if !status.success() {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = said.lines().rev().take(3).collect();
        bail!("runc {:?} failed ({status}): {}", args, tail.join(" | "));
    }
    Ok(())
}

pub(crate) fn run(deadline: Instant) -> Result<Vec<Comparison>> {
    let data = Data {
        dir: PathBuf::from(format!(
            "/var/tmp/palisade-benchb-rt-{}",
            std::process::id()
        )),
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rt = Runtime::new(RuntimeConfig::new(&data.dir)).context("palisade runtime")?;
    let mut plain_cfg = RuntimeConfig::new(data.dir.join("plain"));
    plain_cfg.userns = None;
    let plain = Runtime::new(plain_cfg).context("palisade runtime without user namespaces")?;
    let spec = |id: String| SandboxSpec {
        id,
        template: HOST_TEMPLATE.into(),
        ..SandboxSpec::default()
    };
    let first = ExecRequest {
        command: "true".into(),
        timeout: Some(Duration::from_secs(10)),
        ..ExecRequest::default()
    };
    // The bundle bare runc runs: a kept sandbox's config.json and merged root, with its own
    // cgroup path per container.
    let keep = format!("bbk{}", std::process::id());
    let kept = tokio.block_on(rt.create(spec(keep.clone())))?;
    let bundle_dir = kept.rootfs.parent().context("sandbox dir")?.to_owned();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle_dir.join("config.json")).context("the runtime's config.json")?,
    )?;
    let bare_root = data.dir.join("bare-runc");
    std::fs::create_dir_all(&bare_root)?;
    let (mut ours, mut bare, mut creates) = (Vec::new(), Vec::new(), Vec::new());
    let mut plain_ms = Vec::new();
    for i in 0..=COUNT {
        if Instant::now() > deadline {
            bail!("ran out of time after {i} sandboxes");
        }
        let warm = i == 0;
        // Palisade: create → first exec returns.
        let id = format!("bb{}n{i}", std::process::id());
        let t0 = Instant::now();
        tokio.block_on(rt.create(spec(id.clone())))?;
        let t1 = t0.elapsed();
        let r = tokio.block_on(rt.exec(&id, first.clone()))?;
        let t2 = t0.elapsed();
        if r.exit_code != 0 {
            bail!("first exec exited {}: {}", r.exit_code, r.stderr);
        }
        tokio.block_on(rt.delete(&id))?;
        // The same without a user namespace (host root inside, the template as it is).
        let pid = format!("bp{}n{i}", std::process::id());
        let p0 = Instant::now();
        tokio.block_on(plain.create(spec(pid.clone())))?;
        let r = tokio.block_on(plain.exec(&pid, first.clone()))?;
        let p2 = p0.elapsed();
        if r.exit_code != 0 {
            bail!("first exec without user namespace exited {}", r.exit_code);
        }
        tokio.block_on(plain.delete(&pid))?;
        // Bare runc: the same bundle, run detached, then one exec.
        let bid = format!("bbb{}n{i}", std::process::id());
        let dir = data.dir.join(format!("bare-{i}"));
        std::fs::create_dir_all(&dir)?;
        let mut c = config.clone();
        // `root.path` stays as the runtime wrote it: under a user namespace that is the path the
        // sandbox's root can reach (the state directory itself is root-only).
        c["linux"]["cgroupsPath"] = serde_json::Value::String(format!("/palisade-bench/{bid}"));
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&c)?)?;
        let dir_s = dir.display().to_string();
        let b0 = Instant::now();
        runc(&bare_root, &["run", "-d", "--bundle", &dir_s, &bid])?;
        runc(&bare_root, &["exec", &bid, "/bin/true"])?;
        let b2 = b0.elapsed();
        runc(&bare_root, &["delete", "--force", &bid])?;
        let _ = std::fs::remove_dir_all(&dir);
        if !warm {
            ours.push(t2.as_secs_f64() * 1e3);
            creates.push(t1.as_secs_f64() * 1e3);
            plain_ms.push(p2.as_secs_f64() * 1e3);
            bare.push(b2.as_secs_f64() * 1e3);
        }
    }
    let _ = tokio.block_on(rt.delete(&keep));
    let pct = |v: &[f64], q: f64| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s.get(((s.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let as_samples = |v: &[f64]| -> Vec<Sample> {
        v.iter()
            .map(|&value| Sample {
                value,
                ..Sample::default()
            })
            .collect()
    };
    let names = vec![
        "bare runc run -d + runc exec /bin/true (same bundle)".to_owned(),
        "palisade-runtime create + exec `true` (host template)".to_owned(),
        "the same without user namespaces".to_owned(),
    ];
    Ok(vec![Comparison {
        scenario: format!("9. sandbox create → first exec, {COUNT} sandboxes each"),
        unit: "ms".into(),
        goal: "p50 and p99 against bare runc".into(),
        rows: rows(
            &names,
            &[as_samples(&bare), as_samples(&ours), as_samples(&plain_ms)],
            "",
        ),
        notes: vec![
            format!(
                "p50 / p99: bare runc {:.1} / {:.1} ms; Palisade {:.1} / {:.1} ms (create alone \
                 {:.1} / {:.1} ms); the range column is min–max over the {COUNT}",
                pct(&bare, 0.5),
                pct(&bare, 0.99),
                pct(&ours, 0.5),
                pct(&ours, 0.99),
                pct(&creates, 0.5),
                pct(&creates, 0.99)
            ),
            format!(
                "user namespaces (own id range, idmapped template, netns inside it) cost \
                 {:.2}x at p50: {:.1} ms against {:.1} ms without",
                pct(&ours, 0.5) / pct(&plain_ms, 0.5),
                pct(&ours, 0.5),
                pct(&plain_ms, 0.5)
            ),
            "sequential, one after another, interleaved (Palisade i, bare i); each deleted \
             before the next (delete not timed); the host's load from parallel builds is in \
             these numbers"
                .into(),
        ],
    }])
}
