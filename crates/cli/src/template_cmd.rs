//! `palisade template build NAME` (and `list`): start a template's build through the API and
//! follow it with a progress bar until it is ready or has failed, then say so in one line.
//! The same bar shows `palisade serve --prepare-template` building before it serves.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use http::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::client::Api;

#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCmd {
    /// Build a template (the Debian one runs debootstrap, about a minute on a near mirror),
    /// or retry a failed build; follows it until it is ready or has failed.
    Build {
        /// Its name, e.g. `system/debian:bookworm`.
        name: String,
    },
    /// Templates and their build state.
    List,
}

/// How far a debootstrap build is, from its latest `I: ...` line (it gives no total).
fn percent(progress: &str) -> u64 {
    const PHASES: [(&str, u64); 8] = [
        ("Retrieving InRelease", 2),
        ("Retrieving Packages", 5),
        ("Resolving dependencies", 8),
        ("Retrieving", 10),
        ("Validating", 30),
        ("Extracting", 45),
        ("Unpacking", 60),
        ("Configuring", 80),
    ];
    if progress.contains("Base system installed successfully") {
        return 100;
    }
    PHASES
        .iter()
        .find(|(k, _)| progress.contains(k))
        .map_or(0, |(_, p)| *p)
}

/// A bar on stderr (hidden when stderr is not a terminal).
pub(crate) fn bar(name: &str) -> ProgressBar {
    let pb = ProgressBar::new(100);
    let style = ProgressStyle::with_template(
        "{spinner} {prefix} [{elapsed_precise}] [{bar:30}] {pos:>3}% {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(name.to_owned());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Moves the bar to what a build status says (`progress` is its latest line).
pub(crate) fn show(pb: &ProgressBar, state: &str, progress: Option<&str>) {
    let line = progress.unwrap_or(state);
    let pct = percent(line);
    if pct > pb.position() {
        pb.set_position(pct);
    }
    pb.set_message(format!(
        "{state}: {}",
        line.chars().take(100).collect::<String>()
    ));
}

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["items"]
        .as_array()?
        .iter()
        .find(|t| t["name"].as_str() == Some(name))
}

pub(crate) async fn run(cmd: TemplateCmd, json: bool) -> anyhow::Result<()> {
    let api = Api::from_env()?;
    match cmd {
        TemplateCmd::List => {
            let list = api.call(Method::GET, "/v1/templates", None).await?;
            if json {
                println!("{list}");
                return Ok(());
            }
            for t in list["items"].as_array().into_iter().flatten() {
                let err = t["build_error"].as_str().unwrap_or("");
                println!(
                    "{:<28} {:<28} {:<9} {err}",
                    t["id"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    t["build_state"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        TemplateCmd::Build { name } => build(&api, &name, json).await,
    }
}

async fn build(api: &Api, name: &str, json: bool) -> anyhow::Result<()> {
    let list = api.call(Method::GET, "/v1/templates", None).await?;
    let id = find(&list, name)
        .and_then(|t| t["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no template named {name}"))?;
    let mut t = api
        .call(Method::POST, &format!("/v1/template/{id}/build"), None)
        .await?;
    let pb = bar(name);
    let started = std::time::Instant::now();
    while t["build_state"].as_str() == Some("building") {
        show(&pb, "building", t["build_progress"].as_str());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let list = api.call(Method::GET, "/v1/templates", None).await?;
        t = find(&list, name)
            .cloned()
            .with_context(|| format!("template {name} is gone"))?;
    }
    pb.finish_and_clear();
    if json {
        println!("{t}");
    }
    let secs = started.elapsed().as_secs();
    match t["build_state"].as_str() {
        Some("ready") => {
            if !json {
                println!("template {name} is ready ({secs} s)");
            }
            Ok(())
        }
        Some("failed") => bail!(
            "template {name} failed to build: {}",
            t["build_error"].as_str().unwrap_or("unknown cause")
        ),
        other => bail!("template {name}: unexpected build state {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debootstrap_phases_move_forward() {
        assert_eq!(percent("I: Retrieving InRelease "), 2);
        assert_eq!(percent("I: Validating libc6 2.36"), 30);
        assert_eq!(percent("I: Configuring apt..."), 80);
        assert_eq!(percent("I: Base system installed successfully."), 100);
        assert_eq!(percent("something else"), 0);
    }
}
