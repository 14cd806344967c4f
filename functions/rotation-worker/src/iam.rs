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

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("name", &self.name)
            .field("key_file", &self.key_file)
            .finish()
    }
}

#[async_trait]
pub trait IamApi: Send + Sync {
    async fn create_key(&self, account: &str) -> Result<CreatedKey, IamError>;
    /// Deleting a key that is already gone succeeds.
    async fn delete_key(&self, name: &str) -> Result<(), IamError>;
    /// Mints an access token with the key file: proves Google accepts it.
    async fn mint_token(&self, key_file: &SecretValue) -> Result<(), IamError>;
}

/// The fields of a JSON key file the rotation reads. The private key goes
/// straight from the parser into a `SecretValue` (zeroized on drop,
/// redacted in `Debug`): no plain `String` copy of it outlives the parse.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key_id: String,
    #[serde(deserialize_with = "secret")]
    private_key: SecretValue,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &self.private_key)
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

/// Deserializes a JSON string into a `SecretValue`; the owned `String`
/// serde hands over is moved (not copied) into the zeroizing buffer.
fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
    String::deserialize(d).map(SecretValue::from)
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

/// Where IAM calls get their bearer token (ADC in production). The token
/// is a credential: it stays in a `SecretValue` until the header is built.
#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn token(&self) -> Result<SecretValue, IamError>;
}

/// Application Default Credentials.
pub struct Adc;

#[async_trait]
impl TokenSource for Adc {
    async fn token(&self) -> Result<SecretValue, IamError> {
        let creds = google_cloud_auth::credentials::Builder::default()
            .build_access_token_credentials()
            .map_err(|e| IamError::permanent(format!("no Application Default Credentials: {e}")))?;
        creds
            .access_token()
            .await
            .map(|t| SecretValue::from(t.token))
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

/// The token as the header wants it; reqwest marks the header sensitive.
fn bearer(token: &SecretValue) -> Result<&str, IamError> {
    token
        .expose_str()
        .ok_or_else(|| IamError::permanent("the access token is not UTF-8"))
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

/// IAM's answer to a key creation; `privateKeyData` is the base64 of the
/// whole key file, so it is as secret as the key.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyResponse {
    name: String,
    #[serde(deserialize_with = "secret")]
    private_key_data: SecretValue,
}

impl std::fmt::Debug for KeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyResponse")
            .field("name", &self.name)
            .field("private_key_data", &self.private_key_data)
            .finish()
    }
}

/// Decodes `privateKeyData` into the key file, never through a plain buffer.
fn decode_key_data(k: KeyResponse) -> Result<CreatedKey, IamError> {
    let mut data = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(k.private_key_data.expose())
            .map_err(|_| IamError::permanent("IAM's privateKeyData is not base64"))?,
    );
    Ok(CreatedKey {
        name: k.name,
        key_file: SecretValue::new(std::mem::take(&mut *data)),
    })
}

#[async_trait]
impl IamApi for RestIam {
    async fn create_key(&self, account: &str) -> Result<CreatedKey, IamError> {
        let url = format!("{}/v1/projects/-/serviceAccounts/{account}/keys", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(bearer(&self.tokens.token().await?)?)
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
        // The body holds the key: read it into a zeroizing buffer, and say
        // nothing of it (serde's message could quote it) if it is unreadable.
        let body = SecretValue::new(Vec::from(resp.bytes().await.map_err(transport)?));
        let k: KeyResponse = serde_json::from_slice(body.expose()).map_err(|_| {
            IamError::permanent("IAM answered a key creation with an unreadable body")
        })?;
        decode_key_data(k)
    }

    async fn delete_key(&self, name: &str) -> Result<(), IamError> {
        let url = format!("{}/v1/{name}", self.base);
        let resp = self
            .http
            .delete(&url)
            .bearer_auth(bearer(&self.tokens.token().await?)?)
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
        // EncodingKey zeroizes its DER on drop and redacts it in Debug.
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(k.private_key.expose())
            .map_err(|_| IamError::permanent("the key file's private_key is not an RSA key"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(k.private_key_id.clone());
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": k.client_email, "scope": SCOPE, "aud": k.token_uri,
            "iat": now, "exp": now + 600,
        });
        // The signed assertion buys an access token for ten minutes: a
        // credential in its own right, so it is zeroized too.
        let assertion = zeroize::Zeroizing::new(
            jsonwebtoken::encode(&header, &claims, &key)
                .map_err(|_| IamError::permanent("signing with the key failed"))?,
        );
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

    /// Stands in for a PEM body: distinctive, so any leak is found.
    const KEY_MATERIAL: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-key-material";

    fn key_json() -> String {
        format!(
            r#"{{"client_email":"ci@p.iam.gserviceaccount.com","private_key_id":"abc","private_key":"-----BEGIN PRIVATE KEY-----\n{KEY_MATERIAL}\n-----END PRIVATE KEY-----\n"}}"#
        )
    }

    fn assert_no_key(shown: &str, encoded: &str) {
        assert!(!shown.contains(KEY_MATERIAL), "{shown}");
        assert!(!shown.contains("BEGIN PRIVATE KEY"), "{shown}");
        assert!(!shown.contains(encoded), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn no_type_holding_the_key_prints_it_in_debug() {
        let json = key_json();
        let encoded = base64::engine::general_purpose::STANDARD.encode(json.as_bytes());

        let file = key_file(&SecretValue::from(json.clone())).unwrap();
        assert_eq!(file.private_key_id, "abc");
        assert!(
            file.private_key
                .expose_str()
                .unwrap()
                .contains(KEY_MATERIAL)
        );
        assert_no_key(&format!("{file:?} {file:#?}"), &encoded);

        let response: KeyResponse = serde_json::from_str(&format!(
            r#"{{"name":"projects/p/serviceAccounts/ci/keys/abc","privateKeyData":"{encoded}"}}"#
        ))
        .unwrap();
        assert_no_key(&format!("{response:?} {response:#?}"), &encoded);

        let created = decode_key_data(response).unwrap();
        assert_eq!(created.key_file.expose_str(), Some(json.as_str()));
        assert_eq!(created.name, "projects/p/serviceAccounts/ci/keys/abc");
        assert_no_key(&format!("{created:?} {created:#?}"), &encoded);
    }

    #[test]
    fn an_unusable_key_file_fails_without_quoting_it() {
        let bad = SecretValue::from(format!(r#"{{"private_key":"{KEY_MATERIAL}""#));
        let e = key_file(&bad).unwrap_err();
        assert!(!format!("{e} {e:?}").contains(KEY_MATERIAL));

        let response = KeyResponse {
            name: "n".into(),
            private_key_data: SecretValue::from(format!("!{KEY_MATERIAL}!")),
        };
        let e = decode_key_data(response).unwrap_err();
        assert!(!format!("{e} {e:?}").contains(KEY_MATERIAL));
    }

    #[tokio::test]
    async fn a_key_that_is_not_rsa_fails_minting_without_quoting_it() {
        let iam = RestIam::new(
            "http://127.0.0.1:9",
            Arc::new(NoToken),
            Duration::from_secs(1),
        );
        let e = iam
            .mint_token(&SecretValue::from(key_json()))
            .await
            .unwrap_err();
        assert!(!e.retryable);
        assert!(!format!("{e} {e:?}").contains(KEY_MATERIAL), "{e}");
    }

    struct NoToken;

    #[async_trait]
    impl TokenSource for NoToken {
        async fn token(&self) -> Result<SecretValue, IamError> {
            Err(IamError::permanent("no token in tests"))
        }
    }
}
