//! audit-alerter end to end through its push handlers: realistic entries in
//! Google's documented shapes (and the local store's), every detection and
//! its negative case, rotation awareness, malformed input, duplicates,
//! suppression, and each sink against a stub HTTP server.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use audit_alerter::settings::{self, Settings};
use audit_alerter::{Alert, Alerter, ManualClock, Rule, Severity, handlers};
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use http::{HeaderMap, StatusCode};
use patchpanda_shared::audit_log::{
    AuditRecord, SERVICE_KMS, SERVICE_SECRET_MANAGER, code, kms, sm,
};
use patchpanda_shared::bus::{Bus, Message};
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use patchpanda_shared::runtime::events::PushFormat;
use patchpanda_shared::runtime::{Context, Handler, HandlerError, Invocation, PushMessage, Reply};
use serde_json::{Value, json};
use tower::ServiceExt;

// ---------------------------------------------------------------------------
// Harness

#[derive(Default)]
struct RecordingBus {
    messages: Mutex<Vec<(String, Message)>>,
}

#[async_trait]
impl Bus for RecordingBus {
    async fn publish(&self, topic: &str, message: Message) -> patchpanda_shared::Result<String> {
        let mut m = self.messages.lock().unwrap();
        m.push((topic.to_string(), message));
        Ok(m.len().to_string())
    }

    async fn check(&self) -> patchpanda_shared::Result<()> {
        Ok(())
    }
}

impl RecordingBus {
    fn alerts(&self) -> Vec<Alert> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == names::TOPIC_ALERTS)
            .map(|(_, m)| serde_json::from_slice(&m.data).unwrap())
            .collect()
    }

    fn messages(&self) -> Vec<Message> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn rules(&self) -> Vec<Rule> {
        self.alerts().iter().map(|a| a.rule).collect()
    }

    fn clear(&self) {
        self.messages.lock().unwrap().clear();
    }
}

const PROJECT: &str = "my-proj";
const PROJECT_NUMBER: &str = "907234637394";
const GATEWAY_SA: &str = "gateway@my-proj.iam.gserviceaccount.com";
const ROTATOR_SA: &str = "rotator@my-proj.iam.gserviceaccount.com";
const HUMAN: &str = "mallory@example.com";

struct Harness {
    alerter: Alerter,
    bus: Arc<RecordingBus>,
    clock: Arc<ManualClock>,
    audit: Handler<PushMessage>,
    rotation: Handler<PushMessage>,
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-11-16T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn local_config() -> Config {
    Config::from_env(&Env::default(), names::PRINCIPAL_AUDIT_ALERTER).unwrap()
}

/// Local defaults plus the production-shaped identities the fixtures use.
fn test_settings(env: &[(&str, &str)]) -> Settings {
    let env = Env::from_pairs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut s = Settings::from_env(&local_config(), &env).unwrap();
    s.readers.extend([GATEWAY_SA]);
    s.rotators.extend([ROTATOR_SA]);
    s.gateway_accounts.extend([GATEWAY_SA]);
    s.delivery.backoff = Duration::from_millis(10);
    s.delivery.backoff_max = Duration::from_millis(50);
    s
}

fn harness_with(settings: Settings) -> Harness {
    let bus = Arc::new(RecordingBus::default());
    let clock = Arc::new(ManualClock::new(t0() + TimeDelta::minutes(1)));
    let alerter = Alerter::with_bus(settings, bus.clone(), clock.clone()).unwrap();
    Harness {
        audit: handlers::audit_log(alerter.clone()),
        rotation: handlers::rotation(alerter.clone()),
        alerter,
        bus,
        clock,
    }
}

fn harness() -> Harness {
    harness_with(test_settings(&[]))
}

fn push_message(data: &[u8]) -> PushMessage {
    PushMessage {
        message_id: "5187581549398349".into(),
        data: Bytes::copy_from_slice(data),
        attributes: BTreeMap::from([(
            "logging.googleapis.com/timestamp".to_string(),
            "2025-11-16T10:00:00Z".to_string(),
        )]),
        ordering_key: None,
        publish_time: None,
        subscription: Some("projects/my-proj/subscriptions/audit".into()),
        delivery_attempt: None,
        format: PushFormat::Wrapped,
    }
}

async fn call(h: &Handler<PushMessage>, data: &[u8]) -> Result<Reply, HandlerError> {
    h.clone()
        .oneshot(Invocation::new(
            push_message(data),
            Context::for_test("audit-alerter"),
        ))
        .await
}

impl Harness {
    async fn entry(&self, entry: &Value) -> Result<Reply, HandlerError> {
        call(&self.audit, &serde_json::to_vec(entry).unwrap()).await
    }

