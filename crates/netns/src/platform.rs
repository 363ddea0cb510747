//! The one door to the system: every `ip`, `nft` and `sysctl` invocation and every file this
//! crate writes goes through [`NetPlatform`], so the logic above it is tested with
//! [`RecordingNetPlatform`] and no root.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::NetnsError;

/// Runs programs and touches files on behalf of this crate.
pub trait NetPlatform: Send + Sync + std::fmt::Debug {
    /// Runs `program` with `args`, feeding `stdin` if given; returns stdout, or an error carrying
    /// stderr when the program fails.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetnsError>;

    /// Writes `contents` to `path`, creating parent directories. The default goes through
    /// [`NetPlatform::run`] (`mkdir -p`, `tee`), so fakes record it like any command.
    fn write_file(&self, path: &Path, contents: &str) -> Result<(), NetnsError> {
        let path = path.to_string_lossy();
        if let Some((dir, _)) = path.rsplit_once('/').filter(|(d, _)| !d.is_empty()) {
            self.run("mkdir", &["-p", "--", dir], None)?;
        }
        self.run("tee", &["--", &path], Some(contents)).map(drop)
    }

    /// Removes the directory `path` and everything in it; a missing directory is not an error.
    /// The default goes through [`NetPlatform::run`] (`rm -rf`).
    fn remove_dir_all(&self, path: &Path) -> Result<(), NetnsError> {
        self.run("rm", &["-rf", "--", &path.to_string_lossy()], None)
            .map(drop)
    }
}

/// How long one command may run before it is killed: `ip` and `nft` finish in milliseconds, so
/// a command still running after this is stuck, and a stuck daemon is worse than an error.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs real programs (found on `PATH`, then in `/usr/sbin` and `/sbin`) and touches real files.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostNetPlatform;

