//! Entries in Google's documented shapes (docs/gcp-behavior.md, Cloud Audit
//! Logs, has the sources).

use crate::prelude::*;

pub(crate) fn ts(offset_secs: i64) -> String {
    (t0() + TimeDelta::seconds(offset_secs)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub(crate) fn log_name(kind: &str) -> String {
    format!("projects/{PROJECT}/logs/cloudaudit.googleapis.com%2F{kind}")
}

pub(crate) fn secret_name(secret: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{v}"),
        None => format!("projects/{PROJECT_NUMBER}/secrets/{secret}"),
    }
}

/// A Secret Manager entry. `status` is `{}` on success.
pub(crate) fn sm_entry(
    insert_id: &str,
    method: &str,
    principal: &str,
    resource: &str,
    permission: &str,
    status: Value,
    request: Value,
) -> Value {
    let data_access = method == sm::ACCESS_SECRET_VERSION;
    let granted = status.get("code").and_then(Value::as_i64) != Some(7);
    let mut authz = json!({"permission": permission, "resource": resource,
        "permissionType": if data_access { "DATA_READ" } else { "ADMIN_WRITE" }});
    if granted {
        authz["granted"] = json!(true);
    }
    json!({
        "insertId": insert_id,
        "logName": log_name(if data_access { "data_access" } else { "activity" }),
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "secretmanager.googleapis.com",
            "methodName": method,
            "resourceName": resource,
            "authenticationInfo": {"principalEmail": principal},
            "authorizationInfo": [authz],
            "requestMetadata": {"callerIp": "35.192.45.123", "callerSuppliedUserAgent": "google-cloud-sdk gcloud/450.0.0"},
            "request": request,
            "status": status,
        },
        "resource": {"type": "audited_resource", "labels": {"project_id": PROJECT, "service": "secretmanager.googleapis.com", "method": method}},
        "severity": if granted { if data_access { "INFO" } else { "NOTICE" } } else { "ERROR" },
        "timestamp": ts(0),
        "receiveTimestamp": ts(1),
    })
}

pub(crate) fn access(insert_id: &str, principal: &str, secret: &str) -> Value {
    let name = secret_name(secret, Some("3"));
    sm_entry(
        insert_id,
        sm::ACCESS_SECRET_VERSION,
        principal,
        &name,
        "secretmanager.versions.access",
        json!({}),
        json!({"name": secret_name(secret, Some("latest"))}),
    )
}

pub(crate) fn version_change(
    insert_id: &str,
    method: &str,
    principal: &str,
    secret: &str,
    at: i64,
) -> Value {
    let resource = if method == sm::ADD_SECRET_VERSION {
        secret_name(secret, None)
    } else {
        secret_name(secret, Some("2"))
    };
    let mut e = sm_entry(
        insert_id,
        method,
        principal,
        &resource,
        "secretmanager.versions.add",
        json!({}),
        json!({"name": resource}),
    );
    e["timestamp"] = json!(ts(at));
    e
}

pub(crate) const WEBHOOK_SECRET_ID: &str = "patchpanda-webhook-secret";
pub(crate) const KEY: &str = "projects/my-proj/locations/us-central1/keyRings/patchpanda-keys/cryptoKeys/patchpanda-crypto-key";

/// Sample A of the reference (Panther's KMS disable), on the gateway's key.
pub(crate) fn kms_entry(
    insert_id: &str,
    method: &str,
    principal: &str,
    resource: &str,
    request: Value,
) -> Value {
    json!({
        "insertId": insert_id,
        "logName": log_name("activity"),
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": principal, "principalSubject": format!("user:{principal}"),
                "oauthInfo": {"oauthClientId": "111111111111-abc.apps.googleusercontent.com"}},
            "authorizationInfo": [{"granted": true, "permission": "cloudkms.cryptoKeyVersions.update", "permissionType": "ADMIN_WRITE",
                "resource": resource, "resourceAttributes": {"service": "google.cloud.kms", "type": "cloudkms.googleapis.com/CryptoKeyVersion"}}],
            "methodName": method,
            "request": request,
            "requestMetadata": {"callerIp": "1.2.3.4", "callerSuppliedUserAgent": "google-cloud-sdk gcloud/548.0.0 command/gcloud.kms.keys.versions.disable",
                "requestAttributes": {"time": ts(0), "auth": {}}, "destinationAttributes": {}},
            "resourceLocation": {"currentLocations": ["us-central1"]},
            "resourceName": resource,
            "serviceName": "cloudkms.googleapis.com",
            "status": {}
        },
        "receiveTimestamp": ts(1),
        "resource": {"type": "cloudkms_cryptokeyversion", "labels": {"crypto_key_id": "patchpanda-crypto-key", "crypto_key_version_id": "1",
            "key_ring_id": "patchpanda-keys", "location": "us-central1", "project_id": PROJECT}},
        "severity": "NOTICE",
        "timestamp": ts(0)
    })
}

