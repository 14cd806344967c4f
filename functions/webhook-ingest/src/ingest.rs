//! `POST /webhook`: check a GitHub delivery, publish it, and only then say
//! 202. Every refusal is one line with the status docs/design.md gives it; every
//! backend failure is a 503 with nothing acknowledged, so GitHub records a
//! failed delivery that the sweeper redelivers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, StatusCode};
use patchpanda_shared::bus::Bus;
use patchpanda_shared::github::signature;
use patchpanda_shared::names;
use patchpanda_shared::runtime::{HandlerError, HttpRequest, Reply};
use patchpanda_shared::secrets::cache::SecretSnapshot;
use serde::Serialize;

use crate::dedupe::{Claim, Dedupe};
use crate::message::{self, DeliveryMeta, PayloadFacts};
use crate::secrets::WebhookKeyring;
use crate::settings::Settings;

/// Bodies larger than this are verified and parsed off the async threads.
const INLINE_WORK_LIMIT: usize = 256 * 1024;
/// Header values we accept for the event name and delivery id.
const MAX_ID_LEN: usize = 128;

pub const HEADER_EVENT: &str = "x-github-event";
pub const HEADER_DELIVERY: &str = "x-github-delivery";
pub const HEADER_HOOK_ID: &str = "x-github-hook-id";

/// The webhook receiver, with its dependencies injected.
pub struct Ingest {
    keyring: Arc<WebhookKeyring>,
    bus: Arc<dyn Bus>,
    dedupe: Dedupe,
    topic: String,
    ordering_by_repository: bool,
    publish_timeout: Duration,
    proxy_hops: usize,
}

/// The 2xx body: enough for whoever sent it to find the message.
#[derive(Debug, Serialize)]
struct Accepted<'a> {
    status: &'static str,
    delivery: &'a str,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
}

/// A verified, parsed delivery, ready to publish.
struct Checked {
    payload: Bytes,
    facts: PayloadFacts,
    secret_version: u64,
}

impl Ingest {
    pub fn new(keyring: Arc<WebhookKeyring>, bus: Arc<dyn Bus>, settings: &Settings) -> Self {
        Self {
            keyring,
            bus,
            dedupe: Dedupe::new(settings.dedupe_capacity),
            topic: names::TOPIC_GITHUB_EVENTS.to_string(),
            ordering_by_repository: settings.ordering_by_repository,
            publish_timeout: settings.publish_timeout,
            proxy_hops: settings.proxy_hops,
        }
    }

    pub fn keyring(&self) -> &Arc<WebhookKeyring> {
        &self.keyring
    }

    /// Whether this instance already published `delivery`.
    pub fn seen(&self, delivery: &str) -> bool {
        self.dedupe.contains(delivery)
    }

