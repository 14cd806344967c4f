//! The one error type of the backends, shaped like Google's canonical codes so
//! that both backends report the same failure the same way.

/// A backend failure. Messages never carry secret values.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The resource is in the wrong state (e.g. accessing a disabled version),
    /// or an etag did not match: someone else changed the resource first
    /// (Secret Manager answers a stale etag this way; re-read and retry).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A concurrency conflict the caller may retry as is (e.g. too many
    /// concurrent writers).
    #[error("aborted: {0}")]
    Aborted(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The backend could not be reached or is overloaded; worth retrying.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("data loss: {0}")]
    DataLoss(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the same call may succeed later (maps to a 503 / nack).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Aborted(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
