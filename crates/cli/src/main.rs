//! The palisade binary: the daemon (`palisade serve`) and client subcommands.

#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    anyhow::bail!("palisade: the daemon is not built yet (see README.md, \"Status\")")
}
