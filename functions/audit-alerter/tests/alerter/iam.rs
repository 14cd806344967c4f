//! IAM: policy changes, service-account keys and tokens, denied calls.

use crate::prelude::*;

#[tokio::test]
async fn iam_policy_changes_on_secret_key_ring_key_and_accounts_alert() {
    let h = harness();
    let delta = json!({"policyDelta": {"bindingDeltas": [{"action": "ADD", "role": "roles/secretmanager.secretAccessor", "member": "user:mallory@example.com"}]}});
    let name = secret_name(WEBHOOK_SECRET_ID, None);
    let mut e = sm_entry(
        "iam-sm",
        sm::SET_IAM_POLICY,
        HUMAN,
        &name,
        "secretmanager.secrets.setIamPolicy",
        json!({}),
        json!({"resource": name}),
    );
    e["protoPayload"]["serviceData"] = delta.clone();
    h.ok(&e).await;
    let ring = "projects/my-proj/locations/us-central1/keyRings/patchpanda-keys";
    h.ok(&kms_entry(
        "iam-ring",
        kms::SET_IAM_POLICY,
        HUMAN,
        ring,
        json!({"resource": ring}),
    ))
    .await;
    h.ok(&kms_entry(
        "iam-key",
        kms::SET_IAM_POLICY,
        HUMAN,
        KEY,
        json!({"resource": KEY}),
    ))
    .await;
    let mut sa = iam_entry(
        "iam-sa",
        "google.iam.admin.v1.SetIAMPolicy",
        HUMAN,
        GATEWAY_SA,
        json!({}),
    );
    sa["protoPayload"]["serviceData"] = delta;
    h.ok(&sa).await;
    // Someone else's key ring and someone else's account: not ours.
    let other = "projects/my-proj/locations/us-central1/keyRings/other-ring";
    h.ok(&kms_entry(
        "iam-other",
        kms::SET_IAM_POLICY,
        HUMAN,
        other,
        json!({"resource": other}),
    ))
    .await;
    h.ok(&iam_entry(
        "iam-other-sa",
        "google.iam.admin.v1.SetIAMPolicy",
        HUMAN,
        "ci@my-proj.iam.gserviceaccount.com",
        json!({}),
    ))
    .await;
    let alerts = h.bus.alerts();
    assert_eq!(alerts.len(), 4, "{alerts:#?}");
    assert!(alerts.iter().all(|a| a.rule == Rule::IamPolicyChanged));
    let resources: Vec<&str> = alerts.iter().map(|a| a.resource.as_str()).collect();
    assert_eq!(
        resources,
        [
            "patchpanda-webhook-secret",
            "keyRings/patchpanda-keys",
            "keyRings/patchpanda-keys/cryptoKeys/patchpanda-crypto-key",
            "serviceAccounts/gateway@my-proj.iam.gserviceaccount.com",
        ]
    );
    assert!(
        alerts[0]
            .summary
            .contains("ADD roles/secretmanager.secretAccessor user:mallory@example.com")
    );
}

#[tokio::test]
async fn service_account_keys_for_gateway_accounts_alert() {
    let h = harness();
    let created = json!({"name": format!("projects/my-proj/serviceAccounts/{GATEWAY_SA}/keys/a378358365ff"), "keyType": "USER_MANAGED"});
    h.ok(&iam_entry(
        "key-c",
        "google.iam.admin.v1.CreateServiceAccountKey",
        HUMAN,
        GATEWAY_SA,
        created,
    ))
    .await;
    h.ok(&iam_entry(
        "key-d",
        "google.iam.admin.v1.DeleteServiceAccountKey",
        HUMAN,
        GATEWAY_SA,
        json!({}),
    ))
    .await;
    h.ok(&iam_entry(
        "key-other",
        "google.iam.admin.v1.CreateServiceAccountKey",
        HUMAN,
        "ci@my-proj.iam.gserviceaccount.com",
        json!({}),
    ))
    .await;
    let got: Vec<(Rule, Severity)> = h
        .bus
        .alerts()
        .iter()
        .map(|a| (a.rule, a.severity))
        .collect();
    assert_eq!(
        got,
        [
            (Rule::SaKeyCreated, Severity::P0),
            (Rule::SaKeyDeleted, Severity::P2)
        ]
    );
}

