//! OIDC for push and scheduler calls: the verifier every function runs on
//! its push and scheduler routes, Google's published keys, and the local
//! issuer that stands in for Google on the local backend.
//!
//! Checks, in order, each failing with its own one-line 401: a bearer token
//! is present; the header says RS256 and names a key; the key is known; the
//! signature holds; `iss` is an accepted issuer; `aud` is exactly the
//! expected audience; `exp`/`iat` are within 60 s of now; `email_verified`
//! is true; `email` is on the allow-list. The token is never echoed.

pub(crate) mod google;
pub mod local;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Backend, Config};
use crate::{Error, Result, names};

/// The issuers of Google-signed ID tokens (both spellings occur).
pub(crate) const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// Clock skew tolerated on `exp` and `iat`.
pub(crate) const LEEWAY: Duration = Duration::from_secs(60);

/// Longer than any real ID token; refusing early bounds the work an
/// unauthenticated caller can cause.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Where verification keys come from: Google's JWKS, the local issuer, or a
/// fixed set in tests.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// The key named `kid`; Ok(None) when the source does not know it, Err
    /// when the source could not be asked (worth retrying).
    async fn key(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>>;
}

/// A fixed set of keys by kid.
#[derive(Clone, Default)]
pub struct StaticKeys(HashMap<String, Arc<DecodingKey>>);

impl StaticKeys {
    /// Every RSA key with a kid in the set; others are skipped.
    pub fn from_jwks(set: &JwkSet) -> Result<Self> {
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) =
                (&jwk.common.key_id, &jwk.algorithm)
            {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| Error::InvalidArgument(format!("JWK {kid}: {e}")))?;
                keys.insert(kid.clone(), Arc::new(key));
            }
        }
        Ok(Self(keys))
    }

    pub fn with_key(mut self, kid: &str, key: DecodingKey) -> Self {
        self.0.insert(kid.to_string(), Arc::new(key));
        self
    }
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StaticKeys")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait::async_trait]
impl KeySource for StaticKeys {
    async fn key(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>> {
        Ok(self.0.get(kid).cloned())
    }
}

/// What a token must say to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierSettings {
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// The exact `aud`; None = the request's own URL or its origin.
    pub audience: Option<String>,
    /// Accepted `email` claims. Empty accepts nobody.
    pub allowed_emails: Vec<String>,
    pub leeway: Duration,
}

impl VerifierSettings {
    /// Google-signed tokens (Pub/Sub push, Cloud Scheduler).
    pub fn google(audience: Option<String>, allowed_emails: Vec<String>) -> Self {
        Self {
            issuers: GOOGLE_ISSUERS.iter().map(|s| s.to_string()).collect(),
            audience,
            allowed_emails,
            leeway: LEEWAY,
        }
    }

    /// Tokens of the local issuer (local bus, scheduler, `patchpanda token`).
    pub fn local(audience: Option<String>, allowed_emails: Vec<String>) -> Self {
        Self {
            issuers: vec![names::LOCAL_ISSUER.to_string()],
            audience,
            allowed_emails,
            leeway: LEEWAY,
        }
    }
}

/// Who called, as the verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub email: String,
    pub subject: Option<String>,
}

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token is missing or fails a check: 401, the line says which.
    #[error("{0}")]
    Rejected(String),
    /// The keys could not be fetched: 503, so the caller retries.
    #[error("{0}")]
    Unavailable(String),
}

fn rejected(message: impl Into<String>) -> AuthError {
    AuthError::Rejected(message.into())
}

/// Checks the bearer tokens of push and scheduler calls.
pub struct PushVerifier {
    keys: Arc<dyn KeySource>,
    settings: VerifierSettings,
}

impl fmt::Debug for PushVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushVerifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct TokenClaims {
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    sub: Option<String>,
}

impl PushVerifier {
    /// A verifier over any key source (tests, custom issuers).
    pub fn new(keys: Arc<dyn KeySource>, settings: VerifierSettings) -> Self {
        Self { keys, settings }
    }