    /// Handles one delivery.
    pub async fn webhook(&self, req: HttpRequest) -> Result<Reply, HandlerError> {
        let arrived = crate::watch::now();
        let headers = &req.headers;
        let event = required_id(headers, HEADER_EVENT, "X-GitHub-Event")?;
        let delivery = required_id(headers, HEADER_DELIVERY, "X-GitHub-Delivery")?;
        let Some(sig) = header(headers, signature::HEADER) else {
            let reason = if headers.contains_key(signature::LEGACY_HEADER) {
                "sha1_only"
            } else {
                "missing"
            };
            self.log_rejected(headers, &delivery, &event, reason);
            return Err(HandlerError::unauthorized(if reason == "sha1_only" {
                "X-Hub-Signature-256 is required; the SHA-1 X-Hub-Signature alone is not accepted"
            } else {
                "X-Hub-Signature-256 is missing"
            }));
        };
        let snapshot = self.keyring.snapshot().await.map_err(|e| {
            HandlerError::retryable(format!("the webhook secret is unavailable: {e}"))
        })?;
        let mut checked = self.check(&req, &snapshot, sig).await?;
        if matches!(checked, Err(Refusal::Signature))
            && let Some(fresh) = self.keyring.refresh_after_miss(arrived, &snapshot).await
        {
            checked = self.check(&req, &fresh, sig).await?;
        }
        let checked = match checked {
            Ok(c) => c,
            Err(Refusal::Signature) => {
                self.log_rejected(headers, &delivery, &event, "mismatch");
                return Err(HandlerError::unauthorized(
                    "X-Hub-Signature-256 does not match the body under any valid webhook secret",
                ));
            }
            Err(Refusal::Malformed(m)) => return Err(HandlerError::bad_request(m)),
        };
        let ok_status = if event == "ping" {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        let publishing = match self.dedupe.claim(&delivery).await {
            Claim::Duplicate => {
                tracing::info!(delivery = %delivery, github_event = %event, "duplicate delivery; already published");
                return Ok(Reply::json(
                    ok_status,
                    &Accepted {
                        status: "duplicate",
                        delivery: &delivery,
                        event: &event,
                        message_id: None,
                    },
                ));
            }
            Claim::Publish(p) => p,
        };
        let meta = DeliveryMeta {
            event: event.clone(),
            delivery: delivery.clone(),
            hook_id: header(headers, HEADER_HOOK_ID).map(String::from),
            received_at: Utc::now(),
            secret_version: checked.secret_version,
        };
        let message = self.build(checked, meta).await?;
        if message.data.len() > message::MAX_MESSAGE_DATA {
            tracing::error!(delivery = %delivery, github_event = %event, bytes = message.data.len(), "delivery too large to publish even gzipped");
            return Err(HandlerError::permanent(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the payload is too large to publish, even gzipped",
            ));
        }
        let published =
            tokio::time::timeout(self.publish_timeout, self.bus.publish(&self.topic, message))
                .await;
        let message_id = match published {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                return Err(HandlerError::retryable(format!(
                    "could not publish the delivery: {e}"
                )));
            }
            Err(_) => {
                return Err(HandlerError::retryable("publishing the delivery timed out"));
            }
        };
        publishing.published();
        tracing::info!(delivery = %delivery, github_event = %event, message_id = %message_id, "delivery published");
        Ok(Reply::json(
            ok_status,
            &Accepted {
                status: "published",
                delivery: &delivery,
                event: &event,
                message_id: Some(message_id),
            },
        ))
    }

    /// The line audit-alerter counts (contract: `event`, `reason`,
    /// `delivery`, `remote_ip`; stackdriver writes them camelCased). Never
    /// the signature, never the secret.
    fn log_rejected(&self, headers: &HeaderMap, delivery: &str, event: &str, reason: &str) {
        tracing::warn!(
            event = "signature_rejected",
            reason = reason,
            delivery = %delivery,
            remote_ip = %crate::remote_ip::remote_ip(headers, self.proxy_hops),
            github_event = %event,
            "webhook signature rejected"
        );
    }

    /// Verifies and parses the delivery against one snapshot of the secret.
    async fn check(
        &self,
        req: &HttpRequest,
        snapshot: &Arc<SecretSnapshot>,
        sig: &str,
    ) -> Result<Result<Checked, Refusal>, HandlerError> {
        let form = header(&req.headers, http::header::CONTENT_TYPE.as_str())
            .map(body_kind)
            .unwrap_or(Ok(false));
        let body = req.body.clone();
        if body.len() <= INLINE_WORK_LIMIT {
            return Ok(check(snapshot, body, sig, form));
        }
        // Hashing and parsing up to 25 MiB would stall other requests
        // sharing this thread.
        let (snap, sig) = (snapshot.clone(), sig.to_string());
        tokio::task::spawn_blocking(move || check(&snap, body, &sig, form))
            .await
            .map_err(|_| HandlerError::retryable("checking the delivery was interrupted"))
    }

    async fn build(
        &self,
        checked: Checked,
        meta: DeliveryMeta,
    ) -> Result<patchpanda_shared::bus::Message, HandlerError> {
        let ordering = self.ordering_by_repository;
        let built = if checked.payload.len() <= message::GZIP_THRESHOLD {
            message::build(checked.payload, &checked.facts, &meta, ordering)
        } else {
            tokio::task::spawn_blocking(move || {
                message::build(checked.payload, &checked.facts, &meta, ordering)
            })
            .await
            .map_err(|_| HandlerError::retryable("compressing the delivery was interrupted"))?
        };
        built.map_err(|e| HandlerError::retryable(format!("compressing the delivery failed: {e}")))
    }
}

