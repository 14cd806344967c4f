//! A generic webhook: the alert's JSON (as on patchpanda-alerts) plus
//! `status: "firing"` and `source`. With a secret configured, the body is
//! signed like GitHub signs webhooks: `X-PatchPanda-Signature-256:
//! sha256=<hex HMAC-SHA256 of the body>`.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use patchpanda_shared::SecretValue;
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Sink, SinkError, check_status, transport_error};
use crate::alert::Alert;

pub const SIGNATURE_HEADER: &str = "x-patchpanda-signature-256";

pub struct WebhookSink {
    client: reqwest::Client,
    url: SecretValue,
    secret: Option<SecretValue>,
}

impl WebhookSink {
    pub fn new(client: reqwest::Client, url: SecretValue, secret: Option<SecretValue>) -> Self {
        Self {
            client,
            url,
            secret,
        }
    }
}

pub fn body(alert: &Alert) -> Value {
    let mut v = serde_json::to_value(alert).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("status".into(), json!("firing"));
        m.insert("source".into(), json!("patchpanda-audit-alerter"));
        m.insert("title".into(), json!(alert.rule.title()));
    }
    v
}

pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let url = self
            .url
            .expose_str()
            .ok_or_else(|| SinkError::Permanent("webhook: the URL is not UTF-8".into()))?;
        let bytes = serde_json::to_vec(&body(alert))
            .map_err(|e| SinkError::Permanent(format!("webhook: {e}")))?;
        let mut req = self
            .client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            req = req.header(SIGNATURE_HEADER, signature(secret.expose(), &bytes));
        }
        let resp = req
            .body(bytes)
            .send()
            .await
            .map_err(|e| transport_error("webhook", e))?;
        check_status("webhook", resp.status(), resp.headers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
