//! Rotation awareness: announced, late and missing notices.

use crate::prelude::*;

#[tokio::test]
async fn rotator_changes_inside_an_announced_rotation_do_not_alert() {
    let h = harness();
    h.notice(&notice(
        names::WEBHOOK_SECRET,
        NoticeEvent::Started,
        "rot-1",
        ROTATOR_SA,
        -5,
    ))
    .await;
    h.ok(&version_change(
        "r-add",
        sm::ADD_SECRET_VERSION,
        ROTATOR_SA,
        WEBHOOK_SECRET_ID,
        0,
    ))
    .await;
    h.notice(&notice(
        names::WEBHOOK_SECRET,
        NoticeEvent::Rotated,
        "rot-1",
        ROTATOR_SA,
        20,
    ))
    .await;
    // Audit entries lag: this one arrives after `rotated`, stamped just after.
    h.ok(&version_change(
        "r-alias",
        sm::DISABLE_SECRET_VERSION,
        ROTATOR_SA,
        WEBHOOK_SECRET_ID,
        30,
    ))
    .await;
    h.clock.advance(TimeDelta::minutes(5));
    assert!(h.alerter.tick().await.is_empty());
    assert_eq!(h.alerter.held(), 0);
    h.none();
}

#[tokio::test]
async fn the_same_change_without_a_rotation_alerts() {
    let h = harness();
    let change = version_change(
        "r-add",
        sm::ADD_SECRET_VERSION,
        ROTATOR_SA,
        WEBHOOK_SECRET_ID,
        0,
    );
    // Held briefly in case the notice is late: nothing yet, and the entry
    // is not acknowledged (a restart must not lose it).
    assert!(h.nacked(&change).await.contains("held"));
    h.none();
    assert_eq!(h.alerter.held(), 1);
    // Redelivered before the hold ends: still held.
    h.clock.advance(TimeDelta::seconds(30));
    assert!(h.nacked(&change).await.contains("held"));
    h.none();
    // Redelivered after: the alert goes out and the entry is acknowledged.
    h.clock.advance(TimeDelta::minutes(3));
    h.ok(&change).await;
    assert_eq!(h.alerter.held(), 0);
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::RotatorOutsideRotation);
    assert_eq!(a.severity, Severity::P1);
    assert_eq!(a.principal, ROTATOR_SA);
    assert!(a.summary.contains("no rotation announced"), "{}", a.summary);
    // A rotation of another secret does not cover this one.
    h.bus.clear();
    h.notice(&notice(
        names::GITHUB_PRIVATE_KEY,
        NoticeEvent::Started,
        "rot-2",
        ROTATOR_SA,
        100,
    ))
    .await;
    // (Stamped after the clock: held from now.)
    h.nacked(&version_change(
        "r-add-2",
        sm::ADD_SECRET_VERSION,
        ROTATOR_SA,
        "patchpanda-oidc-client-secret",
        400,
    ))
    .await;
    // No redelivery yet: the tick releases it (and a later redelivery is a
    // duplicate, acknowledged without paging again).
    h.clock.advance(TimeDelta::minutes(3));
    let out = h.alerter.tick().await;
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(h.bus.rules(), vec![Rule::RotatorOutsideRotation]);
}

#[tokio::test]
async fn a_late_notice_covers_a_held_change() {
    let h = harness();
    let change = version_change(
        "late-1",
        sm::DISABLE_SECRET_VERSION,
        ROTATOR_SA,
        WEBHOOK_SECRET_ID,
        0,
    );
    h.nacked(&change).await;
    assert_eq!(h.alerter.held(), 1);
    // The worker's finish task announces what it disabled after doing it.
    h.notice(&notice(
        names::WEBHOOK_SECRET,
        NoticeEvent::Disabled,
        "finish-1",
        ROTATOR_SA,
        2,
    ))
    .await;
    assert_eq!(h.alerter.held(), 0);
    // The redelivered entry is now settled: acknowledged, no alert.
    h.ok(&change).await;
    h.clock.advance(TimeDelta::minutes(5));
    h.alerter.tick().await;
    h.none();
}

#[tokio::test]
async fn a_non_rotator_is_not_covered_by_a_rotation() {
    let h = harness();
    h.notice(&notice(
        names::WEBHOOK_SECRET,
        NoticeEvent::Started,
        "rot-1",
        ROTATOR_SA,
        -5,
    ))
    .await;
    h.ok(&version_change(
        "h-add",
        sm::ADD_SECRET_VERSION,
        HUMAN,
        WEBHOOK_SECRET_ID,
        0,
    ))
    .await;
    assert_eq!(h.only_alert().rule, Rule::SecretVersionChanged);
}

#[tokio::test]
async fn the_rotator_moving_the_primary_inside_a_key_rotation_is_expected() {
    let h = harness();
    h.notice(&notice(
        names::KMS_KEY,
        NoticeEvent::Started,
        "kms-rot",
        ROTATOR_SA,
        -1,
    ))
    .await;
    h.ok(&kms_entry(
        "p-1",
        kms::UPDATE_CRYPTO_KEY_PRIMARY_VERSION,
        ROTATOR_SA,
        KEY,
        json!({"cryptoKeyVersionId": "3"}),
    ))
    .await;
    h.notice(&notice(
        names::KMS_KEY,
        NoticeEvent::Rotated,
        "kms-rot",
        ROTATOR_SA,
        3,
    ))
    .await;
    h.clock.advance(TimeDelta::minutes(5));
    h.alerter.tick().await;
    h.none();
    // Without a rotation: held, then an alert.
    let mut later = kms_entry(
        "p-2",
        kms::UPDATE_CRYPTO_KEY_PRIMARY_VERSION,
        ROTATOR_SA,
        KEY,
        json!({"cryptoKeyVersionId": "4"}),
    );
    later["timestamp"] = json!(ts(3600));
    h.nacked(&later).await;
    h.clock.advance(TimeDelta::minutes(5));
    h.ok(&later).await;
    assert_eq!(h.only_alert().rule, Rule::RotatorOutsideRotation);
}
