//! Secret Manager: values read by someone outside the readers, versions
//! added/enabled/disabled/destroyed and aliases moved (settled against the
//! rotators and announced rotations), secrets deleted.

use serde_json::Value;

use patchpanda_shared::names;

use super::methods::{op, sm};
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
    let who = ctx.who();
    let m = op(ctx.method());
    if m.eq_ignore_ascii_case(sm::ACCESS_SECRET_VERSION) {
        if let Some(outsider) = ctx.identity.first_outsider(&ctx.settings.readers) {
            let resource = versioned(secret.id, secret.version);
            let mut alert = ctx.alert(
                Rule::SecretReadUnexpected,
                &resource,
                format!(
                    "{who} read the value of secret {} (version {version}){}. If nobody can vouch for it, rotate it now: patchpanda rotate {logical} --emergency",
                    secret.id,
                    if ctx.identity.chain.is_empty() {
                        " and is not an allowed reader".to_string()
                    } else {
                        format!("; {outsider} is not an allowed reader")
                    }
                ),
            );
            alert.principal = outsider.to_string();
            alert.fingerprint = format!("{}|{outsider}|{resource}", Rule::SecretReadUnexpected);
            found.alerts.push(alert);
        }
        return;
    }
    if m.eq_ignore_ascii_case(sm::DELETE_SECRET) {
        found.alerts.push(ctx.alert(
            Rule::SecretDeleted,
            secret.id,
            format!(
                "{who} deleted secret {} with all its versions; the gateway cannot load {logical} until it is restored: patchpanda restore <backup file>",
                secret.id
            ),
        ));
        return;
    }
    let is = |want: &str| m.eq_ignore_ascii_case(want);
    let request = ctx.audit.request.as_ref();
    let (rule, what) = if is(sm::ADD_SECRET_VERSION) {
        (
            Rule::SecretVersionChanged,
            format!("added a version to {}", secret.id),
        )
    } else if is(sm::ENABLE_SECRET_VERSION) {
        (
            Rule::SecretVersionChanged,
            format!("enabled version {version} of {}", secret.id),
        )
    } else if is(sm::DISABLE_SECRET_VERSION) {
        (
            Rule::SecretVersionChanged,
            format!("disabled version {version} of {}", secret.id),
        )
    } else if is(sm::DESTROY_SECRET_VERSION) {
        (
            Rule::SecretVersionChanged,
            format!("destroyed version {version} of {}", secret.id),
        )
    } else if is(sm::UPDATE_SECRET) && changes_aliases(request) {
        (
            Rule::SecretVersionChanged,
            format!("moved the version aliases of {}", secret.id),
        )
    } else if is(sm::UPDATE_SECRET) {
        let fields = update_paths(request);
        let shown = if fields.is_empty() {
            "its settings".to_string()
        } else {
            fields.join(", ")
        };
        (
            Rule::SecretUpdated,
            format!("updated {shown} of {}", secret.id),
        )
    } else {
        return;
    };
    let resource = versioned(secret.id, secret.version);
    let advice = if rule == Rule::SecretUpdated {
        "annotations steer what the gateway accepts (grace periods, rotation leases): check them with `patchpanda status` and put back what nobody asked for".to_string()
    } else {
        format!(
            "confirm with them, and if it was not intended put the previous version back: patchpanda rollback {logical}"
        )
    };
    let mut alert = ctx.alert(
        rule,
        &resource,
        format!("{who} {what} and is not a rotator; {advice}"),
    );
    if rule == Rule::SecretUpdated {
        let fields = update_paths(request);
        if !fields.is_empty() {
            alert.details.insert("updateMask".into(), fields.join(","));
        }
    }
    // rotation-worker records a KMS rotation in an annotation of the
    // webhook secret (written before each KMS call, cleared after), so a
    // rotator's annotations-only update there is announced by the KMS
    // key's window as well. A non-rotator's still alerts (settle).
    let also = (rule == Rule::SecretUpdated
        && logical == names::WEBHOOK_SECRET
        && annotations_only(request))
    .then(|| rotations::kms_key(&ctx.settings.kms_key_ring, &ctx.settings.kms_key));
    found.changes.push(Change {
        key: rotations::secret_key(secret.id),
        also,
        alert,
        what,
    });
}

/// The update mask's paths (a comma-separated string or `{paths: [...]}`),
/// else the fields present in the request's secret; at most 10.
fn update_paths(request: Option<&Value>) -> Vec<String> {
    let Some(req) = request else {
        return Vec::new();
    };
    let mask = req.get("updateMask").or_else(|| req.get("update_mask"));
    let mut out: Vec<String> = match mask {
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        Some(Value::Object(o)) => o
            .get("paths")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        _ => req
            .get("secret")
            .and_then(Value::as_object)
            .map(|o| o.keys().filter(|k| *k != "name").cloned().collect())
            .unwrap_or_default(),
    };
    out.retain(|p| !p.is_empty());
    out.truncate(10);
    out
}

/// Whether an UpdateSecret changed nothing but annotations (by its mask;
/// with no mask, Secret Manager replaces every field given).
fn annotations_only(request: Option<&Value>) -> bool {
    let paths = update_paths(request);
    !paths.is_empty() && paths.iter().all(|p| p == "annotations")
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
