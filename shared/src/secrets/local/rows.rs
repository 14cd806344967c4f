//! The rows of `secrets.db`: its schema, and the reads and changes each run
//! inside one transaction. Secret Manager's rules that need the stored
//! state (which versions exist, their states, the etag) are checked here;
//! the rest are in [`crate::secrets::rules`].

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{secret_name, version_name};
use crate::local::sqlite_error;
use crate::secrets::{Secret, SecretUpdate, SecretVersion, StateChange, VersionRef, VersionState};
use crate::{Error, Result};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS secrets (
    id           TEXT PRIMARY KEY,
    create_time  TEXT NOT NULL,
    aliases      TEXT NOT NULL,
    annotations  TEXT NOT NULL,
    etag         TEXT NOT NULL,
    next_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    secret       TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('ENABLED','DISABLED','DESTROYED')),
    create_time  TEXT NOT NULL,
    destroy_time TEXT,
    crc32c       INTEGER,
    sealed       TEXT,
    PRIMARY KEY (secret, number)
);
";

pub(super) struct VersionRow {
    pub version: SecretVersion,
    pub crc32c: Option<u32>,
    pub sealed: Option<String>,
}

pub(super) fn immediate(c: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)
}

pub(super) fn now() -> DateTime<Utc> {
    // Stored with microseconds; round now so returned values equal reloads.
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| Error::DataLoss(format!("secrets.db holds a malformed time: {e}")))
}

pub(super) fn new_etag() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("\"{}\"", &u[..16])
}

pub(super) fn parse_state(s: &str) -> Result<VersionState> {
    Ok(match s {
        "ENABLED" => VersionState::Enabled,
        "DISABLED" => VersionState::Disabled,
        "DESTROYED" => VersionState::Destroyed,
        other => {
            return Err(Error::DataLoss(format!(
                "secrets.db holds an unknown state {other:?}"
            )));
        }
    })
}

pub(super) fn to_version(
    id: &str,
    number: u64,
    state: &str,
    create_time: &str,
    destroy_time: Option<&str>,
) -> Result<SecretVersion> {
    Ok(SecretVersion {
        secret: id.to_string(),
        number,
        state: parse_state(state)?,
        create_time: parse_ts(create_time)?,
        destroy_time: destroy_time.map(parse_ts).transpose()?,
    })
}

pub(super) fn not_found(id: &str) -> Error {
    Error::NotFound(format!(
        "Secret [{}] not found or has no versions.",
        secret_name(id)
    ))
}

