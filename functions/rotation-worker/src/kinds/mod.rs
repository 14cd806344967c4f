//! What differs between the secrets: how a new value is made (generated or
//! uploaded by a person), where it is applied, and how it is proven to work.
//! One file per kind; this module dispatches. A kind sees only a
//! [`StepCtx`] (backends, settings and the rotation's versions), never the
//! protocol driving it.

pub mod github_private_key;
pub mod oidc_client_secret;
pub mod service_account_key;
pub mod webhook_secret;

use std::sync::Arc;

use patchpanda_shared::secrets::{Secret, SecretStore, VersionRef, VersionState};
use patchpanda_shared::{Error, SecretValue, names};
use sha2::{Digest, Sha256};

use crate::github::{AppApi, AppApiError};
use crate::{RotationError, Settings};

/// The things the worker rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    WebhookSecret,
    GithubPrivateKey,
    OidcClientSecret,
    KmsKey,
    /// A key of a named service account (opt-in; see [`crate::iam`]).
    ServiceAccountKey,
}

/// Logical name of the service-account key secret.
pub const SERVICE_ACCOUNT_KEY: &str = "service-account-key";

impl Kind {
    /// The Secret Manager secrets, in `names::SECRETS` order.
    pub const SECRETS: [Kind; 3] = [
        Kind::GithubPrivateKey,
        Kind::WebhookSecret,
        Kind::OidcClientSecret,
    ];

    pub fn parse(logical: &str) -> Result<Kind, RotationError> {
        match logical {
            names::WEBHOOK_SECRET => Ok(Kind::WebhookSecret),
            names::GITHUB_PRIVATE_KEY => Ok(Kind::GithubPrivateKey),
            names::OIDC_CLIENT_SECRET => Ok(Kind::OidcClientSecret),
            names::KMS_KEY => Ok(Kind::KmsKey),
            SERVICE_ACCOUNT_KEY => Ok(Kind::ServiceAccountKey),
            other => Err(RotationError::UnknownSecret(
                other.chars().take(80).collect(),
            )),
        }
    }

    pub fn logical(self) -> &'static str {
        match self {
            Kind::WebhookSecret => names::WEBHOOK_SECRET,
            Kind::GithubPrivateKey => names::GITHUB_PRIVATE_KEY,
            Kind::OidcClientSecret => names::OIDC_CLIENT_SECRET,
            Kind::KmsKey => names::KMS_KEY,
            Kind::ServiceAccountKey => SERVICE_ACCOUNT_KEY,
        }
    }

    /// Whether new values come from a person (no API can create them).
    pub fn is_upload(self) -> bool {
        matches!(self, Kind::GithubPrivateKey | Kind::OidcClientSecret)
    }

    /// Whether a credential of this kind grows riskier with age (due after
    /// PATCHPANDA_KEY_MAX_AGE).
    pub fn ages(self) -> bool {
        self.is_upload() || self == Kind::ServiceAccountKey
    }
}

/// A failed set or test step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepError {
    pub message: String,
    /// Waiting may fix it: pause and resume rather than roll back.
    pub retryable: bool,
    /// GitHub certainly still holds the old secret (it refused, or was never
    /// asked), so a rollback need not restore it.
    pub github_unchanged: bool,
}

impl StepError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            github_unchanged: true,
        }
    }
}

impl From<AppApiError> for StepError {
    fn from(e: AppApiError) -> Self {
        Self {
            github_unchanged: !e.retryable,
            retryable: e.retryable,
            message: e.message,
        }
    }
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        Self {
            retryable: e.is_retryable(),
            message: e.to_string(),
            github_unchanged: true,
        }
    }
}

/// What a kind's step may see and touch: built by the protocol per step.
pub(crate) struct StepCtx<'a> {
    pub kind: Kind,
    pub store: &'a dyn SecretStore,
    pub settings: &'a Settings,
    /// Secret Manager id.
    pub id: &'a str,
    /// `current` when the rotation began.
    pub base: Option<u64>,
    /// The version being rotated in.
    pub pending: Option<u64>,
}

/// A fresh value for a generated kind (for a service-account key: a new key
/// IAM just created).
pub(crate) async fn generate(ctx: &StepCtx<'_>) -> Result<SecretValue, RotationError> {
    match ctx.kind {
        Kind::WebhookSecret => Ok(webhook_secret::generate()),
        Kind::ServiceAccountKey => service_account_key::create(ctx).await,
        other => Err(RotationError::NeedsUpload {
            secret: other.logical().to_string(),
        }),
    }
}

/// Hex SHA-256 of a value: how a resumed rotation recognises a version.
pub(crate) fn digest(value: &SecretValue) -> String {
    hex::encode(Sha256::digest(value.expose()))
}

/// The App, authenticated with the current private key; `None` when no App
/// is configured.
pub(crate) async fn app_api(ctx: &StepCtx<'_>) -> Result<Option<Arc<dyn AppApi>>, StepError> {
    let Some(gh) = &ctx.settings.github else {
        return Ok(None);
    };
    let key_id = ctx.settings.secret_id(names::GITHUB_PRIVATE_KEY);
    let key = ctx
        .store
        .access(&key_id, &VersionRef::alias(names::ALIAS_CURRENT))
        .await
        .map_err(|e| StepError {
            message: format!("reading the App's private key: {e}"),
            retryable: e.is_retryable(),
            github_unchanged: true,
        })?;
    Ok(Some(gh.connect(&key.value).map_err(|e| StepError {
        message: format!("loading the App's private key: {}", e.message),
        retryable: e.retryable,
        github_unchanged: true,
    })?))
}

