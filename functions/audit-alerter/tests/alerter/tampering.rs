//! Blinding and tampering (issue 11 item 3): audit configs, the sink, the
//! gateway's subscriptions and services, UpdateSecret, the KMS key.

use crate::prelude::*;

const CRM: &str = "cloudresourcemanager.googleapis.com";
const SM_AGENT: &str = "service-907234637394@gcp-sa-secretmanager.iam.gserviceaccount.com";

fn project_policy(insert_id: &str, deltas: Value) -> Value {
    // A principal per entry: the same one on the same project would fold.
    let mut e = audit_entry(
        insert_id,
        CRM,
        "SetIamPolicy",
        json!({"principalEmail": format!("{insert_id}@example.com")}),
        "projects/my-proj",
        json!({"@type": "type.googleapis.com/google.iam.v1.SetIamPolicyRequest", "resource": "my-proj", "updateMask": "bindings,etag,auditConfigs"}),
    );
    e["protoPayload"]["serviceData"] = json!({"@type": "type.googleapis.com/google.iam.v1.logging.AuditData", "policyDelta": deltas});
    e
}

#[tokio::test]
async fn turning_data_access_logs_off_or_exempting_someone_alerts() {
    let h = harness();
    h.ok(&project_policy(
        "ac-off",
        json!({"auditConfigDeltas": [{"action": "REMOVE", "service": "secretmanager.googleapis.com", "logType": "DATA_READ"}]}),
    ))
    .await;
    let a = h.only_alert();
    assert_eq!(
        (a.rule, a.severity),
        (Rule::AuditConfigChanged, Severity::P0)
    );
    assert!(
        a.summary
            .contains("REMOVE secretmanager.googleapis.com DATA_READ"),
        "{}",
        a.summary
    );
    h.bus.clear();
    h.ok(&project_policy(
        "ac-exempt",
        json!({"auditConfigDeltas": [{"action": "ADD", "service": "allServices", "logType": "DATA_READ", "exemptedMember": "user:eve@example.com"}]}),
    ))
    .await;
    assert_eq!(h.only_alert().rule, Rule::AuditConfigChanged);
    h.bus.clear();
    // Turning logging on, other services, and bindings alone: nothing.
    h.ok(&project_policy(
        "ac-on",
        json!({"auditConfigDeltas": [{"action": "ADD", "service": "cloudkms.googleapis.com", "logType": "DATA_READ"}, {"action": "REMOVE", "service": "storage.googleapis.com", "logType": "DATA_READ"}]}),
    ))
    .await;
    let mut bindings = project_policy(
        "bind",
        json!({"bindingDeltas": [{"action": "ADD", "role": "roles/viewer", "member": "user:x@example.com"}]}),
    );
    bindings["protoPayload"]["request"]["updateMask"] = json!("bindings,etag");
    h.ok(&bindings).await;
    h.none();
}

