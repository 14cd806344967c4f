//! rotation-worker's integration tests: the Rotator against the shared
//! doubles (`patchpanda_shared::testing`: the in-memory Secret Manager held
//! to the store contract, a recording bus, a hand-moved clock, `Flaky` to
//! make the store or KMS fail), the local KMS keyring, and a stub GitHub on
//! 127.0.0.1 that checks the App JWT like GitHub does. One module per topic.

mod doubles;
mod support;

mod announced;
mod crash;
mod finish;
mod handlers;
mod kms;
mod lease;
mod local_backend;
mod rollback;
mod rotate;
mod service_account;
mod status;
mod uploads;

use patchpanda_shared::names;

const WH: &str = names::WEBHOOK_SECRET;
const PK: &str = names::GITHUB_PRIVATE_KEY;