    async fn ok(&self, entry: &Value) {
        let r = self.entry(entry).await.expect("accepted");
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }

    async fn notice(&self, n: &RotationNotice) {
        let r = call(&self.rotation, &n.to_message().data).await.unwrap();
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }

    fn only_alert(&self) -> Alert {
        let alerts = self.bus.alerts();
        assert_eq!(alerts.len(), 1, "expected one alert, got {alerts:#?}");
        alerts.into_iter().next().unwrap()
    }

    fn none(&self) {
        let alerts = self.bus.alerts();
        assert!(alerts.is_empty(), "expected no alert, got {alerts:#?}");
    }
}

// ---------------------------------------------------------------------------
// Entries in Google's documented shapes (reference/audit.md §1.2–1.4)

fn ts(offset_secs: i64) -> String {
    (t0() + TimeDelta::seconds(offset_secs)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn log_name(kind: &str) -> String {
    format!("projects/{PROJECT}/logs/cloudaudit.googleapis.com%2F{kind}")
}

fn secret_name(secret: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("projects/{PROJECT_NUMBER}/secrets/{secret}/versions/{v}"),
        None => format!("projects/{PROJECT_NUMBER}/secrets/{secret}"),
    }
}

/// A Secret Manager entry. `status` is `{}` on success.
fn sm_entry(
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

fn access(insert_id: &str, principal: &str, secret: &str) -> Value {
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

fn version_change(insert_id: &str, method: &str, principal: &str, secret: &str, at: i64) -> Value {
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

const WEBHOOK_SECRET_ID: &str = "patchpanda-webhook-secret";
const KEY: &str = "projects/my-proj/locations/us-central1/keyRings/patchpanda-keys/cryptoKeys/patchpanda-crypto-key";

/// Sample A of the reference (Panther's KMS disable), on the gateway's key.
fn kms_entry(
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

fn iam_entry(insert_id: &str, method: &str, principal: &str, sa: &str, response: Value) -> Value {
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
fn token_entry(insert_id: &str, method: &str, auth: Value, sa: &str) -> Value {
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

fn notice(logical: &str, event: NoticeEvent, id: &str, principal: &str, at: i64) -> RotationNotice {
    let mut n = RotationNotice::new(logical, event, id);
    n.principal = Some(principal.to_string());
    n.time = t0() + TimeDelta::seconds(at);
    n
}

// ---------------------------------------------------------------------------
// Detections

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
    let msg = &h.bus.messages()[0];
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
    // Only annotations: not an alias change.
    h.bus.clear();
    h.ok(&sm_entry(
        "annot-1",
        sm::UPDATE_SECRET,
        HUMAN,
        &name,
        "secretmanager.secrets.update",
        json!({}),
        json!({"secret": {"name": name}, "updateMask": "annotations"}),
    ))
    .await;
    h.none();
}

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
    h.ok(&version_change(
        "r-add",
        sm::ADD_SECRET_VERSION,
        ROTATOR_SA,
        WEBHOOK_SECRET_ID,
        0,
    ))
    .await;
    // Held briefly in case the notice is late; nothing yet.
    h.none();
    assert_eq!(h.alerter.held(), 1);
    h.clock.advance(TimeDelta::minutes(3));
    let out = h.alerter.tick().await;
    assert_eq!(out.len(), 1);
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
    h.ok(&version_change(
        "r-add-2",
        sm::ADD_SECRET_VERSION,
        ROTATOR_SA,
        "patchpanda-oidc-client-secret",
        110,
    ))
    .await;
    h.clock.advance(TimeDelta::minutes(3));
    h.alerter.tick().await;
    assert_eq!(h.bus.rules(), vec![Rule::RotatorOutsideRotation]);
}

#[tokio::test]
async fn a_late_notice_covers_a_held_change() {
    let h = harness();
    h.ok(&version_change(
        "late-1",
        sm::DISABLE_SECRET_VERSION,
        ROTATOR_SA,
        WEBHOOK_SECRET_ID,
        0,
    ))
    .await;
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
    h.ok(&later).await;
    h.clock.advance(TimeDelta::minutes(5));
    h.alerter.tick().await;
    assert_eq!(h.only_alert().rule, Rule::RotatorOutsideRotation);
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
async fn a_spike_in_reads_of_one_secret_alerts_once() {
    let mut s = test_settings(&[]);
    s.read_spike.min_count = 10;
    let h = harness_with(s);
    for i in 0..40 {
        let mut e = access(&format!("spike-{i}"), GATEWAY_SA, WEBHOOK_SECRET_ID);
        e["timestamp"] = json!(ts(i));
        h.ok(&e).await;
    }
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SecretReadSpike);
    assert_eq!(a.details["count"], "10");
    assert_eq!(a.resource, WEBHOOK_SECRET_ID);
}

#[tokio::test]
async fn a_spike_in_signature_failures_alerts() {
    let mut s = test_settings(&[]);
    s.signature_spike.min_count = 5;
    let h = harness_with(s);
    for i in 0..8 {
        let e = json!({
            "insertId": format!("sig-{i}"),
            "logName": "projects/my-proj/logs/run.googleapis.com%2Fstdout",
            "resource": {"type": "cloud_run_revision", "labels": {"service_name": "webhook-ingest", "project_id": PROJECT}},
            "jsonPayload": {"event": "signature_rejected", "reason": "mismatch", "delivery": format!("d-{i}"), "remote_ip": "203.0.113.9", "message": "signature rejected"},
            "severity": "WARNING",
            "timestamp": ts(i),
        });
        h.ok(&e).await;
    }
    let a = h.only_alert();
    assert_eq!(a.rule, Rule::SignatureFailureSpike);
    assert_eq!(a.resource, "webhook-ingest");
    assert_eq!(a.details["reason"], "mismatch");
}

#[tokio::test]
async fn silence_in_data_access_logs_raises_a_warning_once() {
    let h = harness();
    h.clock.advance(TimeDelta::hours(5));
    assert!(h.alerter.tick().await.is_empty());
    h.clock.advance(TimeDelta::hours(2));
    let out = h.alerter.tick().await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule, Rule::DataAccessSilent);
    assert!(out[0].summary.contains("Data Access"));
    h.clock.advance(TimeDelta::hours(1));
    assert!(h.alerter.tick().await.is_empty(), "once per silence");
    // A data_access entry for a secret re-arms the check.
    h.ok(&access("da-1", GATEWAY_SA, WEBHOOK_SECRET_ID)).await;
    h.clock.advance(TimeDelta::hours(5));
    assert!(h.alerter.tick().await.is_empty());
    h.clock.advance(TimeDelta::hours(2));
    assert_eq!(h.alerter.tick().await.len(), 1);
}

#[tokio::test]
async fn disabled_rules_and_severity_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerter.toml");
    std::fs::write(&path, "[rules.secret-read-unexpected]\nseverity = \"P2\"\n[rules.secret-deleted]\nenabled = false\n").unwrap();
    let h = harness_with(test_settings(&[(
        settings::ENV_CONFIG,
        path.to_str().unwrap(),
    )]));
    h.ok(&access("r", HUMAN, WEBHOOK_SECRET_ID)).await;
    let name = secret_name(WEBHOOK_SECRET_ID, None);
    h.ok(&sm_entry(
        "d",
        sm::DELETE_SECRET,
        HUMAN,
        &name,
        "secretmanager.secrets.delete",
        json!({}),
        json!({}),
    ))
    .await;
    let a = h.only_alert();
    assert_eq!(
        (a.rule, a.severity),
        (Rule::SecretReadUnexpected, Severity::P2)
    );
}

// ---------------------------------------------------------------------------
// Input handling

#[tokio::test]
async fn malformed_messages_are_400_with_one_line_and_change_nothing() {
    let h = harness();
    let cases: [&[u8]; 8] = [
        b"",
        b"not json at all",
        b"[1,2,3]",
        b"{\"hello\":\"world\"}",
        br#"{"logName":"x","insertId":"1","protoPayload":{"serviceName":"secretmanager.googleapis.com"}}"#,
        br#"{"logName":"x","insertId":"2","protoPayload":{"methodName":["not","a","string"]}}"#,
        br#"{"logName":"x","insertId":"3","timestamp":12}"#,
        &[0xff, 0xfe, 0x00, 0x01],
    ];
    for data in cases {
        let err = call(&h.audit, data).await.unwrap_err();
        assert_eq!(
            err.status(),
            StatusCode::BAD_REQUEST,
            "{:?}",
            String::from_utf8_lossy(data)
        );
        assert!(!err.message().contains('\n'), "one line: {}", err.message());
        assert!(!err.message().is_empty());
    }
    for data in [
        &b"{}"[..],
        b"not a notice",
        br#"{"secret":"webhook-secret","event":"exploded"}"#,
    ] {
        let err = call(&h.rotation, data).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
    h.none();
}

#[tokio::test]
async fn non_audit_entries_are_acknowledged_and_ignored() {
    let h = harness();
    h.ok(&json!({"logName": "projects/my-proj/logs/run.googleapis.com%2Fstdout", "insertId": "t1", "textPayload": "hello"})).await;
    h.ok(&json!({"logName": "projects/my-proj/logs/x", "insertId": "t2", "jsonPayload": {"event": "delivery_published"}})).await;
    h.ok(&json!({"logName": "projects/my-proj/logs/x", "insertId": "t3", "protoPayload": {"@type": "type.googleapis.com/google.appengine.logging.v1.RequestLog"}})).await;
    h.none();
}

#[tokio::test]
async fn the_same_entry_twice_alerts_once() {
    let h = harness();
    let e = access("dup-1", HUMAN, WEBHOOK_SECRET_ID);
    h.ok(&e).await;
    h.ok(&e).await;
    assert_eq!(h.bus.alerts().len(), 1);
    // Same insertId in another log is another entry (folded by suppression,
    // not dropped by dedup).
    let mut other = e.clone();
    other["logName"] = json!("projects/other-proj/logs/cloudaudit.googleapis.com%2Fdata_access");
    assert!(matches!(
        h.alerter
            .analyze(&serde_json::to_vec(&other).unwrap())
            .unwrap(),
        audit_alerter::Analysis::Alerts(_)
    ));
    assert_eq!(
        h.alerter
            .analyze(&serde_json::to_vec(&other).unwrap())
            .unwrap(),
        audit_alerter::Analysis::Duplicate
    );
}

#[tokio::test]
async fn a_wrapped_pubsub_message_in_a_cloudevent_is_unwrapped() {
    use base64::Engine;
    let h = harness();
    let inner = serde_json::to_vec(&access("ce-1", HUMAN, WEBHOOK_SECRET_ID)).unwrap();
    let ce_data = json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode(inner), "messageId": "1"}, "subscription": "s"});
    h.ok(&ce_data).await;
    assert_eq!(h.only_alert().insert_id, "ce-1");
}

#[tokio::test]
async fn a_burst_goes_out_once_at_once_and_the_rest_is_counted() {
    let h = harness();
    for i in 0..6 {
        h.ok(&access(&format!("burst-{i}"), HUMAN, WEBHOOK_SECRET_ID))
            .await;
        if i == 0 {
            assert_eq!(h.bus.alerts().len(), 1, "the first goes out immediately");
        }
    }
    let a = h.only_alert();
    assert_eq!(a.insert_id, "burst-0");
    assert_eq!(a.folded, 0);
    // The next one after the window carries the count.
    h.clock
        .advance(TimeDelta::minutes(10) + TimeDelta::seconds(1));
    h.ok(&access("burst-late", HUMAN, WEBHOOK_SECRET_ID)).await;
    let alerts = h.bus.alerts();
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[1].insert_id, "burst-late");
    assert_eq!(alerts[1].folded, 5);
    // Another principal is another fingerprint.
    h.ok(&access("burst-eve", "eve@example.com", WEBHOOK_SECRET_ID))
        .await;
    assert_eq!(h.bus.alerts().len(), 3);
}

// ---------------------------------------------------------------------------
// Sinks against stub HTTP servers

#[derive(Clone, Default)]
struct Stub {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// Statuses to answer, in order; 200 once they run out.
    script: Arc<Mutex<VecDeque<u16>>>,
}

async fn record(State(stub): State<Stub>, headers: HeaderMap, body: Bytes) -> StatusCode {
    stub.got.lock().unwrap().push((headers, body));
    let code = stub.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

async fn stub_server(script: &[u16]) -> (String, Stub) {
    let stub = Stub::default();
    stub.script.lock().unwrap().extend(script.iter().copied());
    let app = Router::new()
        .route("/{*path}", post(record))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    (format!("http://{addr}"), stub)
}

impl Stub {
    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap_or(Value::Null))
            .collect()
    }
}

