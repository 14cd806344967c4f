//! The detections. Each family (one file each) looks at one audit entry and
//! reports alerts, or changes whose verdict depends on who made them and
//! whether a rotation was announced; [`Engine`] settles those, keeps the
//! state the spike and self-check rules need, and applies per-rule settings.

mod denied;
mod iam_policy;
mod kms;
pub mod methods;
pub(crate) mod notices;
mod secrets;
mod self_check;
mod service_accounts;
mod spikes;
mod tampering;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use patchpanda_shared::audit_log::{AuditLog, LogEntry, SERVICE_SECRET_MANAGER};
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};

use crate::alert::{Alert, Rule};
use crate::entry::{self, KmsName, SecretName};
use crate::identity::{Identity, normalize_principal};
use crate::rotations::Rotations;
use crate::settings::Settings;

/// One audit entry and what every rule asks of it.
pub(crate) struct Ctx<'a> {
    pub settings: &'a Settings,
    pub entry: &'a LogEntry,
    pub audit: &'a AuditLog,
    /// The caller and the delegation chain it acted through.
    pub identity: Identity,
    /// Who alerts name: the origin of the call (the first party of the
    /// delegation chain), else the caller; normalized.
    pub principal: String,
    pub time: DateTime<Utc>,
    pub status: i32,
}

impl<'a> Ctx<'a> {
    pub fn new(
        settings: &'a Settings,
        entry: &'a LogEntry,
        audit: &'a AuditLog,
        now: DateTime<Utc>,
    ) -> Self {
        let identity = Identity::of(entry);
        Self {
            settings,
            entry,
            audit,
            principal: identity.origin().to_string(),
            identity,
            time: entry::entry_time(entry, now),
            status: entry::status_code(audit),
        }
    }

    pub fn method(&self) -> &'a str {
        self.audit.method_name.as_str()
    }

    /// Whether this is `op` of `service`, in any API version.
    pub fn is(&self, service: &str, op: &str) -> bool {
        self.audit.service_name == service && methods::is(self.method(), op)
    }

    /// Whether this is one of `ops` of `service`, in any API version.
    pub fn is_any(&self, service: &str, ops: &[&str]) -> bool {
        self.audit.service_name == service && ops.iter().any(|o| methods::is(self.method(), o))
    }

    pub fn ok(&self) -> bool {
        self.status == 0
    }

    /// The gateway's secret this entry is about, if any.
    pub fn our_secret(&self) -> Option<SecretName<'a>> {
        if self.audit.service_name != SERVICE_SECRET_MANAGER {
            return None;
        }
        entry::resource_names(self.audit)
            .filter_map(entry::parse_secret)
            .find(|s| {
                s.id.len() > self.settings.secret_prefix.len()
                    && s.id.starts_with(&self.settings.secret_prefix)
            })
    }

    /// The gateway's key ring or key this entry is about, if any.
    pub fn our_kms(&self) -> Option<KmsName<'a>> {
        let (ring, key) = (&self.settings.kms_key_ring, &self.settings.kms_key);
        entry::resource_names(self.audit)
            .filter_map(entry::parse_kms)
            .find(|k| k.ring == ring && k.key.is_none_or(|k| k == key))
    }

    /// The gateway service account this entry is about, if any.
    pub fn gateway_account(&self) -> Option<String> {
        if self.settings.gateway_accounts.is_empty() {
            return None;
        }
        entry::service_accounts(self.entry, self.audit)
            .into_iter()
            .find(|sa| self.settings.gateway_accounts.contains(sa))
    }

    /// The logical name of a secret id, for the commands in summaries.
    pub fn logical<'s>(&self, secret_id: &'s str) -> &'s str {
        names::logical_name(&self.settings.secret_prefix, secret_id).unwrap_or(secret_id)
    }

    /// The caller for summaries: `origin (acting as caller)` when the call
    /// went through a delegation chain.
    pub fn who(&self) -> String {
        self.identity.describe()
    }

    /// An alert about this entry, with the rule's configured severity and
    /// the default fingerprint (rule + principal + resource).
    pub fn alert(&self, rule: Rule, resource: &str, summary: String) -> Alert {
        let (ip, ua) = entry::caller(self.audit);
        let mut details = BTreeMap::new();
        if let Some(ip) = ip {
            details.insert("callerIp".to_string(), ip.to_string());
        }
        if let Some(ua) = ua {
            details.insert("userAgent".to_string(), ua.to_string());
        }
        if let Some(key) = self
            .audit
            .authentication_info
            .as_ref()
            .and_then(|a| a.service_account_key_name.as_deref())
        {
            details.insert("serviceAccountKeyName".to_string(), key.to_string());
        }
        if let Some(chain) = self.identity.chain_text() {
            details.insert("delegationChain".to_string(), chain);
            details.insert(
                "actingAs".to_string(),
                self.identity.principal().to_string(),
            );
        }
        details.insert("serviceName".to_string(), self.audit.service_name.clone());
        if self.status != 0 {
            details.insert("statusCode".to_string(), self.status.to_string());
        }
        make_alert(
            self.settings,
            rule,
            AlertParts {
                principal: &self.principal,
                resource,
                method: self.method(),
                time: self.time,
                insert_id: &self.entry.insert_id,
                log_name: &self.entry.log_name,
                summary,
                details,
            },
        )
    }
}

