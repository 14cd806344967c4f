//! Production wiring.

use crate::prelude::*;

#[tokio::test]
async fn app_builds_on_the_local_backend() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([("PATCHPANDA_HOME", dir.path().to_str().unwrap())]);
    let config = Config::from_env(&env, names::PRINCIPAL_AUDIT_ALERTER).unwrap();
    let app = audit_alerter::app(config, env).await.expect("app builds");
    assert_eq!(app.service(), audit_alerter::SERVICE);
}

#[tokio::test]
async fn a_bad_alerter_setting_stops_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("PATCHPANDA_HOME", dir.path().to_str().unwrap()),
        (settings::ENV_SUPPRESS_WINDOW, "soonish"),
    ]);
    let config = Config::from_env(&env, names::PRINCIPAL_AUDIT_ALERTER).unwrap();
    let err = audit_alerter::app(config, env)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().starts_with(settings::ENV_SUPPRESS_WINDOW),
        "{err}"
    );
}
