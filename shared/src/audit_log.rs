//! The Cloud Audit Logs `LogEntry` model: written by the local backends (in
//! the services' own shapes) and read by audit-alerter. Fields follow
//! LogEntry/AuditLog JSON; everything optional is optional here too, because
//! real entries omit fields freely (docs/gcp-behavior.md, Cloud Audit Logs).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SERVICE_SECRET_MANAGER: &str = "secretmanager.googleapis.com";
pub const SERVICE_KMS: &str = "cloudkms.googleapis.com";
pub const SERVICE_IAM: &str = "iam.googleapis.com";
pub const SERVICE_IAM_CREDENTIALS: &str = "iamcredentials.googleapis.com";
pub const AUDIT_LOG_TYPE: &str = "type.googleapis.com/google.cloud.audit.AuditLog";

/// Secret Manager's fully-qualified method names.
pub mod sm {
    pub const ACCESS_SECRET_VERSION: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion";
    pub const ADD_SECRET_VERSION: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.AddSecretVersion";
    pub const DESTROY_SECRET_VERSION: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.DestroySecretVersion";
    pub const DISABLE_SECRET_VERSION: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.DisableSecretVersion";
    pub const ENABLE_SECRET_VERSION: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.EnableSecretVersion";
    pub const CREATE_SECRET: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.CreateSecret";
    pub const UPDATE_SECRET: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.UpdateSecret";
    pub const DELETE_SECRET: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.DeleteSecret";
    pub const SET_IAM_POLICY: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.SetIamPolicy";
    pub const GET_SECRET: &str = "google.cloud.secretmanager.v1.SecretManagerService.GetSecret";
    pub const LIST_SECRETS: &str = "google.cloud.secretmanager.v1.SecretManagerService.ListSecrets";
    pub const GET_SECRET_VERSION: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.GetSecretVersion";
    pub const LIST_SECRET_VERSIONS: &str =
        "google.cloud.secretmanager.v1.SecretManagerService.ListSecretVersions";
}

/// Cloud KMS's short method names.
pub mod kms {
    pub const ENCRYPT: &str = "Encrypt";
    pub const DECRYPT: &str = "Decrypt";
    pub const CREATE_CRYPTO_KEY_VERSION: &str = "CreateCryptoKeyVersion";
    pub const UPDATE_CRYPTO_KEY_PRIMARY_VERSION: &str = "UpdateCryptoKeyPrimaryVersion";
    pub const UPDATE_CRYPTO_KEY_VERSION: &str = "UpdateCryptoKeyVersion";
    pub const DESTROY_CRYPTO_KEY_VERSION: &str = "DestroyCryptoKeyVersion";
    pub const RESTORE_CRYPTO_KEY_VERSION: &str = "RestoreCryptoKeyVersion";
    pub const SET_IAM_POLICY: &str = "SetIamPolicy";
}

/// IAM admin's fully-qualified method names. Note `SetIAMPolicy`, unlike
/// Secret Manager's and KMS's `SetIamPolicy`.
pub mod iam {
    pub const CREATE_SERVICE_ACCOUNT_KEY: &str = "google.iam.admin.v1.CreateServiceAccountKey";
    pub const UPLOAD_SERVICE_ACCOUNT_KEY: &str = "google.iam.admin.v1.UploadServiceAccountKey";
    pub const DELETE_SERVICE_ACCOUNT_KEY: &str = "google.iam.admin.v1.DeleteServiceAccountKey";
    pub const DISABLE_SERVICE_ACCOUNT_KEY: &str = "google.iam.admin.v1.DisableServiceAccountKey";
    pub const ENABLE_SERVICE_ACCOUNT_KEY: &str = "google.iam.admin.v1.EnableServiceAccountKey";
    pub const SET_IAM_POLICY: &str = "google.iam.admin.v1.SetIAMPolicy";
}

