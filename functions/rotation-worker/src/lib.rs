//! rotation-worker: rotates the gateway's secrets and the KMS key, and
//! announces every change on `patchpanda-rotation-events`.
//!
//! Each rotation runs four resumable steps (create, set, test, finish; see
//! [`protocol`]) whose state lives in the secret's own annotations, guarded by
//! its etag, so any worker can pick up where a crashed one stopped. The
//! [`Rotator`] is the library the HTTP handlers and the `patchpanda` CLI share.

pub mod error;
pub mod events;
pub mod finish;
pub mod github;
pub mod handlers;
pub mod kinds;
pub mod protocol;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use patchpanda_shared::bus::Bus;
use patchpanda_shared::config::{Config, ConfigError, Env};
use patchpanda_shared::kms::Kms;
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use patchpanda_shared::secrets::SecretStore;
use serde::Serialize;

pub use error::RotationError;
pub use finish::{DueReport, FinishReport};
pub use github::{AppApi, AppApiError, AppFactory, GitHubSettings};
pub use handlers::app;
pub use protocol::{CrashPoint, Step};
pub use status::StatusReport;

/// The time source; tests move it forward instead of sleeping.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How the rotator behaves. [`Settings::from_config`] reads the deployment's;
/// tests build their own.
#[derive(Clone)]
pub struct Settings {
    pub secret_prefix: String,
    /// Our identity, put on notices so the alerter can match audit entries.
    pub principal: String,
    /// How long `previous` stays valid after a rotation (PATCHPANDA_ROTATION_GRACE).
    pub grace: Duration,
    /// How long disabled versions are kept before destruction (PATCHPANDA_RETENTION).
    pub retention: Duration,
    /// Age at which a hand-made credential is due (PATCHPANDA_KEY_MAX_AGE).
    pub key_max_age: Duration,
    /// How long a rotation lease lasts without being renewed; a crashed
    /// worker's rotation is taken over once it lapses.
    pub lease_ttl: Duration,
    /// How long a step failing with retryable errors is retried on later
    /// triggers before the rotation is rolled back instead.
    pub rotation_timeout: Duration,
    /// How long to wait, after announcing a new `pending` webhook secret,
    /// before GitHub starts signing with it: readers must learn the pending
    /// version first, or deliveries signed with it would be refused
    /// (PATCHPANDA_ROTATION_PROPAGATION, default 2s; zero in tests).
    pub propagation: Duration,
    /// The GitHub App, when one is configured (GITHUB_APP_ID).
    pub github: Option<GitHubSettings>,
    pub clock: Clock,
    /// Fault injection for tests: the attempt stops dead at this point, with
    /// no clean-up, as if the process had been killed there.
    pub crash_at: Option<CrashPoint>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("secret_prefix", &self.secret_prefix)
            .field("principal", &self.principal)
            .field("grace", &self.grace)
            .field("retention", &self.retention)
            .field("key_max_age", &self.key_max_age)
            .field("lease_ttl", &self.lease_ttl)
            .field("rotation_timeout", &self.rotation_timeout)
            .field("propagation", &self.propagation)
            .field("github", &self.github)
            .field("crash_at", &self.crash_at)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_KEY_MAX_AGE: Duration = Duration::from_secs(365 * 86400);
pub const DEFAULT_PROPAGATION: Duration = Duration::from_secs(2);
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_ROTATION_TIMEOUT: Duration = Duration::from_secs(3600);

impl Settings {
    /// Defaults for everything but the prefix and identity; no GitHub App.
    pub fn new(secret_prefix: &str, principal: &str) -> Self {
        Self {
            secret_prefix: secret_prefix.to_string(),
            principal: principal.to_string(),
            grace: Duration::from_secs(3600),
            retention: Duration::from_secs(30 * 86400),
            key_max_age: DEFAULT_KEY_MAX_AGE,
            lease_ttl: DEFAULT_LEASE_TTL,
            rotation_timeout: DEFAULT_ROTATION_TIMEOUT,
            propagation: Duration::ZERO,
            github: None,
            clock: Arc::new(Utc::now),
            crash_at: None,
        }
    }

