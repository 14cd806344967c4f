//! webhook-ingest's own settings, read once at start from the same [`Env`]
//! as the shared [`patchpanda_shared::config::Config`]. A bad value stops
//! start-up with one line naming the variable (see the README's "Limits a
//! deployer can tune").

use std::time::Duration;

use patchpanda_shared::config::{ConfigError, Env};

/// `repository` publishes each delivery with the repository as ordering key.
pub const ENV_ORDERING: &str = "PATCHPANDA_ORDERING";
/// How long a publish may take before the delivery is answered 503.
pub const ENV_PUBLISH_TIMEOUT: &str = "PATCHPANDA_INGEST_PUBLISH_TIMEOUT";
/// Delivery ids remembered per instance for deduplication.
pub const ENV_DEDUPE_CAPACITY: &str = "PATCHPANDA_INGEST_DEDUPE_CAPACITY";

/// GitHub's payload cap, and the route's body limit.
pub const BODY_LIMIT: usize = 25 * 1024 * 1024;

/// What a webhook-ingest instance is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub ordering_by_repository: bool,
    /// GitHub gives up after 10 s; a publish still pending by then is
    /// abandoned and answered 503.
    pub publish_timeout: Duration,
    pub dedupe_capacity: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ordering_by_repository: false,
            publish_timeout: Duration::from_secs(8),
            dedupe_capacity: crate::dedupe::DEFAULT_CAPACITY,
        }
    }
}

impl Settings {
    /// Reads and validates every setting; unset ones take the defaults.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let d = Settings::default();
        let ordering_by_repository = match env.get(ENV_ORDERING).map(str::trim) {
            None | Some("off") | Some("none") => false,
            Some("repository") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    ENV_ORDERING,
                    "`repository` or `off`",
                    other,
                ));
            }
        };
        let s = Settings {
            ordering_by_repository,
            publish_timeout: env.duration_or(ENV_PUBLISH_TIMEOUT, d.publish_timeout)?,
            dedupe_capacity: env.parse_or(
                ENV_DEDUPE_CAPACITY,
                d.dedupe_capacity,
                "a number of delivery ids (at least 1)",
            )?,
        };
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.publish_timeout.is_zero() {
            return Err(ConfigError::new(
                ENV_PUBLISH_TIMEOUT,
                "a duration above zero, below GitHub's 10 s",
                "0s",
            ));
        }
        if self.dedupe_capacity == 0 {
            return Err(ConfigError::new(
                ENV_DEDUPE_CAPACITY,
                "a number of delivery ids (at least 1)",
                "0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults() {
        let s = Settings::from_env(&Env::default()).unwrap();
        assert_eq!(s, Settings::default());
        assert!(!s.ordering_by_repository);
        assert_eq!(s.publish_timeout, Duration::from_secs(8));
    }

    #[test]
    fn values_are_read() {
        let s = Settings::from_env(&env(&[
            (ENV_ORDERING, "repository"),
            (ENV_DEDUPE_CAPACITY, "10"),
            (ENV_PUBLISH_TIMEOUT, "5s"),
        ]))
        .unwrap();
        assert!(s.ordering_by_repository);
        assert_eq!(s.dedupe_capacity, 10);
        assert_eq!(s.publish_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            (ENV_ORDERING, "random"),
            (ENV_PUBLISH_TIMEOUT, "0s"),
            (ENV_PUBLISH_TIMEOUT, "soon"),
            (ENV_DEDUPE_CAPACITY, "0"),
            (ENV_DEDUPE_CAPACITY, "many"),
        ];
        for (k, v) in cases {
            let err = Settings::from_env(&env(&[(k, v)])).unwrap_err();
            assert_eq!(err.variable, k, "{k}={v}: {err}");
            assert!(err.to_string().starts_with(k), "{err}");
        }
    }
}
