//! The push routes. The runtime has already verified the caller's OIDC
//! token and unwrapped the envelope (or CloudEvent); these see the data.
//!
//! Answers: 204 when processed, ignored or a duplicate; 400 with one line
//! when the data can never be processed. Pub/Sub redelivers a 400 until the
//! subscription's dead-letter policy takes it, which is intended: the dead
//! letter topic keeps the message for a person instead of it vanishing.

use std::sync::Arc;

use http::StatusCode;
use patchpanda_shared::notice::RotationNotice;
use patchpanda_shared::runtime::{Handler, HandlerError, PushMessage, Reply, handler_with};

use crate::{Alerter, Analysis};

impl Alerter {
    /// `POST /events/audit-log`: one LogEntry.
    pub async fn on_audit_log(&self, msg: PushMessage) -> Result<Reply, HandlerError> {
        match self.ingest_audit(&msg.data).await {
            Ok(Analysis::Alerts(alerts)) => {
                tracing::debug!(message_id = %msg.message_id, alerts = alerts.len(), "audit entry processed");
                Ok(Reply::no_content())
            }
            Ok(Analysis::Duplicate) => {
                tracing::debug!(message_id = %msg.message_id, "duplicate audit entry (same logName and insertId)");
                Ok(Reply::no_content())
            }
            Ok(Analysis::Ignored(why)) => {
                tracing::debug!(message_id = %msg.message_id, why, "entry acknowledged and ignored");
                Ok(Reply::no_content())
            }
            Err(e) => {
                tracing::warn!(message_id = %msg.message_id, delivery_attempt = ?msg.delivery_attempt, error = %e, "rejected a malformed audit-log message");
                Err(HandlerError::permanent(StatusCode::BAD_REQUEST, e.0))
            }
        }
    }

    /// `POST /events/rotation`: one [`RotationNotice`].
    pub async fn on_rotation(&self, msg: PushMessage) -> Result<Reply, HandlerError> {
        let notice: RotationNotice = msg.json().inspect_err(|e| {
            tracing::warn!(message_id = %msg.message_id, error = %e, "rejected a malformed rotation notice");
        })?;
        self.notice(&notice);
        tracing::info!(message_id = %msg.message_id, secret = %notice.secret, event = %notice.event, rotation_id = %notice.rotation_id, "rotation notice recorded");
        Ok(Reply::no_content())
    }
}

/// The handler of [`crate::ROUTE_AUDIT_LOG`].
pub fn audit_log(alerter: Arc<Alerter>) -> Handler<PushMessage> {
    handler_with(
        alerter,
        |s, inv| async move { s.on_audit_log(inv.event).await },
    )
}

/// The handler of [`crate::ROUTE_ROTATION`].
pub fn rotation(alerter: Arc<Alerter>) -> Handler<PushMessage> {
    handler_with(
        alerter,
        |s, inv| async move { s.on_rotation(inv.event).await },
    )
}
