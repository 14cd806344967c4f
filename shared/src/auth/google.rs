//! Google's token-signing keys, fetched from its JWKS endpoint and cached by
//! kid. Google rotates keys every few days and publishes new ones ahead of
//! use, so an unknown kid triggers one refetch, at most every 30 s, so that a
//! flood of bad tokens cannot turn into a flood of fetches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use tokio::sync::Mutex;

use super::KeySource;
use crate::{Error, Result};

/// Google's OAuth2 signing keys, as a JWK set.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// How long to keep keys when the response does not say (Google sends a
/// max-age of several hours).
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two fetches caused by unknown kids.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<DecodingKey>>,
    expires: Option<Instant>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// A [`KeySource`] over a remote JWKS (Google's by default).
pub struct GoogleKeys {
    url: String,
    client: reqwest::Client,
    min_refetch: Duration,
    // A tokio mutex held across the fetch: concurrent requests with a new
    // kid wait for one fetch instead of each starting their own.
    cache: Mutex<Cache>,
}

impl GoogleKeys {
    pub fn new() -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| Error::Internal(format!("HTTP client for Google's keys: {e}")))?;
        Ok(Self::with_client(client, GOOGLE_JWKS_URL, MIN_REFETCH))
    }

    /// Another JWKS endpoint (tests, other issuers).
    pub fn with_client(client: reqwest::Client, url: &str, min_refetch: Duration) -> Self {
        Self {
            url: url.to_string(),
            client,
            min_refetch,
            cache: Mutex::new(Cache::default()),
        }
    }

    async fn fetch(&self) -> Result<(HashMap<String, Arc<DecodingKey>>, Duration)> {
        let unavailable = |e: String| Error::Unavailable(format!("fetching {}: {e}", self.url));
        let resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(unavailable(format!("HTTP {status}")));
        }
        let ttl = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_TTL)
            .min(MAX_TTL);
        let body: serde_json::Value = resp.json().await.map_err(|e| unavailable(e.to_string()))?;
        let keys = parse_jwks(&body);
        if keys.is_empty() {
            return Err(unavailable("no usable RSA keys in the response".into()));
        }
        Ok((keys, ttl))
    }
}

/// Every RSA key with a kid; keys of other kinds, or that fail to parse, are
/// skipped so that one odd entry cannot lock out the rest.
fn parse_jwks(body: &serde_json::Value) -> HashMap<String, Arc<DecodingKey>> {
    let mut keys = HashMap::new();
    let entries = body
        .get("keys")
        .and_then(|k| k.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
            continue;
        }
        if let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(&jwk)) {
            keys.insert(kid, Arc::new(key));
        }
    }
    keys
}

/// `max-age` of a Cache-Control header.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case("max-age") {
            v.trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
        } else {
            None
        }
    })
}

#[async_trait::async_trait]
impl KeySource for GoogleKeys {
    async fn key(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        let fresh = cache.expires.is_some_and(|e| now < e);
        let known = cache.keys.get(kid).cloned();
        if fresh && known.is_some() {
            return Ok(known);
        }
        let may_fetch = cache
            .last_attempt
            .is_none_or(|t| now.duration_since(t) >= self.min_refetch);
        // Expired keys and unknown kids both refetch, within one budget:
        // bursts of either cost one fetch per interval.
        if !may_fetch {
            return match (&known, &cache.last_error) {
                (None, Some(e)) if cache.keys.is_empty() => Err(Error::Unavailable(e.clone())),
                _ => Ok(known),
            };
        }
        cache.last_attempt = Some(now);
        match self.fetch().await {
            Ok((keys, ttl)) => {
                cache.keys = keys;
                cache.expires = Some(Instant::now() + ttl);
                cache.last_error = None;
                Ok(cache.keys.get(kid).cloned())
            }
            Err(e) => {
                cache.last_error = Some(e.to_string());
                // Google publishes keys well before and after use, so stale
                // keys are still right; keep serving them while the endpoint
                // is down.
                if known.is_some() {
                    tracing::warn!(error = %e, "refreshing Google's keys failed; using cached keys");
                    Ok(known)
                } else if cache.keys.is_empty() {
                    Err(e)
                } else {
                    tracing::warn!(error = %e, "fetching Google's keys for an unknown kid failed");
                    Ok(None)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::local::LocalIssuer;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Jwks {
        _shutdown: tokio::sync::oneshot::Sender<()>,
        url: String,
        hits: Arc<AtomicUsize>,
    }

    /// A JWKS endpoint on 127.0.0.1 serving `body`, counting fetches.
    async fn serve(body: String, cache_control: &'static str) -> Jwks {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/certs",
            axum::routing::get(move || {
                let body = body.clone();
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    (
                        [
                            (http::header::CACHE_CONTROL, cache_control),
                            (http::header::CONTENT_TYPE, "application/json"),
                        ],
                        body,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Jwks {
            _shutdown: tx,
            url: format!("http://{addr}/certs"),
            hits,
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn caches_by_kid_and_refetches_unknown_kids_at_most_every_interval() {
        let home = crate::auth::local::test_keys::home_with_key(0);
        let issuer = LocalIssuer::open_or_create(home.path()).unwrap();
        let mut set = serde_json::to_value(issuer.jwks()).unwrap();
        // An entry of another kind must not spoil the set.
        set["keys"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"kty": "OKP", "kid": "ed", "crv": "X448", "x": "AA"}));
        let server = serve(set.to_string(), "public, max-age=19766, must-revalidate").await;
        let keys = GoogleKeys::with_client(client(), &server.url, Duration::from_secs(3600));

        assert!(keys.key(issuer.kid()).await.unwrap().is_some());
        assert!(keys.key(issuer.kid()).await.unwrap().is_some());
        assert_eq!(server.hits.load(Ordering::SeqCst), 1, "cached by kid");
        // The first unknown kid came within the refetch budget: no fetch.
        assert!(keys.key("unknown").await.unwrap().is_none());
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);

        let eager = GoogleKeys::with_client(client(), &server.url, Duration::ZERO);
        assert!(eager.key("unknown").await.unwrap().is_none());
        assert!(eager.key("unknown").await.unwrap().is_none());
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            3,
            "refetch on unknown kid"
        );
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_unavailable_not_unknown() {
        let server = serve("{\"keys\":[]}".into(), "max-age=60").await;
        let keys = GoogleKeys::with_client(client(), &server.url, Duration::from_secs(3600));
        let err = keys.key("k").await.unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err}");
        // Still unavailable (not a silent "unknown key") within the budget.
        assert!(keys.key("k").await.is_err());
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=19766, must-revalidate, no-transform"),
            Some(Duration::from_secs(19766))
        );
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
