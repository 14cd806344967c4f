//! The gateway's routine operations, as production's accounts make them,
//! raise nothing, and the same calls by anyone else still alert: the KMS
//! rotation (its record on the webhook secret, its encrypt/decrypt
//! self-test, its new version), webhook-ingest's metadata checks, an
//! operator's announced backup reads, and the service-account-key kind's
//! key lifecycle.

use patchpanda_shared::audit_log::iam;

use crate::prelude::*;

const OPERATOR: &str = "alice@example.com";
const KEYED_SA: &str = "app-deployer@my-proj.iam.gserviceaccount.com";

/// An UpdateSecret of `secret`'s annotations (the worker's bookkeeping
/// writes: leases, the KMS record, retention), as Secret Manager logs it.
fn annotations_update(insert_id: &str, principal: &str, secret: &str, mask: &str) -> Value {
    let name = secret_name(secret, None);
    sm_entry(
        insert_id,
        sm::UPDATE_SECRET,
        principal,
        &name,
        "secretmanager.secrets.update",
        json!({}),
        json!({"secret": {"name": name, "annotations": {"patchpanda-kms-rotation": "{}"}}, "updateMask": mask}),
    )
}

#[tokio::test]
async fn the_kms_rotation_record_on_the_webhook_secret_is_announced_by_the_kms_rotation() {
    let h = harness();
    h.notice(&notice(
        names::KMS_KEY,
        NoticeEvent::Started,
        "kms-1",
        ROTATOR_SA,
        -5,
    ))
    .await;
    h.ok(&annotations_update(
        "rec-1",
        ROTATOR_SA,
        WEBHOOK_SECRET_ID,
        "annotations",
    ))
    .await;
    h.none();
    // The KMS window covers only the record's host, and only annotations.
    assert!(
        h.nacked(&annotations_update(
            "rec-2",
            ROTATOR_SA,
            "patchpanda-github-private-key",
            "annotations",
        ))
        .await
        .contains("held")
    );
    assert!(
        h.nacked(&annotations_update(
            "rec-3",
            ROTATOR_SA,
            WEBHOOK_SECRET_ID,
            "annotations,versionAliases",
        ))
        .await
        .contains("held")
    );
    h.none();
    // Anyone else planting annotations there still pages (issue 11).
    h.ok(&annotations_update(
        "rec-4",
        HUMAN,
        WEBHOOK_SECRET_ID,
        "annotations",
    ))
    .await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SecretUpdated);
    assert_eq!(a.principal, HUMAN);
}

#[tokio::test]
async fn the_rotators_kms_self_test_and_new_version_raise_nothing() {
    // run.tf lists every gateway account in PATCHPANDA_GATEWAY_SERVICE_ACCOUNTS.
    let h = harness_with(test_settings(&[(
        settings::ENV_GATEWAY_ACCOUNTS,
        ROTATOR_SA,
    )]));
    h.notice(&notice(
        names::KMS_KEY,
        NoticeEvent::Started,
        "kms-1",
        ROTATOR_SA,
        -5,
    ))
    .await;
    let v2 = format!("{KEY}/cryptoKeyVersions/2");
    for (id, method, resource, request) in [
        (
            "k-create",
            kms::CREATE_CRYPTO_KEY_VERSION,
            KEY,
            json!({"parent": KEY}),
        ),
        (
            "k-primary",
            kms::UPDATE_CRYPTO_KEY_PRIMARY_VERSION,
            KEY,
            json!({"name": KEY, "cryptoKeyVersionId": "2"}),
        ),
        ("k-enc", kms::ENCRYPT, v2.as_str(), json!({"name": KEY})),
        ("k-dec", kms::DECRYPT, KEY, json!({"name": KEY})),
    ] {
        h.ok(&kms_entry(id, method, ROTATOR_SA, resource, request))
            .await;
    }
    h.none();
    h.ok(&kms_entry(
        "k-enc-human",
        kms::ENCRYPT,
        HUMAN,
        KEY,
        json!({"name": KEY}),
    ))
    .await;
    let a = h.only_alert();
    assert_eq!((a.rule, a.severity), (Rule::KmsKeyUsed, Severity::P1));
}

