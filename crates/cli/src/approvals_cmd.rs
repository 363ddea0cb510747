//! `palisade approvals`: the approval queue of `on_unknown: "hold"` sandboxes from a terminal.

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{Value, json};

use crate::client::Api;
use crate::commands::print;

#[derive(Debug, Args)]
pub(crate) struct ApprovalsArgs {
    #[command(subcommand)]
    cmd: Option<ApprovalsCmd>,
    /// Keep printing approvals as they arrive and are decided.
    #[arg(long, short)]
    follow: bool,
}

#[derive(Debug, Subcommand)]
enum ApprovalsCmd {
    /// Release a held name: once (what is held, and what follows for the name in the next few
    /// seconds), or with --always by adding it to the sandbox's allow_domains.
    Allow {
        id: String,
        #[arg(long)]
        always: bool,
    },
    /// Refuse a held name: once, or with --always by adding it to the sandbox's deny_domains
    /// (never asked again).
    Deny {
        id: String,
        #[arg(long)]
        always: bool,
    },
}

const COLS: &[&str] = &[
    "id",
    "sandbox_id",
    "name",
    "kinds",
    "ports",
    "held",
    "expires",
];

pub(crate) async fn run(args: ApprovalsArgs, json_out: bool) -> anyhow::Result<()> {
    let api = Api::from_env()?;
    let (id, decision) = match args.cmd {
        None if args.follow => return follow(&api, json_out).await,
        None => {
            let v = api.call(Method::GET, "/v1/approvals", None).await?;
            print(&v, json_out, COLS);
            return Ok(());
        }
        Some(ApprovalsCmd::Allow { id, always }) => {
            (id, if always { "allow-always" } else { "allow-once" })
        }
        Some(ApprovalsCmd::Deny { id, always }) => {
            (id, if always { "deny-always" } else { "deny" })
        }
    };
    let v = api
        .call(
            Method::POST,
            &format!("/v1/approvals/{id}"),
            Some(&json!({ "decision": decision })),
        )
        .await?;
    if json_out {
        println!("{v}");
    } else {
        let a = &v["approval"];
        let name = a["name"].as_str().unwrap_or("-");
        let sandbox = a["sandbox_id"].as_str().unwrap_or("-");
        match v["policy_version"].as_i64() {
            Some(version) => {
                println!("{decision} {name} for sandbox {sandbox} (policy version {version})")
            }
            None => println!("{decision} {name} for sandbox {sandbox}"),
        }
    }
    Ok(())
}

async fn follow(api: &Api, json_out: bool) -> anyhow::Result<()> {
    api.follow("/v1/approvals/stream", |v: Value| {
        if json_out {
            println!("{v}");
            return;
        }
        match v.get("decision").and_then(Value::as_str) {
            Some(decision) => {
                let a = &v["approval"];
                println!(
                    "resolved  {}  {}  {}  {decision}",
                    a["id"].as_str().unwrap_or("-"),
                    a["sandbox_id"].as_str().unwrap_or("-"),
                    a["name"].as_str().unwrap_or("-"),
                );
            }
            None => println!(
                "pending   {}  {}  {}  {}  expires {}",
                v["id"].as_str().unwrap_or("-"),
                v["sandbox_id"].as_str().unwrap_or("-"),
                v["name"].as_str().unwrap_or("-"),
                v["kinds"],
                v["expires"].as_str().unwrap_or("-"),
            ),
        }
    })
    .await
}
