//! The alerter's settings: shared [`Config`] (readers, rotators, names) plus
//! its own environment variables and an optional TOML file
//! (`PATCHPANDA_ALERTER_CONFIG`). Lists from the file and the environment are
//! joined; for single values the environment wins, so a deployment can
//! override a checked-in file without editing it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use patchpanda_shared::SecretValue;
use patchpanda_shared::config::{Config, ConfigError, Env};
use patchpanda_shared::names;
use serde::Deserialize;

use crate::alert::{Rule, Severity};
pub use crate::identity::{PrincipalSet, normalize_principal};

pub const ENV_CONFIG: &str = "PATCHPANDA_ALERTER_CONFIG";
pub const ENV_SUPPRESS_WINDOW: &str = "PATCHPANDA_ALERT_SUPPRESS_WINDOW";
pub const ENV_GATEWAY_ACCOUNTS: &str = "PATCHPANDA_GATEWAY_SERVICE_ACCOUNTS";
pub const ENV_DATA_ACCESS_SILENCE: &str = "PATCHPANDA_ALERT_DATA_ACCESS_SILENCE";
pub const ENV_DISABLED_RULES: &str = "PATCHPANDA_ALERT_DISABLED_RULES";
pub const ENV_SLACK_URL: &str = "PATCHPANDA_ALERT_SLACK_WEBHOOK_URL";
pub const ENV_PAGERDUTY_KEY: &str = "PATCHPANDA_ALERT_PAGERDUTY_ROUTING_KEY";
pub const ENV_PAGERDUTY_URL: &str = "PATCHPANDA_ALERT_PAGERDUTY_URL";
/// The least severe alert PagerDuty is sent (P0..P3); below it an alert is
/// recorded (log, `patchpanda-alerts`, Slack, webhook) but pages nobody.
pub const ENV_PAGERDUTY_MIN_SEVERITY: &str = "PATCHPANDA_ALERT_PAGERDUTY_MIN_SEVERITY";
/// P3 is for the record: a routine-but-noted event must not wake anyone.
pub const DEFAULT_PAGERDUTY_MIN_SEVERITY: crate::alert::Severity = crate::alert::Severity::P2;
pub const ENV_WEBHOOK_URL: &str = "PATCHPANDA_ALERT_WEBHOOK_URL";
pub const ENV_WEBHOOK_SECRET: &str = "PATCHPANDA_ALERT_WEBHOOK_SECRET";
/// Operators whose announced changes (`announced` notices) do not page.
pub const ENV_OPERATOR_PRINCIPALS: &str = "PATCHPANDA_OPERATOR_PRINCIPALS";
/// Who else may encrypt/decrypt with the gateway's key (besides the
/// Secret Manager service agent and the gateway's accounts).
pub const ENV_KMS_USERS: &str = "PATCHPANDA_ALERT_KMS_USERS";
/// The key-based account rotation-worker rotates as `service-account-key`
/// (the worker's variable of the same name): its key creations and
/// deletions are settled against that kind's rotations.
pub const ENV_SA_KEY_ACCOUNT: &str = "PATCHPANDA_SA_KEY_ACCOUNT";
/// The name prefix of the gateway's Cloud Run services, Pub/Sub topics and
/// subscriptions, and log sink (infra/terraform names them `patchpanda-*`).
pub const ENV_INFRA_PREFIX: &str = "PATCHPANDA_ALERT_INFRA_PREFIX";

/// Secret Manager's service agent, `service-<project number>@gcp-sa-secretmanager...`,
/// encrypts and decrypts with the key for CMEK.
pub const SECRET_MANAGER_AGENT_DOMAIN: &str = "*@gcp-sa-secretmanager.iam.gserviceaccount.com";

pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleSettings {
    pub enabled: bool,
    pub severity: Option<Severity>,
    /// Folding window for this rule; None = the global suppress window.
    pub suppress_window: Option<Duration>,
}

/// "More than `factor` times its own recent rate, and at least `min_count`".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeSettings {
    /// The window counted against the baseline.
    pub window: Duration,
    /// How much history before `window` makes the baseline.
    pub baseline: Duration,
    pub factor: f64,
    pub min_count: u64,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// How long a push waits for sinks before it is acknowledged anyway;
    /// slower deliveries go on in the background.
    pub ack_wait: Duration,
    /// Attempts per sink per alert, the first included.
    pub attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Per HTTP request.
    pub timeout: Duration,
}

