//! Secret Manager: reads, version and alias changes, deletes.

use crate::prelude::*;

#[tokio::test]
async fn secret_read_by_an_outsider_alerts_with_everything_a_person_needs() {
    let h = harness();
    h.ok(&access("read-1", HUMAN, WEBHOOK_SECRET_ID)).await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SecretReadUnexpected);
    assert_eq!(a.severity, Severity::P0);
    assert_eq!(a.principal, HUMAN);
    assert_eq!(a.resource, "patchpanda-webhook-secret/versions/3");
    assert_eq!(a.method, sm::ACCESS_SECRET_VERSION);
    assert_eq!(a.insert_id, "read-1");
    assert_eq!(a.time, t0());
    assert!(
        a.summary.contains(HUMAN) && a.summary.contains("patchpanda rotate webhook-secret"),
        "{}",
        a.summary
    );
    assert_eq!(a.details["callerIp"], "35.192.45.123");
    assert!(a.link.as_deref().unwrap().contains("project=my-proj"));
    let (_, msg) = &h.bus.messages()[0];
    assert_eq!(msg.attributes["severity"], "P0");
    assert_eq!(msg.attributes["rule"], "secret-read-unexpected");
}

#[tokio::test]
async fn allowed_readers_and_other_secrets_do_not_alert() {
    let h = harness();
    h.ok(&access("read-ok", GATEWAY_SA, WEBHOOK_SECRET_ID))
        .await;
    h.ok(&access("read-other", HUMAN, "someone-elses-secret"))
        .await;
    h.none();
}

#[tokio::test]
async fn local_store_entries_alert_like_production() {
    let h = harness();
    let record = |principal: &'static str| AuditRecord {
        project: "local",
        service: SERVICE_SECRET_MANAGER,
        method: sm::ACCESS_SECRET_VERSION,
        principal,
        resource: "projects/local/secrets/patchpanda-webhook-secret/versions/1",
        permission: "secretmanager.versions.access",
        permission_type: "DATA_READ",
        status_code: code::OK,
        request: None,
    };
    let ingest = record(names::PRINCIPAL_WEBHOOK_INGEST).to_entry();
    h.ok(&serde_json::to_value(&ingest).unwrap()).await;
    h.none();
    let operator = record(names::PRINCIPAL_OPERATOR_DEFAULT).to_entry();
    h.ok(&serde_json::to_value(&operator).unwrap()).await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SecretReadUnexpected);
    assert_eq!(a.principal, "operator@patchpanda.local");
    assert!(a.link.is_none(), "no console link for the local project");
}

#[tokio::test]
async fn version_changes_by_a_non_rotator_alert() {
    let h = harness();
    let methods = [
        sm::ADD_SECRET_VERSION,
        sm::ENABLE_SECRET_VERSION,
        sm::DISABLE_SECRET_VERSION,
        sm::DESTROY_SECRET_VERSION,
    ];
    // Different secrets: the same rule, principal and resource would fold.
    let secrets = [
        "patchpanda-webhook-secret",
        "patchpanda-github-private-key",
        "patchpanda-oidc-client-secret",
        "patchpanda-extra",
    ];
    for (i, m) in methods.iter().enumerate() {
        h.ok(&version_change(&format!("v-{i}"), m, HUMAN, secrets[i], 0))
            .await;
    }
    let alerts = h.bus.alerts();
    assert_eq!(alerts.len(), 4, "{alerts:#?}");
    assert!(
        alerts
            .iter()
            .all(|a| a.rule == Rule::SecretVersionChanged && a.severity == Severity::P1)
    );
    assert!(
        alerts[0]
            .summary
            .contains("added a version to patchpanda-webhook-secret")
    );
    assert!(alerts[3].summary.contains("destroyed version 2"));
    // Aliases moved by UpdateSecret.
    h.bus.clear();
    let name = secret_name(WEBHOOK_SECRET_ID, None);
    // (Another principal: the same one on the same secret would fold.)
    h.ok(&sm_entry(
        "alias-1",
        sm::UPDATE_SECRET,
        "eve@example.com",
        &name,
        "secretmanager.secrets.update",
        json!({}),
        json!({"secret": {"name": name, "versionAliases": {"current": "3"}}, "updateMask": "versionAliases"}),
    ))
    .await;
    assert!(h.only_alert().summary.contains("moved the version aliases"));
    // Only annotations: not an alias change, but a planted grace or lease
    // annotation changes what the gateway accepts (issue 11).
    h.bus.clear();
    h.ok(&sm_entry(
        "annot-1",
        sm::UPDATE_SECRET,
        HUMAN,
        &name,
        "secretmanager.secrets.update",
        json!({}),
        json!({"secret": {"name": name, "annotations": {"patchpanda-previous-valid-until": "2099-01-01T00:00:00Z"}}, "updateMask": "annotations"}),
    ))
    .await;
    let a = h.only_alert();
    assert_eq!((a.rule, a.severity), (Rule::SecretUpdated, Severity::P1));
    assert_eq!(a.details["updateMask"], "annotations");
    assert!(
        a.summary
            .contains("updated annotations of patchpanda-webhook-secret"),
        "{}",
        a.summary
    );
}

#[tokio::test]
async fn deleting_a_secret_alerts() {
    let h = harness();
    let name = secret_name("patchpanda-github-private-key", None);
    h.ok(&sm_entry(
        "del-1",
        sm::DELETE_SECRET,
        HUMAN,
        &name,
        "secretmanager.secrets.delete",
        json!({}),
        json!({"name": name}),
    ))
    .await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SecretDeleted);
    assert_eq!(a.severity, Severity::P0);
    assert!(a.summary.contains("patchpanda restore"));
}
