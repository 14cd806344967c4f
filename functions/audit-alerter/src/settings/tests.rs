//! Settings read from the environment: defaults, overrides, and the
//! errors a person can act on.

use super::*;

fn local() -> Config {
    Config::from_env(&Env::default(), names::PRINCIPAL_AUDIT_ALERTER).unwrap()
}

#[test]
fn local_defaults_know_the_local_identities() {
    let s = Settings::from_env(&local(), &Env::default()).unwrap();
    assert!(s.readers.contains("webhook-ingest@patchpanda.local"));
    assert!(!s.readers.contains("operator@patchpanda.local"));
    assert!(s.rotators.contains("rotation-worker@patchpanda.local"));
    assert!(
        s.gateway_accounts
            .contains("webhook-ingest@patchpanda.local")
    );
    assert_eq!(s.suppress_window, Duration::from_secs(600));
    assert!(s.sinks.slack_url.is_none());
    assert_eq!(s.sinks.pagerduty_url, DEFAULT_PAGERDUTY_URL);
    assert!(Rule::ALL.iter().all(|r| s.enabled(*r)));
}

#[test]
fn file_and_env_combine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerter.toml");
    std::fs::write(
        &path,
        r#"
suppress_window = "1m"
reader_principals = ["ci@proj.iam.gserviceaccount.com"]
gateway_service_accounts = ["gw@proj.iam.gserviceaccount.com"]
[delivery]
attempts = 2
[rules.permission-denied]
severity = "P3"
suppress_window = "30m"
[rules.secret-read-spike]
factor = 3.0
min_count = 5
window = "1m"
[rules.sa-key-used]
enabled = false
"#,
    )
    .unwrap();
    let env = Env::from_pairs([
        (ENV_CONFIG, path.to_str().unwrap()),
        (ENV_SUPPRESS_WINDOW, "2m"),
        (ENV_GATEWAY_ACCOUNTS, "other@proj.iam.gserviceaccount.com"),
        (ENV_DISABLED_RULES, "token-minted"),
        (ENV_PAGERDUTY_KEY, "0123456789abcdef0123456789abcdef"),
    ]);
    let s = Settings::from_env(&local(), &env).unwrap();
    assert_eq!(s.suppress_window, Duration::from_secs(120), "env wins");
    assert!(s.readers.contains("ci@proj.iam.gserviceaccount.com"));
    assert!(s.readers.contains("webhook-ingest@patchpanda.local"));
    assert!(
        s.gateway_accounts
            .contains("gw@proj.iam.gserviceaccount.com")
    );
    assert!(
        s.gateway_accounts
            .contains("other@proj.iam.gserviceaccount.com")
    );
    assert_eq!(s.delivery.attempts, 2);
    assert_eq!(s.severity(Rule::PermissionDenied), Severity::P3);
    assert_eq!(
        s.window_for(Rule::PermissionDenied),
        Duration::from_secs(1800)
    );
    assert_eq!(s.window_for(Rule::SecretDeleted), Duration::from_secs(120));
    assert_eq!(s.read_spike.factor, 3.0);
    assert_eq!(s.read_spike.min_count, 5);
    assert_eq!(s.read_spike.window, Duration::from_secs(60));
    assert!(!s.enabled(Rule::SaKeyUsed));
    assert!(!s.enabled(Rule::TokenMinted));
    assert!(s.enabled(Rule::SecretDeleted));
    let key = s.sinks.pagerduty_routing_key.as_ref().unwrap();
    assert!(
        !format!("{s:?}").contains("0123456789abcdef"),
        "Debug must not show the key"
    );
    assert_eq!(key.len(), 32);
}

#[test]
fn operators_kms_users_and_infra_names_read_from_the_environment() {
    let gcp = Config::from_env(
        &Env::from_pairs([("PATCHPANDA_BACKEND", "gcp"), ("GOOGLE_CLOUD_PROJECT", "p")]),
        names::PRINCIPAL_AUDIT_ALERTER,
    );
    let defaults = Settings::from_env(&local(), &Env::default()).unwrap();
    assert!(
        defaults
            .operators
            .contains(names::PRINCIPAL_OPERATOR_DEFAULT)
    );
    assert!(
        defaults
            .kms_users
            .contains("service-123@gcp-sa-secretmanager.iam.gserviceaccount.com")
    );
    assert_eq!(defaults.infra_prefix, "patchpanda-");
    assert_eq!(defaults.audit_sink, "patchpanda-audit-logs");
    let env = Env::from_pairs([
        (ENV_OPERATOR_PRINCIPALS, "user:Alice@example.com"),
        (ENV_KMS_USERS, "backup@p.iam.gserviceaccount.com"),
        (ENV_INFRA_PREFIX, "pp-"),
    ]);
    let s = Settings::from_env(&local(), &env).unwrap();
    assert!(s.operators.contains("alice@example.com"));
    assert!(s.kms_users.contains("backup@p.iam.gserviceaccount.com"));
    assert_eq!(s.infra_prefix, "pp-");
    let s = Settings::from_env(&gcp.unwrap(), &Env::default()).unwrap();
    assert!(s.operators.is_empty(), "no operator by default on gcp");
}

#[test]
fn bad_settings_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let bad = [
        "[rules.no-such-rule]\nenabled = false\n",
        "[rules.secret-deleted]\nseverity = \"P9\"\n",
        "[rules.secret-deleted]\nfactor = 2.0\n",
        "surprise = 1\n",
        "suppress_window = \"soon\"\n",
        "[rules.secret-read-spike]\nfactor = 0.5\n",
    ];
    for (i, text) in bad.iter().enumerate() {
        let path = dir.path().join(format!("{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let env = Env::from_pairs([(ENV_CONFIG, path.to_str().unwrap())]);
        let err = Settings::from_env(&local(), &env).unwrap_err();
        assert_eq!(err.variable, ENV_CONFIG, "{text}: {err}");
    }
    let missing = Env::from_pairs([(ENV_CONFIG, "/nonexistent/alerter.toml")]);
    assert_eq!(
        Settings::from_env(&local(), &missing).unwrap_err().variable,
        ENV_CONFIG
    );
    let err = Settings::from_env(
        &local(),
        &Env::from_pairs([(ENV_SLACK_URL, "not a url with hooks-token-123")]),
    )
    .unwrap_err();
    assert_eq!(err.variable, ENV_SLACK_URL);
    assert!(!err.to_string().contains("hooks-token-123"));
    let err = Settings::from_env(
        &local(),
        &Env::from_pairs([(ENV_PAGERDUTY_MIN_SEVERITY, "urgent")]),
    )
    .unwrap_err();
    assert_eq!(err.variable, ENV_PAGERDUTY_MIN_SEVERITY);
    let s = Settings::from_env(
        &local(),
        &Env::from_pairs([(ENV_PAGERDUTY_MIN_SEVERITY, "p1")]),
    )
    .unwrap();
    assert_eq!(
        s.sinks.pagerduty_min_severity,
        Some(crate::alert::Severity::P1)
    );
    let err = Settings::from_env(
        &local(),
        &Env::from_pairs([(ENV_DISABLED_RULES, "secret-deleted,bogus")]),
    )
    .unwrap_err();
    assert_eq!(err.variable, ENV_DISABLED_RULES);
}
