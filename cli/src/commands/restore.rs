//! `patchpanda restore FILE`: puts back what a backup holds without undoing
//! the rotation protocol.
//!
//! - A secret that does not exist is created with the backup's versions and
//!   aliases (`pending` excepted: a restored `pending` would be accepted
//!   forever, with no rotation to end it). It is created through
//!   `secret_create::ensure_secret`, so on gcp it is refused with a pointer
//!   to `terraform apply` (a bare create would lack CMEK, the rotation
//!   schedule and the secret-events topic); the refusal comes before any
//!   change, on a `--dry-run` too.
//! - A secret that exists gets only the versions it is missing, as new
//!   unaliased versions, and no alias moves: GitHub keeps signing with the
//!   secret `current` names. Versions an emergency retired as compromised
//!   are not brought back.
//! - `--move-aliases` then makes the backup's `current` current again
//!   through the rotator: announced, GitHub given the webhook secret, tested,
//!   the old version kept for the grace period.

use std::collections::{BTreeMap, BTreeSet};

use patchpanda_shared::names;
use patchpanda_shared::secrets::{Secret, SecretStore, SecretUpdate, VersionRef, VersionState};
use patchpanda_shared::{Error, SecretValue};
use serde::Serialize;

use super::{Ctx, Outcome, RestoreArgs, SecretEntry, open_backup};

#[derive(Serialize)]
struct RestoreReport {
    dry_run: bool,
    file: String,
    created_at: chrono::DateTime<chrono::Utc>,
    secrets: Vec<RestoredSecret>,
}

#[derive(Serialize)]
struct RestoredSecret {
    id: String,
    created_secret: bool,
    /// Backed-up version number -> the new version number (None on a dry
    /// run, or when the secret already holds it: then the live number).
    versions: Vec<(u64, Option<u64>)>,
    /// The aliases set (new secrets) or moved (`--move-aliases`).
    aliases: BTreeMap<String, u64>,
    /// Backed-up versions left out, with why.
    skipped: Vec<(u64, String)>,
    /// What the operator may still want to do.
    note: Option<String>,
}

/// Backed-up version -> the live version holding the same value, for the
/// enabled live versions (disabled ones cannot be read back).
async fn live_copies(
    store: &dyn SecretStore,
    secret: &Secret,
    entry: &SecretEntry,
) -> Result<BTreeMap<u64, u64>, Error> {
    let mut live: Vec<(u64, SecretValue)> = Vec::new();
    for v in store.list_versions(&secret.id).await? {
        if v.state == VersionState::Enabled {
            let got = store
                .access(&secret.id, &VersionRef::Number(v.number))
                .await?;
            live.push((v.number, got.value));
        }
    }
    // SecretValue compares in constant time.
    Ok(entry
        .versions
        .iter()
        .filter_map(|b| {
            let (n, _) = live.iter().find(|(_, value)| *value == b.data)?;
            Some((b.number, *n))
        })
        .collect())
}

