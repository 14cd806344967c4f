//! Cloud KMS (short method names): a version of the gateway's key disabled,
//! scheduled for destruction or destroyed, or the primary moved. All are
//! settled against the rotators, since a key rotation moves the primary.

use patchpanda_shared::audit_log::{SERVICE_KMS, kms};
use serde_json::Value;

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
    let p = &ctx.principal;
    let request = ctx.audit.request.as_ref();
    let (rule, what, resource) = match ctx.method() {
        kms::UPDATE_CRYPTO_KEY_VERSION => {
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
        kms::DESTROY_CRYPTO_KEY_VERSION => {
            let version = name.version.unwrap_or("?");
            (
                Rule::KmsVersionDestroyed,
                format!("scheduled version {version} of KMS key {full} for destruction"),
                format!("{full}/cryptoKeyVersions/{version}"),
            )
        }
        kms::UPDATE_CRYPTO_KEY_PRIMARY_VERSION => {
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
        _ => "confirm a key rotation was intended; new backups are encrypted under the new primary",
    };
    let alert = ctx.alert(
        rule,
        &resource,
        format!("{p} {what} and is not a rotator; {advice}"),
    );
    found.changes.push(Change {
        key: rotations::kms_key(name.ring, key),
        alert,
        what,
    });
}
