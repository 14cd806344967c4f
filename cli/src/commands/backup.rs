//! `patchpanda backup` / `restore`: every secret's enabled versions sealed in
//! one file by envelope encryption under the gateway's KMS key. Nothing
//! secret is ever written in plaintext.
//!
//! File format (version 1), one JSON object:
//! `{"format":"patchpanda-backup","version":1,"created_at":..,"project":..,
//!   "kms_key":..,"kms_key_version":..,"secrets":N,"versions":M,
//!   "sealed":{"key_name","wrapped_key","nonce","ciphertext"}}`.
//! The header (everything but `sealed`) is the AES-GCM additional data, so
//! editing any field, or the ciphertext, fails the integrity check; the
//! plaintext inside is `{"secrets":[{"id","aliases","versions":[{"number",
//! "create_time","data"(base64)}]}]}`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use clap::Args;
use patchpanda_shared::kms::envelope::{self, Sealed};
use patchpanda_shared::secrets::{VersionRef, VersionState};
use patchpanda_shared::{Error, SecretValue};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Failure, Outcome};
use crate::context::Ctx;

#[path = "restore.rs"]
mod restore_impl;
pub use restore_impl::restore;

pub const FORMAT: &str = "patchpanda-backup";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the sealed backup (mode 0600; refuses to overwrite).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `patchpanda backup`.
    pub file: PathBuf,
    /// Verify the file and show what would be added, changing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// For secrets that exist: also make the backup's `current` current
    /// again, through the rotation protocol (announced; GitHub is given the
    /// webhook secret). Without it no alias of an existing secret moves.
    #[arg(long)]
    pub move_aliases: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub project: String,
    pub kms_key: String,
    pub kms_key_version: Option<u64>,
    pub secrets: usize,
    pub versions: usize,
}

impl Header {
    /// The bytes bound to the ciphertext as additional data.
    fn aad(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a header always serializes")
    }
}

#[derive(Serialize, Deserialize)]
struct BackupFile {
    #[serde(flatten)]
    header: Header,
    sealed: Sealed,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Contents {
    secrets: Vec<SecretEntry>,
}

#[derive(Serialize, Deserialize)]
struct SecretEntry {
    id: String,
    aliases: BTreeMap<String, u64>,
    versions: Vec<VersionEntry>,
}

#[derive(Serialize, Deserialize)]
struct VersionEntry {
    number: u64,
    create_time: DateTime<Utc>,
    #[serde(serialize_with = "ser_value", deserialize_with = "de_value")]
    data: SecretValue,
}

fn ser_value<S: serde::Serializer>(v: &SecretValue, s: S) -> Result<S::Ok, S::Error> {
    let encoded = Zeroizing::new(STANDARD.encode(v.expose()));
    s.serialize_str(&encoded)
}

fn de_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = SecretValue;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("base64 data")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SecretValue, E> {
            STANDARD
                .decode(s)
                .map(SecretValue::new)
                .map_err(|_| E::custom("version data is not base64"))
        }
    }
    d.deserialize_str(V)
}

/// How long a backup's announcement covers its reads.
const BACKUP_ANNOUNCEMENT: chrono::Duration = chrono::Duration::minutes(10);

