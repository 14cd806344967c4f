//! Envelope encryption keys: Cloud KMS's model (a key with numbered versions
//! and one primary) behind one trait, with a gcp and a local backend.

pub mod envelope;
pub mod gcp;
pub mod local;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Result, SecretValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyVersionState {
    Enabled,
    Disabled,
    DestroyScheduled,
    Destroyed,
}

impl fmt::Display for KeyVersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyVersionState::Enabled => "enabled",
            KeyVersionState::Disabled => "disabled",
            KeyVersionState::DestroyScheduled => "destroy-scheduled",
            KeyVersionState::Destroyed => "destroyed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub number: u64,
    pub state: KeyVersionState,
    pub create_time: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Full resource name: projects/P/locations/L/keyRings/R/cryptoKeys/K.
    pub name: String,
    pub primary: Option<KeyVersion>,
    pub rotation_period: Option<std::time::Duration>,
    pub next_rotation_time: Option<DateTime<Utc>>,
}

/// Symmetric encrypt/decrypt with the gateway's key, plus the key-version
/// management the rotation worker needs.
#[async_trait]
pub trait Kms: Send + Sync + 'static {
    /// Encrypts with the primary version. The ciphertext names its version, so
    /// `decrypt` works after the primary moves.
    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>>;
    async fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<SecretValue>;
    async fn key_info(&self) -> Result<KeyInfo>;
    async fn list_versions(&self) -> Result<Vec<KeyVersion>>;
    /// Creates a new enabled version (not yet primary).
    async fn create_version(&self) -> Result<KeyVersion>;
    async fn set_primary(&self, number: u64) -> Result<KeyInfo>;
    /// Disables a version (UpdateCryptoKeyVersion, `updateMask=state`): it
    /// neither encrypts nor decrypts until enabled again; nothing is lost.
    async fn disable_version(&self, number: u64) -> Result<KeyVersion>;
}