pub async fn restore(ctx: &Ctx, a: RestoreArgs) -> Outcome {
    let (header, contents) = open_backup(ctx, &a.file).await?;
    let store = ctx.backends().await?.secrets.clone();
    let mut report = RestoreReport {
        dry_run: a.dry_run,
        file: a.file.display().to_string(),
        created_at: header.created_at,
        secrets: Vec::new(),
    };
    // On gcp a missing secret is infra's to create: refuse before changing
    // anything (ensure_secret only reads on gcp), so a dry run says so too.
    if !ctx.config.is_local() {
        for entry in &contents.secrets {
            crate::secret_create::ensure_secret(&ctx.config.backend, store.as_ref(), &entry.id)
                .await?;
        }
    }
    let mut promote = Vec::new();
    for entry in contents.secrets {
        let live = match store.get_secret(&entry.id).await {
            Ok(s) => Some(s),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut restored = RestoredSecret {
            id: entry.id.clone(),
            created_secret: live.is_none(),
            versions: Vec::new(),
            aliases: BTreeMap::new(),
            skipped: Vec::new(),
            note: None,
        };
        let wanted: BTreeMap<String, u64> = entry
            .aliases
            .iter()
            .filter(|(alias, _)| alias.as_str() != names::ALIAS_PENDING)
            .map(|(a, n)| (a.clone(), *n))
            .collect();
        if entry.aliases.contains_key(names::ALIAS_PENDING) {
            restored.skipped.push((
                entry.aliases[names::ALIAS_PENDING],
                "the `pending` alias is not restored (no rotation would end it)".into(),
            ));
        }
        let Some(live) = live else {
            // A new secret: everything, with the aliases it had.
            if a.dry_run {
                restored.versions = entry.versions.iter().map(|v| (v.number, None)).collect();
                restored.aliases = wanted;
                report.secrets.push(restored);
                continue;
            }
            crate::secret_create::ensure_secret(&ctx.config.backend, store.as_ref(), &entry.id)
                .await?;
            let mut mapping = BTreeMap::new();
            for v in &entry.versions {
                let added = store.add_version(&entry.id, v.data.expose()).await?;
                mapping.insert(v.number, added.number);
                restored.versions.push((v.number, Some(added.number)));
            }
            for (alias, old) in &wanted {
                if let Some(new) = mapping.get(old) {
                    restored.aliases.insert(alias.clone(), *new);
                }
            }
            if !restored.aliases.is_empty() {
                let secret = store.get_secret(&entry.id).await?;
                let update = SecretUpdate {
                    aliases: Some(restored.aliases.clone()),
                    annotations: None,
                };
                store
                    .update_secret(&entry.id, update, Some(&secret.etag))
                    .await?;
            }
            report.secrets.push(restored);
            continue;
        };

        // An existing secret: add what is missing, move nothing.
        let compromised: BTreeSet<u64> = rotation_worker::protocol::compromised(&live);
        let copies = live_copies(store.as_ref(), &live, &entry).await?;
        let mut mapping = copies.clone();
        for v in &entry.versions {
            if let Some(n) = copies.get(&v.number) {
                restored.versions.push((v.number, Some(*n)));
                continue;
            }
            // Same secret, same numbering: a version an emergency retired.
            if compromised.contains(&v.number) && live.create_time <= header.created_at {
                restored.skipped.push((
                    v.number,
                    "retired as compromised by an emergency rotation".into(),
                ));
                continue;
            }
            if a.dry_run {
                restored.versions.push((v.number, None));
                continue;
            }
            let added = store.add_version(&entry.id, v.data.expose()).await?;
            mapping.insert(v.number, added.number);
            restored.versions.push((v.number, Some(added.number)));
        }
        let logical = ctx.logical(&entry.id).to_string();
        let live_current = live.aliases.get(names::ALIAS_CURRENT).copied();
        let backed_current = wanted.get(names::ALIAS_CURRENT);
        let target = backed_current.and_then(|n| mapping.get(n)).copied();
        if let (Some(old), Some(t)) = (backed_current, target)
            && Some(t) != live_current
        {
            if a.move_aliases && !a.dry_run {
                // The value lives on in an older version: a rotation only
                // promotes newer ones, so it comes back as a fresh copy.
                let t = if copies.contains_key(old) {
                    let data = &entry
                        .versions
                        .iter()
                        .find(|v| v.number == *old)
                        .ok_or_else(|| Error::Internal("backup lost a version".into()))?
                        .data;
                    let added = store.add_version(&entry.id, data.expose()).await?;
                    restored.versions.push((*old, Some(added.number)));
                    added.number
                } else {
                    t
                };
                promote.push((logical, t));
            } else {
                restored.note = Some(format!(
                    "the backup's current is version {t} here; no alias moved (to make it current through the rotation: patchpanda restore {} --move-aliases)",
                    a.file.display()
                ));
            }
        }
        report.secrets.push(restored);
    }

    // Alias moves go through the rotator, after every version is in.
    if !promote.is_empty() {
        let rotator = super::super::rotate::rotator(ctx).await?;
        for (logical, version) in promote {
            let outcome = rotator.restore_version(&logical, version).await?;
            if let Some(s) = report
                .secrets
                .iter_mut()
                .find(|s| ctx.logical(&s.id) == logical)
            {
                s.aliases.insert(names::ALIAS_CURRENT.to_string(), version);
                s.note = outcome.detail.clone();
            }
        }
    }
    print(ctx, &report, a.json);
    Ok(())
}

fn print(ctx: &Ctx, report: &RestoreReport, json: bool) {
    if json {
        crate::output::print_json(report);
        return;
    }
    let verb = if report.dry_run {
        "Would restore"
    } else {
        "Restored"
    };
    println!(
        "{verb} from {} (backup of {}):",
        report.file,
        crate::output::time(report.created_at)
    );
    for s in &report.secrets {
        let versions: Vec<String> = s
            .versions
            .iter()
            .map(|(old, new)| match new {
                Some(n) => format!("{old}->{n}"),
                None => old.to_string(),
            })
            .collect();
        let aliases: Vec<String> = s.aliases.iter().map(|(a, n)| format!("{a}={n}")).collect();
        println!(
            "  {}{}: versions {}; aliases {}",
            ctx.logical(&s.id),
            if s.created_secret {
                " (new secret)"
            } else {
                ""
            },
            if versions.is_empty() {
                "-".into()
            } else {
                versions.join(", ")
            },
            if aliases.is_empty() {
                "unchanged".into()
            } else {
                aliases.join(", ")
            }
        );
        for (n, why) in &s.skipped {
            println!("    version {n} not restored: {why}");
        }
        if let Some(n) = &s.note {
            println!("    {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::BackupArgs;
    use super::*;
    use crate::context::Ctx;
    use patchpanda_shared::config::{Backend, Config, Env};

    fn local_ctx(home: &std::path::Path) -> Ctx {
        let env = Env::from_pairs([("PATCHPANDA_HOME", home.to_str().unwrap())]);
        let config = Config::from_env(&env, names::PRINCIPAL_OPERATOR_DEFAULT).unwrap();
        Ctx::new(config, env)
    }

    fn args(file: &std::path::Path, dry_run: bool) -> RestoreArgs {
        RestoreArgs {
            file: file.to_path_buf(),
            dry_run,
            move_aliases: false,
            json: true,
        }
    }

    /// On gcp, restoring a backup whose secret is gone is refused with the
    /// pointer to terraform (a dry run reports the same refusal), and
    /// nothing is created; on the local backend the same backup recreates it.
    #[tokio::test]
    async fn a_missing_secret_on_gcp_is_refused_and_points_at_terraform() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = local_ctx(dir.path());
        let b = ctx.backends().await.unwrap().clone();
        let id = ctx.secret_id("webhook-secret");
        b.secrets.create_secret(&id).await.unwrap();
        b.secrets.add_version(&id, b"wh-value-1").await.unwrap();
        let file = dir.path().join("backup.json");
        super::super::backup(
            &ctx,
            BackupArgs {
                out: file.clone(),
                force: false,
            },
        )
        .await
        .unwrap();
        b.secrets.delete_secret(&id).await.unwrap();

        let mut config = ctx.config.clone();
        config.backend = Backend::Gcp {
            project: "p1".into(),
        };
        let gcp = Ctx::with_backends(config, ctx.env.clone(), b.clone());
        for dry_run in [true, false] {
            let err = restore(&gcp, args(&file, dry_run)).await.unwrap_err();
            assert!(err.0.contains("terraform apply"), "{}", err.0);
            assert!(err.0.contains(&id), "{}", err.0);
            assert!(
                matches!(b.secrets.get_secret(&id).await, Err(Error::NotFound(_))),
                "dry_run={dry_run}: nothing was created"
            );
        }

        restore(&ctx, args(&file, false)).await.unwrap();
        let got = b.secrets.access(&id, &VersionRef::Latest).await.unwrap();
        assert_eq!(got.value.expose(), b"wh-value-1");
    }
}
