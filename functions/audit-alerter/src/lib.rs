//! audit-alerter: Cloud Audit Logs entries (Secret Manager, Cloud KMS, IAM)
//! and rotation notices in, alerts out.
//!
//! [`Alerter`] is the service: settings, the rule engine and its state
//! (dedup, announced rotations, spike counters, suppression) and the sinks,
//! built with no I/O. [`handlers`] holds its routes' handlers; [`app`] is
//! the production wiring.

pub mod alert;
mod app;
pub(crate) mod capped;
pub mod clock;
pub(crate) mod dedup;
pub(crate) mod delivery;
pub(crate) mod entry;
pub mod handlers;
pub(crate) mod identity;
pub(crate) mod outbox;
pub(crate) mod rotations;
pub(crate) mod rules;
mod service;
pub mod settings;
pub mod sinks;
pub(crate) mod suppress;

use std::time::Duration;

pub use alert::{Alert, Rule, Severity};
pub use app::app;
#[cfg(feature = "testing")]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use entry::Malformed;
pub use service::{Alerter, Analysis, Outcome, TickReport};
pub use settings::Settings;

/// The service name when K_SERVICE is not set.
pub const SERVICE: &str = "audit-alerter";
/// Audit-log entries from the log sink's topic (push).
pub const ROUTE_AUDIT_LOG: &str = "/events/audit-log";
/// Rotation notices from `patchpanda-rotation-events` (push).
pub const ROUTE_ROTATION: &str = "/events/rotation";
/// Time-driven work (contract 5), called by Cloud Scheduler every minute.
pub const ROUTE_TICK: &str = "/tasks/tick";

/// How often the local stack's background ticker runs the time-driven work
/// (held changes, summaries, the self-check, pending alerts). On Cloud Run
/// the scheduler calls [`ROUTE_TICK`] instead: a background task there may
/// be starved of CPU between requests.
pub const TICK_EVERY: Duration = Duration::from_secs(30);
