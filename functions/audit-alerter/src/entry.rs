//! From message bytes to a `LogEntry`, and the facts rules need from one:
//! who (principal), what (target resource), when, and how it went.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use patchpanda_shared::audit_log::{AUDIT_LOG_TYPE, AuditLog, LogEntry};
use serde_json::Value;

use crate::settings::normalize_principal;

/// What a message turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A Cloud Audit Logs entry.
    Audit(LogEntry),
    /// webhook-ingest's own `signature_rejected` log line.
    SignatureRejected(LogEntry),
    /// A valid LogEntry the alerter has no rule for (acknowledged).
    Ignored(&'static str),
}

/// Why a message can never be processed; answered 400 so Pub/Sub retries it
/// until its dead-letter policy keeps it for a person to look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// The `event` value webhook-ingest logs for a rejected signature.
pub const SIGNATURE_REJECTED: &str = "signature_rejected";

/// Decodes one message's data: a LogEntry as a log sink writes it, or a
/// Pub/Sub message wrapped once more (a CloudEvent `messagePublished` whose
/// data is `{"message":{"data":"<base64>"}}`).
pub fn decode(data: &[u8]) -> Result<Decoded, Malformed> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(Malformed(
            "empty message: expected a LogEntry as JSON".into(),
        ));
    }
    // The common case in one pass; the slower path below only runs for
    // wrapped or malformed messages, to find out which and say why.
    if let Ok(entry) = serde_json::from_slice::<LogEntry>(data)
        && (!entry.log_name.is_empty() || entry.proto_payload.is_some())
    {
        return classify(entry);
    }
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| Malformed(format!("message data is not JSON: {e}")))?;
    let value = match unwrap_pubsub(&value)? {
        Some(inner) => inner,
        None => value,
    };
    let Value::Object(map) = &value else {
        return Err(Malformed(
            "message data is not a JSON object (a LogEntry)".into(),
        ));
    };
    if !map.contains_key("logName") && !map.contains_key("protoPayload") {
        return Err(Malformed(
            "message data is not a LogEntry: it has neither logName nor protoPayload".into(),
        ));
    }
    let entry: LogEntry =
        serde_json::from_value(value).map_err(|e| Malformed(format!("malformed LogEntry: {e}")))?;
    classify(entry)
}

fn unwrap_pubsub(value: &Value) -> Result<Option<Value>, Malformed> {
    let Some(inner) = value
        .get("message")
        .and_then(|m| m.get("data"))
        .filter(|_| value.get("logName").is_none())
    else {
        return Ok(None);
    };
    let Some(b64) = inner.as_str() else {
        return Err(Malformed("message.data is not a base64 string".into()));
    };
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| Malformed("message.data is not valid base64".into()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Malformed(format!("message.data is not JSON: {e}")))
}

fn classify(entry: LogEntry) -> Result<Decoded, Malformed> {
    if let Some(p) = &entry.proto_payload {
        let is_audit = p.type_url.as_deref().is_none_or(|t| t == AUDIT_LOG_TYPE);
        if !is_audit {
            return Ok(Decoded::Ignored("protoPayload is not an AuditLog"));
        }
        if p.method_name.is_empty() || p.service_name.is_empty() {
            return Err(Malformed(
                "AuditLog entry without serviceName or methodName".into(),
            ));
        }
        return Ok(Decoded::Audit(entry));
    }
    if let Some(j) = &entry.json_payload {
        let event = j
            .get("event")
            .and_then(Value::as_str)
            .or_else(|| j.get("message").and_then(Value::as_str));
        if event == Some(SIGNATURE_REJECTED) {
            return Ok(Decoded::SignatureRejected(entry));
        }
    }
    Ok(Decoded::Ignored("not an audit entry"))
}

/// Cloud Audit Logs' log ids (`cloudaudit.googleapis.com/<kind>`), which
/// only Google writes.
const AUDIT_LOG_IDS: [&str; 4] = ["activity", "data_access", "system_event", "policy"];

/// The log ids Cloud Run writes a container's output to.
const RUN_LOG_IDS: [&str; 2] = ["stdout", "stderr"];

