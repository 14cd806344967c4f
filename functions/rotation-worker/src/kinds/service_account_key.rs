//! A service account's key (opt-in, for deployments that must use key-based
//! auth): IAM creates the key, the JSON key file becomes the new version,
//! minting a token with it proves it, and the old key is deleted at IAM when
//! its version is disabled (grace over, or at once in an emergency).

use patchpanda_shared::SecretValue;
use patchpanda_shared::secrets::{SecretStore, VersionRef};

use super::{StepCtx, StepError};
use crate::RotationError;
use crate::iam::{self, IamError, ServiceAccountKeys};
use crate::settings::{ENV_SA_KEY_ACCOUNT, Settings};

impl From<IamError> for StepError {
    fn from(e: IamError) -> Self {
        Self {
            retryable: e.retryable,
            message: e.message,
            github_unchanged: true,
        }
    }
}

/// The configured account, refused when there is none or it is one of the
/// gateway's own keyless accounts.
pub(crate) fn configured(settings: &Settings) -> Result<&ServiceAccountKeys, RotationError> {
    let refuse = |message: String| RotationError::Precondition {
        secret: super::SERVICE_ACCOUNT_KEY.to_string(),
        message,
    };
    let Some(sa) = &settings.service_account_keys else {
        return Err(refuse(format!(
            "no key-based service account is configured ({ENV_SA_KEY_ACCOUNT}); the gateway is keyless by default"
        )));
    };
    if iam::is_gateway_account(&sa.account) {
        return Err(refuse(format!(
            "{} is one of the gateway's own keyless accounts; it must keep no keys",
            sa.account
        )));
    }
    Ok(sa)
}

pub(crate) async fn create(ctx: &StepCtx<'_>) -> Result<SecretValue, RotationError> {
    let sa = configured(ctx.settings)?;
    let key = sa.iam.create_key(&sa.account).await.map_err(|e| {
        if e.retryable {
            RotationError::Backend(patchpanda_shared::Error::Unavailable(e.message))
        } else {
            RotationError::Backend(patchpanda_shared::Error::FailedPrecondition(e.message))
        }
    })?;
    tracing::info!(key = %key.name, "service-account key created");
    Ok(key.key_file)
}

pub(crate) async fn test(ctx: &StepCtx<'_>, value: &SecretValue) -> Result<String, StepError> {
    let sa = configured(ctx.settings).map_err(|e| StepError::permanent(e.to_string()))?;
    sa.iam.mint_token(value).await?;
    Ok(format!(
        "a token was minted with the new key of {}",
        sa.account
    ))
}

/// Deletes at IAM the key that version `number` holds (before the version
/// is disabled: a disabled version cannot be read back).
pub(crate) async fn delete_key_of(
    settings: &Settings,
    store: &dyn SecretStore,
    id: &str,
    number: u64,
) -> Result<String, RotationError> {
    let sa = configured(settings)?;
    let value = store.access(id, &VersionRef::Number(number)).await?.value;
    let name = iam::key_name(&value).map_err(|e| RotationError::Precondition {
        secret: super::SERVICE_ACCOUNT_KEY.to_string(),
        message: e.message,
    })?;
    sa.iam
        .delete_key(&name)
        .await
        .map_err(|e| RotationError::Backend(patchpanda_shared::Error::Unavailable(e.message)))?;
    tracing::info!(key = %name, version = number, "old service-account key deleted");
    Ok(name)
}
