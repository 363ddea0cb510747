//! The palisade binary: the daemon (`palisade serve`) and client subcommands for people at a
//! terminal (tables by default, `--json` for scripts). Clients find the API through
//! `LEAP0_BASE_URL` and `LEAP0_API_KEY`, as the Leap0 SDKs do.

#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: its output is for the person at the terminal"
)]

/// jemalloc: per-thread caches and no heap consolidation on the request path (see the
/// workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod approvals_cmd;
mod client;
mod commands;
mod config;
mod preflight;
mod serve;
mod suggest_cmd;
mod template_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "Sandboxes whose network egress you control"
)]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon.
    Serve {
        /// TOML configuration (embedded defaults when absent).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Build this template before serving (progress on stderr). A failed build is reported
        /// and the daemon serves anyway: creates on the template then answer 503 with the cause.
        #[arg(long)]
        prepare_template: Option<String>,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Sandboxes.
    Sandbox {
        #[command(subcommand)]
        cmd: commands::SandboxCmd,
    },
    /// A sandbox's network policy.
    Policy {
        #[command(subcommand)]
        cmd: commands::PolicyCmd,
    },
    /// A sandbox's egress events.
    Events {
        id: String,
        /// Keep printing events as they happen.
        #[arg(long, short)]
        follow: bool,
        /// Only `allow`, `deny` or `would-deny` (audit mode).
        #[arg(long)]
        verdict: Option<String>,
    },
    /// Snapshots.
    Snapshot {
        #[command(subcommand)]
        cmd: commands::SnapshotCmd,
    },
    /// Templates: build (or retry a failed build) with a progress bar, list with build state.
    Template {
        #[command(subcommand)]
        cmd: template_cmd::TemplateCmd,
    },
    /// The web console's address (after checking the daemon accepts the key).
    Console,
    /// Pending approvals of `on_unknown: "hold"` sandboxes: list, follow, allow or deny.
    Approvals(approvals_cmd::ApprovalsArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Create an API key for an organisation (created when missing); printed once.
    Create {
        #[arg(long)]
        org: String,
        /// The daemon's data directory (or the config file's).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve {
                config,
                listen,
                admin,
                data_dir,
                prepare_template,
            } => {
                let mut c = config::Config::load(config.as_deref())?;
                if let Some(l) = listen {
                    c.server.listen = l;
                }
                if let Some(a) = admin {
                    c.server.admin = a;
                }
                if let Some(d) = data_dir {
                    c.server.data_dir = d;
                }
                serve::run(c, prepare_template).await
            }
            Cmd::Keys {
                cmd:
                    KeysCmd::Create {
                        org,
                        data_dir,
                        config,
                    },
            } => {
                let c = config::Config::load(config.as_deref())?;
                let dir = data_dir.unwrap_or(c.server.data_dir);
                let key = serve::create_key(&dir, &org).await?;
                if cli.json {
                    println!("{}", serde_json::json!({ "org": org, "api_key": key }));
                } else {
                    println!("{key}");
                }
                Ok(())
            }
            Cmd::Sandbox { cmd } => commands::sandbox(cmd, cli.json).await,
            Cmd::Policy { cmd } => commands::policy(cmd, cli.json).await,
            Cmd::Events {
                id,
                follow,
                verdict,
            } => commands::events(&id, follow, verdict, cli.json).await,
            Cmd::Snapshot { cmd } => commands::snapshot(cmd, cli.json).await,
            Cmd::Template { cmd } => template_cmd::run(cmd, cli.json).await,
            Cmd::Console => commands::console(cli.json).await,
            Cmd::Approvals(args) => approvals_cmd::run(args, cli.json).await,
        }
    })
}
