//! Blinding and tampering: the moves that switch the alerter off or change
//! what the gateway runs before the real attack.
//!
//! - `audit-config-changed`: a project `SetIamPolicy`
//!   (cloudresourcemanager) whose `serviceData.policyDelta.auditConfigDeltas`
//!   turn a log type off (`REMOVE` without `exemptedMember`) or exempt
//!   someone (`ADD` with `exemptedMember`) for Secret Manager, Cloud KMS,
//!   IAM or `allServices`; or, when the entry carries no deltas, whose
//!   update mask names `auditConfigs`.
//! - `audit-sink-changed`: `UpdateSink` / `DeleteSink` on the sink that
//!   feeds the alerter.
//! - `pubsub-changed`: subscription and topic changes (update, delete,
//!   push config, detach, IAM) on names with the infra prefix.
//! - `run-service-changed`: Cloud Run service changes (create, update,
//!   replace, delete, IAM) on names with the infra prefix: a new revision
//!   can carry env that disables rules.
//!
//! None is settled against the rotators: nothing in the gateway makes
//! these changes, so every one is a person's to confirm.

use serde_json::Value;

use super::methods::{logging, op, pubsub, resourcemanager, run};
use super::{Ctx, Found};
use crate::alert::Rule;
use crate::entry;

/// The services whose audit logging the detections depend on.
const WATCHED_AUDIT_SERVICES: [&str; 4] = [
    "secretmanager.googleapis.com",
    "cloudkms.googleapis.com",
    "iam.googleapis.com",
    "allServices",
];

pub(crate) fn check(ctx: &Ctx<'_>, found: &mut Found) {
    if !ctx.ok() {
        return;
    }
    if ctx.is(resourcemanager::SERVICE, resourcemanager::SET_IAM_POLICY) {
        audit_config(ctx, found);
    } else if ctx.is_any(logging::SERVICE, &logging::CHANGES) {
        named(
            ctx,
            found,
            Rule::AuditSinkChanged,
            "/sinks/",
            Some(&ctx.settings.audit_sink),
        );
    } else if ctx.is_any(pubsub::SERVICE, &pubsub::CHANGES) {
        let kind = if ctx.audit.resource_name.contains("/topics/") {
            "/topics/"
        } else {
            "/subscriptions/"
        };
        named(ctx, found, Rule::PubsubChanged, kind, None);
    } else if ctx.is_any(run::SERVICE, &run::CHANGES) {
        named(ctx, found, Rule::RunServiceChanged, "/services/", None);
    }
}

fn audit_config(ctx: &Ctx<'_>, found: &mut Found) {
    let deltas = ctx
        .audit
        .service_data
        .as_ref()
        .and_then(|d| d.pointer("/policyDelta/auditConfigDeltas"))
        .and_then(Value::as_array);
    let blinding: Vec<String> = match deltas {
        Some(ds) => ds
            .iter()
            .filter(|d| {
                let f = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("");
                let service = f("service");
                let watched = WATCHED_AUDIT_SERVICES.contains(&service);
                let exempted = !f("exemptedMember").is_empty();
                let off = f("action") == "REMOVE" && !exempted;
                let exempt_added = f("action") == "ADD" && exempted;
                watched && (off || exempt_added)
            })
            .take(10)
            .map(|d| {
                let f = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("");
                let member = f("exemptedMember");
                if member.is_empty() {
                    format!("{} {} {}", f("action"), f("service"), f("logType"))
                } else {
                    format!(
                        "{} {} {} exempting {member}",
                        f("action"),
                        f("service"),
                        f("logType")
                    )
                }
            })
            .collect(),
        // No deltas logged: judge by the request's update mask.
        None => {
            let mask = ctx
                .audit
                .request
                .as_ref()
                .and_then(|r| r.get("updateMask"))
                .and_then(Value::as_str)
                .unwrap_or("");
            if mask.split(',').any(|p| p.trim() == "auditConfigs") {
                vec!["auditConfigs (no deltas in the entry)".to_string()]
            } else {
                Vec::new()
            }
        }
    };
    if blinding.is_empty() {
        return;
    }
    let project = entry::resource_names(ctx.audit)
        .next()
        .unwrap_or("the project")
        .to_string();
    let mut alert = ctx.alert(
        Rule::AuditConfigChanged,
        &project,
        format!(
            "{} changed the audit config of {project} ({}): secret reads, key use or token minting may now go unlogged and every detection here blind. Restore DATA_READ/DATA_WRITE/ADMIN_READ for them (infra/terraform audit.tf) now",
            ctx.who(),
            blinding.join("; ")
        ),
    );
    alert
        .details
        .insert("auditConfigDeltas".into(), blinding.join("; "));
    found.alerts.push(alert);
}

/// A change to a resource named `.../{kind}{name}` where `name` is `only`
/// when given, else anything with the infra prefix.
fn named(ctx: &Ctx<'_>, found: &mut Found, rule: Rule, kind: &str, only: Option<&str>) {
    let prefix = &ctx.settings.infra_prefix;
    let Some(name) = entry::resource_names(ctx.audit).find_map(|r| {
        let (_, rest) = r.split_once(kind)?;
        let name = rest.split('/').next()?;
        let ours = match only {
            Some(n) => name == n,
            None => !prefix.is_empty() && name.starts_with(prefix.as_str()),
        };
        ours.then_some(name)
    }) else {
        return;
    };
    let what = match rule {
        Rule::AuditSinkChanged => {
            "the audit-log sink that feeds audit-alerter: a changed filter or destination blinds every detection"
        }
        Rule::PubsubChanged => {
            "a gateway Pub/Sub resource: a changed push endpoint, filter or deletion diverts or drops deliveries, notices or audit entries"
        }
        _ => {
            "a gateway Cloud Run service: a new revision or env change can change what it accepts or disable rules"
        }
    };
    let resource = format!("{}{name}", kind.trim_start_matches('/'));
    found.alerts.push(ctx.alert(
        rule,
        &resource,
        format!(
            "{} called {} on {resource}, {what}. Confirm it was a planned deploy (infra/terraform) or revert it",
            ctx.who(),
            op(ctx.method())
        ),
    ));
}
