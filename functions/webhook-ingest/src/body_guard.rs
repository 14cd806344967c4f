//! A tower layer in front of the runtime's body reading on `POST /webhook`:
//! it reads the body itself, under the [`ByteBudget`] and a deadline, and
//! hands the runtime a body already in memory.
//!
//! - A declared length is reserved whole before a byte is read; a chunked
//!   body reserves its bytes as they arrive. What does not fit is refused
//!   at once: `503` with `Retry-After`, and the connection closed. A slow
//!   sender holds its reservation only until the read deadline.
//! - The whole body must arrive within `read_timeout` (GitHub gives up after
//!   10 s anyway); a slower one is cut off with `408`, freeing its slot long
//!   before the request timeout.
//! - A body over the route's limit is left to the runtime, which answers
//!   413 from the declared length without reading it; a chunked one is
//!   stopped here as soon as it passes the limit.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::BytesMut;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use crate::budget::{ByteBudget, Reservation};

/// What GitHub (which does not retry by itself) or any other caller is told
/// to wait before trying again; the sweeper redelivers GitHub's failures.
pub const RETRY_AFTER_SECS: u64 = 10;

/// The guard's settings, shared by every request.
#[derive(Debug)]
pub struct Guard {
    pub path: String,
    pub budget: Arc<ByteBudget>,
    pub read_timeout: Duration,
    /// The route's body limit.
    pub limit: usize,
    /// Unix second of the last "busy" log line, so a flood is one line a
    /// second, not one per request.
    last_busy_log: AtomicU64,
    refused_since_log: AtomicU64,
}

impl Guard {
    pub fn new(path: &str, budget: Arc<ByteBudget>, read_timeout: Duration, limit: usize) -> Self {
        Self {
            path: path.to_string(),
            budget,
            read_timeout,
            limit,
            last_busy_log: AtomicU64::new(0),
            refused_since_log: AtomicU64::new(0),
        }
    }

    fn guards(&self, req: &Request) -> bool {
        req.method() == Method::POST && req.uri().path() == self.path
    }

    fn busy(&self, declared: Option<usize>) -> Response {
        let refused = self.refused_since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_busy_log.load(Ordering::Relaxed);
        if now > last
            && self
                .last_busy_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let refused = self
                .refused_since_log
                .swap(0, Ordering::Relaxed)
                .max(refused);
            tracing::warn!(
                event = "body_budget_exhausted",
                refused,
                declared_bytes = declared,
                held_bytes = self.budget.used(),
                budget_bytes = self.budget.total(),
                "refusing request bodies: the budget for unverified bodies is used up"
            );
        }
        let mut resp = line(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many large request bodies in flight; retry later",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        resp
    }
}

/// The layer; see the module documentation.
#[derive(Debug, Clone)]
pub struct BodyGuardLayer {
    guard: Arc<Guard>,
}

impl BodyGuardLayer {
    pub fn new(guard: Guard) -> Self {
        Self {
            guard: Arc::new(guard),
        }
    }
}

impl<S> tower::Layer<S> for BodyGuardLayer {
    type Service = BodyGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyGuard {
            inner,
            guard: self.guard.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BodyGuard<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> tower::Service<Request> for BodyGuard<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone is not ready; the one poll_ready was called on is.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !self.guard.guards(&req) {
            return Box::pin(inner.call(req));
        }
        let guard = self.guard.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            if declared.is_some_and(|n| n > guard.limit) {
                // The runtime's 413, from the declared length alone.
                return inner.call(Request::from_parts(parts, body)).await;
            }
            // A declared length is reserved whole, up front: a flood of
            // large bodies is refused before any of it is read, and the
            // bodies admitted are sure to fit.
            let mut held = guard.budget.start();
            if let Some(n) = declared
                && !held.grow_to(n)
            {
                return Ok(guard.busy(declared));
            }
            let read = tokio::time::timeout(
                guard.read_timeout,
                read_body(body, declared, guard.limit, &mut held),
            )
            .await;
            let body = match read {
                Ok(Ok(body)) => body,
                Ok(Err(Refused::Busy)) => return Ok(guard.busy(declared)),
                Ok(Err(Refused::TooLarge)) => {
                    return Ok(line(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!(
                            "request body is larger than {} MiB",
                            guard.limit / (1024 * 1024)
                        ),
                    ));
                }
                Ok(Err(Refused::Broken)) => {
                    return Ok(line(
                        StatusCode::BAD_REQUEST,
                        "could not read the request body",
                    ));
                }
                Err(_) => {
                    tracing::info!(
                        event = "body_read_timeout",
                        received_bytes = held.held(),
                        declared_bytes = declared,
                        "a request body arrived too slowly; cut off"
                    );
                    return Ok(line(
                        StatusCode::REQUEST_TIMEOUT,
                        &format!(
                            "the request body did not arrive within {}",
                            humantime::format_duration(guard.read_timeout)
                        ),
                    ));
                }
            };
            let resp = inner
                .call(Request::from_parts(parts, Body::from(body)))
                .await;
            // Held until the delivery is answered: verifying, parsing and
            // compressing all work on these bytes.
            drop(held);
            resp
        })
    }
}

enum Refused {
    Busy,
    TooLarge,
    Broken,
}

/// The whole body, each chunk reserved before it is kept.
async fn read_body(
    mut body: Body,
    declared: Option<usize>,
    limit: usize,
    held: &mut Reservation,
) -> Result<bytes::Bytes, Refused> {
    // Allocated once (the reservation already covers it): growing a buffer
    // by doubling would hold up to twice the body while it copies.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refused::Broken)?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        let size = buf.len() + chunk.len();
        if size > limit {
            return Err(Refused::TooLarge);
        }
        if !held.grow_to(size) {
            return Err(Refused::Busy);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A one-line text answer that closes the connection: whatever the caller
/// still meant to send is not read.
fn line(status: StatusCode, text: &str) -> Response {
    let mut resp = Response::new(Body::from(format!("{text}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
