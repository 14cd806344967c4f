//! What can go wrong talking to GitHub as the App. Messages never carry a
//! token, a key or a secret: only statuses, paths and GitHub's own message.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitHubError {
    /// GitHub refused the App's JWT or token (401): wrong key, wrong app id,
    /// or a clock too far off.
    #[error("GitHub rejected the App's credentials (401 Unauthorized)")]
    Unauthorized,
    /// 404: the App, hook, installation or delivery does not exist (or the
    /// App may not see it).
    #[error("not found on GitHub (404)")]
    NotFound,
    /// 429, or 403 with the rate limit exhausted: wait `retry_after`.
    #[error("rate limited by GitHub; retry after {}s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// Any other non-success answer.
    #[error("GitHub answered {status}: {message}")]
    Rejected { status: u16, message: String },
    /// The request never got an answer (DNS, connect, TLS, timeout).
    #[error("could not reach GitHub: {0}")]
    Transport(String),
    /// The App's private key is not a usable RSA key. Never holds key bytes.
    #[error("invalid GitHub App private key: {0}")]
    InvalidKey(String),
    /// A value we were asked to send is unusable (e.g. a non-UTF-8 secret).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// GitHub answered 2xx with a body we could not read.
    #[error("unexpected answer from GitHub: {0}")]
    Decode(String),
}

impl GitHubError {
    /// Whether the same call may succeed later without anyone changing
    /// anything: rate limits, network trouble and GitHub's own 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            GitHubError::RateLimited { .. } | GitHubError::Transport(_) => true,
            GitHubError::Rejected { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

impl From<GitHubError> for crate::Error {
    fn from(e: GitHubError) -> Self {
        match &e {
            GitHubError::NotFound => crate::Error::NotFound(e.to_string()),
            GitHubError::Unauthorized => crate::Error::PermissionDenied(e.to_string()),
            GitHubError::InvalidKey(_) | GitHubError::InvalidInput(_) => {
                crate::Error::InvalidArgument(e.to_string())
            }
            _ if e.is_retryable() => crate::Error::Unavailable(e.to_string()),
            _ => crate::Error::FailedPrecondition(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_is_only_what_time_can_fix() {
        assert!(
            GitHubError::RateLimited {
                retry_after: Duration::from_secs(3)
            }
            .is_retryable()
        );
        assert!(GitHubError::Transport("timeout".into()).is_retryable());
        assert!(
            GitHubError::Rejected {
                status: 502,
                message: "bad gateway".into()
            }
            .is_retryable()
        );
        assert!(
            !GitHubError::Rejected {
                status: 422,
                message: "nope".into()
            }
            .is_retryable()
        );
        assert!(!GitHubError::Unauthorized.is_retryable());
        assert!(!GitHubError::NotFound.is_retryable());
        assert!(matches!(
            crate::Error::from(GitHubError::Transport("x".into())),
            crate::Error::Unavailable(_)
        ));
    }
}
