//! The one place handler results become status codes: Ok -> 2xx (ack),
//! retryable -> 503 (nack, so Pub/Sub or GitHub tries again), permanent -> 4xx
//! with one line saying what was wrong.

use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: a backend is down or busy. Answered 503.
    #[error("{0}")]
    Retryable(String),
    /// Retrying will not help. Answered with `status` (a 4xx).
    #[error("{message}")]
    Permanent { status: StatusCode, message: String },
}

impl HandlerError {
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError::Retryable(message.into())
    }

    pub fn permanent(status: StatusCode, message: impl Into<String>) -> Self {
        HandlerError::Permanent {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::permanent(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::permanent(StatusCode::UNAUTHORIZED, message)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HandlerError::Retryable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HandlerError::Permanent { status, .. } => *status,
        }
    }

    /// The single line sent on the wire.
    pub fn message(&self) -> &str {
        match self {
            HandlerError::Retryable(m) => m,
            HandlerError::Permanent { message, .. } => message,
        }
    }
}

impl From<crate::Error> for HandlerError {
    fn from(e: crate::Error) -> Self {
        use crate::Error::*;
        let status = match &e {
            Unavailable(_) | Aborted(_) => return HandlerError::Retryable(e.to_string()),
            NotFound(_) => StatusCode::NOT_FOUND,
            AlreadyExists(_) | FailedPrecondition(_) => StatusCode::CONFLICT,
            InvalidArgument(_) => StatusCode::BAD_REQUEST,
            PermissionDenied(_) => StatusCode::FORBIDDEN,
            DataLoss(_) | Internal(_) => return HandlerError::Retryable(e.to_string()),
        };
        HandlerError::permanent(status, e.to_string())
    }
}

/// A refused push or scheduler token is the caller's fault (401, one line
/// naming the failed check); keys that could not be fetched are ours (503,
/// so Pub/Sub or the scheduler retries). Here rather than in `auth`, so the
/// verifier does not depend on the runtime that uses it.
impl From<crate::auth::AuthError> for HandlerError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::Rejected(m) => HandlerError::unauthorized(m),
            crate::auth::AuthError::Unavailable(m) => HandlerError::retryable(m),
        }
    }
}
