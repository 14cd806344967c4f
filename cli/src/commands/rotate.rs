//! `patchpanda rotate` / `rollback`: the rotation-worker's own code, run
//! in-process. On the local backend the command acts as the rotation
//! worker's identity (the local stack has no IAM to delegate with); on gcp it
//! acts as the caller's Application Default Credentials.

use clap::Args;
use patchpanda_shared::backends::Backends;
use patchpanda_shared::config::Config;
use patchpanda_shared::names;
use rotation_worker::{RotationOutcome, Rotator, Settings};

use super::{Failure, Outcome};
use crate::context::Ctx;
use crate::output;

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// webhook-secret, github-private-key (after uploading a new key),
    /// oidc-client-secret (after uploading) or kms-key.
    pub name: String,
    /// Compromise procedure: no grace, the old version is disabled at once.
    #[arg(long)]
    pub emergency: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The secret whose `previous` version becomes current again.
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

/// A rotator over backends opened as the identity that rotates.
pub async fn rotator(ctx: &Ctx) -> Result<Rotator, Failure> {
    let mut env = ctx.env.clone();
    if ctx.config.is_local() {
        env.set("PATCHPANDA_PRINCIPAL", names::PRINCIPAL_ROTATION_WORKER);
    }
    let config = Config::from_env(&env, names::PRINCIPAL_OPERATOR_DEFAULT)?;
    let b = Backends::open(&config).await?;
    let settings = Settings::from_config(&config, &env)?;
    Ok(Rotator::new(b.secrets, b.kms, b.bus, settings))
}

fn logical(ctx: &Ctx, name: &str) -> String {
    ctx.logical(name).to_string()
}

pub async fn rotate(ctx: &Ctx, a: RotateArgs) -> Outcome {
    let r = rotator(ctx).await?;
    let outcome = r.rotate(&logical(ctx, &a.name), a.emergency).await?;
    print(&outcome, a.json);
    Ok(())
}

pub async fn rollback(ctx: &Ctx, a: RollbackArgs) -> Outcome {
    let r = rotator(ctx).await?;
    let outcome = r.rollback(&logical(ctx, &a.name)).await?;
    print(&outcome, a.json);
    Ok(())
}

fn print(o: &RotationOutcome, json: bool) {
    if json {
        output::print_json(o);
        return;
    }
    let what = match o.result.as_str() {
        "rotated" => "Rotated",
        "rolled_back" => "Rolled back",
        other => other,
    };
    println!(
        "{what} {}: current is now version {} (was {}){}.",
        o.secret,
        output::opt(o.version),
        output::opt(o.previous_version),
        if o.emergency {
            ", emergency: the old version is disabled"
        } else {
            ""
        }
    );
    if let Some(until) = o.grace_until {
        println!("The old version stays valid until {}.", output::time(until));
    }
    if o.resumed {
        println!("This finished a rotation an earlier attempt had begun.");
    }
    if let Some(d) = &o.detail {
        println!("{d}");
    }
}
