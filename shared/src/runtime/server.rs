//! The HTTP server of a function: routes, body limits, timeouts, OIDC checks
//! on push and scheduler routes, event decoding, and the one mapping of
//! handler results to the wire. `run` is a function binary's whole life.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, get};
use bytes::Bytes;
use futures::FutureExt as _;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::ServiceExt;
use tracing::Instrument;

use super::{
    Context, Handler, HandlerError, HttpRequest, Invocation, PushMessage, Reply, SchedulerJob,
    decode, shutdown, trace,
};
use crate::auth::PushVerifier;
use crate::config::{Config, Env};
use crate::telemetry;

/// The error type of a function's `init`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Pub/Sub's largest message is 10 MB of data plus attributes; push sends
/// the data base64-encoded (4/3 of it, ~13.4 MB) inside a JSON envelope, so
/// a 10 MiB limit refused the largest messages Pub/Sub accepts (and each
/// refusal is redelivered until it dead-letters). 16 MiB holds the largest
/// envelope with room for attributes and field names.
pub const PUSH_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Scheduler and task calls carry small JSON bodies.
pub const SCHEDULER_BODY_LIMIT: usize = 1024 * 1024;
/// A request's time limit when neither PATCHPANDA_REQUEST_TIMEOUT nor the
/// function's builder says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A readiness check that hangs must not hang the probe.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers GET /ready: Ok when secrets are loaded and backends reachable.
#[async_trait::async_trait]
pub trait ReadyCheck: Send + Sync + 'static {
    async fn ready(&self) -> Result<(), String>;
}

#[derive(Clone)]
enum Kind {
    Http(Handler<HttpRequest>),
    Push(Handler<PushMessage>),
    Scheduler(Handler<SchedulerJob>),
}

struct Route {
    method: Method,
    path: String,
    body_limit: usize,
    kind: Kind,
}

/// What every request of one app shares.
struct Shared {
    service: String,
    revision: Option<String>,
    project: String,
    verifier: Option<Arc<PushVerifier>>,
    timeout: Duration,
}

/// A function's own decorator of its finished router.
type RouterWrap = Box<dyn FnOnce(Router) -> Router + Send + Sync>;

/// A function's routes, ready to serve.
pub struct App {
    shared: Arc<Shared>,
    routes: Vec<Route>,
    ready: Option<Arc<dyn ReadyCheck>>,
    wrap: Option<RouterWrap>,
}

/// Collects routes and settings; [`AppBuilder::build`] checks them.
pub struct AppBuilder {
    service: String,
    config: Config,
    routes: Vec<Route>,
    ready: Option<Arc<dyn ReadyCheck>>,
    verifier: Option<Arc<PushVerifier>>,
    timeout: Duration,
    wrap: Option<RouterWrap>,
}

impl App {
    /// `service` names the function when K_SERVICE is not set.
    pub fn builder(service: &str, config: &Config) -> AppBuilder {
        AppBuilder {
            service: service.to_string(),
            config: config.clone(),
            routes: Vec::new(),
            ready: None,
            verifier: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            wrap: None,
        }
    }

    /// The K_SERVICE name (or the builder's), as put in every [`Context`].
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// Every route plus /health, /ready, and one-line 404 and 405 answers.
    pub fn router(self) -> Router {
        let mut by_path: BTreeMap<String, Vec<Route>> = BTreeMap::new();
        for route in self.routes {
            by_path.entry(route.path.clone()).or_default().push(route);
        }
        let mut router = Router::new()
            .route(
                "/health",
                get(|| async { text(StatusCode::OK, "ok") })
                    .fallback(method_not_allowed("GET, HEAD")),
            )
            .route("/ready", ready_route(self.ready));
        for (path, routes) in by_path {
            let mut allow: Vec<&str> = routes.iter().map(|r| r.method.as_str()).collect();
            if allow.contains(&"GET") {
                allow.push("HEAD");
            }
            let allow = allow.join(", ");
            let mut methods = MethodRouter::new();
            for route in routes {
                // build() has checked that every method has a filter.
                let Ok(filter) = MethodFilter::try_from(route.method.clone()) else {
                    continue;
                };
                methods = methods.on(filter, endpoint(self.shared.clone(), route));
            }
            router = router.route(&path, methods.fallback(method_not_allowed(&allow)));
        }
        let router = router.fallback(|| async { text(StatusCode::NOT_FOUND, "not found") });
        match self.wrap {
            Some(wrap) => wrap(router),
            None => router,
        }
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish for at most [`shutdown::DRAIN_DEADLINE`].
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_with_drain(listener, shutdown, shutdown::DRAIN_DEADLINE)
            .await
    }

