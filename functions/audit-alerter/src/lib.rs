//! audit-alerter: Cloud Audit Logs entries (Secret Manager, Cloud KMS, IAM)
//! and rotation notices in, alerts out.
//!
//! [`Alerter`] is the service: settings, the rule engine and its state
//! (dedup, announced rotations, spike counters, suppression) and the sinks,
//! built with no I/O. [`handlers`] holds its routes' handlers; [`app`] is
//! the production wiring.

pub mod alert;
mod app;
pub mod clock;
pub mod dedup;
pub mod delivery;
pub mod entry;
pub mod handlers;
pub mod identity;
pub mod rotations;
pub mod rules;
mod service;
pub mod settings;
pub mod sinks;
pub mod suppress;

use std::time::Duration;

pub use alert::{Alert, Rule, Severity};
pub use app::app;
pub use clock::{Clock, ManualClock, SystemClock};
pub use entry::Malformed;
pub use service::{Alerter, Analysis};
pub use settings::Settings;

/// The service name when K_SERVICE is not set.
pub const SERVICE: &str = "audit-alerter";
/// Audit-log entries from the log sink's topic (push).
pub const ROUTE_AUDIT_LOG: &str = "/events/audit-log";
/// Rotation notices from `patchpanda-rotation-events` (push).
pub const ROUTE_ROTATION: &str = "/events/rotation";

/// How often time-driven work (held changes, summaries, the self-check)
/// runs: from a background ticker, and on any message when it is due
/// (Cloud Run may starve background tasks of CPU between requests).
pub const TICK_EVERY: Duration = Duration::from_secs(30);
