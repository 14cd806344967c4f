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
/// Bytes of not-yet-verified request bodies held at once, all requests together.
pub const ENV_BODY_BUDGET: &str = "PATCHPANDA_INGEST_BODY_BUDGET";
/// Bodies up to this size are "small": they draw on a reserve that large
/// bodies cannot take, so ordinary deliveries flow during a flood.
pub const ENV_SMALL_BODY: &str = "PATCHPANDA_INGEST_SMALL_BODY";
/// How long a request body may take to arrive in full.
pub const ENV_BODY_READ_TIMEOUT: &str = "PATCHPANDA_INGEST_BODY_READ_TIMEOUT";
/// How often (at most) a request checks the webhook secret's metadata.
pub const ENV_SECRET_CHECK_INTERVAL: &str = "PATCHPANDA_INGEST_SECRET_CHECK_INTERVAL";
/// Outside an announced rotation, how often (at most) a signature mismatch
/// may re-read the webhook secret.
pub const ENV_MISMATCH_REREAD_INTERVAL: &str = "PATCHPANDA_INGEST_MISMATCH_REREAD_INTERVAL";
/// Attempts per delivery guid after which the sweeper stops redelivering.
pub const ENV_REDELIVERY_MAX_ATTEMPTS: &str = "PATCHPANDA_REDELIVERY_MAX_ATTEMPTS";

/// How many proxies in front of webhook-ingest append to X-Forwarded-For
/// (1: Cloud Run's own URL; 2: behind an external Application Load Balancer).
pub const ENV_PROXY_HOPS: &str = "PATCHPANDA_INGEST_PROXY_HOPS";

/// GitHub's payload cap, and the route's body limit.
pub const BODY_LIMIT: usize = 25 * 1024 * 1024;
/// How many maximal small bodies the small-body reserve holds.
const SMALL_RESERVE_BODIES: usize = 64;

const MIB: usize = 1024 * 1024;

/// What a webhook-ingest instance is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub ordering_by_repository: bool,
    /// GitHub gives up after 10 s; a publish still pending by then is
    /// abandoned and answered 503.
    pub publish_timeout: Duration,
    pub dedupe_capacity: usize,
    /// Bytes of request bodies held before their signature is checked.
    pub body_budget: usize,
    /// Bodies up to this many bytes use the small-body reserve.
    pub small_body: usize,
    pub body_read_timeout: Duration,
    pub secret_check_interval: Duration,
    pub mismatch_reread_interval: Duration,
    pub redelivery_max_attempts: u32,
    /// See [`ENV_PROXY_HOPS`]; 0 trusts no forwarded address.
    pub proxy_hops: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ordering_by_repository: false,
            publish_timeout: Duration::from_secs(8),
            dedupe_capacity: crate::dedupe::DEFAULT_CAPACITY,
            // Three 25 MiB bodies plus the small-body reserve: a 512 MiB
            // instance keeps well clear of its limit (README, measurements).
            body_budget: 96 * MIB,
            small_body: 256 * 1024,
            body_read_timeout: Duration::from_secs(10),
            secret_check_interval: Duration::from_secs(10),
            mismatch_reread_interval: Duration::from_secs(60),
            redelivery_max_attempts: 5,
            proxy_hops: 1,
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
            body_budget: size_or(env, ENV_BODY_BUDGET, d.body_budget)?,
            small_body: size_or(env, ENV_SMALL_BODY, d.small_body)?,
            body_read_timeout: env.duration_or(ENV_BODY_READ_TIMEOUT, d.body_read_timeout)?,
            secret_check_interval: env
                .duration_or(ENV_SECRET_CHECK_INTERVAL, d.secret_check_interval)?,
            mismatch_reread_interval: env
                .duration_or(ENV_MISMATCH_REREAD_INTERVAL, d.mismatch_reread_interval)?,
            redelivery_max_attempts: env.parse_or(
                ENV_REDELIVERY_MAX_ATTEMPTS,
                d.redelivery_max_attempts,
                "a number of attempts (at least 1)",
            )?,
            proxy_hops: env.parse_or(
                ENV_PROXY_HOPS,
                d.proxy_hops,
                "a number of proxies (0 to 5)",
            )?,
        };
        s.validate()?;
        Ok(s)
    }

    /// The part of the budget only small bodies may use.
    pub fn small_reserve(&self) -> usize {
        self.small_body.saturating_mul(SMALL_RESERVE_BODIES)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = |d: Duration, var: &str, what: &str| {
            if d.is_zero() {
                Err(ConfigError::new(var, what, "0s"))
            } else {
                Ok(())
            }
        };
        nonzero(
            self.publish_timeout,
            ENV_PUBLISH_TIMEOUT,
            "a duration above zero, below GitHub's 10 s",
        )?;
        nonzero(
            self.body_read_timeout,
            ENV_BODY_READ_TIMEOUT,
            "a duration above zero, such as 10s",
        )?;
        nonzero(
            self.secret_check_interval,
            ENV_SECRET_CHECK_INTERVAL,
            "a duration above zero, such as 10s",
        )?;
        if self.dedupe_capacity == 0 {
            return Err(ConfigError::new(
                ENV_DEDUPE_CAPACITY,
                "a number of delivery ids (at least 1)",
                "0",
            ));
        }
        if self.redelivery_max_attempts == 0 {
            return Err(ConfigError::new(
                ENV_REDELIVERY_MAX_ATTEMPTS,
                "a number of attempts (at least 1)",
                "0",
            ));
        }
        if self.proxy_hops > 5 {
            return Err(ConfigError::new(
                ENV_PROXY_HOPS,
                "a number of proxies (0 to 5)",
                &self.proxy_hops.to_string(),
            ));
        }
        if self.small_body == 0 || self.small_body > BODY_LIMIT {
            return Err(ConfigError::new(
                ENV_SMALL_BODY,
                "a size between 1 byte and 25MiB, such as 256KiB",
                &self.small_body.to_string(),
            ));
        }
        // One delivery of GitHub's maximal size must always be possible.
        let least = BODY_LIMIT + self.small_reserve();
        if self.body_budget < least {
            return Err(ConfigError::new(
                ENV_BODY_BUDGET,
                &format!(
                    "at least {} MiB (one 25 MiB body plus {} small ones of {})",
                    least.div_ceil(MIB),
                    SMALL_RESERVE_BODIES,
                    shown_size(self.small_body)
                ),
                &shown_size(self.body_budget),
            ));
        }
        Ok(())
    }
}

