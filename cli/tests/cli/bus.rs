//! `patchpanda bus`: the local bus, and the operator in the audit log.

use super::*;

#[test]
fn bus_messages_show_the_operators_access_in_the_audit_log() {
    let sb = Sandbox::new();
    let value = b"audited-secret-value-5e1f";
    seeded(&sb, &sb.home(), value, b"k");
    assert_eq!(
        sb.pp()
            .run(&["secrets", "access", "webhook-secret"])
            .ok()
            .out,
        value
    );

    let r = sb
        .pp()
        .run(&["bus", "messages", "patchpanda-audit-logs", "--json"])
        .ok();
    let text = r.stdout();
    let mut accesses = 0;
    let mut lines = 0;
    for line in text.lines() {
        lines += 1;
        let m: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"));
        for k in ["id", "data", "attributes", "ordering_key", "publish_time"] {
            assert!(m.get(k).is_some(), "message lacks {k}: {line}");
        }
        assert!(m["attributes"].is_object(), "{line}");
        chrono::DateTime::parse_from_rfc3339(m["publish_time"].as_str().expect("publish_time"))
            .expect("RFC 3339");
        let data = STANDARD
            .decode(m["data"].as_str().expect("data"))
            .expect("data is base64");
        assert!(
            !contains(&data, value),
            "an audit entry carries the secret value"
        );
        let entry: Value = serde_json::from_slice(&data).expect("data is a LogEntry");
        let p = &entry["protoPayload"];
        if p["methodName"]
            .as_str()
            .is_some_and(|m| m.ends_with("AccessSecretVersion"))
            && p["authenticationInfo"]["principalEmail"] == "operator@patchpanda.local"
            && p["resourceName"]
                .as_str()
                .is_some_and(|r| r.contains("patchpanda-webhook-secret"))
        {
            accesses += 1;
            assert!(
                entry["logName"]
                    .as_str()
                    .is_some_and(|l| l.contains("cloudaudit.googleapis.com")),
                "{entry}"
            );
        }
    }
    assert!(lines > 0, "no audit messages at all");
    assert_eq!(
        accesses, 1,
        "exactly one AccessSecretVersion by the operator: {text}"
    );

    let table = sb
        .pp()
        .run(&["bus", "messages", "patchpanda-audit-logs"])
        .ok()
        .stdout();
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), lines + 1, "one row per message");

    let empty = sb
        .pp()
        .run(&["bus", "messages", "patchpanda-github-events", "--json"])
        .ok();
    assert!(empty.out.is_empty(), "{}", empty.stdout());
    sb.pp()
        .run(&["bus", "messages", "Not A Topic!"])
        .fails_one_line();
}
