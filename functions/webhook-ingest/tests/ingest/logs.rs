//! The `signature_rejected` line audit-alerter routes and reads (contract 7
//! of the lead's brief): its fields, the caller's real address, and nothing
//! secret.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use patchpanda_shared::github::signature;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use super::support::*;

type Fields = BTreeMap<String, String>;

/// Keeps every event's fields (and its message under `message`).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Fields>>>);

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        fields.insert("level".into(), event.metadata().level().to_string());
        self.0.lock().unwrap().push(fields);
    }
}

impl Recorder {
    fn rejected(&self) -> Vec<Fields> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f.get("event").map(String::as_str) == Some("signature_rejected"))
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn each_rejected_signature_is_one_warning_with_the_contracts_fields() {
    let recorder = Recorder::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(recorder.clone()));
    let h = Harness::new(&[SECRET], &[]);
    let body = fixture("push.json");

    // A forged signature, from a caller who wrote GitHub's address into
    // X-Forwarded-For before Cloud Run appended theirs.
    let mut forged = signed("push", "d-forged", &body, "guessed-secret");
    forged.headers.insert(
        "x-forwarded-for",
        "140.82.115.1, 203.0.113.7".parse().unwrap(),
    );
    assert_status(h.webhook(forged).await, StatusCode::UNAUTHORIZED);
    // No signature at all, and a header that is not an address.
    let mut unsigned = signed("push", "d-unsigned", &body, SECRET);
    unsigned.headers.remove(signature::HEADER);
    unsigned
        .headers
        .insert("x-forwarded-for", "ALL CLEAR".parse().unwrap());
    assert_status(h.webhook(unsigned).await, StatusCode::UNAUTHORIZED);
    // A good one is not logged as rejected.
    h.webhook(signed("push", "d-good", &body, SECRET))
        .await
        .unwrap();

    let lines = recorder.rejected();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let (forged, unsigned) = (&lines[0], &lines[1]);
    assert_eq!(forged["level"], "WARN");
    assert_eq!(forged["message"], "webhook signature rejected");
    assert_eq!(forged["reason"], "mismatch");
    assert_eq!(forged["delivery"], "d-forged");
    assert_eq!(
        forged["remote_ip"], "203.0.113.7",
        "not the caller's own claim"
    );
    assert_eq!(forged["github_event"], "push");
    assert_eq!(unsigned["reason"], "missing");
    assert_eq!(unsigned["remote_ip"], "unknown");
    let everything = format!("{:?}", recorder.0.lock().unwrap());
    assert!(!everything.contains(SECRET), "the secret is never logged");
    assert!(!everything.contains("sha256="), "nor a signature");
}