/// A byte size: a number with an optional unit (`B`, `KiB`, `MiB`, `GiB`,
/// or the decimal `KB`, `MB`, `GB`), e.g. `96MiB`.
fn size_or(env: &Env, key: &str, default: usize) -> Result<usize, ConfigError> {
    match env.get(key) {
        None => Ok(default),
        Some(v) => parse_size(v)
            .ok_or_else(|| ConfigError::new(key, "a size such as 96MiB, 256KiB or 1048576", v)),
    }
}

pub(crate) fn parse_size(v: &str) -> Option<usize> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: usize = number.parse().ok()?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1024,
        "mib" | "m" => MIB,
        "gib" | "g" => 1024 * MIB,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

fn shown_size(n: usize) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{}MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{}KiB", n / 1024)
    } else {
        format!("{n}B")
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
        assert_eq!(s.body_budget, 96 * MIB);
        assert_eq!(s.body_read_timeout, Duration::from_secs(10));
        assert_eq!(s.secret_check_interval, Duration::from_secs(10));
        assert_eq!(s.mismatch_reread_interval, Duration::from_secs(60));
        assert_eq!(s.redelivery_max_attempts, 5);
        assert_eq!(s.small_reserve(), 16 * MIB);
    }

    #[test]
    fn values_are_read() {
        let s = Settings::from_env(&env(&[
            (ENV_ORDERING, "repository"),
            (ENV_BODY_BUDGET, "200MiB"),
            (ENV_SMALL_BODY, "64KiB"),
            (ENV_BODY_READ_TIMEOUT, "5s"),
            (ENV_SECRET_CHECK_INTERVAL, "2s"),
            (ENV_MISMATCH_REREAD_INTERVAL, "5m"),
            (ENV_REDELIVERY_MAX_ATTEMPTS, "3"),
            (ENV_DEDUPE_CAPACITY, "10"),
            (ENV_PUBLISH_TIMEOUT, "5s"),
            (ENV_PROXY_HOPS, "2"),
        ]))
        .unwrap();
        assert_eq!(s.proxy_hops, 2);
        assert!(s.ordering_by_repository);
        assert_eq!(s.body_budget, 200 * MIB);
        assert_eq!(s.small_body, 64 * 1024);
        assert_eq!(s.body_read_timeout, Duration::from_secs(5));
        assert_eq!(s.secret_check_interval, Duration::from_secs(2));
        assert_eq!(s.mismatch_reread_interval, Duration::from_secs(300));
        assert_eq!(s.redelivery_max_attempts, 3);
        assert_eq!(s.dedupe_capacity, 10);
        assert_eq!(s.publish_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            (ENV_ORDERING, "random"),
            (ENV_BODY_BUDGET, "lots"),
            (ENV_BODY_BUDGET, "30MiB"),
            (ENV_SMALL_BODY, "0"),
            (ENV_SMALL_BODY, "26MiB"),
            (ENV_BODY_READ_TIMEOUT, "0s"),
            (ENV_BODY_READ_TIMEOUT, "soon"),
            (ENV_SECRET_CHECK_INTERVAL, "0s"),
            (ENV_REDELIVERY_MAX_ATTEMPTS, "0"),
            (ENV_REDELIVERY_MAX_ATTEMPTS, "-1"),
            (ENV_DEDUPE_CAPACITY, "0"),
            (ENV_PROXY_HOPS, "9"),
            (ENV_PROXY_HOPS, "one"),
        ];
        for (k, v) in cases {
            let err = Settings::from_env(&env(&[(k, v)])).unwrap_err();
            assert_eq!(err.variable, k, "{k}={v}: {err}");
            assert!(err.to_string().starts_with(k), "{err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Some(MIB));
        assert_eq!(parse_size("96MiB"), Some(96 * MIB));
        assert_eq!(parse_size(" 256 KiB "), Some(256 * 1024));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("1.5MiB"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("99999999999999999999"), None);
    }
}
