//! IAM policy changes on a gateway secret, the key ring or key, or a gateway
//! service account. Note the spellings: Secret Manager and KMS log
//! `SetIamPolicy`, IAM admin logs `google.iam.admin.v1.SetIAMPolicy`.

use patchpanda_shared::audit_log::{SERVICE_IAM, SERVICE_KMS, SERVICE_SECRET_MANAGER};
use serde_json::Value;

use super::methods::{iam, kms, sm};
use super::{Ctx, Found};
use crate::alert::Rule;

pub(crate) fn check(ctx: &Ctx<'_>, found: &mut Found) {
    if !ctx.ok() {
        return;
    }
    let resource = if ctx.is(SERVICE_SECRET_MANAGER, sm::SET_IAM_POLICY) {
        ctx.our_secret().map(|s| s.id.to_string())
    } else if ctx.is(SERVICE_KMS, kms::SET_IAM_POLICY) {
        ctx.our_kms().map(|k| match k.key {
            Some(key) => format!("keyRings/{}/cryptoKeys/{key}", k.ring),
            None => format!("keyRings/{}", k.ring),
        })
    } else if ctx.is(SERVICE_IAM, iam::SET_IAM_POLICY) {
        ctx.gateway_account()
            .map(|sa| format!("serviceAccounts/{sa}"))
    } else {
        None
    };
    let Some(resource) = resource else {
        return;
    };
    let deltas = binding_deltas(ctx.audit.service_data.as_ref());
    let changed = if deltas.is_empty() {
        String::from("changed the IAM policy")
    } else {
        format!("changed the IAM policy ({})", deltas.join("; "))
    };
    let mut alert = ctx.alert(
        Rule::IamPolicyChanged,
        &resource,
        format!(
            "{} {changed} of {resource}; check who may now read or change the gateway's credentials and revert what nobody asked for",
            ctx.who()
        ),
    );
    if !deltas.is_empty() {
        alert
            .details
            .insert("bindingDeltas".to_string(), deltas.join("; "));
    }
    found.alerts.push(alert);
}

/// `ADD roles/x user:y` for each `serviceData.policyDelta.bindingDeltas[]`.
pub(crate) fn binding_deltas(service_data: Option<&Value>) -> Vec<String> {
    service_data
        .and_then(|d| d.pointer("/policyDelta/bindingDeltas"))
        .and_then(Value::as_array)
        .map(|ds| {
            ds.iter()
                .take(10)
                .map(|d| {
                    let f = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("?");
                    format!("{} {} {}", f("action"), f("role"), f("member"))
                })
                .collect()
        })
        .unwrap_or_default()
}