#[tokio::test]
async fn slack_gets_block_kit() {
    let (url, stub) = stub_server(&[]).await;
    let h = harness_with(test_settings(&[(
        settings::ENV_SLACK_URL,
        &format!("{url}/services/T0/B0/secret-token"),
    )]));
    h.ok(&access("slack-1", HUMAN, WEBHOOK_SECRET_ID)).await;
    let bodies = stub.bodies();
    assert_eq!(bodies.len(), 1);
    let b = &bodies[0];
    assert!(
        b["text"]
            .as_str()
            .unwrap()
            .starts_with("[P0] mallory@example.com read")
    );
    let blocks = b["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(
        blocks[0]["text"]["text"],
        "P0 Secret read by an unexpected principal"
    );
    let fields = blocks[2]["fields"].as_array().unwrap();
    assert_eq!(fields[0]["text"], "*Principal:*\nmallory@example.com");
    assert!(fields.iter().any(|f| f["text"] == "*insertId:*\nslack-1"));
    let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
    assert!(
        actions["elements"][0]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://console.cloud.google.com/logs/query")
    );
}

#[tokio::test]
async fn pagerduty_gets_an_events_v2_trigger() {
    let (url, stub) = stub_server(&[202]).await;
    let key = "R0UT1NGK3Y0123456789abcdefabcdef";
    let h = harness_with(test_settings(&[
        (settings::ENV_PAGERDUTY_KEY, key),
        (settings::ENV_PAGERDUTY_URL, &format!("{url}/v2/enqueue")),
    ]));
    h.ok(&access("pd-1", HUMAN, WEBHOOK_SECRET_ID)).await;
    let v1 = format!("{KEY}/cryptoKeyVersions/1");
    h.ok(&kms_entry(
        "pd-2",
        kms::UPDATE_CRYPTO_KEY_VERSION,
        HUMAN,
        &v1,
        json!({"cryptoKeyVersion": {"state": "DISABLED"}, "updateMask": "state"}),
    ))
    .await;
    let bodies = stub.bodies();
    assert_eq!(bodies.len(), 2);
    let b = &bodies[0];
    assert_eq!(b["routing_key"], key);
    assert_eq!(b["event_action"], "trigger");
    assert_eq!(
        b["dedup_key"],
        "secret-read-unexpected|mallory@example.com|patchpanda-webhook-secret/versions/3"
    );
    assert_eq!(b["payload"]["severity"], "critical");
    assert_eq!(
        b["payload"]["source"],
        "patchpanda-webhook-secret/versions/3"
    );
    assert_eq!(b["payload"]["class"], "secret-read-unexpected");
    assert_eq!(b["payload"]["custom_details"]["insertId"], "pd-1");
    assert!(b["payload"]["summary"].as_str().unwrap().len() <= 1024);
    assert_eq!(bodies[1]["payload"]["severity"], "error", "P1 -> error");
    // The routing key is in the body only: not in the alert on the bus.
    assert!(
        h.bus
            .messages()
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.data).contains(key))
    );
}

