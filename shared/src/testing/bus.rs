//! A bus that keeps what it is given.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::Result;
use crate::audit_log::LogEntry;
use crate::bus::{Bus, Message};
use crate::names;
use crate::notice::RotationNotice;

/// Records every published message with its topic, in order. To make it
/// fail, wrap it in [`super::Flaky`].
#[derive(Debug, Default)]
pub struct RecordingBus {
    messages: Mutex<Vec<(String, Message)>>,
}

impl RecordingBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Message)>> {
        self.messages.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every message so far, with its topic, in publishing order.
    pub fn messages(&self) -> Vec<(String, Message)> {
        self.lock().clone()
    }

    /// The messages published to `topic`, in order.
    pub fn on(&self, topic: &str) -> Vec<Message> {
        self.lock()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// The audit entries published to `patchpanda-audit-logs`, parsed.
    /// Panics on one that does not parse (a test failure either way).
    pub fn audit_entries(&self) -> Vec<LogEntry> {
        self.on(names::TOPIC_AUDIT_LOGS)
            .iter()
            .map(|m| serde_json::from_slice(&m.data).expect("an audit entry"))
            .collect()
    }

    /// The rotation notices published to `patchpanda-rotation-events`,
    /// parsed, oldest first. Panics on one that does not parse.
    pub fn notices(&self) -> Vec<RotationNotice> {
        self.on(names::TOPIC_ROTATION_EVENTS)
            .iter()
            .map(|m| RotationNotice::from_data(&m.data).expect("a rotation notice"))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}

#[async_trait]
impl Bus for RecordingBus {
    async fn publish(&self, topic: &str, message: Message) -> Result<String> {
        let mut m = self.lock();
        m.push((topic.to_string(), message));
        Ok(m.len().to_string())
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_messages_per_topic_in_order() {
        let bus = RecordingBus::new();
        assert_eq!(bus.publish("a", Message::new("1")).await.unwrap(), "1");
        bus.publish("b", Message::new("2")).await.unwrap();
        bus.publish("a", Message::new("3").attribute("k", "v"))
            .await
            .unwrap();
        let on_a: Vec<_> = bus.on("a").iter().map(|m| m.data.clone()).collect();
        assert_eq!(on_a, ["1", "3"]);
        assert_eq!(bus.on("a")[1].attributes["k"], "v");
        assert_eq!(bus.len(), 3);
        bus.clear();
        assert!(bus.is_empty());
        bus.check().await.unwrap();
    }

    #[tokio::test]
    async fn parses_the_notices_on_the_rotation_topic_only() {
        use crate::notice::NoticeEvent;
        let bus = RecordingBus::new();
        let n = RotationNotice::new("s", NoticeEvent::Started, "r-1");
        bus.publish(names::TOPIC_ROTATION_EVENTS, n.to_message())
            .await
            .unwrap();
        bus.publish("other", Message::new("not a notice"))
            .await
            .unwrap();
        let notices = bus.notices();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].event, NoticeEvent::Started);
    }
}
