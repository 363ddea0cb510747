//! The Debian template: the mirror named by the host's own APT sources, and a debootstrap
//! build whose progress lines are streamed to the caller.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{Result, RuntimeError};
use crate::types::TemplateProgress;

/// The suite the template is built from.
pub(crate) const SUITE: &str = "bookworm";
/// Beyond debootstrap's minbase (which has bash and coreutils): what an agent expects.
pub(crate) const PACKAGES: &str = "ca-certificates,curl,python3,git,procps,iproute2,tini";

/// One APT source: its URI and suites.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    uri: String,
    suites: Vec<String>,
}

/// One-line format: `deb [options] URI SUITE COMPONENTS…`.
fn parse_list(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut rest = match line.strip_prefix("deb ") {
            Some(r) => r.trim_start(),
            None => continue,
        };
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push(Source {
                uri: uri.to_owned(),
                suites: vec![suite.to_owned()],
            });
        }
    }
    out
}

/// deb822 format (`.sources`): paragraphs of `Field: value`.
fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let (mut types, mut uris, mut suites, mut enabled) =
            (Vec::new(), Vec::new(), Vec::new(), true);
        for line in para.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let words = || v.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = words(),
                "uris" => uris = words(),
                "suites" => suites = words(),
                "enabled" => enabled = v.trim() != "no",
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") {
            out.extend(uris.into_iter().map(|uri| Source {
                uri,
                suites: suites.clone(),
            }));
        }
    }
    out
}

/// The mirror of the host's APT configuration that serves `suite` itself (not `-security` or
/// `-updates`): read from `sources.list` and `sources.list.d/*.{list,sources}`.
pub(crate) fn mirror_from_apt(apt_dir: &Path, suite: &str) -> Result<String> {
    let mut sources = Vec::new();
    if let Ok(t) = std::fs::read_to_string(apt_dir.join("sources.list")) {
        sources.extend(parse_list(&t));
    }
    if let Ok(rd) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let Ok(t) = std::fs::read_to_string(&f) else {
                continue;
            };
            match f.extension().and_then(|e| e.to_str()) {
                Some("list") => sources.extend(parse_list(&t)),
                Some("sources") => sources.extend(parse_deb822(&t)),
                _ => {}
            }
        }
    }
    sources
        .into_iter()
        .find(|s| s.suites.iter().any(|x| x == suite) && s.uri.starts_with("http"))
        .map(|s| s.uri)
        .ok_or_else(|| {
            RuntimeError::TemplateBuild(format!(
                "no APT source for suite {suite} in {}",
                apt_dir.display()
            ))
        })
}

/// Runs debootstrap into `target` (which must not exist), streaming its output lines.
pub(crate) async fn debootstrap(
    mirror: &str,
    target: &Path,
    progress: &mut (dyn FnMut(TemplateProgress) + Send),
) -> Result<()> {
    let include = format!("--include={PACKAGES}");
    let argv = ["--variant=minbase", include.as_str(), SUITE];
    progress(TemplateProgress::Started(format!(
        "debootstrap {} {} {mirror}",
        argv.join(" "),
        target.display()
    )));
    let mut child = tokio::process::Command::new("debootstrap")
        .args(argv)
        .arg(target)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            RuntimeError::TemplateBuild(format!("cannot run debootstrap (is it installed?): {e}"))
        })?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    while let Some(line) = rx.recv().await {
        tail.push_back(line.clone());
        if tail.len() > 10 {
            tail.pop_front();
        }
        progress(TemplateProgress::Line(line));
    }
    let status = child
        .wait()
        .await
        .map_err(|e| RuntimeError::TemplateBuild(e.to_string()))?;
    if !status.success() {
        let t: Vec<String> = tail.into_iter().collect();
        return Err(RuntimeError::TemplateBuild(explain_failure(
            mirror,
            &status.to_string(),
            &t,
        )));
    }
    Ok(())
}

/// The cause of a failed debootstrap in words a user acts on: an unreachable mirror is named as
/// such (debootstrap's own last lines follow, for the detail).
fn explain_failure(mirror: &str, status: &str, tail: &[String]) -> String {
    let text = tail.join(" | ");
    let unreachable = [
        "Failed getting release file",
        "Couldn't download",
        "Connection refused",
        "unable to resolve host",
        "Network is unreachable",
        "timed out",
    ]
    .iter()
    .any(|m| text.contains(m));
    if unreachable {
        format!("the Debian mirror {mirror} cannot be reached (debootstrap {status}: {text})")
    } else {
        format!("debootstrap {status}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_and_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\n# comment\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n\n\
             Types: deb-src\nURIs: http://src.test/debian\nSuites: bookworm\n\n\
             Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(
            mirror_from_apt(dir.path(), "bookworm").unwrap(),
            "http://mirror.test/debian"
        );

        std::fs::write(
            dir.path().join("sources.list"),
            "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://list.test/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            mirror_from_apt(dir.path(), "bookworm").unwrap(),
            "http://list.test/debian"
        );
        assert!(mirror_from_apt(dir.path(), "trixie").is_err());
    }

    #[test]
    fn an_unreachable_mirror_is_named() {
        let tail = vec![
            "E: Failed getting release file http://127.0.0.1:9/debian/dists/bookworm/Release"
                .to_owned(),
        ];
        let why = explain_failure("http://127.0.0.1:9/debian", "exit status: 1", &tail);
        assert!(
            why.starts_with("the Debian mirror http://127.0.0.1:9/debian cannot be reached"),
            "{why}"
        );
        let other = explain_failure(
            "http://m/debian",
            "exit status: 1",
            &["E: no space".to_owned()],
        );
        assert!(other.starts_with("debootstrap exit status: 1"), "{other}");
    }

    #[test]
    fn this_hosts_sources_name_a_mirror() {
        // The machine this runs on is Debian bookworm (see the Makefile).
        if Path::new("/etc/debian_version").exists() {
            let m = mirror_from_apt(Path::new("/etc/apt"), "bookworm").unwrap();
            assert!(m.starts_with("http"), "{m}");
        }
    }
}
