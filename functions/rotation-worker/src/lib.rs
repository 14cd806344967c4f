//! rotation-worker: rotates the gateway's secrets and the KMS key, and
//! announces every change on `patchpanda-rotation-events`.
//!
//! Each rotation runs four resumable steps (create, set, test, finish; see
//! [`protocol`]) whose state lives in the secret's own annotations, guarded by
//! its etag, so any worker can pick up where a crashed one stopped. The
//! [`Rotator`] is the library the routes ([`RotationWorker`]) and the
//! `patchpanda` CLI share; [`app`] is the production wiring.
//!
//! - `POST /rotate` ([`ROUTE_ROTATE`]): rotate one secret now.
//! - `POST /events/secret-manager` ([`ROUTE_SECRET_EVENTS`]): Secret
//!   Manager's rotation schedule and uploads.
//! - `POST /tasks/finish` ([`ROUTE_FINISH`]): grace and retention, hourly.
//! - `POST /tasks/due-check` ([`ROUTE_DUE_CHECK`]): daily.

pub mod error;
pub mod events;
pub mod finish;
pub mod github;
pub mod iam;
pub mod kinds;
pub mod kms;
pub mod protocol;
pub mod rotator;
pub mod service;
pub mod settings;
pub mod status;

use patchpanda_shared::backends::Backends;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::runtime::App;
use patchpanda_shared::runtime::server::BoxError;

pub use error::RotationError;
pub use finish::{DueReport, FinishReport};
pub use github::{AppApi, AppApiError, AppFactory, GitHubSettings};
pub use protocol::{CrashPoint, RollbackOptions, Step};
pub use rotator::{RotationOutcome, Rotator};
pub use service::{RotateRequest, RotationWorker};
pub use settings::{
    Clock, DEFAULT_GITHUB_TIMEOUT, DEFAULT_KEY_MAX_AGE, DEFAULT_LEASE_TTL, DEFAULT_PROPAGATION,
    DEFAULT_ROTATION_TIMEOUT, Settings,
};
pub use status::StatusReport;

pub const SERVICE: &str = "rotation-worker";
pub const ROUTE_ROTATE: &str = "/rotate";
pub const ROUTE_SECRET_EVENTS: &str = "/events/secret-manager";
pub const ROUTE_FINISH: &str = "/tasks/finish";
pub const ROUTE_DUE_CHECK: &str = "/tasks/due-check";

/// The function as Cloud Run (or the local stack) runs it.
pub async fn app(config: Config, env: Env) -> Result<App, BoxError> {
    let settings = Settings::from_env(&config, &env)?;
    let b = Backends::open(&config).await?;
    let worker = RotationWorker::new(Rotator::new(b.secrets, b.kms, b.bus, settings));
    Ok(worker.app(&config)?)
}
