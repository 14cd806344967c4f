//! `patchpanda rotate` / `rollback`: the rotation-worker's own code, run
//! in-process. On the local backend the command acts as the rotation
//! worker's identity (the local stack has no IAM to delegate with); on gcp it
//! acts as the caller's Application Default Credentials.

use clap::Args;
use patchpanda_shared::backends::Backends;
use patchpanda_shared::config::Config;
use patchpanda_shared::names;
use rotation_worker::{RollbackOptions, RotationOutcome, Rotator, Settings};

use super::{Failure, Outcome};
use crate::context::Ctx;
use crate::output;

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// webhook-secret, github-private-key (after uploading a new key),
    /// oidc-client-secret (after uploading), kms-key, or
    /// service-account-key (only with PATCHPANDA_SA_KEY_ACCOUNT set).
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
    /// Roll back even onto a version an emergency rotation retired as
    /// compromised: it is re-enabled and becomes current again. Announced.
    #[arg(long)]
    pub force: bool,
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
    let settings = Settings::from_env(&config, &env)?;
    Ok(Rotator::new(b.secrets, b.kms, b.bus, settings))
}

/// How long an announced upload covers the uploader's changes: the upload
/// and the `rotate` that follows it.
pub const UPLOAD_ANNOUNCEMENT: chrono::Duration = chrono::Duration::minutes(30);

/// Announces a planned upload of a hand-made credential (contract 8) before
/// it is made, so the alerter files it as an announced operator change.
/// Nothing is uploaded unannounced: a failure to announce stops the upload.
/// Other secrets are not announced (their versions come from the rotator).
pub async fn announce_upload(ctx: &Ctx, name: &str) -> Outcome {
    let logical = ctx.logical(&ctx.secret_id(name)).to_string();
    if !rotation_worker::kinds::Kind::parse(&logical).is_ok_and(|k| k.is_upload()) {
        return Ok(());
    }
    let until = chrono::Utc::now() + UPLOAD_ANNOUNCEMENT;
    let n = patchpanda_shared::notice::RotationNotice::announced(
        &logical,
        &ctx.config.principal,
        until,
        format!("operator upload of a new {logical} version, then patchpanda rotate {logical}"),
    );
    let bus = &ctx.backends().await?.bus;
    bus.publish(names::TOPIC_ROTATION_EVENTS, n.to_message())
        .await
        .map_err(|e| {
            Failure(format!(
                "could not announce the upload on {}: {e}; nothing was uploaded",
                names::TOPIC_ROTATION_EVENTS
            ))
        })?;
    eprintln!(
        "Announced an upload to {logical} by {} until {}.",
        ctx.config.principal,
        output::time(until)
    );
    Ok(())
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
    if a.force {
        eprintln!(
            "--force: if the previous version of {} was retired by an emergency rotation as compromised, it is re-enabled and becomes current again; this is announced on the rotation topic.",
            a.name
        );
    }
    let opts = RollbackOptions { force: a.force };
    let outcome = r.rollback_with(&logical(ctx, &a.name), opts).await?;
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
