//! How the rotator behaves: the shared [`Config`] (prefix, identity, grace,
//! retention, the GitHub App) plus the variables only rotation-worker reads,
//! validated once here with one-line errors that name the variable.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use patchpanda_shared::config::{Config, ConfigError, Env};
use patchpanda_shared::names;

use crate::github::GitHubSettings;
use crate::iam::{self, ServiceAccountKeys};
use crate::protocol::CrashPoint;

/// Age at which a hand-made credential is due (default 365 days).
pub const ENV_KEY_MAX_AGE: &str = "PATCHPANDA_KEY_MAX_AGE";
/// Wait between announcing a pending webhook secret and giving it to GitHub.
pub const ENV_ROTATION_PROPAGATION: &str = "PATCHPANDA_ROTATION_PROPAGATION";
/// How long one GitHub call may take before it counts as failed (retryable).
pub const ENV_GITHUB_TIMEOUT: &str = "PATCHPANDA_GITHUB_TIMEOUT";
/// How long a rotation lease lasts without being renewed.
pub const ENV_LEASE_TTL: &str = "PATCHPANDA_ROTATION_LEASE";
/// A service account whose keys are rotated (opt-in; keyless by default).
pub const ENV_SA_KEY_ACCOUNT: &str = "PATCHPANDA_SA_KEY_ACCOUNT";

pub const DEFAULT_KEY_MAX_AGE: Duration = Duration::from_secs(365 * 86400);
pub const DEFAULT_PROPAGATION: Duration = Duration::from_secs(2);
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_ROTATION_TIMEOUT: Duration = Duration::from_secs(3600);
/// GitHub can take tens of seconds on a slow day; a call cut short while
/// GitHub still applies it leaves the rotation unsure what GitHub holds. Must
/// stay well below the lease (renewed before each call) and the request
/// timeout (600 s on Cloud Run).
pub const DEFAULT_GITHUB_TIMEOUT: Duration = Duration::from_secs(120);

