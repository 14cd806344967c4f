//! `patchpanda`: the operator command. Every runbook procedure is one
//! subcommand; `patchpanda dev` runs the whole stack locally.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    patchpanda::commands::run(patchpanda::commands::Cli::parse()).await
}