/// Keeps an entry only when its log is one the rules may believe: an audit
/// entry from a Cloud Audit Logs log, a signature rejection from a Cloud
/// Run container's output. Anyone who may write log entries can write an
/// AuditLog payload into a log of their own naming, and the sink matches
/// `logName:"cloudaudit.googleapis.com"` as a substring, so a forged
/// `.../logs/x-cloudaudit.googleapis.com%2Fdata_access` would otherwise
/// raise alerts, or keep the Data Access silence check quiet after the
/// real Data Access logs were turned off. Such an entry is acknowledged and
/// ignored, with a warning.
pub fn trusted(decoded: Decoded) -> Decoded {
    let (entry, service, ids) = match &decoded {
        Decoded::Audit(e) => (e, "cloudaudit.googleapis.com", &AUDIT_LOG_IDS[..]),
        Decoded::SignatureRejected(e) => (e, "run.googleapis.com", &RUN_LOG_IDS[..]),
        Decoded::Ignored(_) => return decoded,
    };
    if log_id(&entry.log_name)
        .and_then(|id| id.strip_prefix(service))
        .and_then(|rest| rest.strip_prefix("%2F").or_else(|| rest.strip_prefix('/')))
        .is_some_and(|kind| ids.contains(&kind))
    {
        return decoded;
    }
    let shown: String = entry.log_name.chars().take(200).collect();
    tracing::warn!(
        event = "untrusted_log_entry",
        log_name = %crate::rules::one_line(&shown),
        insert_id = %crate::rules::one_line(&entry.insert_id.chars().take(100).collect::<String>()),
        "ignoring an entry whose log is not {service}'s: whoever wrote it can write log entries"
    );
    match decoded {
        Decoded::Audit(_) => Decoded::Ignored("an audit payload outside Cloud Audit Logs' logs"),
        _ => Decoded::Ignored("a signature rejection outside Cloud Run's container logs"),
    }
}

/// `<id>` of `<projects|organizations|folders|billingAccounts>/<x>/logs/<id>`.
fn log_id(log_name: &str) -> Option<&str> {
    let mut parts = log_name.splitn(4, '/');
    let (Some(kind), Some(owner), Some("logs"), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let known = ["projects", "organizations", "folders", "billingAccounts"].contains(&kind);
    (known && !owner.is_empty()).then_some(id)
}

/// The entry's time: its timestamp, else when Logging received it, else now.
pub fn entry_time(entry: &LogEntry, now: DateTime<Utc>) -> DateTime<Utc> {
    entry
        .time()
        .or_else(|| {
            let r = entry.receive_timestamp.as_deref()?;
            DateTime::parse_from_rfc3339(r)
                .ok()
                .map(|d| d.with_timezone(&Utc))
        })
        .unwrap_or(now)
}

/// The gRPC status code; an absent status or code means success.
pub fn status_code(audit: &AuditLog) -> i32 {
    audit.status.as_ref().map_or(0, |s| s.code)
}

/// Every resource name an entry mentions, most specific first.
pub fn resource_names(audit: &AuditLog) -> impl Iterator<Item = &str> {
    let req = audit.request.as_ref();
    let from_request = ["name", "parent", "resource"]
        .into_iter()
        .filter_map(move |k| req.and_then(|r| r.get(k)).and_then(Value::as_str));
    std::iter::once(audit.resource_name.as_str())
        .chain(from_request)
        .chain(audit.authorization_info.iter().map(|a| a.resource.as_str()))
        .filter(|s| !s.is_empty())
}

/// A Secret Manager name: `projects/P/secrets/ID[/versions/V]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretName<'a> {
    pub id: &'a str,
    pub version: Option<&'a str>,
}

pub fn parse_secret(name: &str) -> Option<SecretName<'_>> {
    let mut parts = name.split('/');
    while let Some(p) = parts.next() {
        if p == "secrets" {
            let id = parts.next().filter(|s| !s.is_empty())?;
            let version = match parts.next() {
                Some("versions") => parts.next().filter(|s| !s.is_empty()),
                _ => None,
            };
            return Some(SecretName { id, version });
        }
    }
    None
}

