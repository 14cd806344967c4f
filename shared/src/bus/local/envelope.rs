//! The wrapped push envelope, exactly as Pub/Sub POSTs it (runtime.md §2),
//! including the snake_case duplicates of the id and publish time.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::bus::PublishedMessage;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEnvelope {
    pub message: EnvelopeMessage,
    /// `projects/local/subscriptions/<name>`.
    pub subscription: String,
    #[serde(rename = "deliveryAttempt")]
    pub delivery_attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeMessage {
    /// Base64 of the data.
    pub data: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(rename = "message_id")]
    pub message_id_snake: String,
    /// RFC 3339 with milliseconds, `Z`.
    #[serde(rename = "publishTime")]
    pub publish_time: String,
    #[serde(rename = "publish_time")]
    pub publish_time_snake: String,
    #[serde(
        rename = "orderingKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ordering_key: Option<String>,
}

impl PushEnvelope {
    pub fn new(message: &PublishedMessage, subscription: String, delivery_attempt: u32) -> Self {
        let publish_time = message
            .publish_time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        PushEnvelope {
            message: EnvelopeMessage {
                data: STANDARD.encode(&message.data),
                attributes: message.attributes.clone(),
                message_id: message.id.clone(),
                message_id_snake: message.id.clone(),
                publish_time: publish_time.clone(),
                publish_time_snake: publish_time,
                ordering_key: message.ordering_key.clone(),
            },
            subscription,
            delivery_attempt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_pubsub() {
        let m = PublishedMessage {
            id: "42".into(),
            data: b"hello".to_vec(),
            attributes: BTreeMap::from([("k".to_string(), "v".to_string())]),
            ordering_key: None,
            publish_time: chrono::DateTime::parse_from_rfc3339("2021-02-26T19:13:55.749Z")
                .unwrap()
                .to_utc(),
        };
        let v = serde_json::to_value(PushEnvelope::new(
            &m,
            "projects/local/subscriptions/s1".into(),
            2,
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "message": {
                    "data": "aGVsbG8=",
                    "attributes": {"k": "v"},
                    "messageId": "42", "message_id": "42",
                    "publishTime": "2021-02-26T19:13:55.749Z",
                    "publish_time": "2021-02-26T19:13:55.749Z"
                },
                "subscription": "projects/local/subscriptions/s1",
                "deliveryAttempt": 2
            })
        );
        let keyed = PublishedMessage {
            ordering_key: Some("repo-1".into()),
            ..m
        };
        let v = serde_json::to_value(PushEnvelope::new(&keyed, "s".into(), 1)).unwrap();
        assert_eq!(v["message"]["orderingKey"], "repo-1");
    }
}