    /// Google's keys on gcp; the local issuer's key under PATCHPANDA_HOME on
    /// the local backend, where an empty allow-list means the local push,
    /// scheduler and operator identities.
    pub fn from_config(config: &Config) -> Result<PushVerifier> {
        match &config.backend {
            Backend::Gcp { .. } => {
                if config.push_service_accounts.is_empty() {
                    tracing::warn!(
                        "PATCHPANDA_PUSH_SERVICE_ACCOUNTS is empty: every push and scheduler call will be refused"
                    );
                }
                Ok(Self::new(
                    Arc::new(google::GoogleKeys::new()?),
                    VerifierSettings::google(
                        config.push_audience.clone(),
                        config.push_service_accounts.clone(),
                    ),
                ))
            }
            // Cloud Run sets K_SERVICE on every service. The local issuer's
            // key is a file under PATCHPANDA_HOME: in an image (or on a
            // mounted volume) whoever holds a copy could mint tokens every
            // private route accepts, so a deployment that left
            // PATCHPANDA_BACKEND at its `local` default refuses to start
            // rather than trust it.
            Backend::Local { .. } if config.service.is_some() => Err(Error::FailedPrecondition(
                "refusing to trust the local token issuer on Cloud Run (K_SERVICE is set): set PATCHPANDA_BACKEND=gcp".into(),
            )),
            Backend::Local { home } => {
                let issuer = local::LocalIssuer::open_or_create(home)?;
                let mut allowed = config.push_service_accounts.clone();
                if allowed.is_empty() {
                    allowed = vec![
                        names::PRINCIPAL_PUSH.to_string(),
                        names::PRINCIPAL_SCHEDULER.to_string(),
                        names::PRINCIPAL_OPERATOR_DEFAULT.to_string(),
                    ];
                    if !allowed.contains(&config.principal) {
                        allowed.push(config.principal.clone());
                    }
                }
                let keys =
                    StaticKeys::default().with_key(issuer.kid(), issuer.decoding_key().clone());
                Ok(Self::new(
                    Arc::new(keys),
                    VerifierSettings::local(config.push_audience.clone(), allowed),
                ))
            }
        }
    }

    pub fn settings(&self) -> &VerifierSettings {
        &self.settings
    }

