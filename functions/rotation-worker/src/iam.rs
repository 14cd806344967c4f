//! Service-account keys, for deployments that must use key-based auth
//! (docs/runbook.md, Service-account keys): the IAM calls a rotation makes,
//! behind a trait so tests can put a stand-in IAM in place. Keyless stays
//! the default: nothing here runs unless PATCHPANDA_SA_KEY_ACCOUNT names an
//! account, and never for the gateway's own accounts (they have no keys, and
//! must keep none).
//!
//! REST: `POST v1/projects/-/serviceAccounts/{email}/keys` (the response's
//! `privateKeyData` is the base64 of the JSON key file), `DELETE
//! v1/{name}`; a key is proven by minting an access token with it (a JWT
//! signed with its `private_key`, exchanged at its `token_uri`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use patchpanda_shared::SecretValue;
use serde::Deserialize;

/// The IAM API's base URL.
pub const IAM_API: &str = "https://iam.googleapis.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// An IAM failure: a line for people, and whether waiting could fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IamError {
    pub message: String,
    pub retryable: bool,
}

impl IamError {
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A key IAM just created: its resource name and the JSON key file.
pub struct CreatedKey {
    /// `projects/P/serviceAccounts/EMAIL/keys/KEY_ID`.
    pub name: String,
    pub key_file: SecretValue,
}

#[async_trait]
pub trait IamApi: Send + Sync {
    async fn create_key(&self, account: &str) -> Result<CreatedKey, IamError>;
    /// Deleting a key that is already gone succeeds.
    async fn delete_key(&self, name: &str) -> Result<(), IamError>;
    /// Mints an access token with the key file: proves Google accepts it.
    async fn mint_token(&self, key_file: &SecretValue) -> Result<(), IamError>;
}

/// The fields of a JSON key file the rotation reads.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key_id: String,
    private_key: String,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".to_string()
}

fn key_file(value: &SecretValue) -> Result<KeyFile, IamError> {
    serde_json::from_slice(value.expose())
        .map_err(|_| IamError::permanent("the version is not a service-account JSON key file"))
}

/// The IAM resource name of the key a key file holds.
pub fn key_name(value: &SecretValue) -> Result<String, IamError> {
    let k = key_file(value)?;
    Ok(format!(
        "projects/-/serviceAccounts/{}/keys/{}",
        k.client_email, k.private_key_id
    ))
}

/// Whether `email` is one of the gateway's own (keyless) service accounts.
pub fn is_gateway_account(email: &str) -> bool {
    let e = email.trim().to_ascii_lowercase();
    e.starts_with("patchpanda-") && e.ends_with(".iam.gserviceaccount.com")
}

/// Where IAM calls get their bearer token (ADC in production).
#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn token(&self) -> Result<String, IamError>;
}

/// Application Default Credentials.
pub struct Adc;

#[async_trait]
impl TokenSource for Adc {
    async fn token(&self) -> Result<String, IamError> {
        let creds = google_cloud_auth::credentials::Builder::default()
            .build_access_token_credentials()
            .map_err(|e| IamError::permanent(format!("no Application Default Credentials: {e}")))?;
        creds
            .access_token()
            .await
            .map(|t| t.token)
            .map_err(|e| IamError {
                message: format!("getting an access token: {e}"),
                retryable: true,
            })
    }
}

/// The IAM REST API over reqwest.
pub struct RestIam {
    http: reqwest::Client,
    base: String,
    tokens: Arc<dyn TokenSource>,
}

impl RestIam {
    pub fn new(base: &str, tokens: Arc<dyn TokenSource>, timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_string(),
            tokens,
        }
    }
}

fn transport(e: reqwest::Error) -> IamError {
    IamError {
        message: format!("could not reach IAM: {e}"),
        retryable: true,
    }
}

async fn status_error(what: &str, resp: reqwest::Response) -> IamError {
    let status = resp.status();
    // Google's error body names the problem, never a secret.
    let body: String = resp
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    IamError {
        message: format!("{what}: IAM answered {status}: {body}"),
        retryable: status.is_server_error() || status.as_u16() == 429,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyResponse {
    name: String,
    private_key_data: String,
}

#[async_trait]
impl IamApi for RestIam {
    async fn create_key(&self, account: &str) -> Result<CreatedKey, IamError> {
        let url = format!("{}/v1/projects/-/serviceAccounts/{account}/keys", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(self.tokens.token().await?)
            .json(&serde_json::json!({
                "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
                "keyAlgorithm": "KEY_ALG_RSA_2048",
            }))
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(status_error("creating a key", resp).await);
        }
        let k: KeyResponse = resp
            .json()
            .await
            .map_err(|e| IamError::permanent(format!("unreadable key from IAM: {e}")))?;
        let data = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(k.private_key_data.as_bytes())
                .map_err(|_| IamError::permanent("IAM's privateKeyData is not base64"))?,
        );
        Ok(CreatedKey {
            name: k.name,
            key_file: SecretValue::from(data.to_vec()),
        })
    }

    async fn delete_key(&self, name: &str) -> Result<(), IamError> {
        let url = format!("{}/v1/{name}", self.base);
        let resp = self
            .http
            .delete(&url)
            .bearer_auth(self.tokens.token().await?)
            .send()
            .await
            .map_err(transport)?;
        if resp.status().is_success() || resp.status().as_u16() == 404 {
            return Ok(());
        }
        Err(status_error("deleting a key", resp).await)
    }

    async fn mint_token(&self, value: &SecretValue) -> Result<(), IamError> {
        let k = key_file(value)?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(k.private_key.as_bytes())
            .map_err(|_| IamError::permanent("the key file's private_key is not an RSA key"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(k.private_key_id.clone());
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": k.client_email, "scope": SCOPE, "aud": k.token_uri,
            "iat": now, "exp": now + 600,
        });
        let assertion = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| IamError::permanent(format!("signing with the key: {e}")))?;
        let resp = self
            .http
            .post(&k.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(status_error("minting a token with the new key", resp).await);
        }
        Ok(())
    }
}

/// The key-based account this deployment rotates, and how to reach IAM.
#[derive(Clone)]
pub struct ServiceAccountKeys {
    pub account: String,
    pub iam: Arc<dyn IamApi>,
}

impl std::fmt::Debug for ServiceAccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKeys")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_own_accounts_are_recognised() {
        assert!(is_gateway_account(
            "patchpanda-rotation-worker@p.iam.gserviceaccount.com"
        ));
        assert!(is_gateway_account(
            "PATCHPANDA-push@p.iam.gserviceaccount.com"
        ));
        assert!(!is_gateway_account("ci-deployer@p.iam.gserviceaccount.com"));
    }

    #[test]
    fn a_key_file_names_its_key() {
        let v = SecretValue::from(
            r#"{"client_email":"ci@p.iam.gserviceaccount.com","private_key_id":"abc","private_key":"x"}"#
                .to_string(),
        );
        assert_eq!(
            key_name(&v).unwrap(),
            "projects/-/serviceAccounts/ci@p.iam.gserviceaccount.com/keys/abc"
        );
        assert!(key_name(&SecretValue::from("nope".to_string())).is_err());
    }
}
