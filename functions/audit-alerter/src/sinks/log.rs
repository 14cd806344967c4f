//! The structured log: every alert, always, before any other sink is tried,
//! so even an alert whose sinks all fail is on record in Cloud Logging.

use crate::alert::{Alert, Severity};

pub fn record(alert: &Alert) {
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                alert.id = %alert.id,
                alert.rule = %alert.rule,
                alert.severity = %alert.severity,
                alert.principal = %alert.principal,
                alert.resource = %alert.resource,
                alert.method = %alert.method,
                alert.time = %alert.time_text(),
                alert.insert_id = %alert.insert_id,
                alert.fingerprint = %alert.fingerprint,
                alert.folded = alert.folded,
                "{}", alert.summary
            )
        };
    }
    match alert.severity {
        Severity::P0 | Severity::P1 => emit!(error),
        Severity::P2 => emit!(warn),
        Severity::P3 => emit!(info),
    }
}