    /// The deployment's settings: the shared [`Config`] plus
    /// PATCHPANDA_KEY_MAX_AGE from `env`.
    pub fn from_config(config: &Config, env: &Env) -> Result<Self, ConfigError> {
        let mut s = Self::new(&config.secret_prefix, &config.principal);
        s.grace = config.rotation_grace;
        s.retention = config.retention;
        s.key_max_age = env.duration_or("PATCHPANDA_KEY_MAX_AGE", DEFAULT_KEY_MAX_AGE)?;
        s.propagation = env.duration_or("PATCHPANDA_ROTATION_PROPAGATION", DEFAULT_PROPAGATION)?;
        s.github = config
            .github_app_id
            .as_deref()
            .map(|id| GitHubSettings::rest(&config.github_api_url, id));
        Ok(s)
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    pub fn secret_id(&self, logical: &str) -> String {
        names::secret_id(&self.secret_prefix, logical)
    }
}

/// How one rotation (or rollback) ended. The CLI prints it as a table or JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RotationOutcome {
    /// Logical name (`webhook-secret`, ..., `kms-key`).
    pub secret: String,
    pub rotation_id: String,
    /// `rotated` or `rolled_back`.
    pub result: NoticeEvent,
    /// The version now current (KMS: primary).
    pub version: Option<u64>,
    /// The version it replaced.
    pub previous_version: Option<u64>,
    pub emergency: bool,
    /// Until when the replaced version stays valid (none when emergency).
    pub grace_until: Option<DateTime<Utc>>,
    /// Whether this finished a rotation a crashed or paused attempt began.
    pub resumed: bool,
    /// What people should know: skipped steps, what to do next.
    pub detail: Option<String>,
}

/// Rotates, rolls back, finishes and reports on the gateway's secrets.
pub struct Rotator {
    pub(crate) store: Arc<dyn SecretStore>,
    pub(crate) kms: Arc<dyn Kms>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) settings: Settings,
    /// KMS keys carry no annotations to hold a lease in; within one process
    /// this keeps two KMS rotations apart (across processes the rotation
    /// adopts a version a concurrent one created instead of adding another).
    pub(crate) kms_lock: tokio::sync::Mutex<()>,
}

impl Rotator {
    pub fn new(
        store: Arc<dyn SecretStore>,
        kms: Arc<dyn Kms>,
        bus: Arc<dyn Bus>,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            kms,
            bus,
            settings,
            kms_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.settings.now()
    }

    /// A notice stamped with our identity and clock.
    pub(crate) fn notice(
        &self,
        secret: &str,
        event: NoticeEvent,
        rotation_id: &str,
    ) -> RotationNotice {
        let mut n = RotationNotice::new(secret, event, rotation_id);
        n.principal = Some(self.settings.principal.clone());
        n.time = self.now();
        n
    }

    pub(crate) async fn publish(&self, notice: &RotationNotice) -> Result<(), RotationError> {
        self.bus
            .publish(names::TOPIC_ROTATION_EVENTS, notice.to_message())
            .await?;
        tracing::info!(
            secret = %notice.secret,
            event = %notice.event,
            version = ?notice.version,
            previous_version = ?notice.previous_version,
            rotation_id = %notice.rotation_id,
            detail = notice.detail.as_deref().unwrap_or(""),
            "rotation notice published"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_environment() {
        let env = Env::from_pairs([
            ("PATCHPANDA_ROTATION_GRACE", "2h"),
            ("PATCHPANDA_RETENTION", "7d"),
            ("PATCHPANDA_KEY_MAX_AGE", "90d"),
            ("GITHUB_APP_ID", "42"),
        ]);
        let config = Config::from_env(&env, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let s = Settings::from_config(&config, &env).unwrap();
        assert_eq!(s.grace, Duration::from_secs(7200));
        assert_eq!(s.retention, Duration::from_secs(7 * 86400));
        assert_eq!(s.key_max_age, Duration::from_secs(90 * 86400));
        assert_eq!(s.github.as_ref().unwrap().app_id, "42");
        assert!(s.github.as_ref().unwrap().is_this_app(42));
        assert!(!s.github.as_ref().unwrap().is_this_app(43));

        let none = Env::default();
        let config = Config::from_env(&none, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let s = Settings::from_config(&config, &none).unwrap();
        assert!(s.github.is_none());
        assert_eq!(s.key_max_age, DEFAULT_KEY_MAX_AGE);

        let bad = Env::from_pairs([("PATCHPANDA_KEY_MAX_AGE", "forever")]);
        let config = Config::from_env(&bad, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let err = Settings::from_config(&config, &bad).unwrap_err();
        assert_eq!(err.variable, "PATCHPANDA_KEY_MAX_AGE");
    }
}
