//! Output safety (issue 11 item 6): attacker-controlled principals,
//! resources and user agents cannot format, link or mention in Slack, and
//! PagerDuty and webhook bodies stay valid JSON carrying them verbatim.

use crate::prelude::*;
use audit_alerter::sinks::{pagerduty, slack, webhook};

const NASTY: &str = "<!channel> *x* _y_ ~z~ `c` <https://evil.example|click> &amp; \"q\" \\ \u{2028} https://evil.example/login";

fn nasty_alert() -> Alert {
    let h = harness();
    let mut e = access("nasty-1", "mallory@example.com", WEBHOOK_SECRET_ID);
    e["protoPayload"]["authenticationInfo"] = json!({"principalEmail": NASTY});
    e["protoPayload"]["requestMetadata"]["callerSuppliedUserAgent"] = json!(NASTY);
    match h.alerter.analyze(&serde_json::to_vec(&e).unwrap()).unwrap() {
        audit_alerter::Analysis::Alerts(a) => a.into_iter().next().unwrap(),
        other => panic!("{other:?}"),
    }
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[test]
fn slack_escapes_every_field_top_level_text_included() {
    let alert = nasty_alert();
    assert!(
        alert.principal.contains("<!channel>"),
        "the alert itself keeps the value"
    );
    let p = slack::payload(&alert);
    assert_eq!(p["mrkdwn"], false, "the top-level text is not parsed");
    let mut all = Vec::new();
    strings(&p, &mut all);
    for s in &all {
        assert!(
            !s.contains('<') && !s.contains('>'),
            "unescaped markup in {s:?}"
        );
        // Every & starts an entity we wrote.
        for (i, _) in s.match_indices('&') {
            let rest = &s[i..];
            assert!(
                rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;"),
                "bare & in {s:?}"
            );
        }
    }
    // Values sit in code spans that the value cannot close.
    let fields = p["blocks"][2]["fields"].as_array().unwrap();
    let principal = fields[0]["text"].as_str().unwrap();
    assert_eq!(principal.matches('`').count(), 2, "{principal}");
    // Summary and context are plain text: no mrkdwn at all.
    assert_eq!(p["blocks"][1]["text"]["type"], "plain_text");
    assert_eq!(p["blocks"][3]["elements"][0]["type"], "plain_text");
}

#[test]
fn pagerduty_and_webhook_bodies_are_valid_json_with_the_fields_verbatim() {
    let alert = nasty_alert();
    for body in [
        pagerduty::event(&alert, "routing-key"),
        webhook::body(&alert),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        let back: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        assert_eq!(back, body);
        let mut all = Vec::new();
        strings(&back, &mut all);
        assert!(all.iter().any(|s| s == NASTY), "carried verbatim");
    }
    let back: Alert = serde_json::from_slice(&alert.to_json()).unwrap();
    assert_eq!(back.principal, NASTY);
}