impl NetPlatform for HostNetPlatform {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetnsError> {
        let command = command_line(program, args, stdin.is_some());
        tracing::debug!(%command, "run");
        let mut child = Command::new(resolve(program))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NetnsError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        // Feed and drain on threads so a chatty program can never deadlock on a full pipe.
        let writer = match (child.stdin.take(), stdin) {
            (Some(mut pipe), Some(text)) => {
                let text = text.to_owned();
                Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
            }
            _ => None,
        };
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(NetnsError::Timeout {
                        command,
                        secs: COMMAND_TIMEOUT.as_secs(),
                    });
                }
                Err(source) => {
                    return Err(NetnsError::Spawn {
                        program: program.to_owned(),
                        source,
                    });
                }
            }
        };
        // A write error (EPIPE) only matters if the program then failed; its stderr says why.
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = out.map(join_drain).unwrap_or_default();
        let stderr = err.map(join_drain).unwrap_or_default();
        if !status.success() {
            return Err(NetnsError::Command {
                command,
                status: status.to_string(),
                stderr: stderr.trim().to_owned(),
            });
        }
        Ok(stdout)
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<(), NetnsError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| NetnsError::Io {
                op: "create directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        std::fs::write(path, contents).map_err(|source| NetnsError::Io {
            op: "write",
            path: path.to_owned(),
            source,
        })
    }

    fn remove_dir_all(&self, path: &Path) -> Result<(), NetnsError> {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetnsError::Io {
                op: "remove",
                path: path.to_owned(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

fn resolve(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

type Drain = std::thread::JoinHandle<Vec<u8>>;

fn drain(mut pipe: impl Read + Send + 'static) -> Drain {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join_drain(handle: Drain) -> String {
    String::from_utf8_lossy(&handle.join().unwrap_or_default()).into_owned()
}

fn command_line(program: &str, args: &[&str], with_stdin: bool) -> String {
    let mut line = program.to_owned();
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    if with_stdin {
        line.push_str(" <stdin");
    }
    line
}

/// One recorded call to [`RecordingNetPlatform::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Program name as passed.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Text fed on stdin, if any.
    pub stdin: Option<String>,
}

impl Call {
    /// `program arg1 arg2 …`, for readable assertions.
    pub fn line(&self) -> String {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        command_line(&self.program, &args, false)
    }
}

/// A fake [`NetPlatform`] that records every call, answers with canned stdout, and can be told to
/// fail on the Nth call (1-based) to exercise clean-up paths.
#[derive(Debug, Default)]
pub struct RecordingNetPlatform {
    state: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<Call>,
    fail_on: Option<usize>,
    responses: Vec<(String, String)>,
}

impl RecordingNetPlatform {
    /// A fake that succeeds on every call with empty stdout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes call number `n` (1-based, counting every call) fail with [`NetnsError::Injected`].
    pub fn fail_on_call(self, n: usize) -> Self {
        self.with(|s| s.fail_on = Some(n));
        self
    }

    /// Answers `stdout` to every call whose command line starts with `prefix`
    /// (e.g. `"ip netns list"`); the first matching response wins.
    pub fn respond(self, prefix: &str, stdout: &str) -> Self {
        self.with(|s| s.responses.push((prefix.to_owned(), stdout.to_owned())));
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    /// Every call so far as a command line.
    pub fn lines(&self) -> Vec<String> {
        self.calls().iter().map(Call::line).collect()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Recorded) -> T) -> T {
        // A poisoned lock only means another test thread panicked; the record is still usable.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

impl NetPlatform for RecordingNetPlatform {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetnsError> {
        let call = Call {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            stdin: stdin.map(str::to_owned),
        };
        let line = call.line();
        self.with(|s| {
            s.calls.push(call);
            if s.fail_on == Some(s.calls.len()) {
                return Err(NetnsError::Injected {
                    call: s.calls.len(),
                    command: line,
                });
            }
            Ok(s.responses
                .iter()
                .find(|(prefix, _)| line.starts_with(prefix.as_str()))
                .map(|(_, out)| out.clone())
                .unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_platform_returns_stdout_and_feeds_stdin() {
        let out = HostNetPlatform.run("cat", &[], Some("hello\n")).unwrap();
        assert_eq!(out, "hello\n");
    }

    #[test]
    fn real_platform_reports_stderr_and_status() {
        let err = HostNetPlatform
            .run("sh", &["-c", "echo oops >&2; exit 3"], None)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("oops"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
    }

    #[test]
    fn real_platform_missing_program_is_an_error() {
        let err = HostNetPlatform
            .run("palisade-no-such-program", &[], None)
            .unwrap_err();
        assert!(matches!(err, NetnsError::Spawn { .. }), "{err}");
    }

    #[test]
    fn real_platform_large_stdin_and_stdout_do_not_deadlock() {
        let big = "x".repeat(1 << 20);
        let out = HostNetPlatform.run("cat", &[], Some(&big)).unwrap();
        assert_eq!(out.len(), big.len());
    }

    #[test]
    fn real_platform_files() {
        let dir = std::env::temp_dir().join(format!("palisade-netns-unit-{}", std::process::id()));
        let file = dir.join("a/b/resolv.conf");
        HostNetPlatform
            .write_file(&file, "nameserver 1.2.3.4\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "nameserver 1.2.3.4\n"
        );
        HostNetPlatform.remove_dir_all(&dir).unwrap();
        assert!(!dir.exists());
        HostNetPlatform.remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recording_platform_records_responds_and_fails() {
        let p = RecordingNetPlatform::new()
            .respond("ip netns list", "pls-a\n")
            .fail_on_call(3);
        assert_eq!(p.run("ip", &["netns", "list"], None).unwrap(), "pls-a\n");
        assert_eq!(p.run("nft", &["-f", "-"], Some("x")).unwrap(), "");
        assert!(matches!(
            p.run("ip", &["link"], None),
            Err(NetnsError::Injected { call: 3, .. })
        ));
        let calls = p.calls();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[1].stdin.as_deref(), Some("x"));
        assert_eq!(p.lines()[0], "ip netns list");
    }

    #[test]
    fn default_file_methods_go_through_run() {
        let p = RecordingNetPlatform::new();
        p.write_file(Path::new("/etc/netns/pls-a/resolv.conf"), "ns\n")
            .unwrap();
        p.remove_dir_all(Path::new("/etc/netns/pls-a")).unwrap();
        assert_eq!(
            p.lines(),
            [
                "mkdir -p -- /etc/netns/pls-a",
                "tee -- /etc/netns/pls-a/resolv.conf",
                "rm -rf -- /etc/netns/pls-a"
            ]
        );
        assert_eq!(p.calls()[1].stdin.as_deref(), Some("ns\n"));
    }
}