    async fn serve_with_drain(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        drain: Duration,
    ) -> std::io::Result<()> {
        let (stop, deadline) = shutdown::with_deadline(shutdown, drain);
        let server = axum::serve(listener, self.router())
            .with_graceful_shutdown(stop)
            .into_future();
        tokio::select! {
            result = server => result,
            () = deadline => {
                tracing::warn!(
                    "in-flight requests did not finish within {}; stopping anyway",
                    humantime::format_duration(drain)
                );
                Ok(())
            }
        }
    }
}

impl AppBuilder {
    /// An unauthenticated route (e.g. `POST /webhook`, which checks its own
    /// signature) with its own body limit.
    pub fn http(
        mut self,
        method: Method,
        path: &str,
        body_limit: usize,
        handler: Handler<HttpRequest>,
    ) -> Self {
        self.routes.push(Route {
            method,
            path: path.to_string(),
            body_limit,
            kind: Kind::Http(handler),
        });
        self
    }

    /// A Pub/Sub push endpoint: POST, OIDC-verified, [`PUSH_BODY_LIMIT`].
    pub fn push(mut self, path: &str, handler: Handler<PushMessage>) -> Self {
        self.routes.push(Route {
            method: Method::POST,
            path: path.to_string(),
            body_limit: PUSH_BODY_LIMIT,
            kind: Kind::Push(handler),
        });
        self
    }

    /// A Cloud Scheduler or task call: POST, OIDC-verified, 1 MiB.
    pub fn scheduler(mut self, path: &str, handler: Handler<SchedulerJob>) -> Self {
        self.routes.push(Route {
            method: Method::POST,
            path: path.to_string(),
            body_limit: SCHEDULER_BODY_LIMIT,
            kind: Kind::Scheduler(handler),
        });
        self
    }

    pub fn ready(mut self, check: Arc<dyn ReadyCheck>) -> Self {
        self.ready = Some(check);
        self
    }

    /// Replaces the verifier [`AppBuilder::build`] would make from config.
    pub fn verifier(mut self, verifier: Arc<PushVerifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Wraps the finished router (outermost, before any body is read): a
    /// function's own layer, such as webhook-ingest's byte budget and
    /// body-read deadline for unauthenticated bodies.
    pub fn wrap_router(
        mut self,
        wrap: impl FnOnce(Router) -> Router + Send + Sync + 'static,
    ) -> Self {
        self.wrap = Some(Box::new(wrap));
        self
    }

    /// This function's request time limit (body included; a 503 after it)
    /// when PATCHPANDA_REQUEST_TIMEOUT is not set. The variable wins: infra
    /// sets it to the Cloud Run service's timeout, after which Cloud Run
    /// cuts the request anyway.
    pub fn default_request_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Checks the routes; makes the verifier from config when an
    /// authenticated route needs one and none was given.
    pub fn build(self) -> Result<App, crate::Error> {
        let invalid = |m: String| crate::Error::InvalidArgument(m);
        let mut seen = std::collections::HashSet::new();
        for r in &self.routes {
            if !valid_path(&r.path) {
                return Err(invalid(format!(
                    "route path {:?} must start with / and use only letters, digits and -._~/",
                    r.path
                )));
            }
            if matches!(
                r.path.as_str(),
                "/health" | "/ready" | "/robots.txt" | "/favicon.ico"
            ) {
                return Err(invalid(format!("route path {} is reserved", r.path)));
            }
            if MethodFilter::try_from(r.method.clone()).is_err() {
                return Err(invalid(format!(
                    "route method {} is not supported",
                    r.method
                )));
            }
            if r.body_limit == 0 {
                return Err(invalid(format!(
                    "route {} {} has a zero body limit",
                    r.method, r.path
                )));
            }
            if !seen.insert((r.method.clone(), r.path.clone())) {
                return Err(invalid(format!(
                    "route {} {} is declared twice",
                    r.method, r.path
                )));
            }
        }
        let timeout = self.config.request_timeout.unwrap_or(self.timeout);
        if timeout.is_zero() {
            return Err(invalid("request timeout is zero".into()));
        }
        let needs_verifier = self.routes.iter().any(|r| !matches!(r.kind, Kind::Http(_)));
        let verifier = match self.verifier {
            Some(v) => Some(v),
            None if needs_verifier => Some(Arc::new(PushVerifier::from_config(&self.config)?)),
            None => None,
        };
        Ok(App {
            shared: Arc::new(Shared {
                service: self.config.service.clone().unwrap_or(self.service),
                revision: self.config.revision.clone(),
                project: self.config.project().to_string(),
                verifier,
                timeout,
            }),
            routes: self.routes,
            ready: self.ready,
            wrap: self.wrap,
        })
    }
}

/// Literal paths only: axum would read `{x}`, `*x` and `:x` as patterns.
fn valid_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains("//")
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
}

