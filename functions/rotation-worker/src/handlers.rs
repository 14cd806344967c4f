//! The worker's routes: `/rotate` and the `/tasks/*` jobs (scheduler or
//! CLI, OIDC-verified by the runtime) and `/events/secret-manager` (push).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use patchpanda_shared::backends::Backends;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::runtime::server::BoxError;
use patchpanda_shared::runtime::{
    App, AppBuilder, Handler, HandlerError, Invocation, PushMessage, ReadyCheck, Reply,
    SchedulerJob, handler_fn,
};
use serde::Deserialize;

use crate::events::{self, SecretEvent};
use crate::{FinishReport, RotationError, Rotator, Settings};

pub const SERVICE: &str = "rotation-worker";

/// Body of `POST /rotate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    pub secret: String,
    #[serde(default)]
    pub emergency: bool,
}

/// The function as Cloud Run (or the local stack) runs it.
pub async fn app(config: Config, env: Env) -> Result<App, BoxError> {
    let settings = Settings::from_config(&config, &env)?;
    let b = Backends::open(&config).await?;
    let rotator = Arc::new(Rotator::new(b.secrets, b.kms, b.bus, settings));
    Ok(routes(App::builder(SERVICE, &config), rotator).build()?)
}

/// The worker's routes on `builder`, served by `rotator`.
pub fn routes(builder: AppBuilder, rotator: Arc<Rotator>) -> AppBuilder {
    builder
        .scheduler("/rotate", rotate_handler(rotator.clone()))
        .push("/events/secret-manager", events_handler(rotator.clone()))
        .scheduler("/tasks/finish", finish_handler(rotator.clone()))
        .scheduler("/tasks/due-check", due_check_handler(rotator.clone()))
        .ready(Arc::new(Ready(rotator)))
}

pub fn rotate_handler(rotator: Arc<Rotator>) -> Handler<SchedulerJob> {
    handler_fn(move |inv: Invocation<SchedulerJob>| {
        let rotator = rotator.clone();
        async move {
            let req: RotateRequest = serde_json::from_slice(&inv.event.body).map_err(|e| {
                HandlerError::bad_request(format!(
                    r#"expected a JSON body {{"secret": NAME, "emergency": false}}: {e}"#
                ))
            })?;
            tracing::info!(secret = %req.secret, emergency = req.emergency, caller = ?inv.ctx.caller, "rotation requested");
            let outcome = rotator.rotate(&req.secret, req.emergency).await?;
            Ok(Reply::json(StatusCode::OK, &outcome))
        }
    })
}

pub fn events_handler(rotator: Arc<Rotator>) -> Handler<PushMessage> {
    handler_fn(move |inv: Invocation<PushMessage>| {
        let rotator = rotator.clone();
        async move {
            let event = events::parse(&inv.event.attributes, &rotator.settings().secret_prefix)
                .map_err(|e| HandlerError::bad_request(e.to_string()))?;
            let result = match event {
                SecretEvent::Ignored { event_type, why } => {
                    tracing::debug!(%event_type, why, "secret event acknowledged");
                    return Ok(Reply::no_content());
                }
                SecretEvent::Rotate(kind) => match rotator.rotate(kind.logical(), false).await {
                    // The schedule asked for a rotation and one is running.
                    Err(e @ RotationError::InProgress { .. }) => {
                        tracing::info!(error = %e, "SECRET_ROTATE served by the rotation in flight");
                        return Ok(Reply::text(StatusCode::OK, e.to_string()));
                    }
                    other => other.map(Some),
                },
                SecretEvent::VersionAdded { kind, version } => {
                    rotator.promote_upload(kind.logical(), version).await
                }
            };
            match result {
                Ok(Some(outcome)) => Ok(Reply::json(StatusCode::OK, &outcome)),
                Ok(None) => Ok(Reply::no_content()),
                Err(e) => event_error(e),
            }
        }
    })
}

/// How a push is answered when the rotation did not succeed: outcomes that
/// were announced on the rotation topic (rolled back, rejected, due) are
/// acknowledged, since redelivering the event cannot change them. Everything
/// else (an upload arriving while a rotation runs, a paused rotation, a
/// backend outage) goes back to Pub/Sub to be redelivered.
fn event_error(e: RotationError) -> Result<Reply, HandlerError> {
    match &e {
        RotationError::RolledBack { .. }
        | RotationError::Rejected { .. }
        | RotationError::NeedsUpload { .. }
        | RotationError::Precondition { .. } => {
            tracing::warn!(error = %e, "secret event handled without a rotation");
            Ok(Reply::text(StatusCode::OK, e.to_string()))
        }
        _ => Err(e.into()),
    }
}

/// Scheduler runs already answered, by idempotency key: a retried run gets
/// the first answer instead of a second pass.
struct Answered {
    runs: Mutex<VecDeque<(String, FinishReport)>>,
}

const ANSWERED_KEPT: usize = 64;

impl Answered {
    fn get(&self, key: &str) -> Option<FinishReport> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter().find(|(k, _)| k == key).map(|(_, r)| r.clone())
    }

    fn put(&self, key: String, report: FinishReport) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if runs.len() >= ANSWERED_KEPT {
            runs.pop_front();
        }
        runs.push_back((key, report));
    }
}

pub fn finish_handler(rotator: Arc<Rotator>) -> Handler<SchedulerJob> {
    let answered = Arc::new(Answered {
        runs: Mutex::new(VecDeque::new()),
    });
    handler_fn(move |inv: Invocation<SchedulerJob>| {
        let rotator = rotator.clone();
        let answered = answered.clone();
        async move {
            let key = inv.event.idempotency_key();
            if let Some(k) = &key
                && let Some(report) = answered.get(k)
            {
                tracing::info!(key = %k, "finish already ran for this schedule time");
                return Ok(Reply::json(StatusCode::OK, &report));
            }
            let report = rotator.finish().await?;
            if !report.errors.is_empty() {
                // The scheduler retries; every part of finish is idempotent.
                return Err(HandlerError::retryable(format!(
                    "finish incomplete: {}",
                    report.errors.join("; ")
                )));
            }
            if let Some(k) = key {
                answered.put(k, report.clone());
            }
            Ok(Reply::json(StatusCode::OK, &report))
        }
    })
}

pub fn due_check_handler(rotator: Arc<Rotator>) -> Handler<SchedulerJob> {
    handler_fn(move |_inv: Invocation<SchedulerJob>| {
        let rotator = rotator.clone();
        async move {
            let report = rotator.due_check().await?;
            Ok(Reply::json(StatusCode::OK, &report))
        }
    })
}

/// Ready when the secrets can be listed and the bus answers.
struct Ready(Arc<Rotator>);

#[async_trait::async_trait]
impl ReadyCheck for Ready {
    async fn ready(&self) -> Result<(), String> {
        self.0
            .store
            .list_secrets()
            .await
            .map_err(|e| format!("secrets: {e}"))?;
        self.0.bus.check().await.map_err(|e| format!("bus: {e}"))
    }
}
