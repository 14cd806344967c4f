//! Identity chains and API versions (issue 11 items 1 and 2).

use crate::prelude::*;

const OUTSIDER_WIF: &str = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/gh/subject/repo:acme/app";

#[tokio::test]
async fn an_outsider_impersonating_an_allowed_reader_alerts_naming_the_outsider() {
    let h = harness();
    let mut e = access("imp-1", GATEWAY_SA, WEBHOOK_SECRET_ID);
    e["protoPayload"]["authenticationInfo"] = delegated(GATEWAY_SA, &[HUMAN]);
    h.ok(&e).await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SecretReadUnexpected);
    assert_eq!(a.principal, HUMAN, "the real caller, not the account");
    assert_eq!(a.details["actingAs"], GATEWAY_SA);
    assert_eq!(
        a.details["delegationChain"],
        format!("{HUMAN} -> {GATEWAY_SA}")
    );
    assert!(a.summary.contains("acting as"), "{}", a.summary);
}

#[tokio::test]
async fn a_federated_first_party_counts_as_an_identity() {
    let h = harness();
    let mut e = access("wif-1", GATEWAY_SA, WEBHOOK_SECRET_ID);
    e["protoPayload"]["authenticationInfo"] = json!({
        "principalEmail": GATEWAY_SA,
        "serviceAccountDelegationInfo": [{"principalSubject": OUTSIDER_WIF}]
    });
    h.ok(&e).await;
    assert!(h.only_alert().principal.starts_with("principal://"));
    // The same chain with an allowed first party is fine.
    let mut s = test_settings(&[]);
    s.readers.extend([OUTSIDER_WIF]);
    let h = harness_with(s);
    h.ok(&e).await;
    h.none();
}

#[tokio::test]
async fn a_rotator_impersonated_by_an_outsider_is_not_covered_by_its_rotation() {
    let h = harness();
    h.notice(&notice(
        names::WEBHOOK_SECRET,
        NoticeEvent::Started,
        "rot-1",
        ROTATOR_SA,
        -5,
    ))
    .await;
    let mut e = version_change(
        "imp-add",
        sm::ADD_SECRET_VERSION,
        ROTATOR_SA,
        WEBHOOK_SECRET_ID,
        0,
    );
    e["protoPayload"]["authenticationInfo"] = delegated(ROTATOR_SA, &[HUMAN]);
    h.ok(&e).await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SecretVersionChanged);
    assert_eq!(a.principal, HUMAN);
}

#[tokio::test]
async fn a_gateway_account_minting_for_itself_on_an_outsiders_behalf_alerts() {
    let h = harness();
    h.ok(&token_entry(
        "self-imp",
        "GenerateAccessToken",
        delegated(GATEWAY_SA, &[HUMAN]),
        GATEWAY_SA,
    ))
    .await;
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::TokenMinted);
    assert_eq!(a.principal, HUMAN);
}

#[tokio::test]
async fn numeric_service_account_ids_compare_like_emails() {
    let unique_id = "114885146936855121342";
    let mut s = test_settings(&[]);
    s.readers.extend([unique_id]);
    let h = harness_with(s);
    // A caller named only by principalSubject, as its unique id.
    let mut e = access("num-1", "x", WEBHOOK_SECRET_ID);
    e["protoPayload"]["authenticationInfo"] =
        json!({"principalSubject": format!("serviceAccount:{unique_id}")});
    h.ok(&e).await;
    h.none();
    // And a chain whose first party is named as a resource by id.
    let mut e = access("num-2", GATEWAY_SA, WEBHOOK_SECRET_ID);
    e["protoPayload"]["authenticationInfo"] = json!({
        "principalEmail": GATEWAY_SA,
        "serviceAccountDelegationInfo": [{"firstPartyPrincipal": {"principalEmail": format!("projects/-/serviceAccounts/{unique_id}")}}]
    });
    h.ok(&e).await;
    h.none();
}

#[tokio::test]
async fn other_api_versions_are_the_same_calls() {
    let h = harness();
    let mut read = access("beta1", HUMAN, WEBHOOK_SECRET_ID);
    read["protoPayload"]["methodName"] =
        json!("google.cloud.secretmanager.v1beta1.SecretManagerService.AccessSecretVersion");
    h.ok(&read).await;
    let mut add = version_change(
        "beta2",
        "google.cloud.secretmanager.v1beta2.SecretManagerService.AddSecretVersion",
        HUMAN,
        "patchpanda-github-private-key",
        0,
    );
    add["insertId"] = json!("beta2");
    h.ok(&add).await;
    let delta = json!({"policyDelta": {"bindingDeltas": [{"action": "ADD", "role": "roles/iam.serviceAccountTokenCreator", "member": "user:mallory@example.com"}]}});
    let mut sa = iam_entry(
        "iam-casing",
        "google.iam.admin.v1.SetIamPolicy",
        HUMAN,
        GATEWAY_SA,
        json!({}),
    );
    sa["protoPayload"]["serviceData"] = delta;
    h.ok(&sa).await;
    h.ok(&token_entry(
        "creds-full",
        "google.iam.credentials.v1.IAMCredentials.GenerateAccessToken",
        json!({"principalEmail": "eve@example.com"}),
        GATEWAY_SA,
    ))
    .await;
    assert_eq!(
        h.bus.rules(),
        vec![
            Rule::SecretReadUnexpected,
            Rule::SecretVersionChanged,
            Rule::IamPolicyChanged,
            Rule::TokenMinted
        ]
    );
}