pub async fn backup(ctx: &Ctx, a: BackupArgs) -> Outcome {
    if a.out.exists() && !a.force {
        return Err(Failure(format!(
            "{} exists; choose another name or pass --force",
            a.out.display()
        )));
    }
    let out = PendingFile::create(&a.out, a.force)?;
    let b = ctx.backends().await?;
    let key = b.kms.key_info().await?;
    let mut entries = Vec::new();
    let secrets: Vec<_> = b
        .secrets
        .list_secrets()
        .await?
        .into_iter()
        .filter(|s| s.id.starts_with(&ctx.config.secret_prefix))
        .collect();
    let logical: Vec<String> = secrets
        .iter()
        .map(|s| ctx.logical(&s.id).to_string())
        .collect();
    crate::announce::announce_reads(ctx, "backup", &logical, BACKUP_ANNOUNCEMENT, |name| {
        format!("patchpanda backup reads every enabled version of {name}")
    })
    .await;
    for secret in secrets {
        let enabled: Vec<_> = b
            .secrets
            .list_versions(&secret.id)
            .await?
            .into_iter()
            .filter(|v| v.state == VersionState::Enabled)
            .collect();
        eprintln!(
            "Backing up {} ({} enabled versions)...",
            ctx.logical(&secret.id),
            enabled.len()
        );
        let mut versions = Vec::new();
        for v in enabled.iter().rev() {
            let got = b
                .secrets
                .access(&secret.id, &VersionRef::Number(v.number))
                .await?;
            versions.push(VersionEntry {
                number: v.number,
                create_time: v.create_time,
                data: got.value,
            });
        }
        let kept: Vec<u64> = versions.iter().map(|v| v.number).collect();
        let aliases = secret
            .aliases
            .into_iter()
            .filter(|(_, n)| kept.contains(n))
            .collect();
        entries.push(SecretEntry {
            id: secret.id,
            aliases,
            versions,
        });
    }
    let header = Header {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        created_at: Utc::now(),
        project: ctx.config.project().to_string(),
        kms_key: key.name.clone(),
        kms_key_version: key.primary.as_ref().map(|p| p.number),
        secrets: entries.len(),
        versions: entries.iter().map(|e| e.versions.len()).sum(),
    };
    let plaintext = Zeroizing::new(
        serde_json::to_vec(&Contents { secrets: entries })
            .map_err(|e| Failure(format!("cannot encode the backup: {e}")))?,
    );
    let sealed = envelope::seal(b.kms.as_ref(), &plaintext, &header.aad()).await?;
    let file = BackupFile {
        header: header.clone(),
        sealed,
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Failure(e.to_string()))?;
    out.commit(&bytes)?;
    eprintln!(
        "Wrote {}: {} secrets, {} versions, sealed with {} (version {}).",
        a.out.display(),
        header.secrets,
        header.versions,
        header.kms_key,
        header
            .kms_key_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into())
    );
    Ok(())
}

/// The backup's file while it is being written: a 0600 temp file in the
/// target folder, renamed into place only once complete and synced, so a
/// crash never leaves a half-written backup under the real name, and an
/// unwritable target fails before any secret is read.
struct PendingFile {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<std::fs::File>,
    replace: bool,
}

impl PendingFile {
    fn create(path: &Path, replace: bool) -> Result<PendingFile, Failure> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| Failure(format!("{} is not a file name", path.display())))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts
            .open(&tmp)
            .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
        Ok(PendingFile {
            tmp,
            path: path.to_path_buf(),
            file: Some(file),
            replace,
        })
    }

    fn commit(mut self, bytes: &[u8]) -> Result<(), Failure> {
        let mut file = self.file.take().expect("committed once");
        let result = (|| {
            file.write_all(bytes)?;
            file.sync_all()?;
            if !self.replace && self.path.exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "appeared while writing",
                ));
            }
            std::fs::rename(&self.tmp, &self.path)
        })();
        result.map_err(|e| Failure(format!("cannot write {}: {e}", self.path.display())))
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Still here after commit only if the rename failed or never ran.
        if self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Reads and verifies a backup: nothing is changed before this succeeds.
pub(super) async fn open_backup(ctx: &Ctx, path: &Path) -> Result<(Header, Contents), Failure> {
    let raw =
        std::fs::read(path).map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
    let file: BackupFile = serde_json::from_slice(&raw).map_err(|_| {
        Failure(format!("{} is not a complete patchpanda backup (truncated or not a backup); nothing was changed", path.display()))
    })?;
    if file.header.format != FORMAT {
        return Err(Failure(format!(
            "{} is not a patchpanda backup; nothing was changed",
            path.display()
        )));
    }
    if file.header.version != FORMAT_VERSION {
        return Err(Failure(format!(
            "{} is backup format version {}; this patchpanda reads version {FORMAT_VERSION}",
            path.display(),
            file.header.version
        )));
    }
    let b = ctx.backends().await?;
    let plaintext = envelope::open(b.kms.as_ref(), &file.sealed, &file.header.aad()).await.map_err(|e| match e {
        Error::DataLoss(_) | Error::InvalidArgument(_) => Failure(format!(
            "{} failed its integrity check: damaged, tampered with, or sealed with a different KMS key \
             (it names {} version {}); nothing was changed",
            path.display(),
            file.header.kms_key,
            file.header.kms_key_version.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
        )),
        other => Failure(format!("cannot unseal {}: {other}; nothing was changed", path.display())),
    })?;
    let contents: Contents = serde_json::from_slice(plaintext.expose()).map_err(|_| {
        Failure(format!(
            "{} decrypted but its contents are malformed; nothing was changed",
            path.display()
        ))
    })?;
    let versions: usize = contents.secrets.iter().map(|s| s.versions.len()).sum();
    if contents.secrets.len() != file.header.secrets || versions != file.header.versions {
        return Err(Failure(format!(
            "{} does not hold what its header says; nothing was changed",
            path.display()
        )));
    }
    Ok((file.header, contents))
}
