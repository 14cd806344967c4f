//! The REST calls the gateway makes as the GitHub App, authenticated with the
//! App JWT: the App itself, its hook config, its hook deliveries, and
//! installation tokens. `api_url` is `https://api.github.com` or a GitHub
//! Enterprise Server's `https://HOST/api/v3`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::GitHubError;
use super::app_jwt::{AppSigner, LIFETIME_SECS};
use crate::SecretValue;

/// Sent on every call; GitHub refuses requests without a User-Agent.
pub const USER_AGENT: &str = concat!("patchpanda-gateway/", env!("CARGO_PKG_VERSION"));
pub const API_VERSION: &str = "2022-11-28";
/// Installation tokens are reused until this long before they expire.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// A cached App JWT is replaced this long before its `exp`.
const JWT_REFRESH_MARGIN_SECS: i64 = 60;
/// Used when GitHub says "rate limited" without saying for how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// GitHub's `message` is quoted in errors up to this many characters.
const MAX_MESSAGE_CHARS: usize = 200;

/// `GET /app`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub id: u64,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
}

/// `GET /app/hook/config`, without the (masked) secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookConfig {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// `"0"` or `"1"`; GitHub documents it as a string or a number.
    #[serde(default, deserialize_with = "string_or_number")]
    pub insecure_ssl: Option<String>,
}

/// One attempt to deliver a webhook, as `GET /app/hook/deliveries` lists it.
/// Redeliveries share the `guid` of the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookDelivery {
    pub id: u64,
    pub guid: String,
    pub delivered_at: DateTime<Utc>,
    #[serde(default)]
    pub redelivery: bool,
    /// `OK` when the receiver answered 2xx.
    pub status: String,
    /// The receiver's HTTP status; 0 when it never answered.
    #[serde(default)]
    pub status_code: u16,
    pub event: String,
    #[serde(default)]
    pub action: Option<String>,
}

/// One page of deliveries, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPage {
    pub deliveries: Vec<HookDelivery>,
    /// The `cursor` of the next (older) page, from the `Link` header.
    pub next_cursor: Option<String>,
}

/// The last `X-RateLimit-*` headers GitHub sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: u64,
    pub reset: Option<DateTime<Utc>>,
}

struct CachedJwt {
    jwt: SecretValue,
    /// Unix seconds after which a fresh one is minted.
    refresh_at: i64,
}

struct CachedToken {
    token: SecretValue,
    expires_at: DateTime<Utc>,
}

/// The GitHub App client. Cheap to share behind an `Arc`; JWTs and
/// installation tokens are cached inside.
pub struct GitHubApp {
    http: reqwest::Client,
    api_url: String,
    signer: AppSigner,
    jwt: Mutex<Option<CachedJwt>>,
    tokens: Mutex<HashMap<u64, CachedToken>>,
    rate: Mutex<Option<RateLimit>>,
}

impl std::fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubApp")
            .field("api_url", &self.api_url)
            .field("app_id", &self.signer.issuer())
            .finish_non_exhaustive()
    }
}

/// A 2xx answer, read in full.
struct Answer {
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl GitHubApp {
    /// Parses the key once (PKCS#1 or PKCS#8). `app_id` is the numeric App id
    /// or its client id; it becomes the JWT's `iss`.
    pub fn new(
        api_url: &str,
        app_id: &str,
        private_key_pem: &SecretValue,
    ) -> Result<GitHubApp, GitHubError> {
        Self::with_timeout(api_url, app_id, private_key_pem, Duration::from_secs(20))
    }

    /// As [`GitHubApp::new`], with a per-request timeout.
    pub fn with_timeout(
        api_url: &str,
        app_id: &str,
        private_key_pem: &SecretValue,
        timeout: Duration,
    ) -> Result<GitHubApp, GitHubError> {
        let api_url = api_url.trim().trim_end_matches('/').to_string();
        match url::Url::parse(&api_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(GitHubError::InvalidInput(format!(
                    "GitHub API URL {api_url:?} is not an http(s) URL"
                )));
            }
        }
        let signer = AppSigner::new(app_id, private_key_pem)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .build()
            .map_err(|e| GitHubError::Transport(format!("building the HTTP client: {e}")))?;
        Ok(GitHubApp {
            http,
            api_url,
            signer,
            jwt: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            rate: Mutex::new(None),
        })
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The JWT issuer: the App id or client id given at construction.
    pub fn app_id(&self) -> &str {
        self.signer.issuer()
    }

    /// The rate limit GitHub reported on the last answer, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        *lock(&self.rate)
    }

