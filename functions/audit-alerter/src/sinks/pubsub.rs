//! `patchpanda-alerts`: the alert as JSON data, with `severity` and `rule`
//! attributes so subscriptions can filter without parsing.

use std::sync::Arc;

use async_trait::async_trait;
use patchpanda_shared::bus::{Bus, Message};
use patchpanda_shared::names;

use super::{Sink, SinkError};
use crate::alert::Alert;

pub struct PubSubSink {
    bus: Arc<dyn Bus>,
}

impl PubSubSink {
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        Self { bus }
    }
}

pub fn message(alert: &Alert) -> Message {
    Message::new(alert.to_json())
        .attribute("severity", alert.severity.as_str())
        .attribute("rule", alert.rule.id())
        .attribute("alert_id", alert.id.as_str())
}

#[async_trait]
impl Sink for PubSubSink {
    fn name(&self) -> &'static str {
        "pubsub"
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        match self.bus.publish(names::TOPIC_ALERTS, message(alert)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_retryable() => Err(SinkError::retryable(format!("pubsub: {e}"))),
            Err(e) => Err(SinkError::Permanent(format!("pubsub: {e}"))),
        }
    }
}
