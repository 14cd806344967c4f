//! What a detection produces: one alert a person can act on, and the
//! severities and rule ids every sink and setting refers to.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// P0 pages now; P3 is for the record (each rule's default: the README's
/// Detections table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    P0,
    P1,
    P2,
    P3,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::P0 => "P0",
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
        }
    }

    /// PagerDuty Events v2 knows exactly these four.
    pub fn pagerduty(&self) -> &'static str {
        match self {
            Severity::P0 => "critical",
            Severity::P1 => "error",
            Severity::P2 => "warning",
            Severity::P3 => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "P0" => Ok(Severity::P0),
            "P1" => Ok(Severity::P1),
            "P2" => Ok(Severity::P2),
            "P3" => Ok(Severity::P3),
            _ => Err(format!("severity {s:?} is not one of P0, P1, P2, P3")),
        }
    }
}

/// Every detection, by the id used in alerts, settings and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A secret value read by a principal outside the readers.
    SecretReadUnexpected,
    /// PERMISSION_DENIED on the gateway's secrets, key or accounts.
    PermissionDenied,
    /// Versions added/enabled/disabled/destroyed or aliases moved by a
    /// principal outside the rotators.
    SecretVersionChanged,
    /// The rotator changed a secret or the key without announcing a rotation.
    RotatorOutsideRotation,
    SecretDeleted,
    IamPolicyChanged,
    KmsVersionDisabled,
    KmsVersionDestroyed,
    KmsPrimaryChanged,
    SaKeyCreated,
    SaKeyDeleted,
    /// Any call authenticated with a user-managed service-account key.
    SaKeyUsed,
    /// Tokens minted for the gateway's accounts by someone else.
    TokenMinted,
    SecretReadSpike,
    SignatureFailureSpike,
    /// No Data Access entries for the secrets: the detections above are blind.
    DataAccessSilent,
    /// UpdateSecret (annotations, labels, rotation, topics...) by a
    /// non-rotator: a planted grace or lease annotation changes what the
    /// gateway accepts.
    SecretUpdated,
    /// The project's audit config changed for Secret Manager, KMS or IAM
    /// (Data Access logging off, or a principal exempted).
    AuditConfigChanged,
    /// The audit-log sink was changed or deleted.
    AuditSinkChanged,
    /// One of the gateway's Pub/Sub subscriptions or topics was changed.
    PubsubChanged,
    /// One of the gateway's Cloud Run services was changed.
    RunServiceChanged,
    /// Key material imported into, or settings changed on, the gateway's key.
    KmsKeyChanged,
    /// The gateway's key used to encrypt or decrypt by someone else.
    KmsKeyUsed,
    /// A rotation failed (a failed emergency rotation is P1).
    RotationFailed,
    /// A rotation was rolled back.
    RotationRolledBack,
    /// A credential is due for rotation (past its age).
    RotationDue,
    /// An alert sink refused alerts permanently (4xx): fix its settings.
    SinkBroken,
}

impl Rule {
    pub const ALL: [Rule; 27] = [
        Rule::SecretReadUnexpected,
        Rule::PermissionDenied,
        Rule::SecretVersionChanged,
        Rule::RotatorOutsideRotation,
        Rule::SecretDeleted,
        Rule::IamPolicyChanged,
        Rule::KmsVersionDisabled,
        Rule::KmsVersionDestroyed,
        Rule::KmsPrimaryChanged,
        Rule::SaKeyCreated,
        Rule::SaKeyDeleted,
        Rule::SaKeyUsed,
        Rule::TokenMinted,
        Rule::SecretReadSpike,
        Rule::SignatureFailureSpike,
        Rule::DataAccessSilent,
        Rule::SecretUpdated,
        Rule::AuditConfigChanged,
        Rule::AuditSinkChanged,
        Rule::PubsubChanged,
        Rule::RunServiceChanged,
        Rule::KmsKeyChanged,
        Rule::KmsKeyUsed,
        Rule::RotationFailed,
        Rule::RotationRolledBack,
        Rule::RotationDue,
        Rule::SinkBroken,
    ];