/// A Cloud KMS name: `.../keyRings/R[/cryptoKeys/K[/cryptoKeyVersions/V]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsName<'a> {
    pub ring: &'a str,
    pub key: Option<&'a str>,
    pub version: Option<&'a str>,
}

pub fn parse_kms(name: &str) -> Option<KmsName<'_>> {
    let mut ring = None;
    let mut key = None;
    let mut version = None;
    let mut parts = name.split('/');
    while let Some(p) = parts.next() {
        match p {
            "keyRings" => ring = parts.next(),
            "cryptoKeys" => key = parts.next(),
            "cryptoKeyVersions" => version = parts.next(),
            _ => {}
        }
    }
    Some(KmsName {
        ring: ring.filter(|s| !s.is_empty())?,
        key: key.filter(|s| !s.is_empty()),
        version: version.filter(|s| !s.is_empty()),
    })
}

/// The service account a name is about: the segment after
/// `serviceAccounts/` (an email or a unique id), normalized.
pub fn parse_service_account(name: &str) -> Option<String> {
    let mut parts = name.split('/');
    while let Some(p) = parts.next() {
        if p == "serviceAccounts" {
            return parts
                .next()
                .filter(|s| !s.is_empty() && *s != "-")
                .map(normalize_principal);
        }
    }
    None
}

