//! The names every function agrees on: logical secret names, their Secret
//! Manager ids, aliases, topics and the KMS key (docs/design.md, Names).

pub const GITHUB_PRIVATE_KEY: &str = "github-private-key";
pub const WEBHOOK_SECRET: &str = "webhook-secret";
pub const OIDC_CLIENT_SECRET: &str = "oidc-client-secret";
/// The logical name the rotation worker uses for the Cloud KMS key.
pub const KMS_KEY: &str = "kms-key";

/// Every secret the gateway keeps in Secret Manager, in display order.
pub const SECRETS: [&str; 3] = [GITHUB_PRIVATE_KEY, WEBHOOK_SECRET, OIDC_CLIENT_SECRET];

pub const ALIAS_CURRENT: &str = "current";
pub const ALIAS_PREVIOUS: &str = "previous";
pub const ALIAS_PENDING: &str = "pending";

pub const TOPIC_GITHUB_EVENTS: &str = "patchpanda-github-events";
pub const TOPIC_ROTATION_EVENTS: &str = "patchpanda-rotation-events";
pub const TOPIC_SECRET_EVENTS: &str = "patchpanda-secret-events";
pub const TOPIC_AUDIT_LOGS: &str = "patchpanda-audit-logs";
pub const TOPIC_ALERTS: &str = "patchpanda-alerts";

pub const DEFAULT_SECRET_PREFIX: &str = "patchpanda-";
pub const KMS_KEY_RING: &str = "patchpanda-keys";
pub const KMS_CRYPTO_KEY: &str = "patchpanda-crypto-key";
pub const KMS_LOCATION: &str = "us-central1";

/// Local identities (docs/design.md, Identities).
pub const PRINCIPAL_WEBHOOK_INGEST: &str = "webhook-ingest@patchpanda.local";
pub const PRINCIPAL_ROTATION_WORKER: &str = "rotation-worker@patchpanda.local";
pub const PRINCIPAL_AUDIT_ALERTER: &str = "audit-alerter@patchpanda.local";
pub const PRINCIPAL_OPERATOR_DEFAULT: &str = "operator@patchpanda.local";
/// Who the local bus signs push tokens as (Pub/Sub's push service account).
pub const PRINCIPAL_PUSH: &str = "pubsub-push@patchpanda.local";
/// Who the local scheduler signs its calls as (Cloud Scheduler's account).
pub const PRINCIPAL_SCHEDULER: &str = "scheduler@patchpanda.local";
/// The `iss` of tokens minted by the local OIDC issuer.
pub const LOCAL_ISSUER: &str = "https://issuer.patchpanda.local";

/// Annotation the rotation worker sets on a secret: until when (RFC 3339) the
/// `previous` version stays valid. Readers honour it even before
/// `/tasks/finish` disables the version.
pub const ANNOTATION_PREVIOUS_VALID_UNTIL: &str = "patchpanda-previous-valid-until";

/// Secret Manager id of a logical secret name, e.g. `patchpanda-webhook-secret`.
pub fn secret_id(prefix: &str, logical: &str) -> String {
    format!("{prefix}{logical}")
}

/// The logical name of a Secret Manager id, when it carries the prefix.
pub fn logical_name<'a>(prefix: &str, secret_id: &'a str) -> Option<&'a str> {
    secret_id.strip_prefix(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = secret_id(DEFAULT_SECRET_PREFIX, WEBHOOK_SECRET);
        assert_eq!(id, "patchpanda-webhook-secret");
        assert_eq!(
            logical_name(DEFAULT_SECRET_PREFIX, &id),
            Some(WEBHOOK_SECRET)
        );
        assert_eq!(logical_name(DEFAULT_SECRET_PREFIX, "other"), None);
    }
}