    pub fn id(&self) -> &'static str {
        match self {
            Rule::SecretReadUnexpected => "secret-read-unexpected",
            Rule::PermissionDenied => "permission-denied",
            Rule::SecretVersionChanged => "secret-version-changed",
            Rule::RotatorOutsideRotation => "rotator-outside-rotation",
            Rule::SecretDeleted => "secret-deleted",
            Rule::IamPolicyChanged => "iam-policy-changed",
            Rule::KmsVersionDisabled => "kms-version-disabled",
            Rule::KmsVersionDestroyed => "kms-version-destroyed",
            Rule::KmsPrimaryChanged => "kms-primary-changed",
            Rule::SaKeyCreated => "sa-key-created",
            Rule::SaKeyDeleted => "sa-key-deleted",
            Rule::SaKeyUsed => "sa-key-used",
            Rule::TokenMinted => "token-minted",
            Rule::SecretReadSpike => "secret-read-spike",
            Rule::SignatureFailureSpike => "signature-failure-spike",
            Rule::DataAccessSilent => "data-access-silent",
            Rule::SecretUpdated => "secret-updated",
            Rule::AuditConfigChanged => "audit-config-changed",
            Rule::AuditSinkChanged => "audit-sink-changed",
            Rule::PubsubChanged => "pubsub-changed",
            Rule::RunServiceChanged => "run-service-changed",
            Rule::KmsKeyChanged => "kms-key-changed",
            Rule::KmsKeyUsed => "kms-key-used",
            Rule::RotationFailed => "rotation-failed",
            Rule::RotationRolledBack => "rotation-rolled-back",
            Rule::RotationDue => "rotation-due",
            Rule::SinkBroken => "sink-broken",
        }
    }

    /// Defaults (listed in the README's Detections table): page (P0) for
    /// what can only be an attack or data loss, P1 for unexpected changes,
    /// P2 for noise-prone signals.
    pub fn default_severity(&self) -> Severity {
        match self {
            Rule::SecretReadUnexpected
            | Rule::SecretDeleted
            | Rule::KmsVersionDestroyed
            | Rule::SaKeyCreated
            | Rule::AuditConfigChanged
            | Rule::AuditSinkChanged => Severity::P0,
            Rule::SecretVersionChanged
            | Rule::RotatorOutsideRotation
            | Rule::IamPolicyChanged
            | Rule::KmsVersionDisabled
            | Rule::KmsPrimaryChanged
            | Rule::SaKeyUsed
            | Rule::TokenMinted
            | Rule::DataAccessSilent
            | Rule::SecretUpdated
            | Rule::PubsubChanged
            | Rule::RunServiceChanged
            | Rule::KmsKeyChanged
            | Rule::KmsKeyUsed
            | Rule::SinkBroken => Severity::P1,
            Rule::PermissionDenied
            | Rule::SaKeyDeleted
            | Rule::SecretReadSpike
            | Rule::SignatureFailureSpike
            | Rule::RotationFailed
            | Rule::RotationRolledBack => Severity::P2,
            Rule::RotationDue => Severity::P3,
        }
    }

    /// A short title for headers (Slack) and classes (PagerDuty).
    pub fn title(&self) -> &'static str {
        match self {
            Rule::SecretReadUnexpected => "Secret read by an unexpected principal",
            Rule::PermissionDenied => "Permission denied on gateway resources",
            Rule::SecretVersionChanged => "Secret version changed by a non-rotator",
            Rule::RotatorOutsideRotation => "Rotator changed a credential outside a rotation",
            Rule::SecretDeleted => "Secret deleted",
            Rule::IamPolicyChanged => "IAM policy changed on a gateway resource",
            Rule::KmsVersionDisabled => "KMS key version disabled",
            Rule::KmsVersionDestroyed => "KMS key version destroyed or scheduled for destruction",
            Rule::KmsPrimaryChanged => "KMS primary version changed outside a rotation",
            Rule::SaKeyCreated => "Service-account key created",
            Rule::SaKeyDeleted => "Service-account key deleted",
            Rule::SaKeyUsed => "Call made with a user-managed service-account key",
            Rule::TokenMinted => "Token minted for a gateway service account",
            Rule::SecretReadSpike => "Spike in reads of a secret",
            Rule::SignatureFailureSpike => "Spike in webhook signature failures",
            Rule::DataAccessSilent => "Data Access audit logging looks off",
            Rule::SecretUpdated => "Secret settings changed by a non-rotator",
            Rule::AuditConfigChanged => "Audit logging config changed",
            Rule::AuditSinkChanged => "Audit-log sink changed",
            Rule::PubsubChanged => "Gateway Pub/Sub subscription or topic changed",
            Rule::RunServiceChanged => "Gateway Cloud Run service changed",
            Rule::KmsKeyChanged => "KMS key imported into or changed",
            Rule::KmsKeyUsed => "KMS key used by an unexpected principal",
            Rule::RotationFailed => "Rotation failed",
            Rule::RotationRolledBack => "Rotation rolled back",
            Rule::RotationDue => "Credential due for rotation",
            Rule::SinkBroken => "An alert sink refuses alerts",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rule::ALL
            .iter()
            .copied()
            .find(|r| r.id() == s.trim())
            .ok_or_else(|| format!("unknown rule {s:?}"))
    }
}

/// One alert. Serialized as-is onto `patchpanda-alerts` and to the generic
/// webhook, so field names are part of the contract (camelCase like the
/// LogEntry fields they echo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Stable per (rule, entry): a redelivered entry yields the same id.
    pub id: String,
    pub rule: Rule,
    pub severity: Severity,
    /// One line: who did what to which resource, and what to do about it.
    pub summary: String,
    pub principal: String,
    pub resource: String,
    pub method: String,
    /// When the audited call happened (the entry's timestamp).
    pub time: DateTime<Utc>,
    pub insert_id: String,
    pub log_name: String,
    /// Rule + principal + resource (or a coarser key when the rule folds
    /// more): what suppression and PagerDuty's dedup_key group on.
    pub fingerprint: String,
    /// How many alerts with this fingerprint were folded into this one since
    /// the last one that went out.
    pub folded: u64,
    /// Caller IP, user agent, key name, versions... whatever helps triage.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// Cloud Console Logs Explorer link for the entry, when the project is real.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Folding window for this alert; None = the configured default.
    #[serde(skip)]
    pub fold_window: Option<Duration>,
}

impl Alert {
    /// The time as sinks print it (RFC 3339, milliseconds).
    pub fn time_text(&self) -> String {
        self.time.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Every field is a plain string, number or map of strings.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_round_trip_and_serialize_the_same() {
        for r in Rule::ALL {
            assert_eq!(r.id().parse::<Rule>().unwrap(), r);
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::Value::String(r.id().to_string())
            );
        }
        assert!("no-such-rule".parse::<Rule>().is_err());
    }

    #[test]
    fn severities_map_to_pagerduty() {
        assert_eq!(Severity::P0.pagerduty(), "critical");
        assert_eq!(Severity::P1.pagerduty(), "error");
        assert_eq!(Severity::P2.pagerduty(), "warning");
        assert_eq!(Severity::P3.pagerduty(), "info");
        assert_eq!("p2".parse::<Severity>().unwrap(), Severity::P2);
        assert!("P4".parse::<Severity>().is_err());
    }
}
