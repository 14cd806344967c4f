//! The message published for one delivery (docs/design.md, webhook-ingest): the
//! JSON payload as GitHub sent it (gzip past 1 MiB), and attributes a
//! subscriber can filter on without opening the data.

use std::borrow::Cow;
use std::io::Write;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use patchpanda_shared::bus::Message;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// Payloads larger than this are gzipped.
pub const GZIP_THRESHOLD: usize = 1024 * 1024;
/// Pub/Sub's limit on one message (data plus attributes), less room for the
/// attributes.
pub const MAX_MESSAGE_DATA: usize = 10_000_000 - 16 * 1024;
/// Pub/Sub's limit on an attribute value (and on an ordering key).
const MAX_ATTRIBUTE_BYTES: usize = 1024;

pub const ATTR_EVENT: &str = "github_event";
pub const ATTR_ACTION: &str = "github_action";
pub const ATTR_DELIVERY: &str = "github_delivery";
pub const ATTR_HOOK_ID: &str = "github_hook_id";
pub const ATTR_INSTALLATION: &str = "installation_id";
pub const ATTR_REPOSITORY: &str = "repository";
pub const ATTR_SENDER: &str = "sender";
pub const ATTR_RECEIVED_AT: &str = "received_at";
pub const ATTR_SECRET_VERSION: &str = "secret_version";
pub const ATTR_CONTENT_ENCODING: &str = "content_encoding";

/// What the attributes need from the payload. Every field is optional and
/// read leniently: an odd value drops the attribute, never the delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadFacts {
    pub action: Option<String>,
    pub installation_id: Option<u64>,
    /// `owner/name`.
    pub repository: Option<String>,
    pub sender: Option<String>,
    /// Set on `ping` payloads.
    pub hook_id: Option<u64>,
}

/// Only the top-level keys the attributes need are kept as values; the rest
/// (commits, diffs: nearly all of a large payload) is checked for syntax and
/// skipped without allocating.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    action: Option<serde_json::Value>,
    #[serde(default)]
    installation: Option<Small>,
    #[serde(default)]
    repository: Option<Small>,
    #[serde(default)]
    sender: Option<Small>,
    #[serde(default)]
    hook_id: Option<serde_json::Value>,
}

/// The few fields read from a nested object.
#[derive(Deserialize)]
struct Small {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    full_name: Option<serde_json::Value>,
    #[serde(default)]
    login: Option<serde_json::Value>,
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("the payload is not a JSON object")]
    NotAnObject,
    #[error("the payload is not valid JSON: {0}")]
    Syntax(String),
}

/// Checks that `json` is one JSON object and pulls out the attribute facts.
pub fn read_facts(json: &[u8]) -> Result<PayloadFacts, PayloadError> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(PayloadError::NotAnObject);
    }
    let env: Envelope = match serde_json::from_slice(json) {
        Ok(e) => e,
        // A known key with an unexpected shape (say `"repository": 5`) is
        // still valid JSON: accept it without the facts it would give.
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            serde_json::from_slice::<IgnoredAny>(json)
                .map_err(|e| PayloadError::Syntax(e.to_string()))?;
            return Ok(PayloadFacts::default());
        }
        Err(e) => return Err(PayloadError::Syntax(e.to_string())),
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    let number = |v: Option<serde_json::Value>| v.and_then(|v| v.as_u64());
    Ok(PayloadFacts {
        action: text(env.action),
        installation_id: number(env.installation.and_then(|i| i.id)),
        repository: text(env.repository.and_then(|r| r.full_name)),
        sender: text(env.sender.and_then(|s| s.login)),
        hook_id: number(env.hook_id),
    })
}

/// The delivery's own facts, from its headers and our verification.
#[derive(Debug, Clone)]
pub struct DeliveryMeta {
    pub event: String,
    pub delivery: String,
    /// `X-GitHub-Hook-ID`.
    pub hook_id: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The webhook-secret version whose signature matched.
    pub secret_version: u64,
}