/// Every service account an entry is about: names, the monitored
/// resource's labels, and the delegation chain of impersonation calls.
pub fn service_accounts(entry: &LogEntry, audit: &AuditLog) -> Vec<String> {
    let mut out: Vec<String> = resource_names(audit)
        .filter_map(parse_service_account)
        .collect();
    if let Some(r) = &entry.resource
        && r.kind == "service_account"
    {
        for label in ["email_id", "unique_id"] {
            if let Some(v) = r.labels.get(label).filter(|v| !v.is_empty()) {
                out.push(normalize_principal(v));
            }
        }
    }
    if let Some(chain) = audit
        .metadata
        .as_ref()
        .and_then(|m| m.get("identityDelegationChain"))
        .and_then(Value::as_array)
    {
        out.extend(
            chain
                .iter()
                .filter_map(Value::as_str)
                .filter_map(parse_service_account),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// The caller IP and user agent, for triage.
pub fn caller(audit: &AuditLog) -> (Option<&str>, Option<&str>) {
    let md = audit.request_metadata.as_ref();
    let ip = md
        .and_then(|m| m.get("callerIp").or_else(|| m.get("callerIP")))
        .and_then(Value::as_str);
    let ua = md
        .and_then(|m| m.get("callerSuppliedUserAgent"))
        .and_then(Value::as_str);
    (ip, ua)
}

/// The project a log name belongs to (`projects/P/logs/...`).
pub fn log_project(log_name: &str) -> Option<&str> {
    log_name
        .strip_prefix("projects/")
        .and_then(|rest| rest.split('/').next())
        .filter(|p| !p.is_empty())
}

/// The method without its package (`AccessSecretVersion`), for summaries.
pub fn short_method(method: &str) -> &str {
    method.rsplit('.').next().unwrap_or(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        let s = parse_secret("projects/907234637394/secrets/patchpanda-webhook-secret/versions/3")
            .unwrap();
        assert_eq!(s.id, "patchpanda-webhook-secret");
        assert_eq!(s.version, Some("3"));
        assert_eq!(parse_secret("projects/p/secrets/x").unwrap().version, None);
        assert!(parse_secret("projects/p/secrets/").is_none());
        assert!(parse_secret("projects/p/locations/us").is_none());

        let k =
            parse_kms("projects/p/locations/us/keyRings/ring/cryptoKeys/key/cryptoKeyVersions/1")
                .unwrap();
        assert_eq!((k.ring, k.key, k.version), ("ring", Some("key"), Some("1")));
        let r = parse_kms("projects/p/locations/us/keyRings/ring").unwrap();
        assert_eq!((r.ring, r.key), ("ring", None));
        assert!(parse_kms("projects/p").is_none());

        assert_eq!(
            parse_service_account("projects/-/serviceAccounts/GW@p.iam.gserviceaccount.com/keys/k"),
            Some("gw@p.iam.gserviceaccount.com".into())
        );
        assert_eq!(parse_service_account("projects/-/serviceAccounts/-"), None);
        assert_eq!(log_project("projects/my-proj/logs/x"), Some("my-proj"));
        assert_eq!(log_project("organizations/1/logs/x"), None);
        assert_eq!(
            short_method("google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion"),
            "AccessSecretVersion"
        );
        assert_eq!(short_method("Decrypt"), "Decrypt");
    }

    #[test]
    fn decodes_and_classifies() {
        assert!(decode(b"").is_err());
        assert!(decode(b"  \n").is_err());
        assert!(decode(b"{not json").is_err());
        assert!(decode(b"[1,2]").is_err());
        assert!(decode(b"{\"hello\":1}").is_err());
        assert!(decode(br#"{"logName":"x","protoPayload":{"methodName":7}}"#).is_err());
        assert!(decode(br#"{"logName":"x","protoPayload":{"serviceName":"a"}}"#).is_err());
        assert!(matches!(
            decode(br#"{"logName":"x","textPayload":"hi"}"#),
            Ok(Decoded::Ignored(_))
        ));
        assert!(matches!(
            decode(br#"{"logName":"x","protoPayload":{"@type":"type.googleapis.com/other"}}"#),
            Ok(Decoded::Ignored(_))
        ));
        assert!(matches!(
            decode(br#"{"logName":"x","jsonPayload":{"event":"signature_rejected"}}"#),
            Ok(Decoded::SignatureRejected(_))
        ));
        let inner = br#"{"logName":"x","protoPayload":{"serviceName":"s","methodName":"m"}}"#;
        let wrapped = format!(r#"{{"message":{{"data":"{}"}}}}"#, STANDARD.encode(inner));
        assert!(matches!(decode(wrapped.as_bytes()), Ok(Decoded::Audit(_))));
        assert!(decode(br#"{"message":{"data":"%%%"}}"#).is_err());
    }

    #[test]
    fn only_google_written_logs_are_trusted() {
        let audit = |log: &str| {
            trusted(
                decode(
                    format!(r#"{{"logName":"{log}","protoPayload":{{"serviceName":"s","methodName":"m"}}}}"#)
                        .as_bytes(),
                )
                .unwrap(),
            )
        };
        for ok in [
            "projects/p/logs/cloudaudit.googleapis.com%2Factivity",
            "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access",
            "projects/p/logs/cloudaudit.googleapis.com/data_access",
            "organizations/1/logs/cloudaudit.googleapis.com%2Fpolicy",
        ] {
            assert!(matches!(audit(ok), Decoded::Audit(_)), "{ok}");
        }
        for forged in [
            "projects/p/logs/x-cloudaudit.googleapis.com%2Fdata_access",
            "projects/p/logs/cloudaudit.googleapis.com%2Fdata_access2",
            "projects/p/logs/cloudaudit.googleapis.com%2Fx%2Fdata_access",
            "projects/p/logs/my-app",
            "projects//logs/cloudaudit.googleapis.com%2Factivity",
            "x/cloudaudit.googleapis.com%2Factivity",
            "",
        ] {
            assert!(matches!(audit(forged), Decoded::Ignored(_)), "{forged}");
        }
        let sig = |log: &str| {
            trusted(
                decode(
                    format!(
                        r#"{{"logName":"{log}","jsonPayload":{{"event":"signature_rejected"}}}}"#
                    )
                    .as_bytes(),
                )
                .unwrap(),
            )
        };
        assert!(matches!(
            sig("projects/p/logs/run.googleapis.com%2Fstdout"),
            Decoded::SignatureRejected(_)
        ));
        for forged in [
            "projects/p/logs/my-app",
            "projects/p/logs/cloudaudit.googleapis.com%2Factivity",
            "projects/p/logs/evil-run.googleapis.com%2Fstdout",
        ] {
            assert!(matches!(sig(forged), Decoded::Ignored(_)), "{forged}");
        }
    }
}
