//! The two push routes. The runtime has already verified the caller's OIDC
//! token and unwrapped the envelope (or CloudEvent); these see the data.
//!
//! Answers: 204 when processed, ignored or a duplicate; 400 with one line
//! when the data can never be processed. Pub/Sub redelivers a 400 until the
//! subscription's dead-letter policy takes it, which is intended: the dead
//! letter topic keeps the message for a person instead of it vanishing.

use http::StatusCode;
use patchpanda_shared::runtime::{
    Handler, HandlerError, Invocation, PushMessage, Reply, handler_fn,
};

use crate::{Alerter, Analysis};

/// `POST /events/audit-log`.
pub fn audit_log(alerter: Alerter) -> Handler<PushMessage> {
    handler_fn(move |inv: Invocation<PushMessage>| {
        let alerter = alerter.clone();
        async move {
            let msg = &inv.event;
            match alerter.ingest_audit(&msg.data).await {
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
    })
}

/// `POST /events/rotation`.
pub fn rotation(alerter: Alerter) -> Handler<PushMessage> {
    handler_fn(move |inv: Invocation<PushMessage>| {
        let alerter = alerter.clone();
        async move {
            let msg = &inv.event;
            match alerter.record_notice(&msg.data) {
                Ok(n) => {
                    tracing::info!(message_id = %msg.message_id, secret = %n.secret, event = %n.event, rotation_id = %n.rotation_id, "rotation notice recorded");
                    Ok(Reply::no_content())
                }
                Err(e) => {
                    tracing::warn!(message_id = %msg.message_id, error = %e, "rejected a malformed rotation notice");
                    Err(HandlerError::bad_request(e.0))
                }
            }
        }
    })
}