pub(crate) fn iam_entry(
    insert_id: &str,
    method: &str,
    principal: &str,
    sa: &str,
    response: Value,
) -> Value {
    json!({
        "insertId": insert_id,
        "logName": log_name("activity"),
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "iam.googleapis.com",
            "methodName": method,
            "resourceName": "projects/-/serviceAccounts/114885146936855121342",
            "authenticationInfo": {"principalEmail": principal},
            "authorizationInfo": [{"permission": "iam.serviceAccountKeys.create", "granted": true,
                "resource": "projects/-/serviceAccounts/114885146936855121342"}],
            "request": {"@type": "type.googleapis.com/google.iam.admin.v1.CreateServiceAccountKeyRequest",
                "name": format!("projects/-/serviceAccounts/{sa}")},
            "response": response,
            "status": {}
        },
        "resource": {"type": "service_account", "labels": {"email_id": sa, "project_id": PROJECT, "unique_id": "114885146936855121342"}},
        "severity": "NOTICE",
        "timestamp": ts(0)
    })
}

/// Sample C: a WIF principal (no principalEmail) minting a token.
pub(crate) fn token_entry(insert_id: &str, method: &str, auth: Value, sa: &str) -> Value {
    json!({
        "insertId": insert_id,
        "logName": log_name("data_access"),
        "operation": {"first": true, "id": "op-1", "last": true, "producer": "iamcredentials.googleapis.com"},
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": auth,
            "authorizationInfo": [{"granted": true, "permission": "iam.serviceAccounts.getAccessToken", "permissionType": "ADMIN_READ", "resourceAttributes": {}}],
            "metadata": {"identityDelegationChain": [format!("projects/-/serviceAccounts/{sa}")]},
            "methodName": method,
            "request": {"@type": "type.googleapis.com/google.iam.credentials.v1.GenerateAccessTokenRequest",
                "name": format!("projects/-/serviceAccounts/{sa}")},
            "requestMetadata": {"callerIp": "175.16.199.45", "callerSuppliedUserAgent": "Go-http-client/2.0,gzip(gfe)"},
            "resourceName": "projects/-/serviceAccounts/somenumber",
            "serviceName": "iamcredentials.googleapis.com",
            "status": {}
        },
        "receiveTimestamp": ts(1),
        "resource": {"type": "service_account", "labels": {"email_id": sa, "project_id": PROJECT, "unique_id": "somenumber"}},
        "severity": "INFO",
        "timestamp": ts(0)
    })
}

pub(crate) fn notice(
    logical: &str,
    event: NoticeEvent,
    id: &str,
    principal: &str,
    at: i64,
) -> RotationNotice {
    let mut n = RotationNotice::new(logical, event, id);
    n.principal = Some(principal.to_string());
    n.time = t0() + TimeDelta::seconds(at);
    n
}

/// Any audit entry, in the documented shape.
pub(crate) fn audit_entry(
    insert_id: &str,
    service: &str,
    method: &str,
    auth: Value,
    resource: &str,
    request: Value,
) -> Value {
    json!({
        "insertId": insert_id,
        "logName": log_name("activity"),
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": service,
            "methodName": method,
            "resourceName": resource,
            "authenticationInfo": auth,
            "authorizationInfo": [{"resource": resource, "permission": "x.y.z", "granted": true}],
            "requestMetadata": {"callerIp": "198.51.100.7", "callerSuppliedUserAgent": "google-cloud-sdk gcloud/548.0.0"},
            "request": request,
            "status": {},
        },
        "resource": {"type": "audited_resource", "labels": {"project_id": PROJECT, "service": service, "method": method}},
        "severity": "NOTICE",
        "timestamp": ts(0),
        "receiveTimestamp": ts(1),
    })
}

/// `principalEmail` plus a ServiceAccountDelegationInfo chain of first
/// parties (AuthenticationInfo in the AuditLog proto).
pub(crate) fn delegated(principal: &str, first_parties: &[&str]) -> Value {
    let chain: Vec<Value> = first_parties
        .iter()
        .map(|p| json!({"firstPartyPrincipal": {"principalEmail": p}}))
        .collect();
    json!({"principalEmail": principal, "serviceAccountDelegationInfo": chain})
}