/// The bus message for one delivery. Gzips (CPU-bound) when the payload is
/// over [`GZIP_THRESHOLD`]; callers with large payloads run this off the
/// async threads.
pub fn build(
    payload: Bytes,
    facts: &PayloadFacts,
    meta: &DeliveryMeta,
    ordering_by_repository: bool,
) -> std::io::Result<Message> {
    let (data, gzipped) = if payload.len() > GZIP_THRESHOLD {
        (Bytes::from(gzip(&payload)?), true)
    } else {
        (payload, false)
    };
    let mut m = Message::new(data)
        .attribute(ATTR_EVENT, clip(&meta.event))
        .attribute(ATTR_DELIVERY, clip(&meta.delivery))
        .attribute(
            ATTR_RECEIVED_AT,
            meta.received_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        )
        .attribute(ATTR_SECRET_VERSION, meta.secret_version.to_string());
    let hook_id = meta
        .hook_id
        .clone()
        .or_else(|| facts.hook_id.map(|h| h.to_string()));
    let optional = [
        (ATTR_ACTION, facts.action.clone()),
        (ATTR_HOOK_ID, hook_id),
        (
            ATTR_INSTALLATION,
            facts.installation_id.map(|i| i.to_string()),
        ),
        (ATTR_REPOSITORY, facts.repository.clone()),
        (ATTR_SENDER, facts.sender.clone()),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            m = m.attribute(key, clip(&v));
        }
    }
    if gzipped {
        m = m.attribute(ATTR_CONTENT_ENCODING, "gzip");
    }
    if ordering_by_repository && let Some(repo) = &facts.repository {
        m = m.ordering_key(clip(repo));
    }
    Ok(m)
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 8), Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

/// Cut to Pub/Sub's attribute limit on a character boundary.
fn clip(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_ATTRIBUTE_BYTES {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_ATTRIBUTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Borrowed(&s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn meta() -> DeliveryMeta {
        DeliveryMeta {
            event: "push".into(),
            delivery: "d-1".into(),
            hook_id: Some("42".into()),
            received_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            secret_version: 3,
        }
    }

    #[test]
    fn reads_facts_leniently() {
        let f = read_facts(
            br#"{"action":"opened","installation":{"id":7,"node_id":"x"},"repository":{"id":1,"full_name":"o/r","owner":{"login":"o"}},"sender":{"login":"octocat","id":2},"commits":[{"id":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(f.action.as_deref(), Some("opened"));
        assert_eq!(f.installation_id, Some(7));
        assert_eq!(f.repository.as_deref(), Some("o/r"));
        assert_eq!(f.sender.as_deref(), Some("octocat"));
        let odd = read_facts(br#"{"action":5,"repository":"o/r","sender":null}"#).unwrap();
        assert_eq!(odd, PayloadFacts::default());
        assert_eq!(read_facts(b"[1,2]"), Err(PayloadError::NotAnObject));
        assert_eq!(read_facts(b""), Err(PayloadError::NotAnObject));
        assert!(matches!(
            read_facts(b"{\"a\":"),
            Err(PayloadError::Syntax(_))
        ));
        assert!(matches!(
            read_facts(b"{} trailing"),
            Err(PayloadError::Syntax(_))
        ));
        assert!(matches!(
            read_facts(br#"{"action":5,"#),
            Err(PayloadError::Syntax(_))
        ));
    }

    #[test]
    fn attributes_and_ordering() {
        let facts = PayloadFacts {
            action: None,
            installation_id: Some(9),
            repository: Some("o/r".into()),
            sender: Some("s".into()),
            hook_id: None,
        };
        let m = build(Bytes::from_static(b"{}"), &facts, &meta(), true).unwrap();
        assert_eq!(m.data.as_ref(), b"{}");
        assert_eq!(m.attributes[ATTR_EVENT], "push");
        assert_eq!(m.attributes[ATTR_DELIVERY], "d-1");
        assert_eq!(m.attributes[ATTR_HOOK_ID], "42");
        assert_eq!(m.attributes[ATTR_INSTALLATION], "9");
        assert_eq!(m.attributes[ATTR_REPOSITORY], "o/r");
        assert_eq!(m.attributes[ATTR_SECRET_VERSION], "3");
        assert_eq!(m.attributes[ATTR_RECEIVED_AT], "2023-11-14T22:13:20.000Z");
        assert!(!m.attributes.contains_key(ATTR_ACTION));
        assert!(!m.attributes.contains_key(ATTR_CONTENT_ENCODING));
        assert_eq!(m.ordering_key.as_deref(), Some("o/r"));
        let unordered = build(Bytes::from_static(b"{}"), &facts, &meta(), false).unwrap();
        assert_eq!(unordered.ordering_key, None);
    }

    #[test]
    fn gzips_past_one_mib() {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(GZIP_THRESHOLD));
        let m = build(
            Bytes::from(big.clone()),
            &PayloadFacts::default(),
            &meta(),
            false,
        )
        .unwrap();
        assert_eq!(m.attributes[ATTR_CONTENT_ENCODING], "gzip");
        assert!(m.data.len() < big.len() / 10);
        let mut out = String::new();
        flate2::read::GzDecoder::new(m.data.as_ref())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, big);
    }

    #[test]
    fn clips_long_values_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_ATTRIBUTE_BYTES);
        assert!(long.starts_with(clipped.as_ref()));
    }
}
