//! Helpers shared by the privileged testbed tests.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::process::Output;

use anyhow::{Context, Result, bail};
use palisade_testbed::Netns;
use serde_json::Value;

/// Runs a client in `ns`, failing with its stderr unless it exits 0.
pub(crate) fn ok(ns: &Netns, program: &str, args: &[&str]) -> Result<String> {
    let out: Output = ns.run(program, args)?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} in {} failed ({}): {}",
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn curl_json(ns: &Netns, args: &[&str]) -> Result<Value> {
    let mut all = vec!["-sS", "--fail", "-m", "10"];
    all.extend_from_slice(args);
    let body = ok(ns, "curl", &all)?;
    serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))
}

pub(crate) fn netns_list() -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn has_netns(list: &str, name: &str) -> bool {
    list.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}