    /// `GET /app`: proves the key and id are accepted.
    pub async fn get_app(&self) -> Result<AppInfo, GitHubError> {
        let a = self.call(Method::GET, "/app", &[], None).await?;
        decode(&a.body)
    }

    /// `GET /app/hook/config`. GitHub masks the secret; it is not returned.
    pub async fn hook_config(&self) -> Result<HookConfig, GitHubError> {
        let a = self
            .call(Method::GET, "/app/hook/config", &[], None)
            .await?;
        decode(&a.body)
    }

    /// `PATCH /app/hook/config {"secret": ...}`: GitHub signs every delivery
    /// from now on with this secret.
    pub async fn update_hook_secret(
        &self,
        secret: &SecretValue,
    ) -> Result<HookConfig, GitHubError> {
        let text = secret.expose_str().ok_or_else(|| {
            GitHubError::InvalidInput("a webhook secret must be UTF-8 text".into())
        })?;
        if text.is_empty() {
            return Err(GitHubError::InvalidInput(
                "the webhook secret is empty".into(),
            ));
        }
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "secret": text }))
                .map_err(|e| GitHubError::InvalidInput(e.to_string()))?,
        );
        let a = self
            .call(Method::PATCH, "/app/hook/config", &[], Some(body.to_vec()))
            .await?;
        decode(&a.body)
    }

    /// `GET /app/hook/deliveries`, newest first. `per_page` is clamped to
    /// 1..=100; `cursor` comes from the previous page's `next_cursor`.
    pub async fn list_deliveries(
        &self,
        per_page: u32,
        cursor: Option<&str>,
    ) -> Result<DeliveryPage, GitHubError> {
        let per_page = per_page.clamp(1, 100).to_string();
        let mut query = vec![("per_page", per_page.as_str())];
        if let Some(c) = cursor {
            query.push(("cursor", c));
        }
        let a = self
            .call(Method::GET, "/app/hook/deliveries", &query, None)
            .await?;
        let deliveries: Vec<HookDelivery> = decode(&a.body)?;
        let next_cursor = a
            .headers
            .get_all(http::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_cursor_from_link);
        Ok(DeliveryPage {
            deliveries,
            next_cursor,
        })
    }

    /// `POST /app/hook/deliveries/{id}/attempts`: GitHub delivers it again,
    /// with the same `X-GitHub-Delivery`.
    pub async fn redeliver(&self, delivery_id: u64) -> Result<(), GitHubError> {
        let path = format!("/app/hook/deliveries/{delivery_id}/attempts");
        self.call(Method::POST, &path, &[], None).await?;
        Ok(())
    }

    /// An installation access token, reused until 5 minutes before its
    /// `expires_at`. Nothing is assumed about the token's length or format.
    pub async fn installation_token(
        &self,
        installation_id: u64,
    ) -> Result<SecretValue, GitHubError> {
        let now = Utc::now();
        if let Some(t) = lock(&self.tokens).get(&installation_id)
            && t.expires_at - margin() > now
        {
            return Ok(t.token.clone());
        }
        let path = format!("/app/installations/{installation_id}/access_tokens");
        let a = self.call(Method::POST, &path, &[], None).await?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: String,
            expires_at: DateTime<Utc>,
        }
        let answer: TokenAnswer = decode(&a.body)?;
        if answer.token.is_empty() {
            return Err(GitHubError::Decode(
                "the installation token is empty".into(),
            ));
        }
        let token = SecretValue::from(answer.token);
        lock(&self.tokens).insert(
            installation_id,
            CachedToken {
                token: token.clone(),
                expires_at: answer.expires_at,
            },
        );
        Ok(token)
    }

    fn app_jwt(&self) -> Result<SecretValue, GitHubError> {
        let now = Utc::now().timestamp();
        let mut cached = lock(&self.jwt);
        if let Some(c) = cached.as_ref()
            && now < c.refresh_at
        {
            return Ok(c.jwt.clone());
        }
        let jwt = SecretValue::from(self.signer.mint_at(now)?);
        *cached = Some(CachedJwt {
            jwt: jwt.clone(),
            refresh_at: now + LIFETIME_SECS - JWT_REFRESH_MARGIN_SECS,
        });
        Ok(jwt)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        json_body: Option<Vec<u8>>,
    ) -> Result<Answer, GitHubError> {
        let jwt = self.app_jwt()?;
        let mut auth = HeaderValue::from_bytes(&[b"Bearer ", jwt.expose()].concat())
            .map_err(|_| GitHubError::InvalidKey("the App JWT is not a valid header".into()))?;
        auth.set_sensitive(true);
        let url = format!("{}{}", self.api_url, path);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header(http::header::AUTHORIZATION, auth);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(body) = json_body {
            req = req
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| GitHubError::Transport(format!("{method} {path}: {}", e.without_url())))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        self.note_rate_limit(&headers);
        let body = resp
            .bytes()
            .await
            .map_err(|e| GitHubError::Transport(format!("{method} {path}: {}", e.without_url())))?;
        if status.is_success() {
            return Ok(Answer { headers, body });
        }
        if status == StatusCode::UNAUTHORIZED {
            // A refused JWT is not worth reusing.
            *lock(&self.jwt) = None;
        }
        Err(error_for(status, &headers, &body))
    }

    fn note_rate_limit(&self, headers: &HeaderMap) {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(remaining) = num("x-ratelimit-remaining") {
            *lock(&self.rate) = Some(RateLimit {
                limit: num("x-ratelimit-limit"),
                remaining,
                reset: num("x-ratelimit-reset")
                    .and_then(|s| i64::try_from(s).ok())
                    .and_then(|s| DateTime::from_timestamp(s, 0)),
            });
        }
    }
}

