//! PERMISSION_DENIED on the gateway's secrets, key or service accounts:
//! misconfiguration or probing. Folded per principal, not per resource, so a
//! sweep over every secret is one alert.

use patchpanda_shared::audit_log::code;

use super::{Ctx, Found};
use crate::alert::Rule;
use crate::entry::short_method;

pub(crate) fn check(ctx: &Ctx<'_>, found: &mut Found) {
    if ctx.status != code::PERMISSION_DENIED {
        return;
    }
    let resource = if let Some(s) = ctx.our_secret() {
        s.id.to_string()
    } else if let Some(k) = ctx.our_kms() {
        match k.key {
            Some(key) => format!("keyRings/{}/cryptoKeys/{key}", k.ring),
            None => format!("keyRings/{}", k.ring),
        }
    } else if let Some(sa) = ctx.gateway_account() {
        format!("serviceAccounts/{sa}")
    } else {
        return;
    };
    let permission = ctx
        .audit
        .authorization_info
        .iter()
        .find(|a| !a.granted)
        .map(|a| a.permission.as_str())
        .unwrap_or("");
    let mut alert = ctx.alert(
        Rule::PermissionDenied,
        &resource,
        format!(
            "{} was denied {}{} on {resource}; a misconfigured deployment, or someone probing the gateway's credentials",
            ctx.who(),
            short_method(ctx.method()),
            if permission.is_empty() {
                String::new()
            } else {
                format!(" ({permission})")
            }
        ),
    );
    alert.fingerprint = format!("{}|{}", Rule::PermissionDenied, ctx.principal);
    found.alerts.push(alert);
}
