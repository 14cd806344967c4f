//! Cloud KMS (short method names): a version of the gateway's key disabled,
//! scheduled for destruction or destroyed, the primary moved, key material
//! imported or the key's settings updated. All are settled against the
//! rotators, since a key rotation moves the primary. And the key used to
//! encrypt or decrypt by anyone but the Secret Manager service agent, the
//! gateway's accounts and `kms_users`.

use patchpanda_shared::audit_log::SERVICE_KMS;
use serde_json::Value;

use super::methods::{kms, op};
use super::{Change, Ctx, Found};
use crate::alert::Rule;
use crate::rotations;

pub(crate) fn check(ctx: &Ctx<'_>, found: &mut Found) {
    if !ctx.ok() || ctx.audit.service_name != SERVICE_KMS {
        return;
    }
    let Some(name) = ctx.our_kms() else {
        return;
    };
    let Some(key) = name.key else {
        return;
    };
    let full = format!("keyRings/{}/cryptoKeys/{key}", name.ring);
    let p = ctx.who();
    let request = ctx.audit.request.as_ref();
    let m = op(ctx.method());
    if [kms::ENCRYPT, kms::DECRYPT]
        .iter()
        .any(|w| m.eq_ignore_ascii_case(w))
    {
        key_used(ctx, found, &full);
        return;
    }
    let (rule, what, resource) = match m {
        m if m.eq_ignore_ascii_case(kms::UPDATE_CRYPTO_KEY_VERSION) => {
            let state = request
                .and_then(|r| r.pointer("/cryptoKeyVersion/state"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let version = name.version.unwrap_or("?");
            let rule = match state {
                "DISABLED" => Rule::KmsVersionDisabled,
                "DESTROY_SCHEDULED" | "DESTROYED" => Rule::KmsVersionDestroyed,
                _ => return,
            };
            (
                rule,
                format!("set version {version} of KMS key {full} to {state}"),
                format!("{full}/cryptoKeyVersions/{version}"),
            )
        }
        m if m.eq_ignore_ascii_case(kms::DESTROY_CRYPTO_KEY_VERSION) => {
            let version = name.version.unwrap_or("?");
            (
                Rule::KmsVersionDestroyed,
                format!("scheduled version {version} of KMS key {full} for destruction"),
                format!("{full}/cryptoKeyVersions/{version}"),
            )
        }
        m if m.eq_ignore_ascii_case(kms::IMPORT_CRYPTO_KEY_VERSION) => (
            Rule::KmsKeyChanged,
            format!("imported key material into KMS key {full}"),
            full.clone(),
        ),
        m if m.eq_ignore_ascii_case(kms::UPDATE_CRYPTO_KEY) => {
            let mask = request
                .and_then(|r| r.get("updateMask"))
                .and_then(Value::as_str)
                .unwrap_or("its settings");
            (
                Rule::KmsKeyChanged,
                format!("updated {mask} of KMS key {full}"),
                full.clone(),
            )
        }
        m if m.eq_ignore_ascii_case(kms::UPDATE_CRYPTO_KEY_PRIMARY_VERSION) => {
            let version = request
                .and_then(|r| r.get("cryptoKeyVersionId"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            (
                Rule::KmsPrimaryChanged,
                format!("made version {version} the primary of KMS key {full}"),
                full.clone(),
            )
        }
        _ => return,
    };
    let advice = match rule {
        Rule::KmsVersionDisabled => {
            "data encrypted under it cannot be decrypted until it is enabled again (gcloud kms keys versions enable)"
        }
        Rule::KmsVersionDestroyed => {
            "restore it before the scheduled destruction if it was not intended (gcloud kms keys versions restore), or its data is lost"
        }
        Rule::KmsKeyChanged => {
            "imported material or a changed rotation/purpose is a way to plant a key someone else knows: check the key's versions and settings"
        }
        _ => "confirm a key rotation was intended; new backups are encrypted under the new primary",
    };
    let alert = ctx.alert(
        rule,
        &resource,
        format!("{p} {what} and is not a rotator; {advice}"),
    );
    found.changes.push(Change {
        key: rotations::kms_key(name.ring, key),
        also: None,
        alert,
        what,
    });
}

/// Encrypt/Decrypt on the gateway's key by someone outside the Secret
/// Manager service agent, the gateway's accounts and `kms_users`. Folded
/// per principal.
fn key_used(ctx: &Ctx<'_>, found: &mut Found, full: &str) {
    let s = ctx.settings;
    let allowed = |names: &[String]| {
        s.gateway_accounts.contains_any(names) || s.kms_users.contains_any(names)
    };
    let id = &ctx.identity;
    let outsider = id
        .chain
        .iter()
        .chain(std::iter::once(&id.caller))
        .find(|p| !allowed(&p.names))
        .map(|p| p.name.clone());
    let Some(outsider) = outsider else {
        return;
    };
    // A listed operator (health checks, backups) is recorded, not paged;
    // anyone else is.
    let operator = id
        .chain
        .iter()
        .chain(std::iter::once(&id.caller))
        .all(|p| allowed(&p.names) || s.operators.contains_any(&p.names));
    let mut alert = ctx.alert(
        Rule::KmsKeyUsed,
        full,
        format!(
            "{} called {} with KMS key {full}; {outsider} is neither the gateway nor Secret Manager, and can read what the key protects (backups, CMEK secrets). Check who holds cloudkms.cryptoKeyVersions.useTo* on it",
            ctx.who(),
            op(ctx.method())
        ),
    );
    alert.principal = outsider.clone();
    alert.fingerprint = format!("{}|{outsider}", Rule::KmsKeyUsed);
    if operator {
        alert.severity = crate::alert::Severity::P3;
        alert.summary = format!("{} (a listed operator: recorded, not paged)", alert.summary);
    }
    found.alerts.push(alert);
}