/// Where alerts go besides the log and `patchpanda-alerts`. The Slack and
/// webhook URLs carry their own credentials, so they are kept as secrets too.
#[derive(Debug, Clone, Default)]
pub struct SinkSettings {
    pub slack_url: Option<SecretValue>,
    pub pagerduty_routing_key: Option<SecretValue>,
    pub pagerduty_url: String,
    /// None: [`DEFAULT_PAGERDUTY_MIN_SEVERITY`].
    pub pagerduty_min_severity: Option<crate::alert::Severity>,
    pub webhook_url: Option<SecretValue>,
    /// Signs the generic webhook's body (HMAC-SHA256), when set.
    pub webhook_secret: Option<SecretValue>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub project: String,
    pub secret_prefix: String,
    pub kms_key_ring: String,
    pub kms_key: String,
    pub readers: PrincipalSet,
    pub rotators: PrincipalSet,
    /// Normalized emails or unique ids of the gateway's service accounts.
    pub gateway_accounts: PrincipalSet,
    /// Who may mint tokens for the gateway's accounts besides themselves.
    pub token_minters: PrincipalSet,
    /// Operators whose announced changes are expected (contract 8).
    pub operators: PrincipalSet,
    /// Who may use the key besides the gateway's accounts (the Secret
    /// Manager service agent by default).
    pub kms_users: PrincipalSet,
    /// The account whose keys rotation-worker rotates (`service-account-key`).
    pub sa_key_accounts: PrincipalSet,
    /// Name prefix of the gateway's services, subscriptions, topics, sink.
    pub infra_prefix: String,
    /// The log sink that feeds the alerter.
    pub audit_sink: String,
    /// Cap of every map keyed by attacker-chosen values (fingerprints,
    /// pending entries, secrets with counters).
    pub state_capacity: usize,
    pub rules: BTreeMap<Rule, RuleSettings>,
    pub suppress_window: Duration,
    pub read_spike: SpikeSettings,
    pub signature_spike: SpikeSettings,
    /// No Data Access entry for the secrets for this long -> a warning.
    pub data_access_max_silence: Duration,
    /// After a rotation ends, its late audit entries still count as announced.
    pub rotation_grace: Duration,
    /// A rotation never announced as ended stops covering changes after this.
    pub rotation_max: Duration,
    /// How long a rotator change waits for a notice that arrives after it.
    pub announce_hold: Duration,
    /// How many logName+insertId keys are remembered for deduplication.
    pub dedup_capacity: usize,
    pub delivery: DeliverySettings,
    pub sinks: SinkSettings,
}

impl Settings {
    /// Defaults for `config`, with no file and no alerter variables.
    pub fn defaults(config: &Config) -> Self {
        let gateway_accounts = if config.is_local() {
            PrincipalSet::new([
                names::PRINCIPAL_WEBHOOK_INGEST,
                names::PRINCIPAL_ROTATION_WORKER,
                names::PRINCIPAL_AUDIT_ALERTER,
            ])
        } else {
            PrincipalSet::default()
        };
        Self {
            project: config.project().to_string(),
            secret_prefix: config.secret_prefix.clone(),
            kms_key_ring: config.kms_key_ring.clone(),
            kms_key: config.kms_key.clone(),
            readers: PrincipalSet::new(&config.reader_principals),
            rotators: PrincipalSet::new(&config.rotator_principals),
            gateway_accounts,
            token_minters: PrincipalSet::default(),
            // Locally the CLI acts as the default operator.
            operators: if config.is_local() {
                PrincipalSet::new([names::PRINCIPAL_OPERATOR_DEFAULT])
            } else {
                PrincipalSet::default()
            },
            kms_users: PrincipalSet::new([SECRET_MANAGER_AGENT_DOMAIN]),
            sa_key_accounts: PrincipalSet::default(),
            infra_prefix: names::DEFAULT_SECRET_PREFIX.to_string(),
            audit_sink: names::TOPIC_AUDIT_LOGS.to_string(),
            state_capacity: 10_000,
            rules: Rule::ALL
                .iter()
                .map(|r| {
                    (
                        *r,
                        RuleSettings {
                            enabled: true,
                            severity: None,
                            suppress_window: None,
                        },
                    )
                })
                .collect(),
            suppress_window: Duration::from_secs(600),
            read_spike: SpikeSettings {
                window: Duration::from_secs(300),
                baseline: Duration::from_secs(3600),
                factor: 5.0,
                min_count: 30,
            },
            signature_spike: SpikeSettings {
                window: Duration::from_secs(300),
                baseline: Duration::from_secs(3600),
                factor: 5.0,
                min_count: 20,
            },
            data_access_max_silence: Duration::from_secs(6 * 3600),
            rotation_grace: Duration::from_secs(300),
            rotation_max: Duration::from_secs(2 * 3600),
            announce_hold: Duration::from_secs(120),
            dedup_capacity: 100_000,
            delivery: DeliverySettings {
                ack_wait: Duration::from_secs(5),
                attempts: 4,
                backoff: Duration::from_millis(500),
                backoff_max: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
            },
            sinks: SinkSettings {
                pagerduty_url: DEFAULT_PAGERDUTY_URL.to_string(),
                ..Default::default()
            },
        }
    }

