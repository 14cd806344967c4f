//! audit-alerter's rule evaluation, stateful: a sequence of audit-log
//! messages, rotation notices and clock ticks through `Alerter::analyze`,
//! `Alerter::record_notice` and `Alerter::tick` (no sinks but the log).
//!
//! Input: records separated by a line `---`. A record starting with `N` is
//! a rotation notice's data (after the `N`); one starting with `T` advances
//! the clock by the minutes that follow and ticks; anything else is an
//! audit-log message's data.
//! Invariants: every alert is one line, from an enabled rule, has an id and
//! a fingerprint, and survives its own JSON; a message redelivered right
//! away is a duplicate; a refusal is one line.
#![no_main]

use std::sync::{Arc, OnceLock};

use audit_alerter::entry::{self, Decoded};
use audit_alerter::{Alert, Alerter, Analysis, ManualClock, Settings};
use chrono::{DateTime, TimeDelta};
use libfuzzer_sys::fuzz_target;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::names;

const GATEWAY_SA: &str = "gateway@my-proj.iam.gserviceaccount.com";
const ROTATOR_SA: &str = "rotator@my-proj.iam.gserviceaccount.com";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

fn settings() -> Settings {
    static BASE: OnceLock<Settings> = OnceLock::new();
    BASE.get_or_init(|| {
        let config = Config::from_env(&Env::default(), names::PRINCIPAL_AUDIT_ALERTER)
            .expect("local defaults are valid");
        let mut s = Settings::from_env(&config, &Env::default()).expect("default settings");
        // The production-shaped identities the seed entries use.
        s.project = "my-proj".to_string();
        s.readers.extend([GATEWAY_SA]);
        s.rotators.extend([ROTATOR_SA]);
        s.gateway_accounts.extend([GATEWAY_SA]);
        s
    })
    .clone()
}

fn check_alerts(settings: &Settings, alerts: &[Alert]) {
    for a in alerts {
        assert!(
            !a.summary.contains('\n'),
            "multi-line summary: {:?}",
            a.summary
        );
        assert!(
            settings.enabled(a.rule),
            "alert from a disabled rule {:?}",
            a.rule
        );
        assert!(!a.id.is_empty() && !a.fingerprint.is_empty(), "{a:?}");
        let json = a.to_json();
        let back: Alert = match serde_json::from_slice(&json) {
            Ok(b) => b,
            Err(e) => panic!("an alert's JSON does not parse back: {e}"),
        };
        let mut expected = a.clone();
        expected.fold_window = None;
        assert_eq!(back, expected);
    }
}

fuzz_target!(|data: &[u8]| {
    let settings = settings();
    let t0 = DateTime::from_timestamp(1_763_287_260, 0).unwrap_or_default();
    let clock = Arc::new(ManualClock::new(t0));
    let alerter = Alerter::new(settings.clone(), Vec::new(), clock.clone());

    for record in patchpanda_fuzz::records(data) {
        match record.first() {
            Some(b'N') => match alerter.record_notice(&record[1..]) {
                Ok(_) => {}
                Err(e) => assert!(!e.0.contains('\n'), "multi-line refusal: {e:?}"),
            },
            Some(b'T') => {
                let minutes = std::str::from_utf8(&record[1..])
                    .ok()
                    .and_then(|m| m.trim().parse::<i64>().ok())
                    .unwrap_or(1)
                    .clamp(0, 60 * 24 * 30);
                clock.advance(TimeDelta::minutes(minutes));
                let out = runtime().block_on(alerter.tick());
                check_alerts(&settings, &out);
            }
            _ => match alerter.analyze(record) {
                Ok(Analysis::Alerts(alerts)) => {
                    check_alerts(&settings, &alerts);
                    let insert_id = match entry::decode(record) {
                        Ok(Decoded::Audit(e) | Decoded::SignatureRejected(e)) => e.insert_id,
                        other => panic!("analyzed, but decodes as {other:?}"),
                    };
                    if !insert_id.is_empty() {
                        let again = alerter.analyze(record);
                        assert!(
                            matches!(again, Ok(Analysis::Duplicate)),
                            "redelivery not deduplicated: {again:?}"
                        );
                    }
                }
                Ok(Analysis::Duplicate | Analysis::Ignored(_)) => {}
                Err(e) => assert!(!e.0.contains('\n'), "multi-line refusal: {e:?}"),
            },
        }
    }
});