// ---------------------------------------------------------------------------
// Wire helpers.

/// A one-line text answer.
fn text(status: StatusCode, line: &str) -> Response {
    let mut body = one_line(line);
    body.push('\n');
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Newlines would split one answer or log record into several.
fn one_line(s: &str) -> String {
    s.trim_end()
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect()
}

fn method_not_allowed(
    allow: &str,
) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    let allow = HeaderValue::from_str(allow).unwrap_or(HeaderValue::from_static(""));
    move || {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        resp.headers_mut().insert(header::ALLOW, allow.clone());
        std::future::ready(resp)
    }
}

fn reply_response(reply: Reply) -> Response {
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = reply.status;
    // from_static would panic on a bad value; a handler's typo must not.
    let content_type = HeaderValue::from_str(reply.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    resp
}

/// The one place a handler error reaches the wire and the log.
fn error_response(e: &HandlerError) -> Response {
    let status = e.status();
    let message = one_line(e.message());
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), error = %message, "request failed");
    } else {
        tracing::warn!(status = status.as_u16(), error = %message, "request refused");
    }
    text(status, &message)
}

fn ready_route(check: Option<Arc<dyn ReadyCheck>>) -> MethodRouter {
    get(move || {
        let check = check.clone();
        async move {
            let Some(check) = check else {
                return text(StatusCode::OK, "ready");
            };
            match tokio::time::timeout(READY_TIMEOUT, check.ready()).await {
                Ok(Ok(())) => text(StatusCode::OK, "ready"),
                Ok(Err(reason)) => {
                    tracing::info!(reason = %one_line(&reason), "not ready");
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("not ready: {reason}"),
                    )
                }
                Err(_) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: readiness check timed out",
                ),
            }
        }
    })
    .fallback(method_not_allowed("GET, HEAD"))
}

// ---------------------------------------------------------------------------
// Requests to invocations.

fn endpoint(
    shared: Arc<Shared>,
    route: Route,
) -> impl Fn(Request) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    let limit = route.body_limit;
    let kind = route.kind;
    move |req: Request| {
        let shared = shared.clone();
        let kind = kind.clone();
        Box::pin(async move {
            match kind {
                Kind::Http(h) => {
                    dispatch(shared, req, limit, false, h, |parts, body| {
                        Ok(HttpRequest {
                            method: parts.method.clone(),
                            uri: parts.uri.clone(),
                            headers: parts.headers.clone(),
                            body,
                        })
                    })
                    .await
                }
                Kind::Push(h) => {
                    dispatch(shared, req, limit, true, h, |parts, body| {
                        decode::push_message(&parts.headers, &body)
                    })
                    .await
                }
                Kind::Scheduler(h) => {
                    dispatch(shared, req, limit, true, h, |parts, body| {
                        decode::scheduler_job(&parts.headers, body)
                    })
                    .await
                }
            }
        })
    }
}

