//! What a handler knows about the call besides its payload.

use std::time::Instant;

/// W3C / X-Cloud-Trace-Context trace identity of the incoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    pub span_id: Option<String>,
    pub sampled: bool,
}

#[derive(Debug, Clone)]
pub struct Context {
    /// K_SERVICE (or the function's own name locally).
    pub service: String,
    /// K_REVISION, when Cloud Run set it.
    pub revision: Option<String>,
    /// A fresh id per request, for logs.
    pub request_id: String,
    pub trace: Option<TraceContext>,
    /// When the request times out; work past it is wasted.
    pub deadline: Instant,
    /// The verified `email` of the push/scheduler caller's OIDC token.
    pub caller: Option<String>,
}

impl Context {
    /// A context for calling a handler directly (tests, the local stack).
    pub fn for_test(service: &str) -> Self {
        Self {
            service: service.to_string(),
            revision: None,
            request_id: uuid::Uuid::new_v4().to_string(),
            trace: None,
            deadline: Instant::now() + std::time::Duration::from_secs(60),
            caller: None,
        }
    }
}
