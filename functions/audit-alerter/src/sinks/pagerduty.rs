//! PagerDuty Events API v2: one `trigger` per alert, `dedup_key` = the
//! alert's fingerprint, so repeats land on the open incident.

use async_trait::async_trait;
use patchpanda_shared::SecretValue;
use serde_json::{Value, json};

use super::{Sink, SinkError, check_status, transport_error};
use crate::alert::{Alert, Severity};

pub struct PagerDutySink {
    client: reqwest::Client,
    url: String,
    routing_key: SecretValue,
    min_severity: Severity,
}

impl PagerDutySink {
    pub fn new(
        client: reqwest::Client,
        url: String,
        routing_key: SecretValue,
        min_severity: Severity,
    ) -> Self {
        Self {
            client,
            url,
            routing_key,
            min_severity,
        }
    }
}

/// PagerDuty caps dedup_key at 255 characters and summary at 1024.
fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The event body. The routing key is written only here, into the body.
pub fn event(alert: &Alert, routing_key: &str) -> Value {
    let mut details = serde_json::Map::new();
    details.insert("alertId".into(), json!(alert.id));
    details.insert("principal".into(), json!(alert.principal));
    details.insert("method".into(), json!(alert.method));
    details.insert("insertId".into(), json!(alert.insert_id));
    details.insert("logName".into(), json!(alert.log_name));
    details.insert("folded".into(), json!(alert.folded));
    for (k, v) in &alert.details {
        details.insert(k.clone(), json!(v));
    }
    let component = alert
        .details
        .get("serviceName")
        .map_or("audit-alerter", String::as_str);
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": clip(&alert.fingerprint, 255),
        "payload": {
            "summary": clip(&format!("[{}] {}", alert.severity, alert.summary), 1024),
            "source": if alert.resource.is_empty() { "patchpanda-gateway" } else { alert.resource.as_str() },
            "severity": alert.severity.pagerduty(),
            "timestamp": alert.time_text(),
            "component": component,
            "group": "patchpanda-gateway",
            "class": alert.rule.id(),
            "custom_details": details,
        },
    });
    if let Some(link) = &alert.link {
        body["links"] = json!([{"href": link, "text": "Logs Explorer"}]);
    }
    body
}

#[async_trait]
impl Sink for PagerDutySink {
    fn name(&self) -> &'static str {
        "pagerduty"
    }

    /// P0 is the most severe: page from `min_severity` up.
    fn takes(&self, alert: &Alert) -> bool {
        alert.severity <= self.min_severity
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let key = self.routing_key.expose_str().ok_or_else(|| {
            SinkError::Permanent("pagerduty: the routing key is not UTF-8".into())
        })?;
        let body = serde_json::to_vec(&event(alert, key))
            .map_err(|e| SinkError::Permanent(format!("pagerduty: {e}")))?;
        let resp = self
            .client
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error("pagerduty", e))?;
        check_status("pagerduty", resp.status(), resp.headers())
    }
}
