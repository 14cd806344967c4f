//! The rows of `kms.db`: its schema, version states, and the changes that
//! run inside one transaction (state transitions, scheduled rotation,
//! scheduled destruction).

use chrono::{DateTime, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use zeroize::Zeroizing;

use super::{KEY_LEN, KEY_NAME, ROTATION_PERIOD, internal, version_name};
use crate::kms::{KeyInfo, KeyVersion, KeyVersionState};
use crate::local::sqlite_error;
use crate::{Error, Result};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS key_versions (
    number       INTEGER PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('ENABLED','DISABLED','DESTROY_SCHEDULED','DESTROYED')),
    material     BLOB,
    create_time  TEXT NOT NULL,
    destroy_time TEXT
);
CREATE TABLE IF NOT EXISTS crypto_key (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    primary_version    INTEGER REFERENCES key_versions(number),
    create_time        TEXT NOT NULL,
    next_rotation_time TEXT NOT NULL
);
";

pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| Error::DataLoss(format!("kms.db holds a malformed time: {e}")))
}

pub(super) fn state_str(s: KeyVersionState) -> &'static str {
    match s {
        KeyVersionState::Enabled => "ENABLED",
        KeyVersionState::Disabled => "DISABLED",
        KeyVersionState::DestroyScheduled => "DESTROY_SCHEDULED",
        KeyVersionState::Destroyed => "DESTROYED",
    }
}

pub(super) fn parse_state(s: &str) -> Result<KeyVersionState> {
    Ok(match s {
        "ENABLED" => KeyVersionState::Enabled,
        "DISABLED" => KeyVersionState::Disabled,
        "DESTROY_SCHEDULED" => KeyVersionState::DestroyScheduled,
        "DESTROYED" => KeyVersionState::Destroyed,
        other => {
            return Err(Error::DataLoss(format!(
                "kms.db holds an unknown state {other:?}"
            )));
        }
    })
}

pub(super) fn to_version(number: u64, state: &str, create_time: &str) -> Result<KeyVersion> {
    Ok(KeyVersion {
        number,
        state: parse_state(state)?,
        create_time: parse_ts(create_time)?,
    })
}

pub(super) fn insert_version(c: &Connection, number: u64, now: DateTime<Utc>) -> Result<()> {
    let mut material = Zeroizing::new([0u8; KEY_LEN]);
    SystemRandom::new()
        .fill(&mut material[..])
        .map_err(|_| Error::Internal("no randomness for a new key version".into()))?;
    c.execute(
        "INSERT INTO key_versions (number, state, material, create_time) VALUES (?1, 'ENABLED', ?2, ?3)",
        params![number, &material[..], ts(now)],
    )
    .map_err(sqlite_error)?;
    Ok(())
}

pub(super) fn get_version(c: &Connection, number: u64) -> Result<KeyVersion> {
    let row: Option<(String, String)> = c
        .query_row(
            "SELECT state, create_time FROM key_versions WHERE number = ?1",
            [number],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sqlite_error)?;
    let (s, t) = row.ok_or_else(|| Error::NotFound(version_name(number)))?;
    to_version(number, &s, &t)
}

/// The material of an enabled version; any other state is a precondition
/// failure, as Cloud KMS reports it.
pub(super) fn usable_material(c: &Connection, number: u64) -> Result<Zeroizing<Vec<u8>>> {
    let (state, material): (String, Option<Vec<u8>>) = c
        .query_row(
            "SELECT state, material FROM key_versions WHERE number = ?1",
            [number],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sqlite_error)?;
    let material = material.map(Zeroizing::new);
    let state = parse_state(&state)?;
    if state != KeyVersionState::Enabled {
        return Err(Error::FailedPrecondition(format!(
            "{} is not enabled (state {})",
            version_name(number),
            state_str(state)
        )));
    }
    match material {
        Some(m) if m.len() == KEY_LEN => Ok(m),
        _ => Err(Error::DataLoss(format!(
            "{} has no key material",
            version_name(number)
        ))),
    }
}

pub(super) fn key_info(c: &Connection) -> Result<KeyInfo> {
    let (primary, next): (Option<u64>, String) = c
        .query_row(
            "SELECT primary_version, next_rotation_time FROM crypto_key WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sqlite_error)?;
    let primary = primary.map(|n| get_version(c, n)).transpose()?;
    Ok(KeyInfo {
        name: KEY_NAME.to_string(),
        primary,
        rotation_period: Some(ROTATION_PERIOD),
        next_rotation_time: Some(parse_ts(&next)?),
    })
}

/// Applies a state transition to one version in its own transaction.
/// `decide` sees the version and the primary and returns the new state and
/// destroy time, or why the transition is not allowed.
pub(super) fn change_version(
    c: &mut Connection,
    number: u64,
    decide: impl FnOnce(&KeyVersion, Option<u64>) -> Result<(KeyVersionState, Option<DateTime<Utc>>)>,
) -> Result<KeyVersion> {
    let tx = c
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    purge_expired(&tx, Utc::now())?;
    let v = get_version(&tx, number)?;
    let primary: Option<u64> = tx
        .query_row(
            "SELECT primary_version FROM crypto_key WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    let (state, destroy_time) = decide(&v, primary)?;
    tx.execute(
        "UPDATE key_versions SET state = ?1, destroy_time = ?2 WHERE number = ?3",
        params![state_str(state), destroy_time.map(ts), number],
    )
    .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    Ok(KeyVersion { state, ..v })
}

/// Cloud KMS's automatic rotation: once `next_rotation_time` has passed, a
/// new version becomes primary and the time moves on by whole periods.
/// Runs inside the caller's write transaction.
pub(super) fn rotate_if_due(c: &Connection, now: DateTime<Utc>) -> Result<Option<u64>> {
    let next: String = c
        .query_row(
            "SELECT next_rotation_time FROM crypto_key WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    let mut next = parse_ts(&next)?;
    if next > now {
        return Ok(None);
    }
    let period = chrono::Duration::from_std(ROTATION_PERIOD).map_err(internal)?;
    while next <= now {
        next += period;
    }
    let number: u64 = c
        .query_row(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM key_versions",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_error)?;
    insert_version(c, number, now)?;
    c.execute(
        "UPDATE crypto_key SET primary_version = ?1, next_rotation_time = ?2 WHERE id = 1",
        params![number, ts(next)],
    )
    .map_err(sqlite_error)?;
    tracing::info!(
        key = KEY_NAME,
        version = number,
        "scheduled key rotation: new primary version"
    );
    Ok(Some(number))
}

/// Versions whose scheduled destruction time has passed lose their material.
pub(super) fn purge_expired(c: &Connection, now: DateTime<Utc>) -> Result<()> {
    c.execute(
        "UPDATE key_versions SET state = 'DESTROYED', material = NULL
         WHERE state = 'DESTROY_SCHEDULED' AND destroy_time <= ?1",
        [ts(now)],
    )
    .map_err(sqlite_error)?;
    Ok(())
}