/// One request: span, timeout, OIDC check, bounded body, decoding, handler,
/// wire mapping.
async fn dispatch<E: Send + 'static>(
    shared: Arc<Shared>,
    req: Request,
    limit: usize,
    authenticated: bool,
    handler: Handler<E>,
    decode: impl FnOnce(&http::request::Parts, Bytes) -> Result<E, HandlerError> + Send,
) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let trace = trace::from_headers(req.headers());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.uri().path(),
        "logging.googleapis.com/trace" = tracing::field::Empty,
        "logging.googleapis.com/spanId" = tracing::field::Empty,
        "logging.googleapis.com/trace_sampled" = tracing::field::Empty,
    );
    if let Some(t) = &trace {
        span.record(
            telemetry::TRACE_FIELD,
            telemetry::trace_resource(&shared.project, &t.trace_id).as_str(),
        );
        if let Some(s) = &t.span_id {
            span.record(telemetry::SPAN_ID_FIELD, s.as_str());
        }
        if t.sampled {
            span.record(telemetry::TRACE_SAMPLED_FIELD, true);
        }
    }
    let timeout = shared.timeout;
    let work = async move {
        let (mut parts, body) = req.into_parts();
        let caller = if authenticated {
            let verifier = shared
                .verifier
                .as_ref()
                .ok_or_else(|| HandlerError::retryable("push authentication is not configured"))?;
            let caller = verifier.verify(&parts.headers, parts.uri.path()).await?;
            // Verified; handlers have no use for the credential, and an
            // event that never holds it cannot leak it through Debug.
            parts.headers.remove(header::AUTHORIZATION);
            Some(caller.email)
        } else {
            None
        };
        let body = read_limited(&parts.headers, body, limit).await?;
        let event = decode(&parts, body)?;
        let ctx = Context {
            service: shared.service.clone(),
            revision: shared.revision.clone(),
            request_id,
            trace,
            deadline: started + timeout,
            caller,
        };
        // A panicking handler would otherwise drop the connection without
        // an answer; a 500 tells the caller to retry and the log says why.
        AssertUnwindSafe(handler.oneshot(Invocation::new(event, ctx)))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(HandlerError::permanent(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the handler panicked",
                ))
            })
    };
    async move {
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(HandlerError::retryable(format!(
                "request timed out after {}",
                humantime::format_duration(timeout)
            ))),
        };
        let resp = match result {
            Ok(reply) => reply_response(reply),
            Err(e) => error_response(&e),
        };
        tracing::debug!(
            status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        );
        resp
    }
    .instrument(span)
    .await
}

/// The whole body, or a 413 as soon as it is known to be over `limit`:
/// from Content-Length up front, or once a chunked body grows past it
/// (nothing beyond the limit is buffered).
async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, HandlerError> {
    let too_large = || {
        HandlerError::permanent(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {}", human_size(limit)),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(HandlerError::bad_request("could not read the request body")),
    }
}

fn human_size(n: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

// ---------------------------------------------------------------------------
// A function binary's life.

/// Telemetry, config, `init`, listen on 0.0.0.0:$PORT, serve until SIGTERM
/// or Ctrl-C, drain, flush, exit 0. A bad setting or a failed `init` prints
/// one line `<binary>: <reason>` on stderr and exits 1.
pub async fn run<F, Fut>(principal: &str, init: F) -> std::process::ExitCode
where
    F: FnOnce(Config, Env) -> Fut,
    Fut: Future<Output = Result<App, BoxError>>,
{
    use std::process::ExitCode;

    let binary = binary_name(principal);
    let env = Env::from_process();
    // The full config is checked just below; a bad DEBUG is reported there.
    telemetry::init(env.bool_or("DEBUG", false).unwrap_or(false));
    let fail = |line: String| {
        eprintln!("{binary}: {}", one_line(&line));
        telemetry::flush();
        ExitCode::FAILURE
    };
    let config = match Config::from_env(&env, principal) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let port = config.port;
    let app = match init(config, env).await {
        Ok(app) => app,
        Err(e) => return fail(e.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on 0.0.0.0:{port}: {e}")),
    };
    tracing::info!(port, service = %app.service(), "listening");
    match app.serve(listener, shutdown::signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            telemetry::flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            fail(format!("server failed: {e}"))
        }
    }
}

/// The executable's file name, else the principal's local part.
fn binary_name(principal: &str) -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| principal.split('@').next().unwrap_or(principal).to_string())
}

#[cfg(test)]
mod tests;