enum Refusal {
    Signature,
    Malformed(String),
}

/// Signature first (over the raw body), then the payload.
/// `form` is the Content-Type's verdict, reported only to a signed caller.
fn check(
    snapshot: &SecretSnapshot,
    body: Bytes,
    sig: &str,
    form: Result<bool, String>,
) -> Result<Checked, Refusal> {
    let secret_version =
        WebhookKeyring::verify(snapshot, &body, sig, Utc::now()).ok_or(Refusal::Signature)?;
    let payload = match form {
        Ok(true) => form_payload(&body)?,
        Ok(false) => body,
        Err(m) => return Err(Refusal::Malformed(m)),
    };
    let facts = message::read_facts(&payload).map_err(|e| Refusal::Malformed(e.to_string()))?;
    Ok(Checked {
        payload,
        facts,
        secret_version,
    })
}

/// Whether the body is form-encoded (`payload=<json>`) rather than JSON.
fn body_kind(content_type: &str) -> Result<bool, String> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        // GitHub always names it; a bare body is read as JSON.
        "" | "application/json" => Ok(false),
        "application/x-www-form-urlencoded" => Ok(true),
        other => {
            let shown: String = other.chars().take(60).collect();
            Err(format!(
                "unsupported Content-Type {shown:?}; expected application/json or application/x-www-form-urlencoded"
            ))
        }
    }
}

/// The `payload` field of a form body: the JSON, exactly as GitHub encoded it.
fn form_payload(body: &[u8]) -> Result<Bytes, Refusal> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| Refusal::Malformed("the form body could not be decoded".into()))?;
    fields
        .into_iter()
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| Bytes::from(v))
        .ok_or_else(|| Refusal::Malformed("the form body has no `payload` field".into()))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A short printable header (event name, delivery id), or a 400 naming it.
fn required_id(headers: &HeaderMap, name: &str, shown: &str) -> Result<String, HandlerError> {
    let v = header(headers, name)
        .ok_or_else(|| HandlerError::bad_request(format!("{shown} is required")))?;
    if v.len() > MAX_ID_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HandlerError::bad_request(format!(
            "{shown} must be at most {MAX_ID_LEN} printable characters"
        )));
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(!body_kind("application/json").unwrap());
        assert!(!body_kind("Application/JSON; charset=utf-8").unwrap());
        assert!(!body_kind("").unwrap());
        assert!(body_kind("application/x-www-form-urlencoded").unwrap());
        assert!(body_kind("text/plain").unwrap_err().contains("text/plain"));
    }

    #[test]
    fn form_bodies() {
        let body = serde_urlencoded::to_string([("payload", "{\"a\":\"b c&d\"}")]).unwrap();
        assert_eq!(
            form_payload(body.as_bytes()).ok().unwrap(),
            Bytes::from("{\"a\":\"b c&d\"}")
        );
        assert!(matches!(
            form_payload(b"other=1"),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn ids_are_checked() {
        let mut h = HeaderMap::new();
        assert!(required_id(&h, HEADER_DELIVERY, "X-GitHub-Delivery").is_err());
        h.insert(HEADER_DELIVERY, "abc-123".parse().unwrap());
        assert_eq!(
            required_id(&h, HEADER_DELIVERY, "X-GitHub-Delivery").unwrap(),
            "abc-123"
        );
        h.insert(HEADER_DELIVERY, "a b".parse().unwrap());
        assert!(required_id(&h, HEADER_DELIVERY, "X-GitHub-Delivery").is_err());
        h.insert(HEADER_DELIVERY, "x".repeat(200).parse().unwrap());
        assert!(required_id(&h, HEADER_DELIVERY, "X-GitHub-Delivery").is_err());
    }
}