pub(super) fn find_secret(c: &Connection, id: &str) -> Result<Option<Secret>> {
    let row: Option<(String, String, String, String)> = c
        .query_row(
            "SELECT create_time, aliases, annotations, etag FROM secrets WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(sqlite_error)?;
    let Some((create_time, aliases, annotations, etag)) = row else {
        return Ok(None);
    };
    let malformed = |what: &str| Error::DataLoss(format!("secrets.db: {id}: malformed {what}"));
    Ok(Some(Secret {
        id: id.to_string(),
        create_time: parse_ts(&create_time)?,
        aliases: serde_json::from_str(&aliases).map_err(|_| malformed("aliases"))?,
        annotations: serde_json::from_str(&annotations).map_err(|_| malformed("annotations"))?,
        etag,
        next_rotation_time: None,
        rotation_period: None,
    }))
}

pub(super) fn load_secret(c: &Connection, id: &str) -> Result<Secret> {
    find_secret(c, id)?.ok_or_else(|| not_found(id))
}

pub(super) fn next_number(c: &Connection, id: &str) -> Result<u64> {
    c.query_row(
        "SELECT next_version FROM secrets WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .optional()
    .map_err(sqlite_error)?
    .ok_or_else(|| not_found(id))
}

pub(super) fn load_version(c: &Connection, id: &str, number: u64) -> Result<VersionRow> {
    type Row = (String, String, Option<String>, Option<u32>, Option<String>);
    let row: Option<Row> = c
        .query_row(
            "SELECT state, create_time, destroy_time, crc32c, sealed FROM versions
             WHERE secret = ?1 AND number = ?2",
            params![id, number],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .map_err(sqlite_error)?;
    let (state, create_time, destroy_time, crc32c, sealed) = row.ok_or_else(|| {
        Error::NotFound(format!(
            "Secret Version [{}] not found.",
            version_name(id, number)
        ))
    })?;
    Ok(VersionRow {
        version: to_version(id, number, &state, &create_time, destroy_time.as_deref())?,
        crc32c,
        sealed,
    })
}

/// The version number a reference names. `latest` is the most recently
/// created version, whatever its state.
pub(super) fn resolve(c: &Connection, secret: &Secret, version: &VersionRef) -> Result<u64> {
    match version {
        VersionRef::Number(n) => Ok(*n),
        VersionRef::Alias(a) => secret.aliases.get(a).copied().ok_or_else(|| {
            Error::NotFound(format!(
                "Secret Version [{}/versions/{}] not found.",
                secret_name(&secret.id),
                a.chars().take(64).collect::<String>()
            ))
        }),
        VersionRef::Latest => c
            .query_row(
                "SELECT MAX(number) FROM versions WHERE secret = ?1",
                [&secret.id],
                |r| r.get::<_, Option<u64>>(0),
            )
            .map_err(sqlite_error)?
            .ok_or_else(|| not_found(&secret.id)),
    }
}

pub(super) fn change_state(
    c: &mut Connection,
    id: &str,
    number: u64,
    change: StateChange,
) -> Result<SecretVersion> {
    let tx = immediate(c)?;
    let secret = load_secret(&tx, id)?;
    let current = load_version(&tx, id, number)?.version;
    let name = version_name(id, number);
    if current.state == VersionState::Destroyed {
        return Err(Error::FailedPrecondition(format!(
            "Secret Version [{name}] is in DESTROYED state."
        )));
    }
    match change {
        StateChange::Enable | StateChange::Disable => {
            let state = if change == StateChange::Enable {
                VersionState::Enabled
            } else {
                VersionState::Disabled
            };
            tx.execute(
                "UPDATE versions SET state = ?1 WHERE secret = ?2 AND number = ?3",
                params![state.api_name(), id, number],
            )
            .map_err(sqlite_error)?;
        }
        StateChange::Destroy => {
            let aliases: Vec<&str> = secret
                .aliases
                .iter()
                .filter(|&(_, &n)| n == number)
                .map(|(a, _)| a.as_str())
                .collect();
            if !aliases.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "Secret Version [{name}] has aliases ({}); move them before destroying it",
                    aliases.join(", ")
                )));
            }
            tx.execute(
                "UPDATE versions SET state = 'DESTROYED', destroy_time = ?1, sealed = NULL, crc32c = NULL
                 WHERE secret = ?2 AND number = ?3",
                params![ts(now()), id, number],
            )
            .map_err(sqlite_error)?;
        }
    }
    let v = load_version(&tx, id, number)?.version;
    tx.commit().map_err(sqlite_error)?;
    Ok(v)
}

pub(super) fn apply_update(
    c: &mut Connection,
    id: &str,
    update: SecretUpdate,
    etag: Option<&str>,
) -> Result<Secret> {
    let tx = immediate(c)?;
    let mut secret = load_secret(&tx, id)?;
    if let Some(expected) = etag
        && expected != secret.etag
    {
        // What Secret Manager answers (FAILED_PRECONDITION, HTTP 400):
        // https://cloud.google.com/secret-manager/docs/etags
        return Err(Error::FailedPrecondition(format!(
            "The etag provided does not match the current etag of Secret [{}]: {expected} was read, it is now {}",
            secret_name(id),
            secret.etag
        )));
    }
    if let Some(aliases) = update.aliases {
        for (alias, &n) in &aliases {
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM versions WHERE secret = ?1 AND number = ?2",
                    params![id, n],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sqlite_error)?;
            match state.as_deref() {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "version alias {alias:?} points to {}, which does not exist",
                        version_name(id, n)
                    )));
                }
                Some("DESTROYED") => {
                    return Err(Error::FailedPrecondition(format!(
                        "version alias {alias:?} points to {}, which is destroyed",
                        version_name(id, n)
                    )));
                }
                Some(_) => {}
            }
        }
        secret.aliases = aliases;
    }
    if let Some(annotations) = update.annotations {
        secret.annotations = annotations;
    }
    secret.etag = new_etag();
    tx.execute(
        "UPDATE secrets SET aliases = ?1, annotations = ?2, etag = ?3 WHERE id = ?4",
        params![
            to_json(&secret.aliases)?,
            to_json(&secret.annotations)?,
            secret.etag,
            id
        ],
    )
    .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    Ok(secret)
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("cannot encode metadata: {e}")))
}
