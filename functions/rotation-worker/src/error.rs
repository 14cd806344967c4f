//! What a rotation can end in besides success, and how each answers on the
//! wire: the scheduler and the CLI get one clear line and a status that says
//! whether trying again helps.

use chrono::{DateTime, Utc};
use http::StatusCode;
use patchpanda_shared::runtime::HandlerError;

use crate::protocol::CrashPoint;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error(
        "unknown secret {0:?}: expected webhook-secret, github-private-key, oidc-client-secret, kms-key or service-account-key"
    )]
    UnknownSecret(String),
    /// Another worker holds the secret's rotation lease.
    #[error(
        "rotation already in progress for {secret} (rotation {rotation_id}, step {step}, since {since})"
    )]
    InProgress {
        secret: String,
        rotation_id: String,
        step: String,
        since: DateTime<Utc>,
    },
    /// The secret's new value comes from a person, and none was uploaded.
    #[error(
        "{secret} cannot be created by API: upload the new value first (patchpanda secrets add {secret} --data-file FILE)"
    )]
    NeedsUpload { secret: String },
    /// The rotation failed and was undone: the old version is still current.
    #[error("rotation of {secret} rolled back (current unchanged): {reason}")]
    RolledBack {
        secret: String,
        rotation_id: String,
        reason: String,
    },
    /// An uploaded version failed validation and was not promoted.
    #[error("version {version} of {secret} was not promoted (current unchanged): {reason}")]
    Rejected {
        secret: String,
        version: u64,
        reason: String,
    },
    /// A step hit a failure that time may fix; the next trigger resumes.
    #[error("rotation of {secret} paused, the next trigger resumes it: {reason}")]
    Paused { secret: String, reason: String },
    /// Someone took the lease over (ours had expired): stop touching it.
    #[error("rotation of {secret} was taken over by another worker")]
    LostLease { secret: String },
    /// The request cannot be met as things stand (e.g. no `previous`).
    #[error("{secret}: {message}")]
    Precondition { secret: String, message: String },
    #[error("{0}")]
    Backend(#[from] patchpanda_shared::Error),
    /// Fault injection: the attempt stopped dead at this point.
    #[error("injected crash at {0:?}")]
    Crashed(CrashPoint),
}

impl RotationError {
    /// Whether the same request may succeed later without anyone acting.
    pub fn is_retryable(&self) -> bool {
        match self {
            RotationError::Paused { .. }
            | RotationError::LostLease { .. }
            | RotationError::InProgress { .. }
            | RotationError::Crashed(_) => true,
            RotationError::Backend(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<RotationError> for HandlerError {
    fn from(e: RotationError) -> Self {
        let message = e.to_string();
        match e {
            RotationError::UnknownSecret(_) => HandlerError::bad_request(message),
            RotationError::InProgress { .. } | RotationError::NeedsUpload { .. } => {
                HandlerError::permanent(StatusCode::CONFLICT, message)
            }
            RotationError::Precondition { .. } => {
                HandlerError::permanent(StatusCode::CONFLICT, message)
            }
            RotationError::RolledBack { .. } => {
                HandlerError::permanent(StatusCode::FAILED_DEPENDENCY, message)
            }
            RotationError::Rejected { .. } => {
                HandlerError::permanent(StatusCode::UNPROCESSABLE_ENTITY, message)
            }
            RotationError::Paused { .. }
            | RotationError::LostLease { .. }
            | RotationError::Crashed(_) => HandlerError::retryable(message),
            RotationError::Backend(e) => HandlerError::from(e),
        }
    }
}
