//! A lambda_runtime-style runtime for Cloud Run: a handler is a
//! `tower::Service` over an [`Invocation`] (a typed event plus a [`Context`]);
//! [`server`] turns HTTP into events, verifies push/scheduler callers, and
//! maps every handler result to the wire in one place ([`HandlerError`]).

pub(crate) mod context;
pub mod decode;
pub(crate) mod error;
pub mod events;
pub mod server;
pub(crate) mod shutdown;
pub(crate) mod trace;

use std::future::Future;

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use tower::util::BoxCloneSyncService;

pub use context::{Context, TraceContext};
pub use error::HandlerError;
pub use events::{HttpRequest, PushMessage, SchedulerJob};
pub use server::{App, AppBuilder, BoxError, ReadyCheck, run};

/// A typed event and the context it arrived in.
#[derive(Debug, Clone)]
pub struct Invocation<E> {
    pub event: E,
    pub ctx: Context,
}

impl<E> Invocation<E> {
    pub fn new(event: E, ctx: Context) -> Self {
        Self { event, ctx }
    }
}

/// A successful answer. Errors go through [`HandlerError`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    /// 204: the usual ack of a push or scheduler call.
    pub fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            content_type: "text/plain",
            body: Bytes::new(),
        }
    }

    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        let mut s: String = body.into();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(s),
        }
    }

    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            status,
            content_type: "application/json",
            body: Bytes::from(body),
        }
    }
}

/// The handler type every route takes.
pub type Handler<E> = BoxCloneSyncService<Invocation<E>, Reply, HandlerError>;

/// Wraps an async function as a [`Handler`].
pub fn handler_fn<E, F, Fut>(f: F) -> Handler<E>
where
    E: Send + 'static,
    F: Fn(Invocation<E>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
{
    BoxCloneSyncService::new(tower::service_fn(f))
}

/// Wraps a method of a shared service as a [`Handler`]: the `Arc` is cloned
/// per call here, so handlers don't clone it by hand.
///
/// ```ignore
/// app.http(Method::POST, ROUTE_WEBHOOK, handler_with(ingest, |s, inv| async move { s.webhook(inv.event).await }))
/// ```
pub fn handler_with<S, E, F, Fut>(state: std::sync::Arc<S>, method: F) -> Handler<E>
where
    S: Send + Sync + ?Sized + 'static,
    E: Send + 'static,
    F: Fn(std::sync::Arc<S>, Invocation<E>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
{
    handler_fn(move |inv: Invocation<E>| method(state.clone(), inv))
}

/// Parses a JSON body into `T`; a body that does not parse is a permanent
/// 400 naming what was expected (never the body itself: it may hold a
/// secret or an attacker's text).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, HandlerError> {
    serde_json::from_slice(body).map_err(|e| {
        HandlerError::bad_request(format!(
            "body is not a valid {what} (line {}, column {}: {:?})",
            e.line(),
            e.column(),
            e.classify()
        ))
    })
}
