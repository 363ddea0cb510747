//! `palisade-bench`: whole-system measurements of Palisade against the same traffic on the same
//! path without the firewall, in one run, inside testbed namespaces (no traffic leaves them).
//!
//! `palisade-bench` (as root) builds a testbed world, starts the firewall in its `fw`
//! namespace, makes one sandbox under an allow-all policy and one "direct" namespace that `fw`
//! forwards without rules, runs every scenario interleaved, prints a table and writes
//! `bench/RESULTS.md` and `bench/results.json`. `palisade-bench client …` is the load generator
//! it runs inside the namespaces.

#![forbid(unsafe_code)]

/// The daemon's allocator (crates/cli/src/main.rs), since the bench runs the firewall in-process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod bed;
mod clients;
mod measure;
mod report;
mod scen;
mod scen_tunnel_idle;
mod scen_tunnel_peers;
mod scenarios;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

use bed::{Bed, FwPinning};
use scenarios::{CLIENT_CPU, Durations};

/// The tunnel scenarios (bench/src/scenarios.rs and scen_tunnel_*) must finish within this.
const RUN_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Parser)]
#[command(about = "Palisade against the same traffic without the firewall, in testbed namespaces")]
struct Args {
    #[command(subcommand)]
    client: Option<Command>,
    /// CPU the firewall's runtime threads are pinned to, or `none` (load generators always run
    /// on CPU 1).
    #[arg(long, default_value = "0")]
    fw_cpu: String,
    /// Worker threads of the firewall's runtime, in every bed. One by default: the runtime is
    /// pinned to one CPU, and one worker per CPU is what tokio itself defaults to (two workers
    /// pinned to one CPU only add wake-ups).
    #[arg(long, default_value_t = 1)]
    fw_workers: usize,
    /// Relay tunnel bytes by copying through buffers instead of splice(2) (for A/B runs).
    #[arg(long)]
    fw_copy: bool,
    /// Repetitions per path (after one warm-up each).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Seconds per bulk run.
    #[arg(long, default_value_t = 3)]
    bulk_secs: u32,
    /// Seconds per connection-rate run.
    #[arg(long, default_value_t = 2.0)]
    conn_secs: f64,
    /// Run only these scenarios (comma-separated): `core` (bulk, connections, TLS, with the
    /// tunnel peers), `tunnel` (8 flows, round trip), `idle` (scenario 8), `splice` (3b, Squid
    /// peek+splice), and intercept (with scrub, 4f, also alone), hudsucker (4e), h2, dns, sandbox (issue 7's 4, 5, 6, 9), noisy (issue 11:
    /// a sandbox's latency beside one at its connection cap flooding DNS).
    /// Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where RESULTS.md and results.json go. Default: bench/ for a full run; for a partial run
    /// (`--only`) a scratch directory, so it never replaces the full run's results.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// A load generator (run inside a namespace by the bench itself).
    #[command(subcommand)]
    Client(clients::Client),
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Command::Client(client)) = &args.client {
        return clients::run(client);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,palisade_bench=info")),
        )
        .init();
    bench(&args)
}

fn bench(args: &Args) -> Result<()> {
    let deadline = Instant::now() + RUN_LIMIT;
    let pinning = match args.fw_cpu.as_str() {
        "none" => FwPinning::Unpinned,
        n => FwPinning::Cpu(n.parse().context("--fw-cpu takes a CPU number or `none`")?),
    };
    let removed = palisade_testbed::cleanup_stale()?;
    if !removed.is_empty() {
        tracing::info!(?removed, "removed namespaces left by dead test processes");
    }
    let bed = Bed::new(pinning, args.fw_workers, !args.fw_copy)?;
    let durations = Durations {
        bulk_secs: args.bulk_secs,
        conn_secs: args.conn_secs,
        reps: args.reps,
    };
    let exe = std::env::current_exe().context("finding this binary")?;
    let (scenarios, idle) = scenarios::run_tunnel(&bed, durations, exe, deadline, &args.only)?;
    let comparisons = scen::run(&args.only, args.reps, args.fw_workers)?;
    let fw = match pinning {
        FwPinning::Cpu(n) => format!(
            "firewall runtime ({} workers) pinned to CPU {n}",
            args.fw_workers
        ),
        FwPinning::Unpinned => format!("firewall runtime ({} workers) unpinned", args.fw_workers),
    };
    let results = report::Results {
        date_utc: run_text("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        machine: run_text("uname", &["-srm"]),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        pinning: format!(
            "load generators (iperf3 -c, bench clients) `taskset -c {CLIENT_CPU}`; {fw}; \
             iperf3 -s and the testbed's in-process servers unpinned"
        ),
        method: format!(
            "{} interleaved runs per path (direct, Palisade, direct, …) after one warm-up each; \
             direct = a namespace `fw` forwards without rules (same veths, same conntrack), \
             Palisade = a palisade-netns sandbox, allow-all policy, through the proxy; \
             proxy CPU = utime+stime of the firewall runtime's threads from /proc/self/task",
            args.reps
        ),
        scenarios,
        idle,
        comparisons,
    };
    let table = report::table(&results);
    writeln!(std::io::stdout().lock(), "{}\n{table}", results.pinning)?;
    let out = match (&args.out, args.only.is_empty()) {
        (Some(dir), _) => dir.clone(),
        (None, true) => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        (None, false) => std::env::temp_dir().join("palisade-bench-partial"),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    report::write(&out, &results)?;
    writeln!(
        std::io::stdout().lock(),
        "results written to {}",
        out.display()
    )?;
    Ok(())
}

fn run_text(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
