//! Where alerts go. The log always gets them (inline, see [`log`]); every
//! other sink is a [`Sink`] that [`crate::delivery`] calls with retries.

pub mod log;
pub mod pagerduty;
pub mod pubsub;
pub mod slack;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, StatusCode};
use patchpanda_shared::bus::Bus;

use crate::alert::Alert;
use crate::settings::Settings;

#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// For logs: never a URL, which may carry a token.
    fn name(&self) -> &'static str;
    /// Whether this sink wants `alert` at all (PagerDuty pages only from a
    /// severity up); one it does not want counts as delivered to it.
    fn takes(&self, _alert: &Alert) -> bool {
        true
    }
    async fn send(&self, alert: &Alert) -> Result<(), SinkError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth another attempt: network trouble, 5xx, 429.
    #[error("{message}")]
    Retryable {
        message: String,
        /// The sink's own Retry-After, when it gave one.
        retry_after: Option<Duration>,
    },
    /// The sink refused the alert itself (4xx): retrying sends the same.
    #[error("{0}")]
    Permanent(String),
}

impl SinkError {
    pub fn retryable(message: impl Into<String>) -> Self {
        SinkError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Maps an HTTP answer to success or a [`SinkError`].
pub(crate) fn check_status(
    sink: &str,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let message = format!("{sink} answered {status}");
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        let retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(SinkError::Retryable {
            message,
            retry_after,
        });
    }
    Err(SinkError::Permanent(message))
}

/// A transport error, without the URL reqwest would put in it (Slack's and
/// most webhook URLs are credentials).
pub(crate) fn transport_error(sink: &str, e: reqwest::Error) -> SinkError {
    let e = e.without_url();
    SinkError::retryable(format!("{sink}: {e}"))
}

/// The shared HTTP client of the HTTP sinks.
pub fn http_client(settings: &Settings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(settings.delivery.timeout)
        .connect_timeout(settings.delivery.timeout)
        .user_agent(concat!(
            "patchpanda-audit-alerter/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

/// patchpanda-alerts plus every HTTP sink the settings configure.
pub fn standard(
    settings: &Settings,
    bus: Arc<dyn Bus>,
    client: reqwest::Client,
) -> Vec<Arc<dyn Sink>> {
    let mut sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(pubsub::PubSubSink::new(bus))];
    if let Some(url) = &settings.sinks.slack_url {
        sinks.push(Arc::new(slack::SlackSink::new(client.clone(), url.clone())));
    }
    if let Some(key) = &settings.sinks.pagerduty_routing_key {
        sinks.push(Arc::new(pagerduty::PagerDutySink::new(
            client.clone(),
            settings.sinks.pagerduty_url.clone(),
            key.clone(),
            settings
                .sinks
                .pagerduty_min_severity
                .unwrap_or(crate::settings::DEFAULT_PAGERDUTY_MIN_SEVERITY),
        )));
    }
    if let Some(url) = &settings.sinks.webhook_url {
        sinks.push(Arc::new(webhook::WebhookSink::new(
            client,
            url.clone(),
            settings.sinks.webhook_secret.clone(),
        )));
    }
    sinks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_split_into_retryable_and_permanent() {
        let mut h = HeaderMap::new();
        assert!(check_status("x", StatusCode::ACCEPTED, &h).is_ok());
        assert_eq!(
            check_status("x", StatusCode::BAD_REQUEST, &h),
            Err(SinkError::Permanent("x answered 400 Bad Request".into()))
        );
        assert!(matches!(
            check_status("x", StatusCode::BAD_GATEWAY, &h),
            Err(SinkError::Retryable {
                retry_after: None,
                ..
            })
        ));
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert!(matches!(
            check_status("x", StatusCode::TOO_MANY_REQUESTS, &h),
            Err(SinkError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(7)
        ));
    }
}
