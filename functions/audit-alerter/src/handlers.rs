//! The routes' handlers. The runtime has already verified the caller's OIDC
//! token and unwrapped the envelope (or CloudEvent); these see the data.
//!
//! Answers:
//! - 204 when the message is done: processed and every alert delivered to
//!   every working sink, a duplicate, or ignored;
//! - 503 when it is not done yet (an alert still undelivered, or a change
//!   held for a late rotation notice): Pub/Sub redelivers it with backoff,
//!   and the work waits in the outbox;
//! - 400 with one line when the data can never be processed. Pub/Sub
//!   redelivers a 400 until the subscription's dead-letter policy takes it,
//!   which is intended: the dead-letter topic keeps the message for a
//!   person instead of it vanishing.

use std::sync::Arc;

use http::StatusCode;
use patchpanda_shared::notice::RotationNotice;
use patchpanda_shared::runtime::{
    Handler, HandlerError, PushMessage, Reply, SchedulerJob, handler_with,
};
use serde::Deserialize;

use crate::Alerter;
use crate::service::Outcome;

/// The body of `POST /tasks/tick` (Cloud Scheduler sends none).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TickRequest {}

impl Alerter {
    /// `POST /events/audit-log`: one LogEntry.
    pub async fn on_audit_log(&self, msg: PushMessage) -> Result<Reply, HandlerError> {
        match self.ingest_audit(&msg.data).await {
            Ok(outcome) => answer(&msg, outcome),
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
        tracing::info!(message_id = %msg.message_id, secret = %notice.secret, event = %notice.event, rotation_id = %notice.rotation_id, "rotation notice");
        let outcome = self.ingest_notice(&notice).await;
        answer(&msg, outcome)
    }

    /// `POST /tasks/tick` (contract 5): everything time-driven, then every
    /// pending alert sent again. Always 200 with a report: what is still
    /// pending waits in the outbox for the next tick (a 503 would only make
    /// Cloud Scheduler retry what the next minute's tick does anyway).
    pub async fn on_tick(&self, job: SchedulerJob) -> Result<Reply, HandlerError> {
        let TickRequest {} = job.json()?;
        let (_, report) = self.tick_report().await;
        tracing::info!(
            raised = report.raised,
            delivered = report.delivered,
            pending = report.pending,
            "tick"
        );
        Ok(Reply::json(StatusCode::OK, &report))
    }
}

fn answer(msg: &PushMessage, outcome: Outcome) -> Result<Reply, HandlerError> {
    match outcome {
        Outcome::Delivered(alerts) => {
            tracing::debug!(message_id = %msg.message_id, alerts = alerts.len(), "processed");
            Ok(Reply::no_content())
        }
        Outcome::Duplicate => {
            tracing::debug!(message_id = %msg.message_id, "duplicate (done before)");
            Ok(Reply::no_content())
        }
        Outcome::Ignored(why) => {
            tracing::debug!(message_id = %msg.message_id, why, "acknowledged and ignored");
            Ok(Reply::no_content())
        }
        Outcome::Pending(why) => {
            tracing::info!(message_id = %msg.message_id, delivery_attempt = ?msg.delivery_attempt, why = %why, "not done yet; asking Pub/Sub to redeliver");
            Err(HandlerError::retryable(why))
        }
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

/// The handler of [`crate::ROUTE_TICK`].
pub fn tick(alerter: Arc<Alerter>) -> Handler<SchedulerJob> {
    handler_with(alerter, |s, inv| async move { s.on_tick(inv.event).await })
}
