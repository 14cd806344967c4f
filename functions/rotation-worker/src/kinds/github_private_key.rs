//! The GitHub App's private key. GitHub has no API to create one: a person
//! generates it in the App's settings and uploads the PEM as a new version;
//! the worker proves it (parses, RSA of at least 2048 bits, GitHub accepts a
//! JWT signed with it as this App) before promoting it.

use patchpanda_shared::SecretValue;
use patchpanda_shared::github::app_jwt::validate_private_key;

use super::StepError;
use crate::Settings;

/// The smallest key accepted, whatever the parser allows.
pub const MIN_BITS: u32 = 2048;

/// Validates an uploaded key; the line says what was proven.
pub(crate) async fn test(settings: &Settings, pem: &SecretValue) -> Result<String, StepError> {
    let bits = validate_private_key(pem).map_err(|e| StepError::permanent(e.to_string()))?;
    if bits < MIN_BITS {
        return Err(StepError::permanent(format!(
            "the key is RSA-{bits}; at least RSA-{MIN_BITS} is required"
        )));
    }
    let Some(gh) = &settings.github else {
        let note = format!(
            "key parsed (RSA-{bits}); no GitHub App configured (GITHUB_APP_ID unset), so it was not tried against GitHub"
        );
        tracing::info!("{note}");
        return Ok(note);
    };
    let api = gh
        .connect(pem)
        .map_err(|e| StepError::permanent(e.message))?;
    let id = api.app_id().await.map_err(|e| StepError {
        message: format!(
            "GitHub did not accept a JWT signed with the new key: {}",
            e.message
        ),
        retryable: e.retryable,
        github_unchanged: true,
    })?;
    if !gh.is_this_app(id) {
        return Err(StepError::permanent(format!(
            "the key belongs to GitHub App {id}, not App {}",
            gh.app_id
        )));
    }
    Ok(format!("key (RSA-{bits}) authenticated as GitHub App {id}"))
}

pub(crate) fn delete_old_key_reminder(old: Option<u64>) -> String {
    let which = old.map(|v| format!(" (version {v})")).unwrap_or_default();
    format!(
        "GitHub keeps the old private key{which} valid until it is deleted: delete it in the GitHub App's settings (Private keys) now"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reminder_names_the_old_version() {
        assert!(delete_old_key_reminder(Some(3)).contains("(version 3)"));
        assert!(delete_old_key_reminder(None).contains("delete it in the GitHub App's settings"));
    }
}