/// The time source; tests move it forward instead of sleeping.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How the rotator behaves. [`Settings::from_env`] reads the deployment's;
/// tests build their own with [`Settings::new`].
#[derive(Clone)]
pub struct Settings {
    pub secret_prefix: String,
    /// Our identity, put on notices so the alerter can match audit entries.
    pub principal: String,
    /// How long `previous` stays valid after a rotation (PATCHPANDA_ROTATION_GRACE).
    pub grace: Duration,
    /// How long disabled versions are kept before destruction (PATCHPANDA_RETENTION).
    pub retention: Duration,
    /// Age at which a hand-made credential is due ([`ENV_KEY_MAX_AGE`]).
    pub key_max_age: Duration,
    /// How long a rotation lease lasts without being renewed; a crashed
    /// worker's rotation is taken over once it lapses. A lease claiming more
    /// than this from now was not written by a rotation and is not honoured.
    pub lease_ttl: Duration,
    /// How long a step failing with retryable errors is retried on later
    /// triggers before the rotation is rolled back instead.
    pub rotation_timeout: Duration,
    /// How long to wait, after announcing a new `pending` webhook secret,
    /// before GitHub starts signing with it: readers must learn the pending
    /// version first, or deliveries signed with it would be refused
    /// ([`ENV_ROTATION_PROPAGATION`], default 2s; zero in tests).
    pub propagation: Duration,
    /// The longest one GitHub call may take ([`ENV_GITHUB_TIMEOUT`]).
    pub github_timeout: Duration,
    /// The GitHub App, when one is configured (GITHUB_APP_ID).
    pub github: Option<GitHubSettings>,
    /// The key-based service account rotated as `service-account-key`
    /// ([`ENV_SA_KEY_ACCOUNT`]); none by default.
    pub service_account_keys: Option<ServiceAccountKeys>,
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
            .field("github_timeout", &self.github_timeout)
            .field("github", &self.github)
            .field("service_account_keys", &self.service_account_keys)
            .field("crash_at", &self.crash_at)
            .finish_non_exhaustive()
    }
}

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
            github_timeout: DEFAULT_GITHUB_TIMEOUT,
            github: None,
            service_account_keys: None,
            clock: Arc::new(Utc::now),
            crash_at: None,
        }
    }

    /// The deployment's settings: the shared [`Config`] plus this
    /// function's own variables from `env`.
    pub fn from_env(config: &Config, env: &Env) -> Result<Self, ConfigError> {
        let mut s = Self::new(&config.secret_prefix, &config.principal);
        s.grace = config.rotation_grace;
        s.retention = config.retention;
        s.key_max_age = env.duration_or(ENV_KEY_MAX_AGE, DEFAULT_KEY_MAX_AGE)?;
        s.propagation = env.duration_or(ENV_ROTATION_PROPAGATION, DEFAULT_PROPAGATION)?;
        s.lease_ttl = env.duration_or(ENV_LEASE_TTL, DEFAULT_LEASE_TTL)?;
        s.github_timeout = env.duration_or(ENV_GITHUB_TIMEOUT, DEFAULT_GITHUB_TIMEOUT)?;
        if s.github_timeout.is_zero() || s.github_timeout >= s.lease_ttl {
            return Err(ConfigError::new(
                ENV_GITHUB_TIMEOUT,
                &format!(
                    "a duration above zero and below the rotation lease ({})",
                    humantime::format_duration(s.lease_ttl)
                ),
                env.get(ENV_GITHUB_TIMEOUT).unwrap_or("the default"),
            ));
        }
        if let Some(account) = env.get(ENV_SA_KEY_ACCOUNT).map(str::trim)
            && !account.is_empty()
        {
            if iam::is_gateway_account(account) || !account.contains('@') {
                return Err(ConfigError::new(
                    ENV_SA_KEY_ACCOUNT,
                    "the email of a service account outside the gateway's own keyless ones",
                    account,
                ));
            }
            s.service_account_keys = Some(ServiceAccountKeys {
                account: account.to_string(),
                iam: Arc::new(iam::RestIam::new(
                    iam::IAM_API,
                    Arc::new(iam::Adc),
                    s.github_timeout,
                )),
            });
        }
        s.github = config.github_app_id.as_deref().map(|id| {
            GitHubSettings::rest_with_timeout(&config.github_api_url, id, s.github_timeout)
        });
        Ok(s)
    }

    /// The old name of [`Settings::from_env`].
    pub fn from_config(config: &Config, env: &Env) -> Result<Self, ConfigError> {
        Self::from_env(config, env)
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    pub fn secret_id(&self, logical: &str) -> String {
        names::secret_id(&self.secret_prefix, logical)
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
            (ENV_KEY_MAX_AGE, "90d"),
            (ENV_GITHUB_TIMEOUT, "90s"),
            ("GITHUB_APP_ID", "42"),
        ]);
        let config = Config::from_env(&env, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let s = Settings::from_env(&config, &env).unwrap();
        assert_eq!(s.grace, Duration::from_secs(7200));
        assert_eq!(s.retention, Duration::from_secs(7 * 86400));
        assert_eq!(s.key_max_age, Duration::from_secs(90 * 86400));
        assert_eq!(s.github_timeout, Duration::from_secs(90));
        assert_eq!(s.github.as_ref().unwrap().app_id, "42");
        assert!(s.github.as_ref().unwrap().is_this_app(42));
        assert!(!s.github.as_ref().unwrap().is_this_app(43));

        let none = Env::default();
        let config = Config::from_env(&none, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let s = Settings::from_env(&config, &none).unwrap();
        assert!(s.github.is_none());
        assert_eq!(s.key_max_age, DEFAULT_KEY_MAX_AGE);
        assert_eq!(s.github_timeout, DEFAULT_GITHUB_TIMEOUT);

        let own = Env::from_pairs([(
            ENV_SA_KEY_ACCOUNT,
            "patchpanda-rotation-worker@p.iam.gserviceaccount.com",
        )]);
        let config = Config::from_env(&own, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let err = Settings::from_env(&config, &own).unwrap_err();
        assert_eq!(err.variable, ENV_SA_KEY_ACCOUNT);
        let ci = Env::from_pairs([(ENV_SA_KEY_ACCOUNT, "ci@p.iam.gserviceaccount.com")]);
        let config = Config::from_env(&ci, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let s = Settings::from_env(&config, &ci).unwrap();
        assert_eq!(
            s.service_account_keys.unwrap().account,
            "ci@p.iam.gserviceaccount.com"
        );

        let bad = Env::from_pairs([(ENV_KEY_MAX_AGE, "forever")]);
        let config = Config::from_env(&bad, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let err = Settings::from_env(&config, &bad).unwrap_err();
        assert_eq!(err.variable, ENV_KEY_MAX_AGE);
    }

    #[test]
    fn a_github_timeout_must_fit_in_the_lease() {
        let env = Env::from_pairs([(ENV_GITHUB_TIMEOUT, "10m"), (ENV_LEASE_TTL, "5m")]);
        let config = Config::from_env(&env, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let err = Settings::from_env(&config, &env).unwrap_err();
        assert_eq!(err.variable, ENV_GITHUB_TIMEOUT);
    }
}