#[tokio::test]
async fn webhook_ingests_metadata_checks_raise_nothing() {
    let h = harness();
    let name = secret_name(WEBHOOK_SECRET_ID, None);
    for i in 0..5 {
        let mut e = sm_entry(
            &format!("get-{i}"),
            sm::GET_SECRET,
            GATEWAY_SA,
            &name,
            "secretmanager.secrets.get",
            json!({}),
            json!({"name": name}),
        );
        e["protoPayload"]["authorizationInfo"][0]["permissionType"] = json!("ADMIN_READ");
        h.ok(&e).await;
    }
    h.none();
}

#[tokio::test]
async fn an_operators_announced_backup_reads_are_recorded_not_paged() {
    let h = harness_with(test_settings(&[(
        settings::ENV_OPERATOR_PRINCIPALS,
        OPERATOR,
    )]));
    let mut backup = notice(
        names::WEBHOOK_SECRET,
        NoticeEvent::Announced,
        "backup-1",
        OPERATOR,
        -2,
    );
    backup.until = Some(t0() + TimeDelta::minutes(10));
    h.notice(&backup).await;
    // Someone unlisted announcing the same does not count.
    let mut other = backup.clone();
    other.principal = Some(HUMAN.into());
    h.notice(&other).await;

    h.ok(&access("read-1", OPERATOR, WEBHOOK_SECRET_ID)).await;
    let a = h.only_alert();
    assert_eq!(
        (a.rule, a.severity),
        (Rule::SecretReadUnexpected, Severity::P3)
    );
    assert!(a.summary.contains("recorded, not paged"), "{}", a.summary);

    // A secret the backup did not announce, and an unlisted reader, page.
    h.ok(&access("read-2", OPERATOR, "patchpanda-github-private-key"))
        .await;
    h.ok(&access("read-3", HUMAN, WEBHOOK_SECRET_ID)).await;
    let severities: Vec<(String, Severity)> = h
        .bus
        .alerts()
        .into_iter()
        .skip(1)
        .map(|a| (a.principal, a.severity))
        .collect();
    assert_eq!(
        severities,
        [
            (OPERATOR.to_string(), Severity::P0),
            (HUMAN.to_string(), Severity::P0)
        ]
    );
}

#[tokio::test]
async fn the_service_account_key_kinds_keys_are_routine_for_the_rotator_in_its_rotation() {
    let h = harness_with(test_settings(&[(settings::ENV_SA_KEY_ACCOUNT, KEYED_SA)]));
    h.notice(&notice(
        "service-account-key",
        NoticeEvent::Started,
        "sak-1",
        ROTATOR_SA,
        -5,
    ))
    .await;
    h.ok(&iam_entry(
        "sak-create",
        iam::CREATE_SERVICE_ACCOUNT_KEY,
        ROTATOR_SA,
        KEYED_SA,
        json!({}),
    ))
    .await;
    h.ok(&iam_entry(
        "sak-delete",
        iam::DELETE_SERVICE_ACCOUNT_KEY,
        ROTATOR_SA,
        KEYED_SA,
        json!({}),
    ))
    .await;
    h.none();
    // Anyone else making a key for that account pages.
    h.ok(&iam_entry(
        "sak-human",
        iam::CREATE_SERVICE_ACCOUNT_KEY,
        HUMAN,
        KEYED_SA,
        json!({}),
    ))
    .await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SaKeyCreated);
    assert!(a.summary.contains(KEYED_SA), "{}", a.summary);
}

#[tokio::test]
async fn the_rotator_making_a_key_outside_a_rotation_is_held_then_pages() {
    let h = harness_with(test_settings(&[(settings::ENV_SA_KEY_ACCOUNT, KEYED_SA)]));
    let e = iam_entry(
        "sak-create",
        iam::CREATE_SERVICE_ACCOUNT_KEY,
        ROTATOR_SA,
        KEYED_SA,
        json!({}),
    );
    assert!(h.nacked(&e).await.contains("held"));
    h.clock.advance(TimeDelta::minutes(5));
    h.alerter.tick().await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::RotatorOutsideRotation);
}
