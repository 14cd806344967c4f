//! `patchpanda secrets ...`: Secret Manager's version operations, gcloud-like.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use patchpanda_shared::SecretValue;
use patchpanda_shared::names;
use patchpanda_shared::secrets::{SecretUpdate, StateChange, VersionRef};
use serde::Serialize;

use crate::context::Ctx;
use crate::failure::{Failure, Outcome};
use crate::output::{self, Table};

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Secrets, their aliases, versions, states and ages.
    List(JsonFlag),
    /// One secret's versions.
    Versions(NameArgs),
    /// Add a new version from a file (`-` reads stdin). Creates the secret if
    /// needed on the local backend (on gcp, infra creates secrets); the first
    /// version of a secret becomes `current`.
    Add(AddArgs),
    /// Print a version's value to stdout, byte for byte (default: `current`).
    Access(AccessArgs),
    /// Enable a disabled version.
    Enable(StateArgs),
    /// Disable a version: it can no longer be read until enabled again.
    Disable(StateArgs),
    /// Destroy a version's value for good (its metadata stays).
    Destroy(StateArgs),
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// Logical name (webhook-secret) or Secret Manager id (patchpanda-webhook-secret).
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub name: String,
    /// File holding the value, or `-` for stdin. The bytes are stored exactly.
    #[arg(long, value_name = "FILE")]
    pub data_file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AccessArgs {
    pub name: String,
    /// A version number, `latest`, or an alias (current, previous, pending).
    #[arg(long, default_value = "current")]
    pub version: String,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    pub name: String,
    /// The version number.
    pub version: u64,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, cmd: SecretsCommand) -> Outcome {
    match cmd {
        SecretsCommand::List(a) => list(ctx, a.json).await,
        SecretsCommand::Versions(a) => versions(ctx, &a.name, a.json).await,
        SecretsCommand::Add(a) => add(ctx, a).await,
        SecretsCommand::Access(a) => access(ctx, a).await,
        SecretsCommand::Enable(a) => change(ctx, a, StateChange::Enable).await,
        SecretsCommand::Disable(a) => change(ctx, a, StateChange::Disable).await,
        SecretsCommand::Destroy(a) => change(ctx, a, StateChange::Destroy).await,
    }
}

#[derive(Serialize)]
struct SecretRow {
    name: String,
    id: String,
    aliases: BTreeMap<String, u64>,
    versions: usize,
    enabled: usize,
    created: chrono::DateTime<chrono::Utc>,
    latest_version_created: Option<chrono::DateTime<chrono::Utc>>,
}

async fn list(ctx: &Ctx, json: bool) -> Outcome {
    let store = &ctx.backends().await?.secrets;
    let mut rows = Vec::new();
    for s in store.list_secrets().await? {
        if !s.id.starts_with(&ctx.config.secret_prefix) {
            continue;
        }
        let versions = store.list_versions(&s.id).await?;
        rows.push(SecretRow {
            name: ctx.logical(&s.id).to_string(),
            id: s.id.clone(),
            aliases: s.aliases.clone(),
            versions: versions.len(),
            enabled: versions
                .iter()
                .filter(|v| v.state == patchpanda_shared::secrets::VersionState::Enabled)
                .count(),
            created: s.create_time,
            latest_version_created: versions.iter().map(|v| v.create_time).max(),
        });
    }
    if json {
        output::print_json(&rows);
        return Ok(());
    }
    let mut t = Table::new(&[
        "NAME", "CURRENT", "PREVIOUS", "PENDING", "VERSIONS", "ENABLED", "NEWEST", "CREATED",
    ]);
    for r in &rows {
        let alias = |a: &str| output::opt(r.aliases.get(a));
        t.row(vec![
            r.name.clone(),
            alias(names::ALIAS_CURRENT),
            alias(names::ALIAS_PREVIOUS),
            alias(names::ALIAS_PENDING),
            r.versions.to_string(),
            r.enabled.to_string(),
            r.latest_version_created
                .map(output::age)
                .unwrap_or_else(|| "-".into()),
            output::time(r.created),
        ]);
    }
    if rows.is_empty() {
        eprintln!("No secrets with prefix {:?} yet.", ctx.config.secret_prefix);
    } else {
        t.print();
    }
    Ok(())
}

#[derive(Serialize)]
struct VersionRow {
    version: u64,
    /// Spelled as everywhere else in JSON (ENABLED, DISABLED, DESTROYED).
    state: patchpanda_shared::secrets::VersionState,
    aliases: Vec<String>,
    created: chrono::DateTime<chrono::Utc>,
    destroyed: Option<chrono::DateTime<chrono::Utc>>,
}

