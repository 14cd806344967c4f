//! Google ID tokens for calling the private Cloud Run services (`patchpanda
//! health`'s probes, `patchpanda token`), from Application Default
//! Credentials.
//!
//! rotation-worker and audit-alerter admit only callers holding
//! `roles/run.invoker`, which Cloud Run checks on a Google-signed ID token
//! in `Authorization: Bearer` (https://cloud.google.com/run/docs/authenticating/service-to-service).
//! Where the token comes from follows ADC: a service account key, an
//! impersonated service account or the metadata server give a token whose
//! `aud` is the service URL; gcloud's user credentials (`gcloud auth
//! application-default login`) give the user's own ID token, which Cloud
//! Run also accepts for a user holding the role
//! (https://cloud.google.com/run/docs/authenticating/developers).
//! google-cloud-auth's ADC builder refuses user credentials for ID tokens,
//! so they are read here and handed to its user-account builder.

use std::path::PathBuf;

use google_cloud_auth::credentials::idtoken::{self, IDTokenCredentials};
use serde_json::Value;

use crate::failure::Failure;

/// An ID token for `audience` from Application Default Credentials.
pub async fn google_id_token(audience: &str) -> Result<String, Failure> {
    credentials(adc_json()?, audience)?
        .id_token()
        .await
        .map_err(|e| Failure(format!("cannot get an ID token for {audience}: {e}")))
}

/// The credentials for one audience, given the ADC file's contents (None:
/// no file, so the metadata server).
fn credentials(adc: Option<Value>, audience: &str) -> Result<IDTokenCredentials, Failure> {
    let built = match adc {
        Some(json) if json.get("type").and_then(Value::as_str) == Some("authorized_user") => {
            idtoken::user_account::Builder::new(json).build()
        }
        // Service account keys, impersonation and the metadata server.
        _ => idtoken::Builder::new(audience).build(),
    };
    built.map_err(|e| Failure(format!("cannot build ID-token credentials from ADC: {e}")))
}

/// The ADC file, where ADC looks for it: GOOGLE_APPLICATION_CREDENTIALS,
/// else gcloud's well-known file (CLOUDSDK_CONFIG or ~/.config/gcloud).
fn adc_json() -> Result<Option<Value>, Failure> {
    let explicit = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|v| !v.is_empty());
    let path = match explicit {
        Some(p) => PathBuf::from(p),
        None => {
            let config = std::env::var_os("CLOUDSDK_CONFIG")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/gcloud"))
                });
            match config.map(|c| c.join("application_default_credentials.json")) {
                Some(p) if p.is_file() => p,
                _ => return Ok(None),
            }
        }
    };
    let text = std::fs::read(&path)
        .map_err(|e| Failure(format!("cannot read ADC file {}: {e}", path.display())))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|_| Failure(format!("ADC file {} is not JSON", path.display())))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-request-at-a-time HTTP server answering every request with
    /// `status` and `body`, recording what it was sent.
    pub(crate) async fn serve(
        status: u16,
        body: String,
        needs_bearer: Option<String>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let request = String::from_utf8_lossy(&buf).to_string();
                let authorized = match &needs_bearer {
                    None => true,
                    Some(t) => request.lines().any(|l| {
                        l.split_once(':').is_some_and(|(k, v)| {
                            k.eq_ignore_ascii_case("authorization")
                                && v.trim() == format!("Bearer {t}")
                        })
                    }),
                };
                let _ = tx.send(request);
                let (status, body) = if authorized {
                    (status, body.clone())
                } else {
                    (401, "unauthorized".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn gcloud_user_credentials_give_the_users_id_token() {
        // What `gcloud auth application-default login` writes, with its
        // token endpoint pointed at a local stand-in for oauth2.googleapis.com.
        let id_token = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln";
        let (addr, mut seen) = serve(
            200,
            serde_json::json!({
                "access_token": "ya29.access",
                "id_token": id_token,
                "token_type": "Bearer",
                "expires_in": 3600,
            })
            .to_string(),
            None,
        )
        .await;
        let adc = serde_json::json!({
            "type": "authorized_user",
            "client_id": "cid.apps.googleusercontent.com",
            "client_secret": "csecret",
            "refresh_token": "1//refresh",
            "token_uri": format!("http://{addr}/token"),
        });
        let creds = credentials(Some(adc), "https://rotation-worker.example.run.app").unwrap();
        assert_eq!(creds.id_token().await.unwrap(), id_token);
        let request = seen.recv().await.unwrap();
        assert!(request.starts_with("POST /token"), "{request}");
        assert!(request.contains("refresh_token"), "{request}");
    }

    #[test]
    fn a_malformed_adc_file_is_one_clear_line() {
        let err = credentials(
            Some(serde_json::json!({"type": "authorized_user"})),
            "https://x.run.app",
        )
        .unwrap_err();
        assert!(
            err.0.starts_with("cannot build ID-token credentials"),
            "{}",
            err.0
        );
    }
}
