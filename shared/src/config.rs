//! Every setting from the environment, validated once at start. A bad value
//! stops start-up with one line naming the variable and what it expects.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::names;

/// A snapshot of environment variables. Functions read settings only from
/// here, so tests and the local stack can hand each function its own.
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The value, treating an empty string as unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    pub fn string_or(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// A comma-separated list, trimmed, empties dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn duration_or(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v.trim())
                .map_err(|_| ConfigError::new(key, "a duration such as 90s, 15m, 1h or 30d", v)),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::new(key, "true or false", &v)),
        }
    }

    pub fn parse_or<T: std::str::FromStr>(
        &self,
        key: &str,
        default: T,
        expects: &str,
    ) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(key, expects, v)),
        }
    }
}

/// One line naming the variable, what it expects, and what it got. The value
/// is never echoed for variables that could hold secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: expected {expects}{got}")]
pub struct ConfigError {
    pub variable: String,
    pub expects: String,
    got: String,
}

impl ConfigError {
    pub fn new(variable: &str, expects: &str, got: &str) -> Self {
        let shown: String = got.chars().take(60).collect();
        Self {
            variable: variable.to_string(),
            expects: expects.to_string(),
            got: format!(", got {shown:?}"),
        }
    }

    /// For a missing value, or one too sensitive to echo.
    pub fn missing(variable: &str, expects: &str) -> Self {
        Self {
            variable: variable.to_string(),
            expects: expects.to_string(),
            got: String::new(),
        }
    }
}

/// How long the runtime lets one request run (humantime, e.g. `600s`).
pub const ENV_REQUEST_TIMEOUT: &str = "PATCHPANDA_REQUEST_TIMEOUT";

/// Cloud Run's longest request timeout: 60 minutes
/// (https://cloud.google.com/run/docs/configuring/request-timeout).
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Everything under one folder on this machine.
    Local { home: PathBuf },
    /// Secret Manager, Cloud KMS and Pub/Sub of this project.
    Gcp { project: String },
}

/// The settings every function shares (docs/design.md, Environment). Function-
/// specific settings are read by the function from the same [`Env`].
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub backend: Backend,
    pub secret_prefix: String,
    pub kms_location: String,
    pub kms_key_ring: String,
    pub kms_key: String,
    pub github_app_id: Option<String>,
    pub github_api_url: String,
    /// Expected `aud` of push/scheduler tokens; None = the request's own URL.
    pub push_audience: Option<String>,
    pub push_service_accounts: Vec<String>,
    pub rotation_grace: Duration,
    pub retention: Duration,
    pub reader_principals: Vec<String>,
    pub rotator_principals: Vec<String>,
    /// The identity this process acts as (PATCHPANDA_PRINCIPAL): on the
    /// local backend the store's caller; on gcp infra sets it to the
    /// service's runtime service account, the name audit entries carry.
    pub principal: String,
    pub debug: bool,
    /// PATCHPANDA_REQUEST_TIMEOUT: how long the runtime lets one request
    /// run. Infra sets it to the Cloud Run service's own request timeout;
    /// None = the function's default (see `AppBuilder::default_request_timeout`).
    pub request_timeout: Option<Duration>,
    /// K_SERVICE / K_REVISION when on Cloud Run.
    pub service: Option<String>,
    pub revision: Option<String>,
    /// PUBSUB_EMULATOR_HOST on the local backend: the bus is Pub/Sub's
    /// emulator (refused on gcp).
    pub pubsub_emulator: Option<crate::bus::emulator::PubsubEmulator>,
}