#[tokio::test]
async fn any_call_with_a_user_managed_key_alerts() {
    let h = harness();
    // Sample D of the reference: SignJwt by the SA itself, with a key.
    let sa = "some-project@company.iam.gserviceaccount.com";
    let key = format!(
        "//iam.googleapis.com/projects/some-project/serviceAccounts/{sa}/keys/a378358365ff3d22e9c1a72fecf4605ddff76b47"
    );
    let e = token_entry(
        "1hu88qbef4d2o",
        "SignJwt",
        json!({"principalEmail": sa, "serviceAccountKeyName": key, "principalSubject": format!("serviceAccount:{sa}")}),
        sa,
    );
    h.ok(&e).await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SaKeyUsed);
    assert_eq!(a.details["serviceAccountKeyName"], key);
    assert!(
        a.summary
            .contains("a378358365ff3d22e9c1a72fecf4605ddff76b47")
    );
}

#[tokio::test]
async fn tokens_minted_for_gateway_accounts_by_someone_else_alert() {
    let h = harness();
    let wif = json!({"principalSubject": "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/gh/subject/repo:acme/app", "serviceAccountDelegationInfo": [{}]});
    h.ok(&token_entry(
        "15djrryd6bap",
        "GenerateAccessToken",
        wif,
        GATEWAY_SA,
    ))
    .await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::TokenMinted);
    assert!(a.principal.starts_with("principal://iam.googleapis.com/"));
    assert_eq!(a.resource, format!("serviceAccounts/{GATEWAY_SA}"));
    h.bus.clear();
    // The account for itself, and minting for an account that is not ours.
    h.ok(&token_entry(
        "self",
        "SignJwt",
        json!({"principalEmail": GATEWAY_SA}),
        GATEWAY_SA,
    ))
    .await;
    h.ok(&token_entry(
        "other",
        "GenerateAccessToken",
        json!({"principalEmail": HUMAN}),
        "ci@my-proj.iam.gserviceaccount.com",
    ))
    .await;
    h.none();
    h.ok(&token_entry(
        "jwt",
        "SignJwt",
        json!({"principalEmail": HUMAN}),
        GATEWAY_SA,
    ))
    .await;
    assert_eq!(h.only_alert().method, "SignJwt");
}

#[tokio::test]
async fn permission_denied_folds_into_one_alert_per_principal() {
    let h = harness();
    for (i, secret) in [
        "patchpanda-webhook-secret",
        "patchpanda-github-private-key",
        "patchpanda-oidc-client-secret",
    ]
    .iter()
    .enumerate()
    {
        let name = secret_name(secret, Some("latest"));
        h.ok(&sm_entry(
            &format!("denied-{i}"),
            sm::ACCESS_SECRET_VERSION,
            HUMAN,
            &name,
            "secretmanager.versions.access",
            json!({"code": 7, "message": "PERMISSION_DENIED"}),
            json!({"name": name}),
        ))
        .await;
    }
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::PermissionDenied);
    assert_eq!(a.severity, Severity::P2);
    assert!(
        a.summary.contains("secretmanager.versions.access"),
        "{}",
        a.summary
    );
    // Denied on the key by someone else: a separate alert.
    let mut denied_kms = kms_entry(
        "denied-kms",
        kms::DECRYPT,
        "eve@example.com",
        KEY,
        json!({"name": KEY}),
    );
    denied_kms["protoPayload"]["status"] = json!({"code": 7, "message": "PERMISSION_DENIED"});
    h.ok(&denied_kms).await;
    assert_eq!(
        h.bus.rules(),
        vec![Rule::PermissionDenied, Rule::PermissionDenied]
    );
    // After the window the folded count is reported in a summary.
    h.bus.clear();
    h.clock.advance(TimeDelta::minutes(11));
    let out = h.alerter.tick().await;
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].folded, 2);
    assert_eq!(out[0].principal, HUMAN);
    assert!(
        out[0].summary.starts_with("2 more in the last 10m"),
        "{}",
        out[0].summary
    );
    assert_eq!(h.bus.alerts().len(), 1);
}
