//! The webhook secret: generated here, given to GitHub with
//! `PATCH /app/hook/config` as the App, proven by the App reading its hook
//! config back. `previous` stays valid for the grace period because GitHub
//! signs with one secret only and deliveries in flight carry the old one.

use patchpanda_shared::SecretValue;
use rand::RngCore;
use zeroize::Zeroizing;

use super::{StepCtx, StepError, app_api};

/// Bytes of randomness in a webhook secret (written as hex).
pub const SECRET_BYTES: usize = 32;

/// Said when there is no GitHub App: the local stack has no GitHub.
pub const NO_APP_NOTE: &str = "no GitHub App configured (GITHUB_APP_ID unset): set and test skipped, GitHub's hook secret was not changed";

pub fn generate() -> SecretValue {
    let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
    rand::rng().fill_bytes(bytes.as_mut());
    SecretValue::from(hex::encode(bytes.as_ref()))
}

/// Gives GitHub `value` as the App's webhook secret.
pub(crate) async fn set(
    ctx: &StepCtx<'_>,
    value: &SecretValue,
) -> Result<Option<String>, StepError> {
    let Some(api) = app_api(ctx).await? else {
        tracing::info!("{NO_APP_NOTE}");
        return Ok(Some(NO_APP_NOTE.to_string()));
    };
    api.update_hook_secret(value).await.map_err(|e| StepError {
        message: format!("GitHub did not take the new webhook secret: {}", e.message),
        retryable: e.retryable,
        github_unchanged: !e.retryable,
    })?;
    Ok(Some("GitHub's hook secret updated".to_string()))
}

/// The App still authenticates and its hook config answers.
pub(crate) async fn test(ctx: &StepCtx<'_>) -> Result<Option<String>, StepError> {
    let Some(api) = app_api(ctx).await? else {
        return Ok(Some(NO_APP_NOTE.to_string()));
    };
    let id = api.app_id().await.map_err(|e| StepError {
        message: format!(
            "the App could not authenticate after the change: {}",
            e.message
        ),
        retryable: e.retryable,
        github_unchanged: false,
    })?;
    if let Some(gh) = &ctx.settings.github
        && !gh.is_this_app(id)
    {
        return Err(StepError {
            message: format!("GitHub answered as App {id}, not App {}", gh.app_id),
            retryable: false,
            github_unchanged: false,
        });
    }
    api.hook_config().await.map_err(|e| StepError {
        message: format!(
            "GET /app/hook/config failed after the change: {}",
            e.message
        ),
        retryable: e.retryable,
        github_unchanged: false,
    })?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_64_hex_digits_and_fresh() {
        let a = generate();
        let b = generate();
        let s = a.expose_str().unwrap();
        assert_eq!(s.len(), 2 * SECRET_BYTES);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