/// IAM Service Account Credentials' short method names (Data Access logs).
pub mod iamcredentials {
    pub const GENERATE_ACCESS_TOKEN: &str = "GenerateAccessToken";
    pub const GENERATE_ID_TOKEN: &str = "GenerateIdToken";
    pub const SIGN_JWT: &str = "SignJwt";
    pub const SIGN_BLOB: &str = "SignBlob";
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    #[serde(default)]
    pub log_name: String,
    #[serde(default)]
    pub insert_id: String,
    /// Kept as text: real entries use RFC 3339 with nanoseconds, exports
    /// sometimes a space and no zone; [`LogEntry::time`] parses both.
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<MonitoredResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto_payload: Option<AuditLog>,
    /// Plain application logs (webhook-ingest's own entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitoredResource {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditLog {
    #[serde(rename = "@type", default, skip_serializing_if = "Option::is_none")]
    pub type_url: Option<String>,
    #[serde(default)]
    pub service_name: String,
    #[serde(default)]
    pub method_name: String,
    #[serde(default)]
    pub resource_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_info: Option<AuthenticationInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_info: Vec<AuthorizationInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_delegation_info: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationInfo {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub permission: String,
    /// Absent means false in real entries.
    #[serde(default)]
    pub granted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// gRPC status codes that the local backends report.
pub mod code {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const ABORTED: i32 = 10;
}

impl LogEntry {
    /// Parses `timestamp` in RFC 3339, or `YYYY-MM-DD HH:MM:SS.nnn` as UTC.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let t = self.timestamp.as_deref()?;
        DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
                    .ok()
                    .map(|n| n.and_utc())
            })
    }

    /// The caller: principalEmail, else principalSubject.
    pub fn principal(&self) -> Option<&str> {
        let auth = self.proto_payload.as_ref()?.authentication_info.as_ref()?;
        auth.principal_email
            .as_deref()
            .or(auth.principal_subject.as_deref())
    }

    /// Whether this is a Data Access entry (as opposed to Admin Activity).
    pub fn is_data_access(&self) -> bool {
        self.log_name.ends_with("%2Fdata_access") || self.log_name.ends_with("/data_access")
    }

    /// The dedup key Cloud Logging documents: logName + insertId.
    pub fn dedup_key(&self) -> String {
        format!("{}\u{1f}{}", self.log_name, self.insert_id)
    }
}

/// What the local backends know about one call they audit.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub project: &'a str,
    pub service: &'a str,
    pub method: &'a str,
    pub principal: &'a str,
    /// Full resource name, e.g. projects/P/secrets/S/versions/3.
    pub resource: &'a str,
    pub permission: &'a str,
    /// ADMIN_READ, ADMIN_WRITE, DATA_READ or DATA_WRITE.
    pub permission_type: &'a str,
    /// A gRPC code from [`code`]; 0 is success.
    pub status_code: i32,
    pub request: Option<Value>,
}

