//! Publishing to topics: Pub/Sub (gcp, or Google's emulator) or the local
//! durable bus.

pub mod emulator;
pub mod gcp;
pub mod local;
pub mod topology;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Result;

/// A message to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub data: Bytes,
    pub attributes: BTreeMap<String, String>,
    pub ordering_key: Option<String>,
}

impl Message {
    pub fn new(data: impl Into<Bytes>) -> Self {
        Self {
            data: data.into(),
            ..Default::default()
        }
    }

    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(key.into(), value.into());
        self
    }

    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }
}

/// A published message as a topic keeps it (for `patchpanda bus messages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedMessage {
    pub id: String,
    /// Base64 in JSON, bytes in memory.
    #[serde(with = "crate::bus::b64")]
    pub data: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    pub ordering_key: Option<String>,
    pub publish_time: chrono::DateTime<chrono::Utc>,
}

/// Publishes messages. `publish` returns only once the message is durably
/// accepted: by Pub/Sub, or committed to the local bus's database.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes to a topic id (e.g. `patchpanda-github-events`); returns the message id.
    async fn publish(&self, topic: &str, message: Message) -> Result<String>;
    /// Cheap reachability check for /ready and `patchpanda health`.
    async fn check(&self) -> Result<()>;
}

pub(crate) mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}
