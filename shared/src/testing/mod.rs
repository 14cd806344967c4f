//! Test doubles for the gateway's backends, in one place (cargo feature
//! `testing`; always on for this crate's own tests):
//!
//! - [`MemorySecretStore`]: Secret Manager's semantics in memory, held to the
//!   same contract suite as the local and gcp stores;
//! - [`RecordingBus`]: keeps every published message, per topic;
//! - [`Flaky`]: wraps a store, bus or KMS and fails the next N calls of one
//!   kind with a chosen error, counts calls, and can hold calls at a hook;
//! - [`ManualClock`]: a "now" that moves only when told to.
//!
//! Functions' tests use them with
//! `patchpanda-shared = { workspace = true, features = ["testing"] }` in
//! `[dev-dependencies]`.

mod bus;
mod clock;
mod flaky;
mod store;

pub use bus::RecordingBus;
pub use clock::ManualClock;
pub use flaky::{Call, Flaky, Hook};
pub use store::MemorySecretStore;
