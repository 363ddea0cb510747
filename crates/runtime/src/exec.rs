//! Running one command in a sandbox: `runc exec … /bin/sh -c COMMAND`, output capped, and a
//! timeout that kills the command's whole process group.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Result, RuntimeError};
use crate::platform::ContainerPlatform;
use crate::types::{ExecRequest, ExecResult, TRUNCATION_MARKER, validate_env};

/// After the command exits, how long to keep reading output that its background children may
/// still hold open before returning what has arrived.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

#[derive(Debug, Default)]
struct Capped {
    buf: Vec<u8>,
    truncated: bool,
}

async fn pump(mut r: impl AsyncRead + Unpin, out: Arc<Mutex<Capped>>, cap: usize) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(mut o) = out.lock() else { return };
        let room = cap.saturating_sub(o.buf.len());
        let take = room.min(n);
        o.buf.extend_from_slice(&chunk[..take]);
        if take < n {
            // Keep draining so the writer never blocks on a full pipe.
            o.truncated = true;
        }
    }
}

fn finish(out: &Mutex<Capped>) -> (String, bool) {
    let (buf, truncated) = match out.lock() {
        Ok(o) => (o.buf.clone(), o.truncated),
        Err(_) => (Vec::new(), true),
    };
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if truncated {
        s.push_str(TRUNCATION_MARKER);
    }
    (s, truncated)
}

/// Builds the runc arguments of an exec (validated: no NUL anywhere, absolute cwd).
pub(crate) fn exec_args(id: &str, req: &ExecRequest, pid_file: &Path) -> Result<Vec<OsString>> {
    if req.command.contains('\0') {
        return Err(RuntimeError::Invalid("command contains a NUL byte".into()));
    }
    let mut args: Vec<OsString> = vec!["exec".into(), "--pid-file".into(), pid_file.into()];
    if let Some(cwd) = &req.cwd {
        if !cwd.starts_with('/') || cwd.contains('\0') {
            return Err(RuntimeError::Invalid(format!(
                "cwd {cwd:?} must be an absolute path"
            )));
        }
        args.extend(["--cwd".into(), cwd.into()]);
    }
    for (k, v) in &req.envs {
        validate_env(k, v)?;
        args.extend(["--env".into(), format!("{k}={v}").into()]);
    }
    args.extend([
        id.into(),
        "/bin/sh".into(),
        "-c".into(),
        req.command.clone().into(),
    ]);
    Ok(args)
}

fn read_pid(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p: &i32| *p > 1)
}

/// Runs the request; `pid_file` is a fresh path runc writes the command's host PID to.
pub(crate) async fn run<P: ContainerPlatform>(
    platform: &P,
    id: &str,
    req: &ExecRequest,
    cap: usize,
    timeout: Duration,
    pid_file: &Path,
) -> Result<ExecResult> {
    let args = exec_args(id, req, pid_file)?;
    let mut child = platform
        .spawn_exec(args)
        .map_err(|e| RuntimeError::io("runc exec", e))?;
    let out = Arc::new(Mutex::new(Capped::default()));
    let err = Arc::new(Mutex::new(Capped::default()));
    let mut readers = Vec::new();
    if let Some(o) = child.stdout.take() {
        readers.push(tokio::spawn(pump(o, out.clone(), cap)));
    }
    if let Some(e) = child.stderr.take() {
        readers.push(tokio::spawn(pump(e, err.clone(), cap)));
    }

    let mut timed_out = false;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s.map_err(|e| RuntimeError::io("runc exec", e))?,
        Err(_) => {
            timed_out = true;
            // runc's setns init makes the command a session (and group) leader: killing the
            // group takes its children too, whatever they were doing.
            if let Some(pid) = read_pid(pid_file) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.start_kill();
            child
                .wait()
                .await
                .map_err(|e| RuntimeError::io("runc exec", e))?
        }
    };
    let started = read_pid(pid_file).is_some();
    let _ = std::fs::remove_file(pid_file);

    let drain = async {
        for r in &mut readers {
            let _ = r.await;
        }
    };
    if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
        for r in &readers {
            r.abort();
        }
    }
    let (stdout, t1) = finish(&out);
    let (stderr, t2) = finish(&err);
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    if !started && !timed_out && exit_code != 0 {
        // runc failed before the command ran (container gone, paused, bad cwd…): its stderr
        // is runc's own message.
        let message: String = stderr.trim().chars().take(1000).collect();
        return Err(RuntimeError::Runc {
            op: "exec",
            id: id.to_owned(),
            message,
        });
    }
    Ok(ExecResult {
        exit_code,
        stdout,
        stderr,
        truncated: t1 || t2,
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::RecordingContainerPlatform;

    async fn fake(req: ExecRequest, cap: usize) -> ExecResult {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("exec.pid");
        let t = req.timeout.unwrap_or(Duration::from_secs(20));
        run(
            &RecordingContainerPlatform::default(),
            "sbx",
            &req,
            cap,
            t,
            &pid_file,
        )
        .await
        .unwrap()
    }

    fn cmd(c: &str) -> ExecRequest {
        ExecRequest {
            command: c.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn captures_exit_code_and_streams() {
        let r = fake(cmd("echo out; echo err >&2; exit 7"), 1024).await;
        assert_eq!(
            (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
            (7, "out\n", "err\n")
        );
        assert!(!r.truncated && !r.timed_out);
    }

    #[tokio::test]
    async fn env_and_cwd() {
        let mut req = cmd("echo \"$A\"; pwd");
        req.envs = vec![("A".into(), "x y".into())].into();
        req.cwd = Some("/tmp".into());
        let r = fake(req, 1024).await;
        assert_eq!(r.stdout, "x y\n/tmp\n");
    }

    #[tokio::test]
    async fn output_capped_with_marker() {
        let r = fake(cmd("head -c 100000 /dev/zero | tr '\\0' a"), 1000).await;
        assert!(r.truncated);
        assert_eq!(r.stdout.len(), 1000 + TRUNCATION_MARKER.len());
        assert!(r.stdout.ends_with(TRUNCATION_MARKER));
        assert_eq!(r.exit_code, 0);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("alive");
        // Background children that would write a marker later if they survived.
        let c = format!(
            "(sleep 2; touch {m}) & sleep 1000 & echo started; wait",
            m = marker.display()
        );
        let mut req = cmd(&c);
        req.timeout = Some(Duration::from_millis(500));
        let r = fake(req, 1024).await;
        assert!(r.timed_out);
        assert_eq!(r.stdout, "started\n");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "a child of the timed-out command survived"
        );
    }

    #[tokio::test]
    async fn background_child_holding_stdout_does_not_hang() {
        let r = fake(cmd("sleep 3 & echo done"), 1024).await;
        assert_eq!((r.exit_code, r.stdout.as_str()), (0, "done\n"));
    }

    #[test]
    fn bad_requests_rejected() {
        let p = Path::new("/x.pid");
        assert!(exec_args("s", &cmd("a\0b"), p).is_err());
        let mut r = cmd("true");
        r.cwd = Some("relative".into());
        assert!(exec_args("s", &r, p).is_err());
        let mut r = cmd("true");
        r.envs = vec![("A=B".into(), "v".into())].into();
        assert!(exec_args("s", &r, p).is_err());
    }
}
