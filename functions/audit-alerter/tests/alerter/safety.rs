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

/// Bidi overrides, isolates, zero-width characters and newlines in a
/// principal or user agent: every human-readable text shows them escaped,
/// so `eve@example.com` cannot be displayed for `moc.elpmaxe@eve`.
#[test]
fn hidden_characters_are_shown_escaped_in_every_human_text() {
    const HIDDEN: [char; 8] = [
        '\u{202E}', '\u{2066}', '\u{2069}', '\u{200F}', '\u{200B}', '\u{FEFF}', '\n', '\u{2029}',
    ];
    let h = harness();
    let sneaky = "mallory\u{202E}moc.elpmaxe@\u{2066}gw\u{2069}\u{200B}\u{FEFF}\n\u{2029}x";
    let mut e = access("bidi-1", "mallory@example.com", WEBHOOK_SECRET_ID);
    e["protoPayload"]["authenticationInfo"] = json!({"principalEmail": sneaky});
    e["protoPayload"]["requestMetadata"]["callerSuppliedUserAgent"] = json!(sneaky);
    let alert = match h.alerter.analyze(&serde_json::to_vec(&e).unwrap()).unwrap() {
        audit_alerter::Analysis::Alerts(a) => a.into_iter().next().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(alert.summary.contains("\\u{202e}"), "{}", alert.summary);
    let mut human = vec![alert.summary.clone()];
    strings(&slack::payload(&alert), &mut human);
    let pd = pagerduty::event(&alert, "routing-key");
    human.push(pd["payload"]["summary"].as_str().unwrap().to_string());
    for s in &human {
        // Slack's field labels end in a newline of our own.
        let s = s.replace(":*\n`", ":* `");
        assert!(!s.contains(HIDDEN), "hidden character in {s:?}");
    }
}