    /// Defaults, then the TOML file, then the environment.
    pub fn from_env(config: &Config, env: &Env) -> Result<Self, ConfigError> {
        let mut s = Self::defaults(config);
        if let Some(path) = env.get(ENV_CONFIG) {
            let file = FileSettings::read(Path::new(path.trim()))?;
            file.apply(&mut s)?;
        }
        s.apply_env(env)?;
        Ok(s)
    }

    fn apply_env(&mut self, env: &Env) -> Result<(), ConfigError> {
        self.suppress_window = env.duration_or(ENV_SUPPRESS_WINDOW, self.suppress_window)?;
        self.data_access_max_silence =
            env.duration_or(ENV_DATA_ACCESS_SILENCE, self.data_access_max_silence)?;
        self.gateway_accounts.extend(env.list(ENV_GATEWAY_ACCOUNTS));
        self.operators.extend(env.list(ENV_OPERATOR_PRINCIPALS));
        self.kms_users.extend(env.list(ENV_KMS_USERS));
        self.sa_key_accounts.extend(env.list(ENV_SA_KEY_ACCOUNT));
        if let Some(p) = env.get(ENV_INFRA_PREFIX) {
            self.infra_prefix = p.trim().to_string();
        }
        for id in env.list(ENV_DISABLED_RULES) {
            let rule: Rule = id
                .parse()
                .map_err(|_| ConfigError::new(ENV_DISABLED_RULES, &rule_list(), &id))?;
            if let Some(r) = self.rules.get_mut(&rule) {
                r.enabled = false;
            }
        }
        if let Some(url) = env.get(ENV_SLACK_URL) {
            self.sinks.slack_url = Some(secret_url(ENV_SLACK_URL, url)?);
        }
        if let Some(url) = env.get(ENV_WEBHOOK_URL) {
            self.sinks.webhook_url = Some(secret_url(ENV_WEBHOOK_URL, url)?);
        }
        if let Some(key) = env.get(ENV_PAGERDUTY_KEY) {
            self.sinks.pagerduty_routing_key = Some(SecretValue::from(key.trim().to_string()));
        }
        if let Some(secret) = env.get(ENV_WEBHOOK_SECRET) {
            self.sinks.webhook_secret = Some(SecretValue::from(secret.to_string()));
        }
        if let Some(v) = env.get(ENV_PAGERDUTY_MIN_SEVERITY) {
            use crate::alert::Severity::*;
            self.sinks.pagerduty_min_severity =
                Some(match v.trim().to_ascii_uppercase().as_str() {
                    "P0" => P0,
                    "P1" => P1,
                    "P2" => P2,
                    "P3" => P3,
                    _ => {
                        return Err(ConfigError::new(
                            ENV_PAGERDUTY_MIN_SEVERITY,
                            "one of P0, P1, P2, P3 (the least severe alert that pages)",
                            v,
                        ));
                    }
                });
        }
        if let Some(url) = env.get(ENV_PAGERDUTY_URL) {
            // Not a secret: the key travels in the body, not the URL.
            match url::Url::parse(url.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    self.sinks.pagerduty_url = url.trim().to_string()
                }
                _ => return Err(ConfigError::new(ENV_PAGERDUTY_URL, "an http(s) URL", url)),
            }
        }
        Ok(())
    }

    /// Whether `rule` runs at all.
    pub fn enabled(&self, rule: Rule) -> bool {
        self.rules.get(&rule).is_none_or(|r| r.enabled)
    }

    pub fn severity(&self, rule: Rule) -> Severity {
        self.rules
            .get(&rule)
            .and_then(|r| r.severity)
            .unwrap_or_else(|| rule.default_severity())
    }

    pub fn window_for(&self, rule: Rule) -> Duration {
        self.rules
            .get(&rule)
            .and_then(|r| r.suppress_window)
            .unwrap_or(self.suppress_window)
    }
}