pub(crate) struct AlertParts<'a> {
    pub principal: &'a str,
    pub resource: &'a str,
    pub method: &'a str,
    pub time: DateTime<Utc>,
    pub insert_id: &'a str,
    pub log_name: &'a str,
    pub summary: String,
    pub details: BTreeMap<String, String>,
}

/// Characters that change how the text around them reads without being
/// seen: control characters (newlines included), Unicode's bidirectional
/// overrides, embeddings, isolates and marks (a `U+202E` in a principal
/// shows `moc.elpmaxe@eve` as `eve@example.com`), zero-width characters
/// and the line/paragraph separators.
pub(crate) fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Escapes hidden characters ([`is_hidden`]), so a summary stays on one
/// line in every sink and reads as what it holds.
pub(crate) fn one_line(s: &str) -> String {
    if !s.chars().any(is_hidden) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if is_hidden(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub(crate) fn make_alert(settings: &Settings, rule: Rule, p: AlertParts<'_>) -> Alert {
    let id = if p.insert_id.is_empty() {
        format!(
            "{rule}:{}",
            p.time.timestamp_nanos_opt().unwrap_or_default()
        )
    } else {
        format!("{rule}:{}", p.insert_id)
    };
    let link = entry::log_project(p.log_name)
        .filter(|proj| *proj != "local" && !p.insert_id.is_empty())
        .map(|proj| logs_link(proj, p.insert_id));
    Alert {
        id,
        rule,
        severity: settings.severity(rule),
        // One line whatever the entry held: principals and resource names
        // come from the audited caller and may carry control characters.
        summary: one_line(&p.summary),
        principal: p.principal.to_string(),
        resource: p.resource.to_string(),
        method: p.method.to_string(),
        time: p.time,
        insert_id: p.insert_id.to_string(),
        log_name: p.log_name.to_string(),
        fingerprint: format!("{rule}|{}|{}", p.principal, p.resource),
        folded: 0,
        details: p.details,
        link,
        fold_window: None,
    }
}

fn logs_link(project: &str, insert_id: &str) -> String {
    let query: String =
        url::form_urlencoded::byte_serialize(format!("insertId=\"{insert_id}\"").as_bytes())
            .collect();
    let project: String = url::form_urlencoded::byte_serialize(project.as_bytes()).collect();
    format!("https://console.cloud.google.com/logs/query;query={query}?project={project}")
}

/// A change to a secret or the key whose verdict depends on who made it.
pub(crate) struct Change {
    /// Rotation window key ([`crate::rotations`]).
    pub key: String,
    /// Another window that also announces this change: the KMS key's, for
    /// an annotations-only update of the secret that holds the KMS
    /// rotation's record (rotation-worker keeps it on the webhook secret).
    pub also: Option<String>,
    /// The alert for a principal outside the rotators.
    pub alert: Alert,
    /// "added version 4 to patchpanda-webhook-secret", for the rotator's alert.
    pub what: String,
}

#[derive(Default)]
pub(crate) struct Found {
    pub alerts: Vec<Alert>,
    pub changes: Vec<Change>,
}

/// A rotator's unannounced change, waiting for a notice that may arrive
/// after its audit entry. The service keeps it with the entry, which stays
/// unacknowledged (so Pub/Sub keeps it across restarts) until a notice
/// covers it or `release_at` passes.
#[derive(Debug, Clone)]
pub struct Hold {
    pub key: String,
    /// See [`Change::also`].
    pub also: Option<String>,
    pub principal: String,
    pub time: DateTime<Utc>,
    pub release_at: DateTime<Utc>,
    pub alert: Alert,
}

/// What one entry raised: alerts now, and changes on hold.
#[derive(Debug, Default)]
pub struct Verdict {
    pub alerts: Vec<Alert>,
    pub holds: Vec<Hold>,
}

/// Stateful evaluation of entries and notices.
pub struct Engine {
    settings: Arc<Settings>,
    rotations: Rotations,
    spikes: spikes::Spikes,
    self_check: self_check::SelfCheck,
}

impl Engine {
    pub fn new(settings: Arc<Settings>, now: DateTime<Utc>) -> Self {
        Self {
            rotations: Rotations::new(&settings),
            spikes: spikes::Spikes::new(&settings),
            self_check: self_check::SelfCheck::new(now),
            settings,
        }
    }

    /// What one audit entry raises (before suppression).
    pub fn audit(&mut self, entry: &LogEntry, now: DateTime<Utc>) -> Verdict {
        let Some(audit) = entry.proto_payload.as_ref() else {
            return Verdict::default();
        };
        let settings = Arc::clone(&self.settings);
        let ctx = Ctx::new(&settings, entry, audit, now);
        let mut found = Found::default();
        secrets::check(&ctx, &mut found);
        self.announced_reads(&ctx, &mut found.alerts);
        kms::check(&ctx, &mut found);
        iam_policy::check(&ctx, &mut found);
        service_accounts::check(&ctx, &mut found);
        tampering::check(&ctx, &mut found);
        denied::check(&ctx, &mut found);
        if let Some(secret) = ctx.our_secret() {
            if entry.is_data_access() {
                self.self_check.saw_data_access(now);
            }
            if ctx.is(SERVICE_SECRET_MANAGER, methods::sm::ACCESS_SECRET_VERSION)
                && let Some(a) = self.spikes.secret_read(&ctx, secret.id)
            {
                found.alerts.push(a);
            }
        }
        let mut verdict = Verdict {
            alerts: found.alerts,
            holds: Vec::new(),
        };
        for change in found.changes {
            match self.settle(change, &ctx, now) {
                Settled::Alert(a) => verdict.alerts.push(a),
                Settled::Hold(h) => verdict.holds.push(h),
                Settled::Expected => {}
            }
        }
        verdict.alerts.retain(|a| settings.enabled(a.rule));
        verdict
    }

    /// A webhook-ingest `signature_rejected` entry.
    pub fn signature_rejected(&mut self, entry: &LogEntry, now: DateTime<Utc>) -> Vec<Alert> {
        let time = entry::entry_time(entry, now);
        self.spikes
            .signature_rejected(&self.settings, entry, time)
            .into_iter()
            .filter(|a| self.settings.enabled(a.rule))
            .collect()
    }

    /// Records a rotation notice; returns the alert it raises, if any
    /// (`failed`, `rolled_back`, `due`).
    pub fn notice(&mut self, notice: &RotationNotice) -> Option<Alert> {
        let key = Rotations::key_of(&self.settings, &notice.secret);
        if notice.event == NoticeEvent::Announced {
            let principal = notice.principal.as_deref().map(normalize_principal);
            match principal {
                Some(p) if self.settings.operators.contains(&p) => {
                    self.rotations.announce(key, &p, notice)
                }
                _ => tracing::warn!(
                    secret = %notice.secret,
                    principal = notice.principal.as_deref().unwrap_or("-"),
                    "an announced change by a principal outside PATCHPANDA_OPERATOR_PRINCIPALS; its changes will alert"
                ),
            }
            return None;
        }
        self.rotations.record(key, notice);
        notices::alert(&self.settings, notice).filter(|a| self.settings.enabled(a.rule))
    }

    /// Whether a notice has covered a held change since it was held.
    pub fn covers(&self, hold: &Hold) -> bool {
        std::iter::once(&hold.key)
            .chain(&hold.also)
            .any(|k| self.rotations.covers(k, &hold.principal, hold.time))
    }

    /// Time-driven alerts (the Data Access self-check) and window expiry.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let mut out = Vec::new();
        self.rotations.prune(now);
        if self.settings.enabled(Rule::DataAccessSilent)
            && let Some(a) = self.self_check.check(&self.settings, now)
        {
            out.push(a);
        }
        out
    }

    /// How many windows and counters the engine keeps (for the flood test).
    pub fn tracked(&self) -> (usize, usize) {
        (self.rotations.len(), self.spikes.len())
    }

    /// A listed operator's read of a secret they announced (`patchpanda
    /// backup` announces every secret it reads) is recorded at P3, not
    /// paged, as their key use is. Anyone else's read, or a read outside
    /// the announcement, keeps its severity.
    fn announced_reads(&self, ctx: &Ctx<'_>, alerts: &mut [Alert]) {
        let Some(secret) = ctx.our_secret() else {
            return;
        };
        let id = &ctx.identity;
        if !id.allowed(&self.settings.operators)
            || !self.rotations.announced(
                &crate::rotations::secret_key(secret.id),
                id.principal(),
                ctx.time,
            )
        {
            return;
        }
        for a in alerts
            .iter_mut()
            .filter(|a| a.rule == Rule::SecretReadUnexpected)
        {
            a.severity = crate::alert::Severity::P3;
            a.summary = format!(
                "{} (a listed operator's announced read, such as a backup: recorded, not paged)",
                a.summary
            );
        }
    }

    fn settle(&mut self, change: Change, ctx: &Ctx<'_>, now: DateTime<Utc>) -> Settled {
        let id = &ctx.identity;
        let principal = id.principal();
        if !id.allowed(&self.settings.rotators) {
            if id.allowed(&self.settings.operators)
                && self.rotations.announced(&change.key, principal, ctx.time)
            {
                tracing::info!(resource = %change.alert.resource, %principal, what = %change.what, "an operator's announced change");
                return Settled::Expected;
            }
            return Settled::Alert(change.alert);
        }
        if std::iter::once(&change.key)
            .chain(&change.also)
            .any(|k| self.rotations.covers(k, principal, ctx.time))
        {
            tracing::debug!(resource = %change.alert.resource, %principal, "change inside an announced rotation");
            return Settled::Expected;
        }
        if !self.settings.enabled(Rule::RotatorOutsideRotation) {
            return Settled::Expected;
        }
        let mut alert = change.alert;
        alert.rule = Rule::RotatorOutsideRotation;
        alert.severity = self.settings.severity(Rule::RotatorOutsideRotation);
        alert.id = format!("{}:{}", Rule::RotatorOutsideRotation, alert.insert_id);
        alert.fingerprint = format!(
            "{}|{}|{}",
            Rule::RotatorOutsideRotation,
            alert.principal,
            alert.resource
        );
        alert.summary = format!(
            "{principal} (a rotator) {} with no rotation announced on patchpanda-rotation-events; check the rotation-worker's logs and `patchpanda status`",
            change.what
        );
        let hold = TimeDelta::from_std(self.settings.announce_hold).unwrap_or_default();
        // From the change, not from now: a redelivery after a restart is not
        // held again from scratch. Clamped to now for entries stamped ahead.
        let release_at = ctx.time.min(now) + hold;
        if hold.is_zero() || release_at <= now {
            return Settled::Alert(alert);
        }
        Settled::Hold(Hold {
            key: change.key,
            also: change.also,
            principal: principal.to_string(),
            time: ctx.time,
            release_at,
            alert,
        })
    }
}

enum Settled {
    Alert(Alert),
    Hold(Hold),
    Expected,
}

#[cfg(test)]
mod one_line_tests {
    #[test]
    fn summaries_never_span_lines() {
        assert_eq!(super::one_line("plain text"), "plain text");
        let s = super::one_line("read by evil@x\nALL CLEAR\r\t");
        assert!(
            !s.contains('\n') && !s.contains('\r') && !s.contains('\t'),
            "{s}"
        );
        assert!(s.contains("ALL CLEAR"));
    }
}
