//! Cloud KMS: version state, primary moves, the local KMS's entries.

use crate::prelude::*;

#[tokio::test]
async fn kms_version_disabled_destroyed_and_primary_changes_alert() {
    let h = harness();
    let v1 = format!("{KEY}/cryptoKeyVersions/1");
    h.ok(&kms_entry(
        "kms-dis",
        kms::UPDATE_CRYPTO_KEY_VERSION,
        HUMAN,
        &v1,
        json!({"cryptoKeyVersion": {"name": v1, "state": "DISABLED"}, "updateMask": "state"}),
    ))
    .await;
    h.ok(&kms_entry(
        "kms-destroy",
        kms::DESTROY_CRYPTO_KEY_VERSION,
        HUMAN,
        &v1,
        json!({"name": v1}),
    ))
    .await;
    h.ok(&kms_entry(
        "kms-primary",
        kms::UPDATE_CRYPTO_KEY_PRIMARY_VERSION,
        HUMAN,
        KEY,
        json!({"name": KEY, "cryptoKeyVersionId": "2"}),
    ))
    .await;
    // Enabling a version is not on the list.
    h.ok(&kms_entry(
        "kms-enable",
        kms::UPDATE_CRYPTO_KEY_VERSION,
        HUMAN,
        &v1,
        json!({"cryptoKeyVersion": {"name": v1, "state": "ENABLED"}, "updateMask": "state"}),
    ))
    .await;
    let alerts = h.bus.alerts();
    let got: Vec<(Rule, Severity)> = alerts.iter().map(|a| (a.rule, a.severity)).collect();
    assert_eq!(
        got,
        [
            (Rule::KmsVersionDisabled, Severity::P1),
            (Rule::KmsVersionDestroyed, Severity::P0),
            (Rule::KmsPrimaryChanged, Severity::P1),
        ]
    );
    assert!(alerts[2].summary.contains("made version 2 the primary"));
}

#[test]
fn kms_local_entries_name_our_key() {
    // The local KMS writes Cloud KMS's short names on the gateway's key.
    let e = AuditRecord {
        project: "local",
        service: SERVICE_KMS,
        method: kms::DESTROY_CRYPTO_KEY_VERSION,
        principal: names::PRINCIPAL_OPERATOR_DEFAULT,
        resource: "projects/local/locations/us-central1/keyRings/patchpanda-keys/cryptoKeys/patchpanda-crypto-key/cryptoKeyVersions/2",
        permission: "cloudkms.cryptoKeyVersions.destroy",
        permission_type: "ADMIN_WRITE",
        status_code: code::OK,
        request: None,
    }
    .to_entry();
    let alerter = Alerter::new(
        test_settings(&[]),
        Vec::new(),
        Arc::new(ManualClock::new(Utc::now())),
    );
    match alerter.analyze(&serde_json::to_vec(&e).unwrap()).unwrap() {
        audit_alerter::Analysis::Alerts(a) => {
            assert_eq!(a.len(), 1);
            assert_eq!(a[0].rule, Rule::KmsVersionDestroyed);
            assert_eq!(
                a[0].resource,
                "keyRings/patchpanda-keys/cryptoKeys/patchpanda-crypto-key/cryptoKeyVersions/2"
            );
        }
        other => panic!("expected alerts, got {other:?}"),
    }
}
