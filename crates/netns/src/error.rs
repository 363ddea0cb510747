//! One error type for the crate: every variant says what failed and, for commands, what the
//! tool printed on stderr (the scripts and commands we run never carry secrets).

use std::path::PathBuf;

/// Why a namespace, address or nftables operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// A sandbox id outside `[a-z0-9]{1,10}`.
    #[error("invalid sandbox id {0:?}: expected 1 to 10 characters from [a-z0-9]")]
    InvalidId(String),
    /// A host namespace name that `ip netns` would not accept or that could be mistaken for an option.
    #[error("invalid host namespace name {0:?}")]
    InvalidNetnsName(String),
    /// The address pool cannot be split into /30 blocks.
    #[error("invalid address pool {net}: {reason}")]
    InvalidPool {
        /// The pool as given.
        net: ipnet::Ipv4Net,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Addresses that are not one of the pool's /30 blocks (host .1, sandbox .2).
    #[error("addresses {host}/{prefix_len} and {sandbox} are not a block of pool {net}")]
    NotInPool {
        /// The pool.
        net: ipnet::Ipv4Net,
        /// Host side given.
        host: std::net::Ipv4Addr,
        /// Sandbox side given.
        sandbox: std::net::Ipv4Addr,
        /// Prefix length given.
        prefix_len: u8,
    },
    /// The block is already handed out.
    #[error("addresses {host} / {sandbox} are already in use")]
    AddrsInUse {
        /// Host side.
        host: std::net::Ipv4Addr,
        /// Sandbox side.
        sandbox: std::net::Ipv4Addr,
    },
    /// The sandbox namespace exists already; it is left untouched.
    #[error("network namespace {0} already exists")]
    AlreadyExists(String),
    /// Input the nftables renderer refused (it renders a script that cannot apply instead).
    #[error("refusing to render nftables rules: {0}")]
    InvalidRules(String),
    /// A program could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// Program name.
        program: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program ran but failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// Program and arguments.
        command: String,
        /// Exit status as printed by std.
        status: String,
        /// What the program wrote to stderr, trimmed.
        stderr: String,
    },
    /// A program did not finish in time and was killed.
    #[error("`{command}` did not finish within {secs} s and was killed")]
    Timeout {
        /// Program and arguments.
        command: String,
        /// The limit.
        secs: u64,
    },
    /// A program printed something we could not read.
    #[error("unexpected output from `{command}`: {detail}")]
    Output {
        /// Program and arguments.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we tried.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The fake platform was told to fail this call.
    #[error("injected failure on call {call}: {command}")]
    Injected {
        /// 1-based call number.
        call: usize,
        /// Program and arguments.
        command: String,
    },
}