async fn versions(ctx: &Ctx, name: &str, json: bool) -> Outcome {
    let store = &ctx.backends().await?.secrets;
    let id = ctx.secret_id(name);
    let secret = store.get_secret(&id).await?;
    let rows: Vec<VersionRow> = store
        .list_versions(&id)
        .await?
        .into_iter()
        .map(|v| VersionRow {
            version: v.number,
            state: v.state,
            aliases: secret
                .aliases
                .iter()
                .filter(|(_, n)| **n == v.number)
                .map(|(a, _)| a.clone())
                .collect(),
            created: v.create_time,
            destroyed: v.destroy_time,
        })
        .collect();
    if json {
        output::print_json(&rows);
        return Ok(());
    }
    let mut t = Table::new(&["VERSION", "STATE", "ALIASES", "CREATED", "AGE", "DESTROYED"]);
    for r in &rows {
        t.row(vec![
            r.version.to_string(),
            r.state.to_string(),
            if r.aliases.is_empty() {
                "-".into()
            } else {
                r.aliases.join(",")
            },
            output::time(r.created),
            output::age(r.created),
            output::opt(r.destroyed.map(output::time)),
        ]);
    }
    t.print();
    Ok(())
}

/// Reads a whole file or stdin into a secret value.
pub fn read_value(path: &std::path::Path) -> Result<SecretValue, Failure> {
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Failure(format!("cannot read stdin: {e}")))?;
    } else {
        let mut f = std::fs::File::open(path)
            .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
        f.read_to_end(&mut buf)
            .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
    }
    let value = SecretValue::new(buf);
    if value.is_empty() {
        return Err(Failure(format!(
            "{} is empty; a secret version needs a value",
            path.display()
        )));
    }
    Ok(value)
}

/// Secret Manager's payload limit.
const MAX_PAYLOAD: usize = 64 * 1024;

async fn add(ctx: &Ctx, a: AddArgs) -> Outcome {
    let value = read_value(&a.data_file)?;
    if value.len() > MAX_PAYLOAD {
        return Err(Failure(format!(
            "{} holds {} bytes, over the {MAX_PAYLOAD}-byte limit of a secret version",
            a.data_file.display(),
            value.len()
        )));
    }
    // The documented key upload announces itself first (contract 8).
    super::rotate::announce_upload(ctx, &a.name).await?;
    let store = &ctx.backends().await?.secrets;
    let id = ctx.secret_id(&a.name);
    let created =
        crate::secret_create::ensure_secret(&ctx.config.backend, store.as_ref(), &id).await?;
    let version = match store.add_version(&id, value.expose()).await {
        Ok(v) => v,
        Err(e) => {
            // Bad input changes nothing: don't leave an empty secret behind.
            if created {
                let _ = store.delete_secret(&id).await;
            }
            return Err(e.into());
        }
    };
    let secret = store.get_secret(&id).await?;
    let mut became_current = false;
    if !secret.aliases.contains_key(names::ALIAS_CURRENT) {
        let mut aliases = secret.aliases.clone();
        aliases.insert(names::ALIAS_CURRENT.to_string(), version.number);
        store
            .update_secret(
                &id,
                SecretUpdate {
                    aliases: Some(aliases),
                    annotations: None,
                },
                Some(&secret.etag),
            )
            .await?;
        became_current = true;
    }
    if a.json {
        output::print_json(&serde_json::json!({
            "name": ctx.logical(&id), "id": id, "version": version.number,
            "created_secret": created, "current": became_current,
        }));
    } else {
        if created {
            eprintln!("Created secret {id}.");
        }
        println!(
            "Created version {} of {}{}.",
            version.number,
            ctx.logical(&id),
            if became_current { " (now current)" } else { "" }
        );
    }
    Ok(())
}

async fn access(ctx: &Ctx, a: AccessArgs) -> Outcome {
    let version: VersionRef = a.version.parse()?;
    let store = &ctx.backends().await?.secrets;
    let got = store.access(&ctx.secret_id(&a.name), &version).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(got.value.expose())
        .and_then(|_| out.flush())
        .map_err(|e| Failure(format!("cannot write: {e}")))?;
    Ok(())
}

async fn change(ctx: &Ctx, a: StateArgs, change: StateChange) -> Outcome {
    let store = &ctx.backends().await?.secrets;
    let id = ctx.secret_id(&a.name);
    let v = store.set_state(&id, a.version, change).await?;
    if a.json {
        output::print_json(&v);
    } else {
        println!(
            "Version {} of {} is now {}.",
            v.number,
            ctx.logical(&id),
            v.state
        );
    }
    Ok(())
}
