//! `POST /events/rotation`: a notice on `patchpanda-rotation-events` says a
//! secret changed; re-read ours now, so the next delivery signed with a new
//! webhook secret is accepted without waiting for the cache's TTL.

use std::sync::Arc;

use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use patchpanda_shared::runtime::{HandlerError, PushMessage, Reply};
use patchpanda_shared::secrets::cache::SecretCache;

use crate::secrets::WebhookKeyring;

/// Which logical secrets this instance holds, and their ids.
pub struct Reloader {
    cache: Arc<SecretCache>,
    /// (logical name, secret id)
    watched: Vec<(String, String)>,
    /// Told when a webhook-secret rotation starts and ends.
    keyring: Arc<WebhookKeyring>,
}

impl Reloader {
    pub fn new(
        cache: Arc<SecretCache>,
        watched: Vec<(String, String)>,
        keyring: Arc<WebhookKeyring>,
    ) -> Self {
        Self {
            cache,
            watched,
            keyring,
        }
    }

    pub async fn handle(&self, msg: PushMessage) -> Result<Reply, HandlerError> {
        // The data is authoritative; the attribute is a fallback for a
        // notice from a newer writer that this version cannot parse.
        let (secret, event) = match msg.json::<RotationNotice>() {
            Ok(n) => (n.secret, Some(n.event)),
            Err(e) => match msg.attributes.get("secret") {
                Some(s) => (s.clone(), None),
                None => return Err(e),
            },
        };
        let Some((_, id)) = self.watched.iter().find(|(logical, _)| *logical == secret) else {
            return Ok(Reply::no_content());
        };
        if secret == names::WEBHOOK_SECRET {
            match event {
                Some(NoticeEvent::Started) => self.keyring.rotation_started(),
                Some(e) if e.ends_rotation() => self.keyring.rotation_ended(),
                _ => {}
            }
        }
        // Only a failure that may pass is worth a redelivery of the notice;
        // a secret that is gone will not come back by retrying.
        match self.cache.refresh(id).await {
            Ok(s) => {
                tracing::info!(
                    secret = %secret,
                    current = s.current.version.number,
                    previous = s.previous.as_ref().map(|p| p.version.number),
                    "secret reloaded on a rotation notice"
                );
                Ok(Reply::no_content())
            }
            Err(e) if e.is_retryable() || matches!(e, patchpanda_shared::Error::Internal(_)) => {
                Err(HandlerError::retryable(format!(
                    "reloading {secret} failed: {e}"
                )))
            }
            Err(e) => {
                tracing::warn!(secret = %secret, error = %e, "reloading a secret on a rotation notice failed");
                Ok(Reply::no_content())
            }
        }
    }
}

/// The logical secrets webhook-ingest reads.
pub fn watched(secret_id: impl Fn(&str) -> String, with_app: bool) -> Vec<(String, String)> {
    let mut w = vec![(
        names::WEBHOOK_SECRET.to_string(),
        secret_id(names::WEBHOOK_SECRET),
    )];
    if with_app {
        w.push((
            names::GITHUB_PRIVATE_KEY.to_string(),
            secret_id(names::GITHUB_PRIVATE_KEY),
        ));
    }
    w
}
