//! Secret Manager's event notifications, as pushed from
//! `patchpanda-secret-events`: attributes `eventType`, `secretId` (full
//! resource name, global `projects/P/secrets/ID` or regional
//! `projects/P/locations/L/secrets/ID`, P often the project number) and,
//! for version events, `versionId` (`.../versions/N`). The data holds the
//! resource's metadata only and is not needed here.

use std::collections::BTreeMap;

use patchpanda_shared::names;

use crate::kinds::Kind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretEvent {
    /// SECRET_ROTATE: the secret's rotation schedule fired.
    Rotate(Kind),
    /// SECRET_VERSION_ADD: a version was added.
    VersionAdded { kind: Kind, version: u64 },
    /// Anything else (TOPIC_CONFIGURED, state changes, our own writes, and
    /// secrets that are not the gateway's): acknowledged, nothing done.
    Ignored {
        event_type: String,
        why: &'static str,
    },
}

/// Why a notification could not be read (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventError(String);

/// The secret id of a full resource name.
pub fn secret_id_of(resource: &str) -> Option<&str> {
    let parts: Vec<&str> = resource.split('/').collect();
    let id = match parts.as_slice() {
        ["projects", p, "secrets", id, ..] if !p.is_empty() => *id,
        ["projects", p, "locations", l, "secrets", id, ..] if !p.is_empty() && !l.is_empty() => *id,
        _ => return None,
    };
    (!id.is_empty()).then_some(id)
}

/// The version number of `.../secrets/S/versions/N`.
pub fn version_of(resource: &str) -> Option<u64> {
    let (head, n) = resource.rsplit_once("/versions/")?;
    secret_id_of(head)?;
    n.parse().ok().filter(|n| *n > 0)
}

pub fn parse(
    attributes: &BTreeMap<String, String>,
    prefix: &str,
) -> Result<SecretEvent, EventError> {
    let Some(event_type) = attributes.get("eventType").map(String::as_str) else {
        return Err(EventError(
            "not a Secret Manager notification: no eventType attribute".to_string(),
        ));
    };
    let ignored = |why| {
        Ok(SecretEvent::Ignored {
            event_type: event_type.chars().take(64).collect(),
            why,
        })
    };
    if !matches!(event_type, "SECRET_ROTATE" | "SECRET_VERSION_ADD") {
        return ignored("no action for this event type");
    }
    let Some(resource) = attributes.get("secretId") else {
        return Err(EventError(format!(
            "{event_type} without a secretId attribute"
        )));
    };
    let Some(id) = secret_id_of(resource) else {
        return Err(EventError(format!(
            "secretId is not a secret's resource name (projects/P/secrets/ID): {:?}",
            resource.chars().take(200).collect::<String>()
        )));
    };
    let Some(kind) = names::logical_name(prefix, id).and_then(|l| Kind::parse(l).ok()) else {
        return ignored("not one of the gateway's secrets");
    };
    if event_type == "SECRET_ROTATE" {
        return Ok(SecretEvent::Rotate(kind));
    }
    if !kind.is_upload() {
        // Generated secrets get their versions from this worker.
        return ignored("versions of this secret are added by the rotation itself");
    }
    let version = attributes
        .get("versionId")
        .and_then(|v| version_of(v))
        .ok_or_else(|| {
            EventError("SECRET_VERSION_ADD without a valid versionId (…/versions/N)".to_string())
        })?;
    Ok(SecretEvent::VersionAdded { kind, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const P: &str = "patchpanda-";

    #[test]
    fn resource_names_global_and_regional() {
        assert_eq!(
            secret_id_of("projects/123/secrets/patchpanda-webhook-secret"),
            Some("patchpanda-webhook-secret")
        );
        assert_eq!(
            secret_id_of("projects/123/locations/us-central1/secrets/s/versions/4"),
            Some("s")
        );
        assert_eq!(secret_id_of("patchpanda-webhook-secret"), None);
        assert_eq!(secret_id_of("projects//secrets/x"), None);
        assert_eq!(version_of("projects/1/secrets/s/versions/7"), Some(7));
        assert_eq!(version_of("projects/1/secrets/s/versions/latest"), None);
        assert_eq!(version_of("projects/1/secrets/s/versions/0"), None);
    }

    #[test]
    fn events_map_to_actions() {
        let rotate = attrs(&[
            ("eventType", "SECRET_ROTATE"),
            ("secretId", "projects/9/secrets/patchpanda-webhook-secret"),
        ]);
        assert_eq!(
            parse(&rotate, P).unwrap(),
            SecretEvent::Rotate(Kind::WebhookSecret)
        );

        let add = attrs(&[
            ("eventType", "SECRET_VERSION_ADD"),
            (
                "secretId",
                "projects/9/secrets/patchpanda-github-private-key",
            ),
            (
                "versionId",
                "projects/9/secrets/patchpanda-github-private-key/versions/5",
            ),
        ]);
        assert_eq!(
            parse(&add, P).unwrap(),
            SecretEvent::VersionAdded {
                kind: Kind::GithubPrivateKey,
                version: 5
            }
        );

        let own_add = attrs(&[
            ("eventType", "SECRET_VERSION_ADD"),
            ("secretId", "projects/9/secrets/patchpanda-webhook-secret"),
            (
                "versionId",
                "projects/9/secrets/patchpanda-webhook-secret/versions/2",
            ),
        ]);
        assert!(matches!(
            parse(&own_add, P).unwrap(),
            SecretEvent::Ignored { .. }
        ));
        let configured = attrs(&[("eventType", "TOPIC_CONFIGURED")]);
        assert!(matches!(
            parse(&configured, P).unwrap(),
            SecretEvent::Ignored { .. }
        ));
        let foreign = attrs(&[
            ("eventType", "SECRET_ROTATE"),
            ("secretId", "projects/9/secrets/someone-else"),
        ]);
        assert!(matches!(
            parse(&foreign, P).unwrap(),
            SecretEvent::Ignored { .. }
        ));
    }

    #[test]
    fn malformed_notifications_say_what_is_wrong() {
        assert!(
            parse(&attrs(&[]), P)
                .unwrap_err()
                .to_string()
                .contains("eventType")
        );
        let no_secret = attrs(&[("eventType", "SECRET_ROTATE")]);
        assert!(
            parse(&no_secret, P)
                .unwrap_err()
                .to_string()
                .contains("secretId")
        );
        let bad_version = attrs(&[
            ("eventType", "SECRET_VERSION_ADD"),
            (
                "secretId",
                "projects/9/secrets/patchpanda-oidc-client-secret",
            ),
            ("versionId", "7"),
        ]);
        assert!(
            parse(&bad_version, P)
                .unwrap_err()
                .to_string()
                .contains("versionId")
        );
    }
}
