//! The command tree, and the one place a command's error becomes an exit
//! status and a line on stderr.

mod backup;
mod bus;
mod health;
mod rotate;
mod secrets;
mod status;
mod token;
mod webhook;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::context::Ctx;

#[derive(Debug, Parser)]
#[command(
    name = "patchpanda",
    version,
    about = "Operate PatchPanda Gateway: secrets, rotation, backup, health, and the local stack",
    long_about = "Operate PatchPanda Gateway. With PATCHPANDA_BACKEND=local (the default) every command \
works on PATCHPANDA_HOME (default ./.patchpanda) and may run while `patchpanda dev` runs; with \
PATCHPANDA_BACKEND=gcp it works on Secret Manager, Cloud KMS and Pub/Sub of GOOGLE_CLOUD_PROJECT \
with Application Default Credentials.\n\nExit status: 0 success, 1 failure (one line on stderr), 2 usage error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole local stack: the three functions, the bus and the scheduler.
    Dev(crate::dev::DevArgs),
    /// List, read and change secrets and their versions.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Rotate one secret now (the runbook's rotation procedures; --emergency for a compromise).
    Rotate(rotate::RotateArgs),
    /// Make `previous` current again (the runbook's rollback procedure).
    Rollback(rotate::RollbackArgs),
    /// What is current, how old, what is due, what is in grace, how the last rotation went.
    Status(status::StatusArgs),
    /// Write every secret into one file sealed with the KMS key (envelope encryption).
    Backup(backup::BackupArgs),
    /// Add what a backup holds and the store lacks, as new versions (aliases only for secrets it creates; --move-aliases to make the backup's current current again).
    Restore(backup::RestoreArgs),
    /// The runbook's health checks: functions, secrets, KMS key, bus, permissions.
    Health(health::HealthArgs),
    /// Sign or send test webhook deliveries.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Inspect the local bus.
    #[command(subcommand)]
    Bus(bus::BusCommand),
    /// Print an OIDC ID token for calling a push or scheduler endpoint.
    Token(token::TokenArgs),
}

// Re-exported so each command reads `super::{Failure, Outcome}`.
pub use crate::failure::{Failure, Outcome};

pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Dev(args) => crate::dev::run(args).await,
        command => match Ctx::from_env() {
            Err(f) => Err(f),
            Ok(ctx) => dispatch(&ctx, command).await,
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(line)) => {
            let line = line.lines().next().unwrap_or("failed").trim().to_string();
            eprintln!("patchpanda: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command (not `dev`) in `ctx`; tests run commands in-process.
pub async fn dispatch(ctx: &Ctx, command: Command) -> Outcome {
    match command {
        Command::Dev(_) => Err(Failure(
            "`dev` starts the stack itself; it does not run in a command context".into(),
        )),
        Command::Secrets(c) => secrets::run(ctx, c).await,
        Command::Rotate(a) => rotate::rotate(ctx, a).await,
        Command::Rollback(a) => rotate::rollback(ctx, a).await,
        Command::Status(a) => status::run(ctx, a).await,
        Command::Backup(a) => backup::backup(ctx, a).await,
        Command::Restore(a) => backup::restore(ctx, a).await,
        Command::Health(a) => health::run(ctx, a).await,
        Command::Webhook(c) => webhook::run(ctx, c).await,
        Command::Bus(c) => bus::run(ctx, c).await,
        Command::Token(a) => token::run(ctx, a).await,
    }
}
