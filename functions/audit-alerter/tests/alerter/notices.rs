//! Rotations that need a person (contract 10) and operators' announced
//! changes (contract 8).

use crate::prelude::*;

const OPERATOR: &str = "alice@example.com";

#[tokio::test]
async fn failed_rolled_back_and_due_notices_alert_with_their_severities() {
    let h = harness();
    let mut failed = notice(
        names::GITHUB_PRIVATE_KEY,
        NoticeEvent::Failed,
        "r1",
        ROTATOR_SA,
        0,
    );
    failed.detail = Some("the uploaded key does not match the App".into());
    h.notice(&failed).await;
    let mut emergency = notice(
        names::WEBHOOK_SECRET,
        NoticeEvent::Failed,
        "r2",
        ROTATOR_SA,
        1,
    );
    emergency.emergency = true;
    h.notice(&emergency).await;
    h.notice(&notice(
        names::OIDC_CLIENT_SECRET,
        NoticeEvent::RolledBack,
        "r3",
        ROTATOR_SA,
        2,
    ))
    .await;
    h.notice(&notice(
        names::KMS_KEY,
        NoticeEvent::Due,
        "due-1",
        ROTATOR_SA,
        3,
    ))
    .await;
    h.notice(&notice(
        names::KMS_KEY,
        NoticeEvent::Started,
        "r4",
        ROTATOR_SA,
        4,
    ))
    .await;
    let got: Vec<(Rule, Severity, String)> = h
        .bus
        .alerts()
        .into_iter()
        .map(|a| (a.rule, a.severity, a.resource))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Rule::RotationFailed,
                Severity::P2,
                names::GITHUB_PRIVATE_KEY.to_string()
            ),
            (
                Rule::RotationFailed,
                Severity::P1,
                names::WEBHOOK_SECRET.to_string()
            ),
            (
                Rule::RotationRolledBack,
                Severity::P2,
                names::OIDC_CLIENT_SECRET.to_string()
            ),
            (Rule::RotationDue, Severity::P3, names::KMS_KEY.to_string()),
        ]
    );
    assert!(h.bus.alerts()[0].summary.contains("does not match the App"));
    // A redelivered notice pages no one twice.
    h.notice(&failed).await;
    assert_eq!(h.bus.alerts().len(), 4);
}

fn announced(principal: &str, logical: &str, until_secs: i64) -> RotationNotice {
    let mut n = notice(logical, NoticeEvent::Announced, "upload-1", principal, 0);
    n.until = Some(t0() + TimeDelta::seconds(until_secs));
    n
}

#[tokio::test]
async fn an_operators_announced_upload_does_not_page_but_an_unlisted_one_does() {
    let h = harness_with(test_settings(&[(
        settings::ENV_OPERATOR_PRINCIPALS,
        OPERATOR,
    )]));
    h.notice(&announced(OPERATOR, names::GITHUB_PRIVATE_KEY, 600))
        .await;
    h.ok(&version_change(
        "up-1",
        sm::ADD_SECRET_VERSION,
        OPERATOR,
        "patchpanda-github-private-key",
        60,
    ))
    .await;
    h.none();
    // Another secret, after `until`, or an impersonated operator: pages.
    h.ok(&version_change(
        "up-2",
        sm::ADD_SECRET_VERSION,
        OPERATOR,
        WEBHOOK_SECRET_ID,
        60,
    ))
    .await;
    h.ok(&version_change(
        "up-3",
        sm::DISABLE_SECRET_VERSION,
        OPERATOR,
        "patchpanda-github-private-key",
        900,
    ))
    .await;
    let mut imp = version_change(
        "up-4",
        sm::ENABLE_SECRET_VERSION,
        OPERATOR,
        "patchpanda-github-private-key",
        70,
    );
    imp["protoPayload"]["authenticationInfo"] = delegated(OPERATOR, &[HUMAN]);
    h.ok(&imp).await;
    assert_eq!(h.bus.rules(), vec![Rule::SecretVersionChanged; 3]);
    // An announcement by someone not listed covers nothing.
    h.bus.clear();
    h.notice(&announced(HUMAN, names::OIDC_CLIENT_SECRET, 600))
        .await;
    h.ok(&version_change(
        "up-5",
        sm::ADD_SECRET_VERSION,
        HUMAN,
        "patchpanda-oidc-client-secret",
        60,
    ))
    .await;
    assert_eq!(h.only_alert().rule, Rule::SecretVersionChanged);
}