fn margin() -> chrono::Duration {
    chrono::Duration::from_std(TOKEN_REFRESH_MARGIN).unwrap_or_else(|_| chrono::Duration::zero())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded caches stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, GitHubError> {
    serde_json::from_slice(body).map_err(|e| GitHubError::Decode(e.to_string()))
}

/// The typed error for a non-2xx answer.
pub(crate) fn error_for(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GitHubError {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let exhausted = header("x-ratelimit-remaining") == Some("0");
    let has_retry_after = header("retry-after").is_some();
    match status {
        StatusCode::UNAUTHORIZED => GitHubError::Unauthorized,
        StatusCode::NOT_FOUND => GitHubError::NotFound,
        StatusCode::TOO_MANY_REQUESTS => GitHubError::RateLimited {
            retry_after: retry_after(headers, Utc::now()),
        },
        // GitHub signals primary and secondary rate limits with 403 too.
        StatusCode::FORBIDDEN if exhausted || has_retry_after => GitHubError::RateLimited {
            retry_after: retry_after(headers, Utc::now()),
        },
        _ => {
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
            GitHubError::Rejected {
                status: status.as_u16(),
                message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
            }
        }
    }
}

/// How long to wait: `Retry-After` (seconds or an HTTP date), else until
/// `X-RateLimit-Reset`, else a minute.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Duration {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = header("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Duration::from_secs(secs);
        }
        if let Ok(at) = DateTime::parse_from_rfc2822(v) {
            return (at.with_timezone(&Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO);
        }
    }
    if header("x-ratelimit-remaining") == Some("0")
        && let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok())
        && let Some(at) = DateTime::from_timestamp(reset, 0)
    {
        return (at - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1));
    }
    DEFAULT_RETRY_AFTER
}