impl Config {
    /// Reads and validates everything at once. `default_principal` is the
    /// identity of the calling function (used by the local backend).
    pub fn from_env(env: &Env, default_principal: &str) -> Result<Self, ConfigError> {
        let port = env.parse_or("PORT", 8080u16, "a TCP port number (1-65535)")?;
        if port == 0 {
            return Err(ConfigError::new("PORT", "a TCP port number (1-65535)", "0"));
        }
        let backend = match env.get("PATCHPANDA_BACKEND").unwrap_or("local") {
            "local" => Backend::Local {
                home: PathBuf::from(env.string_or("PATCHPANDA_HOME", "./.patchpanda")),
            },
            "gcp" => Backend::Gcp {
                project: env
                    .get("GOOGLE_CLOUD_PROJECT")
                    .ok_or_else(|| {
                        ConfigError::missing(
                            "GOOGLE_CLOUD_PROJECT",
                            "the project id (required with PATCHPANDA_BACKEND=gcp)",
                        )
                    })?
                    .to_string(),
            },
            other => {
                return Err(ConfigError::new(
                    "PATCHPANDA_BACKEND",
                    "`local` or `gcp`",
                    other,
                ));
            }
        };
        let github_api_url = env
            .string_or("GITHUB_API_URL", "https://api.github.com")
            .trim_end_matches('/')
            .to_string();
        match url::Url::parse(&github_api_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(ConfigError::new(
                    "GITHUB_API_URL",
                    "an http(s) URL",
                    &github_api_url,
                ));
            }
        }
        let github_app_id = env.get("GITHUB_APP_ID").map(|s| s.trim().to_string());
        if let Some(id) = &github_app_id
            && !(id.chars().all(|c| c.is_ascii_digit()) || id.starts_with("Iv"))
        {
            return Err(ConfigError::new(
                "GITHUB_APP_ID",
                "the App's numeric id or its client id (Iv...)",
                id,
            ));
        }
        let local = matches!(backend, Backend::Local { .. });
        let default_list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut reader_principals = env.list("PATCHPANDA_READER_PRINCIPALS");
        if reader_principals.is_empty() && local {
            reader_principals = default_list(&[
                names::PRINCIPAL_WEBHOOK_INGEST,
                names::PRINCIPAL_ROTATION_WORKER,
                names::PRINCIPAL_AUDIT_ALERTER,
            ]);
        }
        let mut rotator_principals = env.list("PATCHPANDA_ROTATOR_PRINCIPALS");
        if rotator_principals.is_empty() && local {
            rotator_principals = default_list(&[names::PRINCIPAL_ROTATION_WORKER]);
        }
        if let Some(aud) = env.get("PATCHPANDA_PUSH_AUDIENCE")
            && url::Url::parse(aud).is_err()
        {
            return Err(ConfigError::new(
                "PATCHPANDA_PUSH_AUDIENCE",
                "the service URL the tokens are minted for",
                aud,
            ));
        }
        let request_timeout = match env.get(ENV_REQUEST_TIMEOUT) {
            None => None,
            Some(_) => {
                let t = env.duration_or(ENV_REQUEST_TIMEOUT, Duration::ZERO)?;
                if t.is_zero() || t > MAX_REQUEST_TIMEOUT {
                    return Err(ConfigError::new(
                        ENV_REQUEST_TIMEOUT,
                        "a duration from 1s to 60m (Cloud Run's longest request timeout)",
                        env.get(ENV_REQUEST_TIMEOUT).unwrap_or_default(),
                    ));
                }
                Some(t)
            }
        };
        // On Cloud Run (K_SERVICE is set) a function's identity is its
        // runtime service account: the name audit entries carry and the
        // alerter's allow-lists list. A local default there would make every
        // rotation notice name an identity no audit entry ever carries.
        if !local && env.get("K_SERVICE").is_some() && env.get("PATCHPANDA_PRINCIPAL").is_none() {
            return Err(ConfigError::missing(
                "PATCHPANDA_PRINCIPAL",
                "the service account email this service runs as (infra/terraform/run.tf sets it)",
            ));
        }
        let pubsub_emulator = crate::bus::emulator::PubsubEmulator::from_env(
            env,
            matches!(backend, Backend::Local { .. }),
        )?;
        Ok(Config {
            pubsub_emulator,
            port,
            backend,
            secret_prefix: env.string_or("PATCHPANDA_SECRET_PREFIX", names::DEFAULT_SECRET_PREFIX),
            kms_location: env.string_or("PATCHPANDA_KMS_LOCATION", names::KMS_LOCATION),
            kms_key_ring: env.string_or("PATCHPANDA_KMS_KEY_RING", names::KMS_KEY_RING),
            kms_key: env.string_or("PATCHPANDA_KMS_KEY", names::KMS_CRYPTO_KEY),
            github_app_id,
            github_api_url,
            push_audience: env.get("PATCHPANDA_PUSH_AUDIENCE").map(String::from),
            push_service_accounts: env.list("PATCHPANDA_PUSH_SERVICE_ACCOUNTS"),
            rotation_grace: env
                .duration_or("PATCHPANDA_ROTATION_GRACE", Duration::from_secs(3600))?,
            retention: env.duration_or("PATCHPANDA_RETENTION", Duration::from_secs(30 * 86400))?,
            reader_principals,
            rotator_principals,
            principal: env.string_or("PATCHPANDA_PRINCIPAL", default_principal),
            debug: env.bool_or("DEBUG", false)?,
            request_timeout,
            service: env.get("K_SERVICE").map(String::from),
            revision: env.get("K_REVISION").map(String::from),
        })
    }

    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local { .. })
    }

    /// The project id: the gcp project, or `local`.
    pub fn project(&self) -> &str {
        match &self.backend {
            Backend::Gcp { project } => project,
            Backend::Local { .. } => "local",
        }
    }

    /// Secret Manager id of a logical name.
    pub fn secret_id(&self, logical: &str) -> String {
        names::secret_id(&self.secret_prefix, logical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_cloud_run_a_gcp_service_names_its_service_account_or_does_not_start() {
        let gcp = [
            ("PATCHPANDA_BACKEND", "gcp"),
            ("GOOGLE_CLOUD_PROJECT", "p"),
            ("K_SERVICE", "patchpanda-webhook-ingest"),
        ];
        let err = Config::from_env(&Env::from_pairs(gcp), names::PRINCIPAL_WEBHOOK_INGEST)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PATCHPANDA_PRINCIPAL"), "{err}");
        let sa = "patchpanda-webhook-ingest@p.iam.gserviceaccount.com";
        let mut with = gcp.to_vec();
        with.push(("PATCHPANDA_PRINCIPAL", sa));
        let c = Config::from_env(&Env::from_pairs(with), names::PRINCIPAL_WEBHOOK_INGEST).unwrap();
        assert_eq!(c.principal, sa);
    }

    #[test]
    fn defaults_are_local_and_sane() {
        let c = Config::from_env(&Env::default(), "x@patchpanda.local").unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(
            c.backend,
            Backend::Local {
                home: PathBuf::from("./.patchpanda")
            }
        );
        assert_eq!(c.rotation_grace, Duration::from_secs(3600));
        assert_eq!(c.secret_id("webhook-secret"), "patchpanda-webhook-secret");
        assert_eq!(
            c.rotator_principals,
            vec![names::PRINCIPAL_ROTATION_WORKER.to_string()]
        );
        assert_eq!(c.principal, "x@patchpanda.local");
        assert_eq!(c.request_timeout, None);
        let c = Config::from_env(
            &Env::from_pairs([("PATCHPANDA_REQUEST_TIMEOUT", "600s")]),
            "x",
        )
        .unwrap();
        assert_eq!(c.request_timeout, Some(Duration::from_secs(600)));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            ("PORT", "http"),
            ("PATCHPANDA_BACKEND", "aws"),
            ("PATCHPANDA_ROTATION_GRACE", "soon"),
            ("DEBUG", "maybe"),
            ("GITHUB_API_URL", "ftp://x"),
            ("GITHUB_APP_ID", "my app"),
            ("PATCHPANDA_REQUEST_TIMEOUT", "soon"),
            ("PATCHPANDA_REQUEST_TIMEOUT", "0s"),
            ("PATCHPANDA_REQUEST_TIMEOUT", "61m"),
        ];
        for (k, v) in cases {
            let err = Config::from_env(&Env::from_pairs([(k, v)]), "x").unwrap_err();
            assert_eq!(err.variable, k);
            assert!(err.to_string().starts_with(k), "{err}");
        }
    }

    #[test]
    fn gcp_needs_a_project() {
        let err =
            Config::from_env(&Env::from_pairs([("PATCHPANDA_BACKEND", "gcp")]), "x").unwrap_err();
        assert_eq!(err.variable, "GOOGLE_CLOUD_PROJECT");
        let ok = Config::from_env(
            &Env::from_pairs([
                ("PATCHPANDA_BACKEND", "gcp"),
                ("GOOGLE_CLOUD_PROJECT", "p1"),
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(ok.project(), "p1");
        assert!(ok.reader_principals.is_empty());
    }
}
