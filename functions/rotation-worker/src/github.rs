//! The few GitHub calls a rotation makes, behind a trait so that tests can
//! put a failing or stalling App in place of the real client.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use patchpanda_shared::SecretValue;
use patchpanda_shared::github::{GitHubApp, GitHubError};

/// A GitHub failure as the rotation sees it: a line for people, and whether
/// waiting could fix it (then the rotation is resumed, not rolled back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AppApiError {
    pub message: String,
    pub retryable: bool,
}

impl AppApiError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
}

impl From<GitHubError> for AppApiError {
    fn from(e: GitHubError) -> Self {
        Self {
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
}

/// The App, authenticated with one private key.
#[async_trait]
pub trait AppApi: Send + Sync {
    /// GET /app: the App's numeric id (proves the key belongs to the App).
    async fn app_id(&self) -> Result<u64, AppApiError>;
    /// GET /app/hook/config answers (GitHub masks the secret, so an answer
    /// is all there is to check).
    async fn hook_config(&self) -> Result<(), AppApiError>;
    /// PATCH /app/hook/config with a new secret.
    async fn update_hook_secret(&self, secret: &SecretValue) -> Result<(), AppApiError>;
}

/// Builds an [`AppApi`] for the configured App from a private key.
pub trait AppFactory: Send + Sync {
    fn connect(
        &self,
        app_id: &str,
        private_key: &SecretValue,
    ) -> Result<Arc<dyn AppApi>, AppApiError>;
}

/// The configured GitHub App: its id and how to reach it.
#[derive(Clone)]
pub struct GitHubSettings {
    pub app_id: String,
    pub factory: Arc<dyn AppFactory>,
}

impl std::fmt::Debug for GitHubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubSettings")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl GitHubSettings {
    /// The real GitHub at `api_url`, with the default per-call timeout.
    pub fn rest(api_url: &str, app_id: &str) -> Self {
        Self::rest_with_timeout(api_url, app_id, crate::settings::DEFAULT_GITHUB_TIMEOUT)
    }

    /// The real GitHub at `api_url`; each call may take up to `timeout`.
    pub fn rest_with_timeout(api_url: &str, app_id: &str, timeout: Duration) -> Self {
        Self {
            app_id: app_id.to_string(),
            factory: Arc::new(RestFactory {
                api_url: api_url.to_string(),
                timeout,
            }),
        }
    }

    pub fn connect(&self, private_key: &SecretValue) -> Result<Arc<dyn AppApi>, AppApiError> {
        self.factory.connect(&self.app_id, private_key)
    }

    /// Whether `id` (from GET /app) is this App. A client id (`Iv...`) in
    /// GITHUB_APP_ID cannot be compared with the numeric id, so it passes on
    /// GitHub's own word that the JWT was accepted.
    pub fn is_this_app(&self, id: u64) -> bool {
        match self.app_id.parse::<u64>() {
            Ok(configured) => configured == id,
            Err(_) => true,
        }
    }
}

struct RestFactory {
    api_url: String,
    timeout: Duration,
}

impl AppFactory for RestFactory {
    fn connect(
        &self,
        app_id: &str,
        private_key: &SecretValue,
    ) -> Result<Arc<dyn AppApi>, AppApiError> {
        Ok(Arc::new(Rest(GitHubApp::with_timeout(
            &self.api_url,
            app_id,
            private_key,
            self.timeout,
        )?)))
    }
}

struct Rest(GitHubApp);

#[async_trait]
impl AppApi for Rest {
    async fn app_id(&self) -> Result<u64, AppApiError> {
        Ok(self.0.get_app().await?.id)
    }

    async fn hook_config(&self) -> Result<(), AppApiError> {
        self.0.hook_config().await?;
        Ok(())
    }

    async fn update_hook_secret(&self, secret: &SecretValue) -> Result<(), AppApiError> {
        match self.0.update_hook_secret(secret).await {
            Ok(_) => Ok(()),
            // The status is GitHub's answer: a 2xx whose body we cannot read
            // (204 from GitHub Enterprise or a proxy, an HTML page) still
            // means GitHub took the secret. Reading it as "unchanged" would
            // let a rollback disable the secret GitHub now signs with.
            Err(GitHubError::Decode(e)) => {
                tracing::info!(error = %e, "PATCH /app/hook/config answered 2xx with an unreadable body; GitHub took the secret");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