fn rule_list() -> String {
    let ids: Vec<&str> = Rule::ALL.iter().map(|r| r.id()).collect();
    format!("rule ids from: {}", ids.join(", "))
}

/// Validates a URL that embeds a credential without ever echoing it.
fn secret_url(var: &str, url: &str) -> Result<SecretValue, ConfigError> {
    match url::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(SecretValue::from(url.trim().to_string()))
        }
        _ => Err(ConfigError::missing(
            var,
            "an http(s) URL (value not shown: it may hold a token)",
        )),
    }
}

/// The TOML file, as written. Unknown keys are errors: a misspelled rule
/// that silently does nothing is worse than a refused start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    suppress_window: Option<String>,
    data_access_max_silence: Option<String>,
    rotation_grace: Option<String>,
    rotation_max: Option<String>,
    announce_hold: Option<String>,
    dedup_capacity: Option<usize>,
    #[serde(default)]
    reader_principals: Vec<String>,
    #[serde(default)]
    rotator_principals: Vec<String>,
    #[serde(default)]
    gateway_service_accounts: Vec<String>,
    #[serde(default)]
    token_minters: Vec<String>,
    #[serde(default)]
    operator_principals: Vec<String>,
    #[serde(default)]
    kms_users: Vec<String>,
    infra_prefix: Option<String>,
    audit_sink: Option<String>,
    state_capacity: Option<usize>,
    delivery: Option<FileDelivery>,
    #[serde(default)]
    rules: BTreeMap<String, FileRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDelivery {
    ack_wait: Option<String>,
    attempts: Option<u32>,
    backoff: Option<String>,
    backoff_max: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    enabled: Option<bool>,
    severity: Option<String>,
    suppress_window: Option<String>,
    // Thresholds, for the spike rules only.
    window: Option<String>,
    baseline: Option<String>,
    factor: Option<f64>,
    min_count: Option<u64>,
}