impl AuditRecord<'_> {
    /// The entry Cloud Audit Logs would write for this call: Data Access for
    /// reads (`*_READ`), Admin Activity for writes.
    pub fn to_entry(&self) -> LogEntry {
        let data_access = self.permission_type.ends_with("_READ");
        let log = if data_access {
            "data_access"
        } else {
            "activity"
        };
        let now = Utc::now();
        let failed = self.status_code != code::OK;
        let (kind, labels) = if self.service == SERVICE_KMS {
            (
                "cloudkms_cryptokey",
                BTreeMap::from([("project_id".to_string(), self.project.to_string())]),
            )
        } else {
            (
                "audited_resource",
                BTreeMap::from([
                    ("project_id".to_string(), self.project.to_string()),
                    ("service".to_string(), self.service.to_string()),
                    ("method".to_string(), self.method.to_string()),
                ]),
            )
        };
        LogEntry {
            log_name: format!(
                "projects/{}/logs/cloudaudit.googleapis.com%2F{log}",
                self.project
            ),
            insert_id: uuid::Uuid::new_v4().simple().to_string(),
            timestamp: Some(now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
            receive_timestamp: Some(now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
            severity: Some(
                if failed {
                    "ERROR"
                } else if data_access {
                    "INFO"
                } else {
                    "NOTICE"
                }
                .to_string(),
            ),
            resource: Some(MonitoredResource {
                kind: kind.to_string(),
                labels,
            }),
            proto_payload: Some(AuditLog {
                type_url: Some(AUDIT_LOG_TYPE.to_string()),
                service_name: self.service.to_string(),
                method_name: self.method.to_string(),
                resource_name: self.resource.to_string(),
                authentication_info: Some(AuthenticationInfo {
                    principal_email: Some(self.principal.to_string()),
                    ..Default::default()
                }),
                authorization_info: vec![AuthorizationInfo {
                    resource: self.resource.to_string(),
                    permission: self.permission.to_string(),
                    granted: self.status_code != code::PERMISSION_DENIED,
                    permission_type: Some(self.permission_type.to_string()),
                }],
                request_metadata: Some(
                    serde_json::json!({"callerIp": "127.0.0.1", "callerSuppliedUserAgent": "patchpanda-local"}),
                ),
                status: Some(Status {
                    code: self.status_code,
                    message: failed.then(|| status_name(self.status_code).to_string()),
                }),
                request: self.request.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn status_name(code: i32) -> &'static str {
    match code {
        code::NOT_FOUND => "NOT_FOUND",
        code::PERMISSION_DENIED => "PERMISSION_DENIED",
        code::FAILED_PRECONDITION => "FAILED_PRECONDITION",
        code::ABORTED => "ABORTED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_kms_entry() {
        let raw = r#"{"insertId":"abc123def456","logName":"projects/test-project/logs/cloudaudit.googleapis.com%2Factivity",
 "protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog",
  "authenticationInfo":{"principalEmail":"denethor@lotr.com","principalSubject":"user:denethor@lotr.com"},
  "authorizationInfo":[{"granted":true,"permission":"cloudkms.cryptoKeyVersions.update","permissionType":"ADMIN_WRITE",
    "resource":"projects/test-project/locations/us/keyRings/test-keyring/cryptoKeys/test-key/cryptoKeyVersions/1"}],
  "methodName":"UpdateCryptoKeyVersion",
  "request":{"cryptoKeyVersion":{"state":"DISABLED"},"updateMask":"state"},
  "resourceName":"projects/test-project/locations/us/keyRings/test-keyring/cryptoKeys/test-key/cryptoKeyVersions/1",
  "serviceName":"cloudkms.googleapis.com","status":{}},
 "resource":{"type":"cloudkms_cryptokeyversion","labels":{"crypto_key_id":"test-key"}},
 "severity":"NOTICE","timestamp":"2025-12-15T15:40:47.284488263Z"}"#;
        let e: LogEntry = serde_json::from_str(raw).unwrap();
        assert_eq!(e.principal(), Some("denethor@lotr.com"));
        assert!(!e.is_data_access());
        assert_eq!(
            e.proto_payload.as_ref().unwrap().method_name,
            kms::UPDATE_CRYPTO_KEY_VERSION
        );
        assert_eq!(e.time().unwrap().timestamp(), 1765813247);
    }

    #[test]
    fn tolerates_exported_timestamps() {
        let e = LogEntry {
            timestamp: Some("2025-12-15 15:40:47.284488263".into()),
            ..Default::default()
        };
        assert_eq!(e.time().unwrap().timestamp(), 1765813247);
    }

    #[test]
    fn local_record_round_trips_as_a_data_access_entry() {
        let r = AuditRecord {
            project: "local",
            service: SERVICE_SECRET_MANAGER,
            method: sm::ACCESS_SECRET_VERSION,
            principal: "operator@patchpanda.local",
            resource: "projects/local/secrets/patchpanda-webhook-secret/versions/1",
            permission: "secretmanager.versions.access",
            permission_type: "DATA_READ",
            status_code: code::OK,
            request: None,
        };
        let json = serde_json::to_string(&r.to_entry()).unwrap();
        let back: LogEntry = serde_json::from_str(&json).unwrap();
        assert!(back.is_data_access());
        assert_eq!(back.principal(), Some("operator@patchpanda.local"));
        assert!(json.contains("\"@type\":\"type.googleapis.com/google.cloud.audit.AuditLog\""));
    }
}