pub(crate) fn set_touches_github(settings: &Settings, kind: Kind) -> bool {
    kind == Kind::WebhookSecret && settings.github.is_some()
}

async fn pending_value(ctx: &StepCtx<'_>) -> Result<SecretValue, StepError> {
    let Some(p) = ctx.pending else {
        return Err(StepError::permanent("the rotation has no pending version"));
    };
    Ok(ctx
        .store
        .access(ctx.id, &VersionRef::Number(p))
        .await?
        .value)
}

/// Step 2: apply the pending value where it is used. A note when skipped.
pub(crate) async fn set(ctx: &StepCtx<'_>) -> Result<Option<String>, StepError> {
    match ctx.kind {
        Kind::WebhookSecret => {
            let value = pending_value(ctx).await?;
            webhook_secret::set(ctx, &value).await
        }
        // Nothing to apply: the person who made the value gave it to its
        // issuer already (GitHub holds the key's public half).
        Kind::GithubPrivateKey
        | Kind::OidcClientSecret
        | Kind::KmsKey
        | Kind::ServiceAccountKey => Ok(None),
    }
}

/// Step 3: prove the pending value works.
pub(crate) async fn test(ctx: &StepCtx<'_>) -> Result<Option<String>, StepError> {
    match ctx.kind {
        Kind::WebhookSecret => webhook_secret::test(ctx).await,
        Kind::GithubPrivateKey => {
            let value = pending_value(ctx).await?;
            github_private_key::test(ctx.settings, &value)
                .await
                .map(Some)
        }
        Kind::OidcClientSecret => {
            let value = pending_value(ctx).await?;
            oidc_client_secret::validate(&value)?;
            Ok(None)
        }
        Kind::ServiceAccountKey => {
            let value = pending_value(ctx).await?;
            service_account_key::test(ctx, &value).await.map(Some)
        }
        Kind::KmsKey => Ok(None),
    }
}

/// Rollback: give GitHub back the secret that stays current.
pub(crate) async fn restore_github(ctx: &StepCtx<'_>) -> Result<(), StepError> {
    if ctx.kind != Kind::WebhookSecret {
        return Ok(());
    }
    let Some(base) = ctx.base else {
        return Err(StepError::permanent(
            "there is no earlier secret to give GitHub back",
        ));
    };
    apply_to_github(ctx, base).await.map(|_| ())
}

/// Gives GitHub the value of `version` (webhook secret only).
pub(crate) async fn apply_to_github(
    ctx: &StepCtx<'_>,
    version: u64,
) -> Result<Option<String>, StepError> {
    if ctx.kind != Kind::WebhookSecret {
        return Ok(None);
    }
    let value = ctx
        .store
        .access(ctx.id, &VersionRef::Number(version))
        .await?
        .value;
    webhook_secret::set(ctx, &value).await
}

/// What people must do after a new value of `kind` became current.
pub(crate) fn after_promotion(kind: Kind, old: Option<u64>) -> Option<String> {
    match kind {
        Kind::GithubPrivateKey => Some(github_private_key::delete_old_key_reminder(old)),
        _ => None,
    }
}

/// The newest upload not yet promoted: enabled, newer than `current`, and
/// carrying no alias.
pub(crate) async fn newest_upload(
    store: &dyn SecretStore,
    id: &str,
    secret: &Secret,
) -> Result<Option<u64>, RotationError> {
    let current = secret.aliases.get(names::ALIAS_CURRENT).copied();
    Ok(store
        .list_versions(id)
        .await?
        .into_iter()
        .filter(|v| {
            v.state == VersionState::Enabled
                && current.is_none_or(|c| v.number > c)
                && !secret.aliases.values().any(|n| *n == v.number)
        })
        .map(|v| v.number)
        .max())
}

pub(crate) async fn is_unpromoted_upload(
    store: &dyn SecretStore,
    id: &str,
    secret: &Secret,
    version: u64,
) -> Result<bool, RotationError> {
    let v = match store.get_version(id, &VersionRef::Number(version)).await {
        Ok(v) => v,
        Err(Error::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let current = secret.aliases.get(names::ALIAS_CURRENT).copied();
    Ok(v.state == VersionState::Enabled
        && current.is_none_or(|c| version > c)
        && !secret.aliases.values().any(|n| *n == version))
}

/// How to rotate a hand-made credential, for `due` notices and errors.
pub(crate) fn upload_instructions(kind: Kind) -> String {
    match kind {
        Kind::GithubPrivateKey => format!(
            "generate a new private key in the GitHub App's settings and upload it: patchpanda secrets add {} --data-file key.pem",
            kind.logical()
        ),
        _ => format!(
            "issue a new client secret at the identity provider and upload it: patchpanda secrets add {} --data-file FILE",
            kind.logical()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_their_logical_names_only() {
        for k in [
            Kind::WebhookSecret,
            Kind::GithubPrivateKey,
            Kind::OidcClientSecret,
            Kind::KmsKey,
            Kind::ServiceAccountKey,
        ] {
            assert_eq!(Kind::parse(k.logical()).unwrap(), k);
        }
        assert!(matches!(
            Kind::parse("patchpanda-webhook-secret"),
            Err(RotationError::UnknownSecret(_))
        ));
        assert!(Kind::GithubPrivateKey.is_upload() && !Kind::WebhookSecret.is_upload());
        let logical: Vec<&str> = Kind::SECRETS.iter().map(|k| k.logical()).collect();
        assert_eq!(logical, names::SECRETS);
    }

    #[test]
    fn digests_differ_per_value() {
        let a = digest(&SecretValue::from("a".to_string()));
        assert_eq!(a.len(), 64);
        assert_ne!(a, digest(&SecretValue::from("b".to_string())));
    }
}
