//! Service accounts: keys created or deleted for the gateway's accounts, any
//! call authenticated with a user-managed key, and tokens minted for the
//! gateway's accounts by anyone but themselves (iamcredentials' short names).

use patchpanda_shared::audit_log::{SERVICE_IAM, SERVICE_IAM_CREDENTIALS};

use super::methods::{iam, iamcredentials, op};
use super::{Change, Ctx, Found};
use crate::alert::Rule;
use crate::rotations::Rotations;

/// rotation-worker's logical name for the key-based account.
const SA_KEY_KIND: &str = "service-account-key";

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
            ctx.who(),
            crate::entry::short_method(ctx.method())
        ),
    );
    // One alert per key and caller, whatever they call.
    alert.fingerprint = format!("{}|{}|{key}", Rule::SaKeyUsed, ctx.principal);
    found.alerts.push(alert);
}

fn key_lifecycle(ctx: &Ctx<'_>, found: &mut Found) {
    let m = op(ctx.method());
    let (rule, verb) = match m {
        m if m.eq_ignore_ascii_case(iam::CREATE_SERVICE_ACCOUNT_KEY) => {
            (Rule::SaKeyCreated, "created")
        }
        m if m.eq_ignore_ascii_case(iam::UPLOAD_SERVICE_ACCOUNT_KEY) => {
            (Rule::SaKeyCreated, "uploaded")
        }
        m if m.eq_ignore_ascii_case(iam::DELETE_SERVICE_ACCOUNT_KEY) => {
            (Rule::SaKeyDeleted, "deleted")
        }
        _ => return,
    };
    let Some(sa) = ctx.gateway_account() else {
        managed_key(ctx, found, rule, verb);
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
            ctx.who()
        ),
    ));
}

/// A key created or deleted for the account rotation-worker rotates as
/// `service-account-key`: routine for a rotator inside a rotation of that
/// kind (the worker creates the new key, and deletes the old one when its
/// version is disabled, announced by `disabled`), an alert otherwise.
fn managed_key(ctx: &Ctx<'_>, found: &mut Found, rule: Rule, verb: &str) {
    if ctx.settings.sa_key_accounts.is_empty() {
        return;
    }
    let Some(sa) = crate::entry::service_accounts(ctx.entry, ctx.audit)
        .into_iter()
        .find(|sa| ctx.settings.sa_key_accounts.contains(sa))
    else {
        return;
    };
    let what = format!("{verb} a key for {sa} (rotated as {SA_KEY_KIND})");
    let alert = ctx.alert(
        rule,
        &format!("serviceAccounts/{sa}"),
        format!(
            "{} {what} and is not a rotator; keys of this account are made and retired by rotation-worker only: check its keys (gcloud iam service-accounts keys list) and rotate it: patchpanda rotate {SA_KEY_KIND}",
            ctx.who()
        ),
    );
    found.changes.push(Change {
        key: Rotations::key_of(ctx.settings, SA_KEY_KIND),
        also: None,
        alert,
        what,
    });
}

fn token_minted(ctx: &Ctx<'_>, found: &mut Found) {
    if !iamcredentials::TOKEN_METHODS
        .iter()
        .any(|m| super::methods::is(ctx.method(), m))
    {
        return;
    }
    let Some(sa) = ctx.gateway_account() else {
        return;
    };
    // The account for itself, or a listed minter; judged over the whole
    // chain, so the account impersonated by someone else is that someone.
    let mut allowed = ctx.settings.token_minters.clone();
    allowed.extend([sa.as_str()]);
    let Some(outsider) = ctx.identity.first_outsider(&allowed) else {
        return;
    };
    let mut alert = ctx.alert(
        Rule::TokenMinted,
        &format!("serviceAccounts/{sa}"),
        format!(
            "{} called {} for gateway service account {sa}; {outsider} can act as it. Check who holds Service Account Token Creator on it",
            ctx.who(),
            op(ctx.method())
        ),
    );
    alert.principal = outsider.to_string();
    alert.fingerprint = format!("{}|{outsider}|serviceAccounts/{sa}", Rule::TokenMinted);
    found.alerts.push(alert);
}
