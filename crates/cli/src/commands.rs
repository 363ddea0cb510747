//! Client subcommands: one API call each, printed as a table or as JSON.

use anyhow::Context;
use clap::Subcommand;
use http::Method;
use serde_json::{Value, json};

use crate::client::Api;

#[derive(Debug, Subcommand)]
pub(crate) enum SandboxCmd {
    Create {
        #[arg(long, default_value = "system/debian:bookworm")]
        template: String,
        #[arg(long, default_value_t = 1)]
        vcpu: u32,
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u32,
        /// Network policy: JSON, or @file.
        #[arg(long)]
        policy: Option<String>,
    },
    List,
    Exec {
        id: String,
        /// The command (run with /bin/sh -c).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCmd {
    Show {
        id: String,
    },
    /// Replace the policy live: JSON, or @file.
    Set {
        id: String,
        policy: String,
    },
    /// The smallest policy that would have allowed what the sandbox did, with the evidence.
    Suggest {
        id: String,
        /// Apply it live (audit mode goes off).
        #[arg(long)]
        apply: bool,
        /// With --apply: keep audit mode on.
        #[arg(long, requires = "apply")]
        keep_audit: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCmd {
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
    },
    List,
    Restore {
        name: String,
        /// Override the snapshot's policy: JSON, or @file.
        #[arg(long)]
        policy: Option<String>,
    },
}

fn read_policy(arg: &str) -> anyhow::Result<Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text).context("the policy is not valid JSON")
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// Prints rows of `cols` from `items` as an aligned table.
fn table(items: &[Value], cols: &[&str]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| cols.iter().map(|c| s(i, c)).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(n, c)| {
            rows.iter()
                .map(|r| r[n].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(cols.iter().map(|c| c.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
}

pub(crate) fn print(v: &Value, json: bool, cols: &[&str]) {
    if json {
        println!("{v}");
    } else if let Some(items) = v.get("items").and_then(Value::as_array) {
        table(items, cols);
    } else {
        table(std::slice::from_ref(v), cols);
    }
}

const SANDBOX_COLS: &[&str] = &["id", "template_id", "state", "vcpu", "memory", "created_at"];
const SNAPSHOT_COLS: &[&str] = &["id", "name", "template_id", "state", "created_at"];

pub(crate) async fn sandbox(cmd: SandboxCmd, json: bool) -> anyhow::Result<()> {
    let api = Api::from_env()?;
    match cmd {
        SandboxCmd::Create {
            template,
            vcpu,
            memory,
            timeout,
            policy,
        } => {
            let mut body = json!({
                "template_name": template, "vcpu": vcpu, "memory": memory, "timeout": timeout,
            });
            if let Some(p) = policy {
                body["network_policy"] = read_policy(&p)?;
            }
            if !json {
                eprintln!(
                    "creating sandbox from {template} (the Debian template is built on first use, which takes minutes)..."
                );
            }
            let v = api.post("/v1/sandbox", &body).await?;
            print(&v, json, SANDBOX_COLS);
        }
        SandboxCmd::List => {
            let v = api
                .call(Method::GET, "/v1/sandboxes?page=1&page-size=100", None)
                .await?;
            print(&v, json, &["id", "template_id", "state", "created_at"]);
        }
        SandboxCmd::Exec { id, command } => {
            let body = json!({ "command": command.join(" ") });
            let v = api
                .post(&format!("/v1/sandbox/{id}/process/execute"), &body)
                .await?;
            if json {
                println!("{v}");
            } else {
                print!("{}", v.get("stdout").and_then(Value::as_str).unwrap_or(""));
                eprint!("{}", v.get("stderr").and_then(Value::as_str).unwrap_or(""));
                let code = v.get("exit_code").and_then(Value::as_i64).unwrap_or(1);
                if code != 0 {
                    std::process::exit(i32::try_from(code).unwrap_or(1));
                }
            }
        }
        SandboxCmd::Delete { id } => {
            api.call(Method::DELETE, &format!("/v1/sandbox/{id}"), None)
                .await?;
            if !json {
                println!("deleted {id}");
            }
        }
    }
    Ok(())
}

pub(crate) async fn policy(cmd: PolicyCmd, json: bool) -> anyhow::Result<()> {
    let api = Api::from_env()?;
    let v = match cmd {
        PolicyCmd::Suggest {
            id,
            apply,
            keep_audit,
        } => return crate::suggest_cmd::run(&id, apply, keep_audit, json).await,
        PolicyCmd::Show { id } => {
            api.call(
                Method::GET,
                &format!("/v1/sandbox/{id}/network-policy"),
                None,
            )
            .await?
        }
        PolicyCmd::Set { id, policy } => {
            let body = read_policy(&policy)?;
            api.call(
                Method::PUT,
                &format!("/v1/sandbox/{id}/network-policy"),
                Some(&body),
            )
            .await?
        }
    };
    if json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
        if v.pointer("/network_policy/audit") == Some(&Value::Bool(true)) {
            println!(
                "audit mode: on (would-be denials are let through and recorded as would-deny; \
                 see `palisade policy suggest`)"
            );
        }
    }
    Ok(())
}

const EVENT_COLS: &[&str] = &[
    "at", "verdict", "protocol", "name", "dst_addr", "dst_port", "rule", "reason",
];

pub(crate) async fn events(
    id: &str,
    follow: bool,
    verdict: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let api = Api::from_env()?;
    let q = verdict.map(|v| format!("?verdict={v}")).unwrap_or_default();
    let path = format!("/v1/sandbox/{id}/network/events{q}");
    if follow {
        return api
            .follow(&path, |e| {
                if json {
                    println!("{e}");
                } else {
                    let cells: Vec<String> = EVENT_COLS.iter().map(|c| s(&e, c)).collect();
                    println!("{}", cells.join("  "));
                }
            })
            .await;
    }
    let v = api.call(Method::GET, &path, None).await?;
    print(&v, json, EVENT_COLS);
    Ok(())
}

pub(crate) async fn snapshot(cmd: SnapshotCmd, json: bool) -> anyhow::Result<()> {
    let api = Api::from_env()?;
    match cmd {
        SnapshotCmd::Create { id, name } => {
            if !json {
                eprintln!("archiving sandbox {id}...");
            }
            let body = json!({ "name": name });
            let v = api
                .post(&format!("/v1/sandbox/{id}/snapshot/create"), &body)
                .await?;
            print(&v, json, SNAPSHOT_COLS);
        }
        SnapshotCmd::List => {
            let v = api
                .call(
                    Method::GET,
                    "/v1/snapshots?query=&page=1&page-size=100",
                    None,
                )
                .await?;
            print(&v, json, SNAPSHOT_COLS);
        }
        SnapshotCmd::Restore { name, policy } => {
            let mut body = json!({ "snapshot_name": name, "auto_pause": false });
            if let Some(p) = policy {
                body["network_policy"] = read_policy(&p)?;
            }
            let v = api.post("/v1/snapshot/restore", &body).await?;
            print(&v, json, SANDBOX_COLS);
        }
    }
    Ok(())
}

/// Where the web console is, once the daemon has accepted the key (so the person is told now,
/// not at the sign-in form, when the key or the address is wrong). The key is not printed.
pub(crate) async fn console(json: bool) -> anyhow::Result<()> {
    let api = Api::from_env()?;
    api.call(Method::GET, "/v1/sandboxes?page-size=1", None)
        .await
        .context("the daemon did not accept LEAP0_API_KEY")?;
    let url = format!("{}/console/", api.base());
    if json {
        println!("{}", json!({ "url": url }));
    } else {
        println!("{url}");
        println!("Open it in a browser and sign in with the key in LEAP0_API_KEY.");
    }
    Ok(())
}