#[tokio::test]
async fn the_generic_webhook_gets_signed_json() {
    let (url, stub) = stub_server(&[]).await;
    let h = harness_with(test_settings(&[
        (settings::ENV_WEBHOOK_URL, &format!("{url}/hook")),
        (settings::ENV_WEBHOOK_SECRET, "hook-secret"),
    ]));
    let name = secret_name(WEBHOOK_SECRET_ID, None);
    h.ok(&sm_entry(
        "wh-1",
        sm::DELETE_SECRET,
        HUMAN,
        &name,
        "secretmanager.secrets.delete",
        json!({}),
        json!({}),
    ))
    .await;
    let got = stub.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (headers, raw) = &got[0];
    let body: Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(body["status"], "firing");
    assert_eq!(body["rule"], "secret-deleted");
    assert_eq!(body["severity"], "P0");
    assert_eq!(body["insertId"], "wh-1");
    assert_eq!(body["principal"], HUMAN);
    let sig = headers[audit_alerter::sinks::webhook::SIGNATURE_HEADER]
        .to_str()
        .unwrap();
    assert_eq!(
        sig,
        audit_alerter::sinks::webhook::signature(b"hook-secret", raw)
    );
    assert_ne!(
        sig,
        audit_alerter::sinks::webhook::signature(b"other-secret", raw)
    );
}

