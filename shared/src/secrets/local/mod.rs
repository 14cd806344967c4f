//! The local Secret Manager: `<home>/secrets.db`, mirroring Secret Manager's
//! semantics so the gcp backend passes the same contract suite.
//!
//! - Versions are numbered from 1 per secret and never reused; states are
//!   ENABLED, DISABLED, DESTROYED (terminal: the payload is erased, the
//!   metadata kept). Only ENABLED versions can be accessed.
//! - `latest` is the most recently created version, whatever its state (as
//!   in Secret Manager: if it is disabled, accessing `latest` fails).
//! - Aliases map to existing, not destroyed versions; a version an alias
//!   points to cannot be destroyed (move the alias first).
//! - The etag belongs to the secret resource: it changes when the secret's
//!   own fields change (create, UpdateSecret), not when versions are added or
//!   change state, which are separate resources in Secret Manager. A
//!   read-modify-write of aliases therefore survives a concurrent add.
//! - Every payload is sealed (envelope encryption through the KMS) with the
//!   version's full name as AAD, so payloads cannot be swapped between rows;
//!   a CRC32C of the plaintext is stored and verified on access.
//! - Every change is one `BEGIN IMMEDIATE` transaction in a WAL database with
//!   `synchronous=FULL`: a crash loses nothing committed, and several
//!   processes can share the home.
//! - Every call is audited and every change announced by the
//!   [`Audited`] decorator around the SQL storage ([`sql`]).
//!
//! Naming and size rules are [`crate::secrets::rules`]; the rules that need
//! the stored state are in [`rows`].

pub(crate) mod rows;
pub mod sql;

use std::sync::Arc;

use crate::Result;
use crate::bus::Bus;
use crate::kms::Kms;
use crate::local::Home;
use crate::local::audit::{PROJECT, Publisher};
use crate::secrets::audited::Audited;
use crate::secrets::rules::shown;

pub use crate::secrets::rules::{MAX_ALIASES, MAX_ANNOTATIONS_BYTES, MAX_PAYLOAD};
pub use sql::SqlSecretStore;

/// The local Secret Manager: the SQL storage, audited and announced.
pub type LocalSecretStore = Audited<SqlSecretStore>;

impl Audited<SqlSecretStore> {
    /// Opens `<home>/secrets.db`. Calls are audited as `principal`; audit
    /// entries and event notifications go to `bus` when there is one.
    pub fn open(
        home: &Home,
        principal: &str,
        kms: Arc<dyn Kms>,
        bus: Option<Arc<dyn Bus>>,
    ) -> Result<LocalSecretStore> {
        Ok(Audited::new(
            SqlSecretStore::open(home, kms)?,
            Publisher::new(bus, principal),
        ))
    }
}

/// `projects/local/secrets/ID`, with an invalid id cut short.
pub(crate) fn secret_name(id: &str) -> String {
    format!("projects/{PROJECT}/secrets/{}", shown(id))
}

pub(crate) fn version_name(id: &str, number: u64) -> String {
    format!("{}/versions/{number}", secret_name(id))
}

#[cfg(test)]
mod tests;