/// The `cursor` query parameter of the `rel="next"` link, if any.
pub fn next_cursor_from_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|r| r.trim_matches('"').split_whitespace().any(|r| r == "next"))
                .unwrap_or(false)
        });
        if !is_next {
            return None;
        }
        let target = target.strip_prefix('<')?.strip_suffix('>')?;
        // Relative links are resolved against any base; only the query matters.
        let url = url::Url::parse(target)
            .or_else(|_| url::Url::parse("http://relative.invalid/")?.join(target))
            .ok()?;
        url.query_pairs()
            .find(|(k, _)| k == "cursor")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    })
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_next_cursor() {
        let link = r#"<https://api.github.com/app/hook/deliveries?per_page=2&cursor=v1_12077215967>; rel="next", <https://api.github.com/app/hook/deliveries?per_page=2>; rel="first""#;
        assert_eq!(
            next_cursor_from_link(link).as_deref(),
            Some("v1_12077215967")
        );
        let only_prev = r#"<https://api.github.com/app/hook/deliveries?cursor=abc>; rel="prev""#;
        assert_eq!(next_cursor_from_link(only_prev), None);
        assert_eq!(next_cursor_from_link("garbage"), None);
        assert_eq!(
            next_cursor_from_link(r#"</app/hook/deliveries?cursor=x%2By>; rel="next""#).as_deref(),
            Some("x+y")
        );
    }

    #[test]
    fn maps_statuses_to_errors() {
        let mut h = HeaderMap::new();
        let now = Utc::now();
        assert_eq!(
            error_for(StatusCode::UNAUTHORIZED, &h, b""),
            GitHubError::Unauthorized
        );
        assert_eq!(
            error_for(StatusCode::NOT_FOUND, &h, b""),
            GitHubError::NotFound
        );
        assert_eq!(
            error_for(
                StatusCode::UNPROCESSABLE_ENTITY,
                &h,
                br#"{"message":"Validation Failed"}"#
            ),
            GitHubError::Rejected {
                status: 422,
                message: "Validation Failed".into()
            }
        );
        assert!(matches!(
            error_for(StatusCode::FORBIDDEN, &h, b"{}"),
            GitHubError::Rejected { status: 403, .. }
        ));
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            error_for(StatusCode::TOO_MANY_REQUESTS, &h, b""),
            GitHubError::RateLimited {
                retry_after: Duration::from_secs(7)
            }
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = (now.timestamp() + 30).to_string();
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        let wait = retry_after(&h, now);
        assert!(
            wait >= Duration::from_secs(29) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(matches!(
            error_for(StatusCode::FORBIDDEN, &h, b""),
            GitHubError::RateLimited { .. }
        ));
        assert_eq!(retry_after(&HeaderMap::new(), now), DEFAULT_RETRY_AFTER);
    }

    #[test]
    fn reads_githubs_shapes() {
        let c: HookConfig = serde_json::from_str(
            r#"{"content_type":"json","insecure_ssl":0,"secret":"********","url":"https://example.com/webhook"}"#,
        )
        .unwrap();
        assert_eq!(c.insecure_ssl.as_deref(), Some("0"));
        assert_eq!(c.content_type.as_deref(), Some("json"));
        let d: Vec<HookDelivery> = serde_json::from_str(
            r#"[{"id":12345678,"guid":"0b989ba4-242f-11e5-81e1-c7b6966d2516","delivered_at":"2019-06-03T00:57:16Z","redelivery":false,"duration":0.27,"status":"OK","status_code":200,"event":"issues","action":"opened","installation_id":123,"repository_id":456,"throttled_at":null}]"#,
        )
        .unwrap();
        assert_eq!(d[0].id, 12345678);
        assert_eq!(d[0].action.as_deref(), Some("opened"));
    }
}