#[tokio::test]
async fn a_sink_that_fails_with_500_is_retried_until_it_succeeds() {
    let (url, stub) = stub_server(&[500, 503]).await;
    let (ok_url, ok_stub) = stub_server(&[]).await;
    let h = harness_with(test_settings(&[
        (settings::ENV_WEBHOOK_URL, &format!("{url}/hook")),
        (settings::ENV_SLACK_URL, &format!("{ok_url}/services/x")),
    ]));
    h.ok(&access("retry-1", HUMAN, WEBHOOK_SECRET_ID)).await;
    let bodies = stub.bodies();
    assert_eq!(bodies.len(), 3, "two failures, then success");
    assert!(bodies.iter().all(|b| b["insertId"] == "retry-1"));
    assert_eq!(ok_stub.bodies().len(), 1, "the healthy sink got it once");
    assert_eq!(h.bus.alerts().len(), 1);
}

#[tokio::test]
async fn a_dead_sink_does_not_hold_the_ack() {
    let (url, stub) = stub_server(&[500, 500, 500, 500, 500, 500]).await;
    let mut s = test_settings(&[(settings::ENV_WEBHOOK_URL, &format!("{url}/hook"))]);
    s.delivery.attempts = 3;
    let h = harness_with(s);
    h.ok(&access("dead-1", HUMAN, WEBHOOK_SECRET_ID)).await;
    assert_eq!(stub.bodies().len(), 3, "bounded attempts");
    assert_eq!(h.bus.alerts().len(), 1, "pubsub still got it");
}

// ---------------------------------------------------------------------------
// Wiring

#[tokio::test]
async fn app_builds_on_the_local_backend() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([("PATCHPANDA_HOME", dir.path().to_str().unwrap())]);
    let config = Config::from_env(&env, names::PRINCIPAL_AUDIT_ALERTER).unwrap();
    let app = audit_alerter::app(config, env).await.expect("app builds");
    assert_eq!(app.service(), audit_alerter::SERVICE);
}

#[tokio::test]
async fn a_bad_alerter_setting_stops_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::from_pairs([
        ("PATCHPANDA_HOME", dir.path().to_str().unwrap()),
        (settings::ENV_SUPPRESS_WINDOW, "soonish"),
    ]);
    let config = Config::from_env(&env, names::PRINCIPAL_AUDIT_ALERTER).unwrap();
    let err = audit_alerter::app(config, env)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().starts_with(settings::ENV_SUPPRESS_WINDOW),
        "{err}"
    );
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
