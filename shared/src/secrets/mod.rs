//! The `SecretStore`: Secret Manager's model (secrets with numbered versions,
//! version states, aliases, annotations, etags) behind one trait, with a gcp
//! and a local backend, and the per-function cache on top.

pub mod audited;
pub mod cache;
pub mod gcp;
pub mod local;
pub mod rules;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, SecretValue};

/// Which version to read: a number, an alias, or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VersionRef {
    Number(u64),
    Alias(String),
    Latest,
}

impl VersionRef {
    pub fn alias(name: &str) -> Self {
        VersionRef::Alias(name.to_string())
    }
}

impl FromStr for VersionRef {
    type Err = Error;

    /// By [`rules::parse_version`]: every alias a store accepts parses.
    fn from_str(s: &str) -> Result<Self> {
        rules::parse_version(s)
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Number(n) => write!(f, "{n}"),
            VersionRef::Alias(a) => f.write_str(a),
            VersionRef::Latest => f.write_str("latest"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionState {
    Enabled,
    Disabled,
    Destroyed,
}

impl VersionState {
    /// The state as Secret Manager's API and messages spell it.
    pub fn api_name(self) -> &'static str {
        match self {
            VersionState::Enabled => "ENABLED",
            VersionState::Disabled => "DISABLED",
            VersionState::Destroyed => "DESTROYED",
        }
    }
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VersionState::Enabled => "enabled",
            VersionState::Disabled => "disabled",
            VersionState::Destroyed => "destroyed",
        })
    }
}

/// A state change of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    Enable,
    Disable,
    Destroy,
}

/// One version's metadata (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersion {
    /// The secret's id, e.g. `patchpanda-webhook-secret`.
    pub secret: String,
    pub number: u64,
    pub state: VersionState,
    pub create_time: DateTime<Utc>,
    pub destroy_time: Option<DateTime<Utc>>,
}

/// A secret's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The secret's id, e.g. `patchpanda-webhook-secret`.
    pub id: String,
    pub create_time: DateTime<Utc>,
    /// Alias -> version number (`current`, `previous`, `pending`).
    pub aliases: BTreeMap<String, u64>,
    /// Free-form metadata; the rotation worker keeps its step state here.
    pub annotations: BTreeMap<String, String>,
    /// Changes whenever the secret's metadata changes; guards updates.
    pub etag: String,
    /// When Secret Manager next sends SECRET_ROTATE, if a schedule is set.
    pub next_rotation_time: Option<DateTime<Utc>>,
    pub rotation_period: Option<std::time::Duration>,
}

/// A metadata update: each `Some` field replaces the whole map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretUpdate {
    pub aliases: Option<BTreeMap<String, u64>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A version's value with its metadata.
#[derive(Debug, Clone)]
pub struct AccessedVersion {
    pub version: SecretVersion,
    pub value: SecretValue,
}

/// Secret Manager's operations, as the gateway uses them. Secrets are named by
/// id (`patchpanda-webhook-secret`); backends add the project themselves.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Creates an empty secret. `AlreadyExists` if it is there.
    async fn create_secret(&self, id: &str) -> Result<Secret>;
    async fn get_secret(&self, id: &str) -> Result<Secret>;
    async fn list_secrets(&self) -> Result<Vec<Secret>>;
    async fn delete_secret(&self, id: &str) -> Result<()>;
    /// Adds a version holding `data` (checksummed with CRC32C end to end).
    async fn add_version(&self, id: &str, data: &[u8]) -> Result<SecretVersion>;
    /// Reads a version's value. `FailedPrecondition` if it is not enabled.
    async fn access(&self, id: &str, version: &VersionRef) -> Result<AccessedVersion>;
    async fn get_version(&self, id: &str, version: &VersionRef) -> Result<SecretVersion>;
    /// All versions, newest first.
    async fn list_versions(&self, id: &str) -> Result<Vec<SecretVersion>>;
    async fn set_state(&self, id: &str, number: u64, change: StateChange) -> Result<SecretVersion>;
    /// Replaces aliases and/or annotations. With `etag`, fails
    /// `FailedPrecondition` (Secret Manager's FAILED_PRECONDITION) if the
    /// secret changed since that etag was read; every update, even one that
    /// changes nothing, makes a new etag.
    async fn update_secret(
        &self,
        id: &str,
        update: SecretUpdate,
        etag: Option<&str>,
    ) -> Result<Secret>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Secret Manager allows upper-case aliases, and the stores set them;
    /// every alias that can be set must be nameable by `--version`.
    #[test]
    fn an_alias_that_can_be_set_parses_back() {
        for alias in ["Current", "PENDING", "x-1_Y"] {
            assert_eq!(
                alias.parse::<VersionRef>().unwrap(),
                VersionRef::Alias(alias.to_string())
            );
        }
        assert_eq!("latest".parse::<VersionRef>().unwrap(), VersionRef::Latest);
        assert!("Latest".parse::<VersionRef>().is_err());
        assert!("NEW".parse::<VersionRef>().is_err());
    }
}
