//! Rotation notices on `patchpanda-rotation-events`: written by the rotation
//! worker, read by webhook-ingest (reload secrets) and audit-alerter (tell an
//! announced change from an unexpected one).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bus::Message;
use crate::{Error, Result};

/// What happened (docs/design.md, rotation-worker). `started` and `due`
/// were added to the original list: the alerter must learn of a rotation
/// before its audit entries arrive, and an operator must learn that a key
/// is due for manual rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeEvent {
    Started,
    Rotated,
    RolledBack,
    Failed,
    Disabled,
    Destroyed,
    Promoted,
    Due,
    /// An operator announces a planned change (a key upload) before making
    /// it: the alerter files changes by that principal to that secret until
    /// `until` as announced, if the principal is a listed operator.
    Announced,
}

impl NoticeEvent {
    pub fn as_str(&self) -> &'static str {
        match self {
            NoticeEvent::Started => "started",
            NoticeEvent::Rotated => "rotated",
            NoticeEvent::RolledBack => "rolled_back",
            NoticeEvent::Failed => "failed",
            NoticeEvent::Disabled => "disabled",
            NoticeEvent::Destroyed => "destroyed",
            NoticeEvent::Promoted => "promoted",
            NoticeEvent::Due => "due",
            NoticeEvent::Announced => "announced",
        }
    }

    /// Whether this notice ends a rotation (the alerter closes its window).
    pub fn ends_rotation(&self) -> bool {
        matches!(
            self,
            NoticeEvent::Rotated
                | NoticeEvent::RolledBack
                | NoticeEvent::Failed
                | NoticeEvent::Promoted
        )
    }
}

impl fmt::Display for NoticeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NoticeEvent {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| Error::InvalidArgument(format!("unknown rotation event {s:?}")))
    }
}

/// One rotation notice; the JSON data of the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationNotice {
    /// Logical secret name (`webhook-secret`, ..., or `kms-key`).
    pub secret: String,
    pub event: NoticeEvent,
    /// The version this notice is about (the new one, for `rotated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<u64>,
    /// Ties together the notices of one rotation.
    pub rotation_id: String,
    #[serde(default)]
    pub emergency: bool,
    /// Until when `previous` stays valid (none when emergency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<DateTime<Utc>>,
    /// The rotator's identity, so the alerter can match audit entries to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// A line for people: why it failed, what the operator must do next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For `announced`: until when the announced change is expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub time: DateTime<Utc>,
}

impl RotationNotice {
    pub fn new(secret: &str, event: NoticeEvent, rotation_id: &str) -> Self {
        Self {
            secret: secret.to_string(),
            event,
            version: None,
            previous_version: None,
            rotation_id: rotation_id.to_string(),
            emergency: false,
            grace_until: None,
            principal: None,
            detail: None,
            until: None,
            time: Utc::now(),
        }
    }

    /// An operator's announcement of a planned change (contract 8): changes
    /// by `principal` to `secret` until `until` are expected.
    pub fn announced(
        secret: &str,
        principal: &str,
        until: DateTime<Utc>,
        detail: impl Into<String>,
    ) -> Self {
        let mut n = Self::new(
            secret,
            NoticeEvent::Announced,
            &uuid::Uuid::new_v4().to_string(),
        );
        n.principal = Some(principal.to_string());
        n.until = Some(until);
        n.detail = Some(detail.into());
        n
    }

    /// The bus message: JSON data plus the attributes docs/design.md names.
    pub fn to_message(&self) -> Message {
        let data = serde_json::to_vec(self).expect("a notice always serializes");
        let mut m = Message::new(data)
            .attribute("secret", &self.secret)
            .attribute("event", self.event.as_str())
            .attribute("rotation_id", &self.rotation_id);
        if let Some(v) = self.version {
            m = m.attribute("version", v.to_string());
        }
        if let Some(v) = self.previous_version {
            m = m.attribute("previous_version", v.to_string());
        }
        if self.emergency {
            m = m.attribute("emergency", "true");
        }
        m
    }

    /// Reads a notice from a message's data (attributes are a convenience
    /// copy; the data is authoritative).
    pub fn from_data(data: &[u8]) -> Result<Self> {
        // serde quotes the offending input verbatim; escape it so the error
        // stays the one line the wire mapping promises.
        serde_json::from_slice(data).map_err(|e| {
            let shown: String = e.to_string().escape_debug().take(200).collect();
            Error::InvalidArgument(format!("not a rotation notice: {shown}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_message() {
        let mut n = RotationNotice::new("webhook-secret", NoticeEvent::RolledBack, "r1");
        n.version = Some(4);
        n.previous_version = Some(3);
        let m = n.to_message();
        assert_eq!(m.attributes["event"], "rolled_back");
        assert_eq!(m.attributes["version"], "4");
        assert_eq!(m.attributes["previous_version"], "3");
        assert_eq!(RotationNotice::from_data(&m.data).unwrap(), n);
        assert_eq!(
            "rolled_back".parse::<NoticeEvent>().unwrap(),
            NoticeEvent::RolledBack
        );
        assert!("exploded".parse::<NoticeEvent>().is_err());
        assert!(RotationNotice::from_data(b"{}").is_err());
        let err = RotationNotice::from_data(
            br#"{"secret":"s","event":"rotated\nALL CLEAR","rotation_id":"r","time":"2025-11-16T10:00:00Z"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn an_announcement_names_who_what_and_until_when() {
        let until = Utc::now() + chrono::Duration::minutes(30);
        let n = RotationNotice::announced("github-private-key", "ops@example.com", until, "upload");
        assert_eq!(n.event, NoticeEvent::Announced);
        assert_eq!(n.principal.as_deref(), Some("ops@example.com"));
        assert_eq!(n.until, Some(until));
        assert!(!n.rotation_id.is_empty());
        let back = RotationNotice::from_data(&n.to_message().data).unwrap();
        assert_eq!(back, n);
    }
}