    /// Verifies the request's `Authorization: Bearer` token. `path` is the
    /// request path, for the audience when none is configured.
    pub async fn verify(&self, headers: &HeaderMap, path: &str) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?;
        let audiences = match &self.settings.audience {
            Some(aud) => vec![aud.clone()],
            None => request_audiences(headers, path).ok_or_else(|| {
                rejected("cannot check the token audience: the request has no Host")
            })?,
        };
        self.verify_token(token, &audiences).await
    }

    /// Verifies one token against any of `audiences` (exact match).
    pub async fn verify_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Caller, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(rejected("bearer token is too long"));
        }
        let header = jose_header(token)?;
        match header.alg.as_deref() {
            Some("RS256") => {}
            Some(other) => {
                let shown: String = other.chars().take(16).collect();
                return Err(rejected(format!(
                    "token algorithm {shown:?} is not accepted (RS256 only)"
                )));
            }
            None => return Err(rejected("token header has no algorithm")),
        }
        let kid = header
            .kid
            .filter(|k| !k.is_empty())
            .ok_or_else(|| rejected("token header has no key id"))?;
        let key = self
            .keys
            .key(&kid)
            .await
            .map_err(|e| AuthError::Unavailable(format!("token keys unavailable: {e}")))?
            .ok_or_else(|| rejected("token is signed by an unknown key"))?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&self.settings.issuers);
        validation.set_audience(audiences);
        let data = jsonwebtoken::decode::<TokenClaims>(token, &key, &validation)
            .map_err(|e| rejected(describe(e.kind())))?;
        let claims = data.claims;

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match claims.iat {
            None => return Err(rejected("token has no iat claim")),
            Some(iat) if iat > now.saturating_add(self.settings.leeway.as_secs()) => {
                return Err(rejected("token is issued in the future (iat)"));
            }
            Some(_) => {}
        }
        let verified = matches!(&claims.email_verified, Some(serde_json::Value::Bool(true)))
            || matches!(&claims.email_verified, Some(serde_json::Value::String(s)) if s == "true");
        if !verified {
            return Err(rejected("token email is not verified"));
        }
        let email = claims
            .email
            .filter(|e| !e.is_empty())
            .ok_or_else(|| rejected("token has no email claim"))?;
        if !self
            .settings
            .allowed_emails
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&email))
        {
            return Err(rejected(format!("caller {email} is not allowed")));
        }
        Ok(Caller {
            email,
            subject: claims.sub,
        })
    }
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "token signature is invalid".into(),
        ErrorKind::ExpiredSignature => "token is expired (exp)".into(),
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "token issuer (iss) is not accepted".into(),
        ErrorKind::InvalidAudience => "token audience (aud) does not match".into(),
        ErrorKind::InvalidAlgorithm => "token algorithm does not match its key".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("token has no {c} claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("token claim {c} is malformed"),
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            "token key is not a usable RSA key".into()
        }
        _ => "token is malformed".into(),
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| rejected("missing bearer token (Authorization header)"))?
        .to_str()
        .map_err(|_| rejected("Authorization header is not valid text"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| rejected("Authorization header is not a bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(rejected("Authorization header is not a bearer token"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(rejected("bearer token is empty"));
    }
    Ok(token)
}

/// The header read by hand, so that `none`, HS256 and unknown algorithms are
/// named as such rather than reported as a parse failure.
fn jose_header(token: &str) -> Result<JoseHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(rejected("bearer token is not a JWT"));
    };
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(header)
        .map_err(|_| rejected("token header is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| rejected("token header is not valid JSON"))
}

/// The audiences a token minted for this request may carry when none is
/// configured: the full URL `{proto}://{host}{path}` and its origin. Pub/Sub
/// defaults `aud` to the push endpoint, Scheduler to the target URI.
pub(crate) fn request_audiences(headers: &HeaderMap, path: &str) -> Option<Vec<String>> {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(|h| !h.is_empty())?;
    // Behind Cloud Run's front end the request arrives as plain HTTP;
    // X-Forwarded-Proto says what the caller used.
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v == "http" || v == "https")
        .unwrap_or_else(|| "http".to_string());
    let origin = format!("{proto}://{host}");
    Some(vec![format!("{origin}{path}"), origin])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};
    use local::LocalIssuer;
    use serde_json::json;

    const AUD: &str = "https://rotation-worker-xyz.a.run.app/rotate";
    const PUSH: &str = "push@proj.iam.gserviceaccount.com";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A Google-like setup: keys from a hand-built JWKS, Google issuers.
    struct Fixture {
        _home: tempfile::TempDir,
        issuer: LocalIssuer,
        encoding: EncodingKey,
        verifier: PushVerifier,
    }

    fn fixture() -> Fixture {
        let home = local::test_keys::home_with_key(0);
        let issuer = LocalIssuer::open_or_create(home.path()).unwrap();
        let pem = std::fs::read(home.path().join(local::KEY_FILE)).unwrap();
        let encoding = EncodingKey::from_rsa_pem(&pem).unwrap();
        let keys = StaticKeys::from_jwks(&issuer.jwks()).unwrap();
        let verifier = PushVerifier::new(
            Arc::new(keys),
            VerifierSettings::google(Some(AUD.to_string()), vec![PUSH.to_string()]),
        );
        Fixture {
            _home: home,
            issuer,
            encoding,
            verifier,
        }
    }

    fn good_claims() -> serde_json::Value {
        let t = now();
        json!({
            "iss": "https://accounts.google.com",
            "aud": AUD,
            "azp": "1234",
            "sub": "1234",
            "email": PUSH,
            "email_verified": true,
            "iat": t,
            "exp": t + 3600,
        })
    }

    impl Fixture {
        fn sign(&self, claims: &serde_json::Value) -> String {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(self.issuer.kid().to_string());
            jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
        }

        fn check(&self, token: &str) -> Result<Caller, AuthError> {
            futures::executor::block_on(self.verifier.verify_token(token, &[AUD.to_string()]))
        }

        fn reject_reason(&self, token: &str) -> String {
            match self.check(token) {
                Err(AuthError::Rejected(m)) => {
                    assert!(!m.contains(token), "the token must never be echoed");
                    m
                }
                other => panic!("expected a rejection, got {other:?}"),
            }
        }
    }

    fn with(
        mut claims: serde_json::Value,
        key: &str,
        value: serde_json::Value,
    ) -> serde_json::Value {
        claims[key] = value;
        claims
    }

    #[test]
    fn accepts_a_good_google_style_token() {
        let f = fixture();
        let caller = f.check(&f.sign(&good_claims())).unwrap();
        assert_eq!(caller.email, PUSH);
        assert_eq!(caller.subject.as_deref(), Some("1234"));
        // Both spellings of Google's issuer.
        let t = f.sign(&with(good_claims(), "iss", json!("accounts.google.com")));
        assert!(f.check(&t).is_ok());
    }

    #[test]
    fn rejects_each_bad_claim_naming_the_check() {
        let f = fixture();
        let t = now();
        let cases = [
            (with(good_claims(), "exp", json!(t - 120)), "expired"),
            (
                with(good_claims(), "aud", json!("https://elsewhere/rotate")),
                "audience",
            ),
            (
                with(good_claims(), "iss", json!("https://evil.example")),
                "issuer",
            ),
            (
                with(good_claims(), "email_verified", json!(false)),
                "not verified",
            ),
            (
                with(good_claims(), "email_verified", json!("false")),
                "not verified",
            ),
            (
                with(good_claims(), "email", json!("someone@evil.example")),
                "not allowed",
            ),
            (with(good_claims(), "iat", json!(t + 600)), "future"),
        ];
        for (claims, want) in cases {
            let reason = f.reject_reason(&f.sign(&claims));
            assert!(reason.contains(want), "{want}: got {reason}");
        }
        let mut no_email = good_claims();
        no_email.as_object_mut().unwrap().remove("email");
        assert!(f.reject_reason(&f.sign(&no_email)).contains("no email"));
        let mut no_iat = good_claims();
        no_iat.as_object_mut().unwrap().remove("iat");
        assert!(f.reject_reason(&f.sign(&no_iat)).contains("iat"));
        let mut no_exp = good_claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(f.reject_reason(&f.sign(&no_exp)).contains("exp"));
    }

    #[test]
    fn tolerates_small_clock_skew() {
        let f = fixture();
        let t = now();
        let claims = with(
            with(good_claims(), "exp", json!(t - 30)),
            "iat",
            json!(t + 30),
        );
        assert!(f.check(&f.sign(&claims)).is_ok());
    }

    #[test]
    fn rejects_a_signature_by_another_key() {
        let f = fixture();
        let other_home = local::test_keys::home_with_key(1);
        let pem = std::fs::read(other_home.path().join(local::KEY_FILE)).unwrap();
        let other = EncodingKey::from_rsa_pem(&pem).unwrap();
        // Same kid as the trusted key, different private key.
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(f.issuer.kid().to_string());
        let forged = jsonwebtoken::encode(&header, &good_claims(), &other).unwrap();
        assert!(f.reject_reason(&forged).contains("signature"));
        // A tampered payload under the genuine signature.
        let good = f.sign(&good_claims());
        let parts: Vec<&str> = good.split('.').collect();
        let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&with(good_claims(), "email", json!(PUSH.to_uppercase()))).unwrap(),
        );
        let tampered = format!("{}.{}.{}", parts[0], evil, parts[2]);
        assert!(f.reject_reason(&tampered).contains("signature"));
        // Unknown kid.
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("other".into());
        let t = jsonwebtoken::encode(&header, &good_claims(), &other).unwrap();
        assert!(f.reject_reason(&t).contains("unknown key"));
    }

    #[test]
    fn rejects_alg_none_and_hs256() {
        let f = fixture();
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
        };
        let payload = b64(good_claims());
        let none = format!(
            "{}.{payload}.",
            b64(json!({"alg":"none","kid": f.issuer.kid()}))
        );
        assert!(f.reject_reason(&none).contains("not accepted"));
        // HS256 keyed with the public key's bytes: the classic confusion.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(f.issuer.kid().to_string());
        let hs = jsonwebtoken::encode(
            &header,
            &good_claims(),
            &EncodingKey::from_secret(f.issuer.kid().as_bytes()),
        )
        .unwrap();
        assert!(f.reject_reason(&hs).contains("not accepted"));
        let mut no_kid = Header::new(Algorithm::RS256);
        no_kid.kid = None;
        let t = jsonwebtoken::encode(&no_kid, &good_claims(), &f.encoding).unwrap();
        assert!(f.reject_reason(&t).contains("key id"));
        for garbage in ["", "a.b", "a.b.c.d", "!!!.x.y", "e30.e30.e30"] {
            assert!(
                matches!(f.check(garbage), Err(AuthError::Rejected(_))),
                "{garbage}"
            );
        }
    }

    #[tokio::test]
    async fn verify_reads_the_bearer_header_and_derives_the_audience() {
        let home = local::test_keys::home_with_key(0);
        let issuer = LocalIssuer::open_or_create(home.path()).unwrap();
        let verifier = PushVerifier::new(
            Arc::new(StaticKeys::from_jwks(&issuer.jwks()).unwrap()),
            VerifierSettings::local(None, vec![names::PRINCIPAL_PUSH.to_string()]),
        );
        let mut h = HeaderMap::new();
        let err = verifier.verify(&h, "/events/rotation").await.unwrap_err();
        assert!(err.to_string().contains("missing bearer token"), "{err}");
        h.insert("host", HeaderValue::from_static("127.0.0.1:8081"));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        let err = verifier.verify(&h, "/events/rotation").await.unwrap_err();
        assert!(err.to_string().contains("not a bearer token"), "{err}");

        for aud in [
            "http://127.0.0.1:8081/events/rotation",
            "http://127.0.0.1:8081",
        ] {
            let token = issuer
                .mint(aud, names::PRINCIPAL_PUSH, Duration::from_secs(60))
                .unwrap();
            h.insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
            let caller = verifier.verify(&h, "/events/rotation").await.unwrap();
            assert_eq!(caller.email, names::PRINCIPAL_PUSH);
            // The same token on another path of another scheme is refused.
            let wrong = verifier.verify(&h, "/rotate").await;
            assert_eq!(wrong.is_ok(), aud == "http://127.0.0.1:8081", "{aud}");
        }
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let err = verifier.verify(&h, "/events/rotation").await.unwrap_err();
        assert!(err.to_string().contains("audience"), "{err}");
    }

    #[test]
    fn from_config_refuses_the_local_issuer_on_cloud_run() {
        let home = local::test_keys::home_with_key(1);
        let env = crate::config::Env::from_pairs([
            ("PATCHPANDA_HOME", home.path().to_str().unwrap()),
            ("K_SERVICE", "patchpanda-rotation-worker"),
        ]);
        let config = Config::from_env(&env, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let err = PushVerifier::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("PATCHPANDA_BACKEND=gcp"), "{err}");
    }

    #[tokio::test]
    async fn from_config_on_local_trusts_the_local_issuer_and_identities() {
        let home = local::test_keys::home_with_key(1);
        let env = crate::config::Env::from_pairs([
            ("PATCHPANDA_HOME", home.path().to_str().unwrap()),
            ("PATCHPANDA_PUSH_AUDIENCE", "http://127.0.0.1:8080"),
        ]);
        let config = Config::from_env(&env, names::PRINCIPAL_ROTATION_WORKER).unwrap();
        let verifier = PushVerifier::from_config(&config).unwrap();
        assert_eq!(verifier.settings().issuers, [names::LOCAL_ISSUER]);
        let issuer = LocalIssuer::open_or_create(home.path()).unwrap();
        let aud = ["http://127.0.0.1:8080".to_string()];
        for who in [
            names::PRINCIPAL_PUSH,
            names::PRINCIPAL_SCHEDULER,
            names::PRINCIPAL_OPERATOR_DEFAULT,
        ] {
            let t = issuer.mint(&aud[0], who, Duration::from_secs(60)).unwrap();
            assert!(verifier.verify_token(&t, &aud).await.is_ok(), "{who}");
        }
        let t = issuer
            .mint(
                &aud[0],
                names::PRINCIPAL_AUDIT_ALERTER,
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(verifier.verify_token(&t, &aud).await.is_err());
    }
}
