//! Slack incoming webhook, Block Kit: a header, the summary, the facts as
//! fields, and a Logs Explorer button when there is a real project. The
//! top-level `text` stays set: notifications and old clients show only it.

use async_trait::async_trait;
use patchpanda_shared::SecretValue;
use serde_json::{Value, json};

use super::{Sink, SinkError, check_status, transport_error};
use crate::alert::Alert;

pub struct SlackSink {
    client: reqwest::Client,
    /// The URL is the credential.
    url: SecretValue,
}

impl SlackSink {
    pub fn new(client: reqwest::Client, url: SecretValue) -> Self {
        Self { client, url }
    }
}

/// Slack's mrkdwn treats these three as markup.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

pub fn payload(alert: &Alert) -> Value {
    let header = clip(&format!("{} {}", alert.severity, alert.rule.title()), 150);
    let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": clip(&format!("*{label}:*\n{}", escape(value)), 2000)});
    let mut fields = vec![
        field("Principal", &alert.principal),
        field("Resource", &alert.resource),
        field("Method", &alert.method),
        field("Time", &alert.time_text()),
    ];
    if !alert.insert_id.is_empty() {
        fields.push(field("insertId", &alert.insert_id));
    }
    if alert.folded > 0 {
        fields.push(field("Folded", &format!("{} similar", alert.folded)));
    }
    let mut context = format!("rule `{}`", alert.rule);
    for key in ["callerIp", "userAgent"] {
        if let Some(v) = alert.details.get(key) {
            context.push_str(&format!(" | {key} {}", escape(v)));
        }
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": false}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&escape(&alert.summary), 3000)}}),
        json!({"type": "section", "fields": fields}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&context, 3000)}]}),
    ];
    if let Some(link) = &alert.link {
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Logs Explorer"}, "url": link}
        ]}));
    }
    json!({
        "text": clip(&format!("[{}] {}", alert.severity, alert.summary), 3000),
        "blocks": blocks,
    })
}

#[async_trait]
impl Sink for SlackSink {
    fn name(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let url = self
            .url
            .expose_str()
            .ok_or_else(|| SinkError::Permanent("slack: the webhook URL is not UTF-8".into()))?;
        let resp = self
            .client
            .post(url)
            .json(&payload(alert))
            .send()
            .await
            .map_err(|e| transport_error("slack", e))?;
        check_status("slack", resp.status(), resp.headers())
    }
}