#[tokio::test]
async fn the_sink_and_the_gateways_subscriptions_and_services_are_watched() {
    let auth = json!({"principalEmail": HUMAN});
    let cases = [
        (
            "sink",
            "logging.googleapis.com",
            "google.logging.v2.ConfigServiceV2.UpdateSink",
            "projects/my-proj/sinks/patchpanda-audit-logs",
            Some(Rule::AuditSinkChanged),
        ),
        (
            "sink-del",
            "logging.googleapis.com",
            "google.logging.v2.ConfigServiceV2.DeleteSink",
            "projects/my-proj/sinks/patchpanda-audit-logs",
            Some(Rule::AuditSinkChanged),
        ),
        (
            "other-sink",
            "logging.googleapis.com",
            "google.logging.v2.ConfigServiceV2.UpdateSink",
            "projects/my-proj/sinks/someone-else",
            None,
        ),
        (
            "push",
            "pubsub.googleapis.com",
            "google.pubsub.v1.Subscriber.ModifyPushConfig",
            "projects/my-proj/subscriptions/patchpanda-audit-alerter-audit-logs",
            Some(Rule::PubsubChanged),
        ),
        (
            "sub-del",
            "pubsub.googleapis.com",
            "google.pubsub.v1.Subscriber.DeleteSubscription",
            "projects/my-proj/subscriptions/patchpanda-webhook-ingest-rotation",
            Some(Rule::PubsubChanged),
        ),
        (
            "other-sub",
            "pubsub.googleapis.com",
            "google.pubsub.v1.Subscriber.DeleteSubscription",
            "projects/my-proj/subscriptions/unrelated",
            None,
        ),
        (
            "run-v2",
            "run.googleapis.com",
            "google.cloud.run.v2.Services.UpdateService",
            "projects/my-proj/locations/us-central1/services/patchpanda-audit-alerter",
            Some(Rule::RunServiceChanged),
        ),
        (
            "run-v1",
            "run.googleapis.com",
            "google.cloud.run.v1.Services.ReplaceService",
            "namespaces/my-proj/services/patchpanda-webhook-ingest",
            Some(Rule::RunServiceChanged),
        ),
        (
            "run-other",
            "run.googleapis.com",
            "google.cloud.run.v2.Services.UpdateService",
            "projects/my-proj/locations/us-central1/services/blog",
            None,
        ),
    ];
    for (id, service, method, resource, want) in cases {
        let h = harness();
        h.ok(&audit_entry(
            id,
            service,
            method,
            auth.clone(),
            resource,
            json!({"name": resource}),
        ))
        .await;
        assert_eq!(h.bus.rules(), want.into_iter().collect::<Vec<_>>(), "{id}");
    }
}

#[tokio::test]
async fn kms_key_import_and_update_are_changes_settled_against_the_rotators() {
    let h = harness();
    h.ok(&kms_entry(
        "imp",
        "ImportCryptoKeyVersion",
        HUMAN,
        KEY,
        json!({"parent": KEY, "importJob": "x"}),
    ))
    .await;
    h.ok(&kms_entry(
        "upd",
        "UpdateCryptoKey",
        "eve@example.com",
        KEY,
        json!({"cryptoKey": {"name": KEY}, "updateMask": "rotationSchedule,nextRotationTime"}),
    ))
    .await;
    let alerts = h.bus.alerts();
    assert_eq!(
        alerts.iter().map(|a| a.rule).collect::<Vec<_>>(),
        vec![Rule::KmsKeyChanged; 2]
    );
    assert!(
        alerts[1].summary.contains("rotationSchedule"),
        "{}",
        alerts[1].summary
    );
    h.bus.clear();
    // The rotator without a rotation: held like any rotator change.
    h.nacked(&kms_entry(
        "rot-upd",
        "UpdateCryptoKey",
        ROTATOR_SA,
        KEY,
        json!({}),
    ))
    .await;
    h.none();
}

#[tokio::test]
async fn key_use_by_anyone_but_secret_manager_and_the_gateway_alerts() {
    let h = harness();
    for (id, who) in [("sm", SM_AGENT), ("gw", GATEWAY_SA)] {
        let mut e = kms_entry(id, "Decrypt", who, KEY, json!({"name": KEY}));
        e["logName"] = json!(log_name("data_access"));
        h.ok(&e).await;
    }
    h.none();
    let mut e = kms_entry(
        "eve",
        "Encrypt",
        "eve@example.com",
        KEY,
        json!({"name": KEY}),
    );
    e["logName"] = json!(log_name("data_access"));
    h.ok(&e).await;
    let mut imp = kms_entry("imp", "Decrypt", GATEWAY_SA, KEY, json!({"name": KEY}));
    imp["protoPayload"]["authenticationInfo"] = delegated(GATEWAY_SA, &[HUMAN]);
    h.ok(&imp).await;
    let alerts = h.bus.alerts();
    let got: Vec<(Rule, &str)> = alerts
        .iter()
        .map(|a| (a.rule, a.principal.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Rule::KmsKeyUsed, "eve@example.com"),
            (Rule::KmsKeyUsed, HUMAN)
        ]
    );
}
