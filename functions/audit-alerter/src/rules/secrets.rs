//! Secret Manager: values read by someone outside the readers, versions
//! added/enabled/disabled/destroyed and aliases moved (settled against the
//! rotators and announced rotations), secrets deleted.

use patchpanda_shared::audit_log::sm;
use serde_json::Value;

use super::{Change, Ctx, Found};
use crate::alert::Rule;
use crate::rotations;

pub(crate) fn check(ctx: &Ctx<'_>, found: &mut Found) {
    if !ctx.ok() {
        return;
    }
    let Some(secret) = ctx.our_secret() else {
        return;
    };
    let logical = ctx.logical(secret.id);
    let version = secret.version.unwrap_or("?");
    let p = &ctx.principal;
    match ctx.method() {
        sm::ACCESS_SECRET_VERSION => {
            if !ctx.settings.readers.contains(p) {
                let resource = versioned(secret.id, secret.version);
                found.alerts.push(ctx.alert(
                    Rule::SecretReadUnexpected,
                    &resource,
                    format!(
                        "{p} read the value of secret {} (version {version}) and is not an allowed reader; if nobody can vouch for it, rotate it now: patchpanda rotate {logical} --emergency",
                        secret.id
                    ),
                ));
            }
        }
        sm::DELETE_SECRET => found.alerts.push(ctx.alert(
            Rule::SecretDeleted,
            secret.id,
            format!(
                "{p} deleted secret {} with all its versions; the gateway cannot load {logical} until it is restored: patchpanda restore <backup file>",
                secret.id
            ),
        )),
        m => {
            let what = match m {
                sm::ADD_SECRET_VERSION => format!("added a version to {}", secret.id),
                sm::ENABLE_SECRET_VERSION => format!("enabled version {version} of {}", secret.id),
                sm::DISABLE_SECRET_VERSION => {
                    format!("disabled version {version} of {}", secret.id)
                }
                sm::DESTROY_SECRET_VERSION => {
                    format!("destroyed version {version} of {}", secret.id)
                }
                sm::UPDATE_SECRET if changes_aliases(ctx.audit.request.as_ref()) => {
                    format!("moved the version aliases of {}", secret.id)
                }
                _ => return,
            };
            let resource = versioned(secret.id, secret.version);
            let alert = ctx.alert(
                Rule::SecretVersionChanged,
                &resource,
                format!(
                    "{p} {what} and is not a rotator; confirm with them, and if it was not intended put the previous version back: patchpanda rollback {logical}"
                ),
            );
            found.changes.push(Change {
                key: rotations::secret_key(secret.id),
                alert,
                what,
            });
        }
    }
}

fn versioned(id: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{id}/versions/{v}"),
        None => id.to_string(),
    }
}

/// Whether an UpdateSecret request touched `versionAliases`: by its update
/// mask (a string of comma-separated paths, or `{paths: [...]}`), or by the
/// field itself in the request's secret.
pub(crate) fn changes_aliases(request: Option<&Value>) -> bool {
    let Some(req) = request else {
        return false;
    };
    let is_alias_path = |p: &str| {
        p.split(',')
            .any(|p| matches!(p.trim(), "versionAliases" | "version_aliases"))
    };
    let mask = req.get("updateMask").or_else(|| req.get("update_mask"));
    let by_mask = match mask {
        Some(Value::String(s)) => is_alias_path(s),
        Some(Value::Object(o)) => o
            .get("paths")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().filter_map(Value::as_str).any(is_alias_path)),
        _ => false,
    };
    by_mask
        || (mask.is_none()
            && (req.pointer("/secret/versionAliases").is_some()
                || req.get("versionAliases").is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alias_changes_are_recognized_by_mask_or_field() {
        assert!(changes_aliases(Some(
            &json!({"updateMask": "versionAliases"})
        )));
        assert!(changes_aliases(Some(
            &json!({"updateMask": "annotations,version_aliases"})
        )));
        assert!(changes_aliases(Some(
            &json!({"updateMask": {"paths": ["version_aliases"]}})
        )));
        assert!(changes_aliases(Some(
            &json!({"secret": {"versionAliases": {"current": "3"}}})
        )));
        assert!(!changes_aliases(Some(
            &json!({"updateMask": "annotations"})
        )));
        assert!(!changes_aliases(Some(
            &json!({"updateMask": "annotations", "secret": {"versionAliases": {}}})
        )));
        assert!(!changes_aliases(None));
    }
}
