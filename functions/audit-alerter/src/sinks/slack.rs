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

/// Slack decodes these three everywhere and reads `<...>` as a link,
/// mention or `<!channel>`; escaping them is what Slack's "Formatting text"
/// page asks for. Every attacker-controlled text goes through here.
/// Hidden characters (newlines, bidi overrides) are shown escaped too, so a
/// field stays inside its code span and reads as what it holds.
fn escape(s: &str) -> String {
    crate::rules::one_line(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A value inside mrkdwn: escaped and in a code span, so `*`, `_`, `~` and
/// bare URLs in a principal or resource are shown, never formatted or
/// linked. A backtick would end the span early; it becomes a look-alike.
fn code(s: &str) -> String {
    format!("`{}`", escape(&s.replace('`', "\u{2035}")))
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

fn plain(text: String) -> Value {
    json!({"type": "plain_text", "text": text, "emoji": false})
}

pub fn payload(alert: &Alert) -> Value {
    let header = clip(&format!("{} {}", alert.severity, alert.rule.title()), 150);
    // Clip the raw value, then escape: clipping after could cut an entity.
    let field = |label: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{label}:*\n{}", code(&clip(value, 1500)))});
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
    let mut context = format!("rule {}", alert.rule);
    for key in ["callerIp", "userAgent", "delegationChain"] {
        if let Some(v) = alert.details.get(key) {
            context.push_str(&format!(" | {key} {}", clip(v, 500)));
        }
    }
    let mut blocks = vec![
        json!({"type": "header", "text": plain(escape(&header))}),
        // Plain text: the summary quotes principals and resources verbatim.
        json!({"type": "section", "text": plain(escape(&clip(&alert.summary, 2900)))}),
        json!({"type": "section", "fields": fields}),
        json!({"type": "context", "elements": [plain(escape(&clip(&context, 2900)))]}),
    ];
    if let Some(link) = &alert.link {
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": plain("Logs Explorer".into()), "url": link}
        ]}));
    }
    json!({
        // What notifications and old clients show: escaped, and not parsed
        // as mrkdwn at all.
        "text": escape(&clip(&format!("[{}] {}", alert.severity, alert.summary), 2900)),
        "mrkdwn": false,
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