impl FileSettings {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(ENV_CONFIG, &format!("a readable TOML file ({e})"), &shown)
        })?;
        toml::from_str(&text).map_err(|e| {
            let first = e
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].lines().count().max(1);
                    format!(" at line {line}")
                })
                .unwrap_or_default();
            ConfigError::new(
                ENV_CONFIG,
                &format!("valid alerter settings: {first}{at}"),
                &shown,
            )
        })
    }

    fn apply(self, s: &mut Settings) -> Result<(), ConfigError> {
        let dur = |field: &str, v: &Option<String>, d: Duration| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(d),
                Some(text) => humantime::parse_duration(text.trim()).map_err(|_| {
                    ConfigError::new(
                        ENV_CONFIG,
                        &format!("{field} as a duration such as 90s, 15m or 1h"),
                        text,
                    )
                }),
            }
        };
        s.suppress_window = dur("suppress_window", &self.suppress_window, s.suppress_window)?;
        s.data_access_max_silence = dur(
            "data_access_max_silence",
            &self.data_access_max_silence,
            s.data_access_max_silence,
        )?;
        s.rotation_grace = dur("rotation_grace", &self.rotation_grace, s.rotation_grace)?;
        s.rotation_max = dur("rotation_max", &self.rotation_max, s.rotation_max)?;
        s.announce_hold = dur("announce_hold", &self.announce_hold, s.announce_hold)?;
        if let Some(n) = self.dedup_capacity {
            s.dedup_capacity = n.max(1);
        }
        s.readers.extend(&self.reader_principals);
        s.rotators.extend(&self.rotator_principals);
        s.gateway_accounts.extend(&self.gateway_service_accounts);
        s.token_minters.extend(&self.token_minters);
        s.operators.extend(&self.operator_principals);
        s.kms_users.extend(&self.kms_users);
        if let Some(p) = &self.infra_prefix {
            s.infra_prefix = p.trim().to_string();
        }
        if let Some(n) = &self.audit_sink {
            s.audit_sink = n.trim().to_string();
        }
        if let Some(n) = self.state_capacity {
            s.state_capacity = n.max(16);
        }
        if let Some(d) = &self.delivery {
            s.delivery.ack_wait = dur("delivery.ack_wait", &d.ack_wait, s.delivery.ack_wait)?;
            s.delivery.backoff = dur("delivery.backoff", &d.backoff, s.delivery.backoff)?;
            s.delivery.backoff_max = dur(
                "delivery.backoff_max",
                &d.backoff_max,
                s.delivery.backoff_max,
            )?;
            s.delivery.timeout = dur("delivery.timeout", &d.timeout, s.delivery.timeout)?;
            if let Some(a) = d.attempts {
                s.delivery.attempts = a.clamp(1, 20);
            }
        }
        for (id, fr) in &self.rules {
            let rule: Rule = id.parse().map_err(|_| {
                ConfigError::new(ENV_CONFIG, &format!("[rules.*] {}", rule_list()), id)
            })?;
            let entry = s.rules.entry(rule).or_insert(RuleSettings {
                enabled: true,
                severity: None,
                suppress_window: None,
            });
            if let Some(e) = fr.enabled {
                entry.enabled = e;
            }
            if let Some(sev) = &fr.severity {
                entry.severity = Some(sev.parse().map_err(|_| {
                    ConfigError::new(ENV_CONFIG, &format!("rules.{id}.severity as P0..P3"), sev)
                })?);
            }
            if fr.suppress_window.is_some() {
                entry.suppress_window = Some(dur(
                    &format!("rules.{id}.suppress_window"),
                    &fr.suppress_window,
                    s.suppress_window,
                )?);
            }
            let thresholds = fr.window.is_some()
                || fr.baseline.is_some()
                || fr.factor.is_some()
                || fr.min_count.is_some();
            let spike = match rule {
                Rule::SecretReadSpike => Some(&mut s.read_spike),
                Rule::SignatureFailureSpike => Some(&mut s.signature_spike),
                Rule::DataAccessSilent => {
                    s.data_access_max_silence = dur(
                        &format!("rules.{id}.window"),
                        &fr.window,
                        s.data_access_max_silence,
                    )?;
                    if fr.baseline.is_some() || fr.factor.is_some() || fr.min_count.is_some() {
                        return Err(ConfigError::new(
                            ENV_CONFIG,
                            "rules.data-access-silent to take only enabled, severity, suppress_window, window",
                            id,
                        ));
                    }
                    None
                }
                _ if thresholds => {
                    return Err(ConfigError::new(
                        ENV_CONFIG,
                        "window/baseline/factor/min_count only on secret-read-spike, signature-failure-spike (and window on data-access-silent)",
                        id,
                    ));
                }
                _ => None,
            };
            if let Some(sp) = spike {
                sp.window = dur(&format!("rules.{id}.window"), &fr.window, sp.window)?;
                sp.baseline = dur(&format!("rules.{id}.baseline"), &fr.baseline, sp.baseline)?;
                if let Some(f) = fr.factor {
                    if !(f.is_finite() && f >= 1.0) {
                        return Err(ConfigError::new(
                            ENV_CONFIG,
                            &format!("rules.{id}.factor as a number >= 1"),
                            &f.to_string(),
                        ));
                    }
                    sp.factor = f;
                }
                if let Some(m) = fr.min_count {
                    sp.min_count = m.max(1);
                }
                if sp.window.is_zero() || sp.baseline.is_zero() {
                    return Err(ConfigError::new(
                        ENV_CONFIG,
                        &format!("rules.{id}.window and baseline above zero"),
                        "0s",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
