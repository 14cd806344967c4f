//! `patchpanda status`, `rotate` and `rollback`.

use super::*;

fn status_of(sb: &Sandbox, name: &str) -> Value {
    let j = sb.pp().run(&["status", "--json"]).ok().json();
    j["secrets"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["secret"] == name))
        .unwrap_or_else(|| panic!("status lists no {name}: {j}"))
        .clone()
}

#[test]
fn rotate_rollback_and_emergency_show_in_status_and_versions() {
    let sb = Sandbox::new();
    let original = b"original-webhook-secret-value";
    seeded(&sb, &sb.home(), original, b"k");

    let s = status_of(&sb, "webhook-secret");
    assert_eq!(s["exists"], true, "{s}");
    assert_eq!(s["id"], "patchpanda-webhook-secret");
    assert_eq!(s["current"]["number"], 1, "{s}");
    assert!(s["previous"].is_null(), "{s}");
    assert_eq!(status_of(&sb, "oidc-client-secret")["exists"], false);
    let table = sb.pp().run(&["status"]).ok().stdout();
    assert!(table.starts_with("SECRET"), "{table}");
    assert!(table.contains("KMS key"), "{table}");

    // Rotate: a fresh value is current, the old one is previous in grace.
    let o = sb
        .pp()
        .run(&["rotate", "webhook-secret", "--json"])
        .ok()
        .json();
    assert_eq!(o["result"], "rotated", "{o}");
    assert_eq!(o["version"], 2, "{o}");
    assert_eq!(o["previous_version"], 1, "{o}");
    assert_eq!(o["emergency"], false);
    assert!(o["grace_until"].is_string(), "{o}");
    let s = status_of(&sb, "webhook-secret");
    assert_eq!(s["current"]["number"], 2, "{s}");
    assert_eq!(s["previous"]["number"], 1, "{s}");
    assert_eq!(s["in_grace"], true, "{s}");
    let new = access(sb.pp(), "webhook-secret", "current").ok().out;
    assert_ne!(new, original);
    assert_eq!(
        access(sb.pp(), "webhook-secret", "previous").ok().out,
        original
    );

    // Rollback: the old value is current again.
    let text = sb.pp().run(&["rollback", "webhook-secret"]).ok().stdout();
    assert!(text.contains("Rolled back"), "{text}");
    assert_eq!(
        access(sb.pp(), "webhook-secret", "current").ok().out,
        original
    );
    assert_eq!(status_of(&sb, "webhook-secret")["current"]["number"], 1);

    // Emergency: no grace, the replaced version is disabled at once.
    let o = sb
        .pp()
        .run(&["rotate", "webhook-secret", "--emergency", "--json"])
        .ok()
        .json();
    assert_eq!(o["emergency"], true, "{o}");
    assert!(o["grace_until"].is_null(), "{o}");
    let replaced = o["previous_version"].as_u64().expect("previous_version");
    let current = o["version"].as_u64().expect("version");
    assert_ne!(replaced, current);
    let v = sb
        .pp()
        .run(&["secrets", "versions", "webhook-secret", "--json"])
        .ok()
        .json();
    let row = v
        .as_array()
        .and_then(|a| a.iter().find(|r| r["version"] == replaced))
        .expect("row")
        .clone();
    assert_eq!(row["state"], "DISABLED", "{v}");
    let s = status_of(&sb, "webhook-secret");
    assert_eq!(s["current"]["number"], current);
    assert_eq!(s["in_grace"], false, "{s}");
    if !s["previous"].is_null() {
        assert_eq!(s["previous"]["state"], "DISABLED", "{s}");
    }
    access(sb.pp(), "webhook-secret", &replaced.to_string()).fails_one_line();
    assert_ne!(
        access(sb.pp(), "webhook-secret", "current").ok().out,
        original
    );
}

#[test]
fn rotate_and_rollback_fail_clearly() {
    let sb = Sandbox::new();
    seeded(&sb, &sb.home(), b"w", b"k");
    sb.pp().run(&["rotate", "no-such-secret"]).fails_one_line();
    let line = sb
        .pp()
        .run(&["rollback", "webhook-secret"])
        .fails_one_line();
    assert!(line.contains("previous"), "{line}");
    assert_eq!(
        access(sb.pp(), "webhook-secret", "current").ok().out,
        b"w",
        "a failed rollback changed nothing"
    );
}
