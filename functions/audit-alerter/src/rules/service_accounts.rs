//! Service accounts: keys created or deleted for the gateway's accounts, any
//! call authenticated with a user-managed key, and tokens minted for the
//! gateway's accounts by anyone but themselves (iamcredentials' short names).

use patchpanda_shared::audit_log::{SERVICE_IAM, SERVICE_IAM_CREDENTIALS, iam, iamcredentials};

use super::{Ctx, Found};
use crate::alert::Rule;

pub(crate) fn check(ctx: &Ctx<'_>, found: &mut Found) {
    key_used(ctx, found);
    if !ctx.ok() {
        return;
    }
    match ctx.audit.service_name.as_str() {
        SERVICE_IAM => key_lifecycle(ctx, found),
        SERVICE_IAM_CREDENTIALS => token_minted(ctx, found),
        _ => {}
    }
}

/// Keys are long-lived, leakable credentials; the gateway runs on attached
/// identities and needs none, so any use is worth a look.
fn key_used(ctx: &Ctx<'_>, found: &mut Found) {
    let Some(key) = ctx
        .audit
        .authentication_info
        .as_ref()
        .and_then(|a| a.service_account_key_name.as_deref())
        .filter(|k| !k.is_empty())
    else {
        return;
    };
    let key_id = key.rsplit('/').next().unwrap_or(key);
    let mut alert = ctx.alert(
        Rule::SaKeyUsed,
        key,
        format!(
            "{} called {} with user-managed key {key_id}; if this key is not approved, disable it and find where it leaked from",
            ctx.principal,
            crate::entry::short_method(ctx.method())
        ),
    );
    // One alert per key and caller, whatever they call.
    alert.fingerprint = format!("{}|{}|{key}", Rule::SaKeyUsed, ctx.principal);
    found.alerts.push(alert);
}

fn key_lifecycle(ctx: &Ctx<'_>, found: &mut Found) {
    let (rule, verb) = match ctx.method() {
        iam::CREATE_SERVICE_ACCOUNT_KEY => (Rule::SaKeyCreated, "created"),
        iam::UPLOAD_SERVICE_ACCOUNT_KEY => (Rule::SaKeyCreated, "uploaded"),
        iam::DELETE_SERVICE_ACCOUNT_KEY => (Rule::SaKeyDeleted, "deleted"),
        _ => return,
    };
    let Some(sa) = ctx.gateway_account() else {
        return;
    };
    let advice = if rule == Rule::SaKeyCreated {
        "the gateway needs no keys: delete it unless someone approved it (gcloud iam service-accounts keys delete)"
    } else {
        "confirm it was a planned clean-up"
    };
    found.alerts.push(ctx.alert(
        rule,
        &format!("serviceAccounts/{sa}"),
        format!(
            "{} {verb} a key for gateway service account {sa}; {advice}",
            ctx.principal
        ),
    ));
}

fn token_minted(ctx: &Ctx<'_>, found: &mut Found) {
    if !matches!(
        ctx.method(),
        iamcredentials::GENERATE_ACCESS_TOKEN
            | iamcredentials::SIGN_JWT
            | iamcredentials::GENERATE_ID_TOKEN
            | iamcredentials::SIGN_BLOB
    ) {
        return;
    }
    let Some(sa) = ctx.gateway_account() else {
        return;
    };
    if ctx.principal == sa || ctx.settings.token_minters.contains(&ctx.principal) {
        return;
    }
    found.alerts.push(ctx.alert(
        Rule::TokenMinted,
        &format!("serviceAccounts/{sa}"),
        format!(
            "{} called {} for gateway service account {sa} and can act as it; check who holds Service Account Token Creator on it",
            ctx.principal,
            ctx.method()
        ),
    ));
}
