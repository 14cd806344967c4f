//! The worker's routes around one [`Rotator`]: `/rotate` and the `/tasks/*`
//! jobs (scheduler or CLI, OIDC-verified by the runtime) and
//! `/events/secret-manager` (push). Built with no I/O.
//!
//! Work that drives a rotation runs detached from the request: if the
//! request times out (a slow GitHub), the rotation still runs to its end and
//! reports by notice, instead of stopping between two steps while its lease
//! makes the retry answer "in progress".

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use patchpanda_shared::config::Config;
use patchpanda_shared::runtime::{
    App, Handler, HandlerError, PushMessage, ReadyCheck, Reply, SchedulerJob, handler_with,
};
use serde::Deserialize;

use crate::events::{self, SecretEvent};
use crate::{
    FinishReport, ROUTE_DUE_CHECK, ROUTE_FINISH, ROUTE_ROTATE, ROUTE_SECRET_EVENTS, RotationError,
    Rotator, SERVICE,
};

/// Body of `POST /rotate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    pub secret: String,
    #[serde(default)]
    pub emergency: bool,
}

/// rotation-worker's service: the rotator plus the answers already given to
/// scheduler runs.
pub struct RotationWorker {
    rotator: Arc<Rotator>,
    answered: Answered,
}

/// Runs `work` on its own task: dropping the caller (a request timeout)
/// does not cancel it.
async fn detached<T, F>(work: F) -> Result<T, HandlerError>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    tokio::spawn(work).await.map_err(|e| {
        tracing::error!(error = %e, "rotation task failed");
        HandlerError::permanent(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the rotation task failed",
        )
    })
}

impl RotationWorker {
    pub fn new(rotator: Rotator) -> Self {
        Self::shared(Arc::new(rotator))
    }

    pub fn shared(rotator: Arc<Rotator>) -> Self {
        Self {
            rotator,
            answered: Answered {
                runs: Mutex::new(VecDeque::new()),
            },
        }
    }

    pub fn rotator(&self) -> &Arc<Rotator> {
        &self.rotator
    }

    /// `POST /rotate {"secret": NAME, "emergency": false}`.
    pub async fn rotate(&self, job: SchedulerJob) -> Result<Reply, HandlerError> {
        let req: RotateRequest = job.json()?;
        tracing::info!(secret = %req.secret, emergency = req.emergency, "rotation requested");
        let r = self.rotator.clone();
        let outcome = detached(async move { r.rotate(&req.secret, req.emergency).await }).await??;
        Ok(Reply::json(StatusCode::OK, &outcome))
    }

    /// `POST /events/secret-manager`: SECRET_ROTATE and SECRET_VERSION_ADD.
    pub async fn secret_event(&self, msg: PushMessage) -> Result<Reply, HandlerError> {
        let event = events::parse(&msg.attributes, &self.rotator.settings().secret_prefix)
            .map_err(|e| HandlerError::bad_request(e.to_string()))?;
        let r = self.rotator.clone();
        let result = match event {
            SecretEvent::Ignored { event_type, why } => {
                tracing::debug!(%event_type, why, "secret event acknowledged");
                return Ok(Reply::no_content());
            }
            SecretEvent::Rotate(kind) => {
                match detached(async move { r.rotate(kind.logical(), false).await }).await? {
                    // The schedule asked for a rotation and one is running.
                    Err(e @ RotationError::InProgress { .. }) => {
                        tracing::info!(error = %e, "SECRET_ROTATE served by the rotation in flight");
                        return Ok(Reply::text(StatusCode::OK, e.to_string()));
                    }
                    other => other.map(Some),
                }
            }
            SecretEvent::VersionAdded { kind, version } => {
                detached(async move { r.promote_upload(kind.logical(), version).await }).await?
            }
        };
        match result {
            Ok(Some(outcome)) => Ok(Reply::json(StatusCode::OK, &outcome)),
            Ok(None) => Ok(Reply::no_content()),
            Err(e) => event_error(e),
        }
    }

    /// `POST /tasks/finish`: a retried run (same idempotency key) gets the
    /// first answer instead of a second pass.
    pub async fn finish(&self, job: SchedulerJob) -> Result<Reply, HandlerError> {
        let key = job.idempotency_key();
        if let Some(k) = &key
            && let Some(report) = self.answered.get(k)
        {
            tracing::info!(key = %k, "finish already ran for this schedule time");
            return Ok(Reply::json(StatusCode::OK, &report));
        }
        let r = self.rotator.clone();
        let report = detached(async move { r.finish().await }).await??;
        if !report.errors.is_empty() {
            // The scheduler retries; every part of finish is idempotent.
            return Err(HandlerError::retryable(format!(
                "finish incomplete: {}",
                report.errors.join("; ")
            )));
        }
        if let Some(k) = key {
            self.answered.put(k, report.clone());
        }
        Ok(Reply::json(StatusCode::OK, &report))
    }

    /// `POST /tasks/due-check`.
    pub async fn due_check(&self) -> Result<Reply, HandlerError> {
        let report = self.rotator.due_check().await?;
        Ok(Reply::json(StatusCode::OK, &report))
    }

    pub fn rotate_handler(self: &Arc<Self>) -> Handler<SchedulerJob> {
        handler_with(
            self.clone(),
            |s, inv| async move { s.rotate(inv.event).await },
        )
    }

    pub fn events_handler(self: &Arc<Self>) -> Handler<PushMessage> {
        handler_with(self.clone(), |s, inv| async move {
            s.secret_event(inv.event).await
        })
    }

    pub fn finish_handler(self: &Arc<Self>) -> Handler<SchedulerJob> {
        handler_with(
            self.clone(),
            |s, inv| async move { s.finish(inv.event).await },
        )
    }

    pub fn due_check_handler(self: &Arc<Self>) -> Handler<SchedulerJob> {
        handler_with(self.clone(), |s, _inv| async move { s.due_check().await })
    }

    /// The routes and the readiness check.
    pub fn app(self, config: &Config) -> Result<App, patchpanda_shared::Error> {
        let me = Arc::new(self);
        App::builder(SERVICE, config)
            .scheduler(ROUTE_ROTATE, me.rotate_handler())
            .push(ROUTE_SECRET_EVENTS, me.events_handler())
            .scheduler(ROUTE_FINISH, me.finish_handler())
            .scheduler(ROUTE_DUE_CHECK, me.due_check_handler())
            .ready(Arc::new(Ready(me.rotator.clone())))
            // A step may wait on GitHub (PATCHPANDA_GITHUB_TIMEOUT, 120 s)
            // several times: the worker gets Cloud Run's 600 s, as infra sets.
            .default_request_timeout(std::time::Duration::from_secs(600))
            .build()
    }
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

/// Scheduler runs already answered, by idempotency key.
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
