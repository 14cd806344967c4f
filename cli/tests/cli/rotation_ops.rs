//! Issue 14 through the command: rollback onto a compromised version needs
//! `--force`, restore moves no alias unless asked (and then through the
//! rotation), the key upload announces itself, status shows an emergency.

use serde_json::Value;

use super::backup::{backup, restore};
use super::{Sandbox, access, add, seeded};

fn status_of(sb: &Sandbox, name: &str) -> Value {
    let j = sb.pp().run(&["status", "--json"]).ok().json();
    j["secrets"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["secret"] == name))
        .unwrap_or_else(|| panic!("status lists no {name}: {j}"))
        .clone()
}

/// The rotation topic's notices on the local bus, oldest first.
pub(super) fn notices(sb: &Sandbox) -> Vec<Value> {
    let out = sb
        .pp()
        .run(&["bus", "messages", "patchpanda-rotation-events", "--json"])
        .ok()
        .stdout();
    out.lines()
        .map(|l| {
            let m: Value = serde_json::from_str(l).expect("a JSON line");
            let data = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                m["data"].as_str().expect("data"),
            )
            .expect("base64 data");
            serde_json::from_slice(&data).expect("a notice")
        })
        .collect()
}

#[test]
fn rollback_after_an_emergency_needs_force_and_says_what_it_re_enables() {
    let sb = Sandbox::new();
    let leaked = b"leaked-webhook-secret-value";
    seeded(&sb, &sb.home(), leaked, b"k");
    sb.pp()
        .run(&["rotate", "webhook-secret", "--emergency"])
        .ok();

    let s = status_of(&sb, "webhook-secret");
    assert_eq!(s["emergency"], true, "{s}");
    assert_eq!(s["compromised"], serde_json::json!([1]), "{s}");
    let table = sb.pp().run(&["status"]).ok().stdout();
    let row = table
        .lines()
        .find(|l| l.starts_with("webhook-secret"))
        .expect("row");
    assert!(row.contains("(emergency)"), "{row}");
    assert!(row.contains("compromised"), "{row}");

    let line = sb
        .pp()
        .run(&["rollback", "webhook-secret"])
        .fails_one_line();
    assert!(
        line.contains("compromised") && line.contains("--force"),
        "{line}"
    );
    assert_ne!(
        access(sb.pp(), "webhook-secret", "current").ok().out,
        leaked
    );
    access(sb.pp(), "webhook-secret", "1").fails_one_line();

    let r = sb.pp().run(&["rollback", "webhook-secret", "--force"]).ok();
    assert!(r.err.contains("re-enabled"), "{}", r.err);
    assert!(r.stdout().contains("compromised"), "{}", r.stdout());
    assert_eq!(
        access(sb.pp(), "webhook-secret", "current").ok().out,
        leaked
    );
    let n = notices(&sb);
    let forced: Vec<&Value> = n
        .iter()
        .filter(|n| n["detail"].as_str().is_some_and(|d| d.contains("forced")))
        .collect();
    assert_eq!(forced.len(), 2, "started and rolled_back say forced: {n:?}");
}

#[test]
fn restore_into_an_existing_secret_moves_no_alias_unless_asked() {
    let sb = Sandbox::new();
    let home = sb.home();
    let original = b"webhook-secret-at-backup-time";
    seeded(&sb, &home, original, b"k");
    let file = backup(&sb, &home, "before.json");
    sb.pp().run(&["rotate", "webhook-secret"]).ok();
    let rotated = access(sb.pp(), "webhook-secret", "current").ok().out;
    let before = notices(&sb).len();

    // Default: nothing the secret holds is added, no alias moves, nothing
    // announced; the output says how to move it.
    let text = restore(&sb, &home, &file, &[] as &[&str]).ok().stdout();
    assert!(text.contains("--move-aliases"), "{text}");
    assert_eq!(
        access(sb.pp(), "webhook-secret", "current").ok().out,
        rotated
    );
    assert_eq!(notices(&sb).len(), before);
    let v = sb
        .pp()
        .run(&["secrets", "versions", "webhook-secret", "--json"])
        .ok()
        .json();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");

    // --move-aliases: the backup's current comes back through a rotation:
    // a new version with its value, announced, the replaced one in grace.
    let r = restore(&sb, &home, &file, &["--move-aliases", "--json"]).ok();
    let report = r.json();
    let wh = report["secrets"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == "patchpanda-webhook-secret"))
        .expect("webhook row")
        .clone();
    assert_eq!(wh["aliases"]["current"], 3, "{report}");
    assert_eq!(
        access(sb.pp(), "webhook-secret", "current").ok().out,
        original
    );
    assert_eq!(
        access(sb.pp(), "webhook-secret", "previous").ok().out,
        rotated
    );
    let s = status_of(&sb, "webhook-secret");
    assert_eq!(s["in_grace"], true, "{s}");
    let n = notices(&sb);
    assert!(
        n[before..]
            .iter()
            .any(|n| n["event"] == "rotated" && n["version"] == 3),
        "{n:?}"
    );
}

#[test]
fn restore_does_not_bring_back_a_compromised_version() {
    let sb = Sandbox::new();
    let home = sb.home();
    seeded(&sb, &home, b"leaked-before-the-emergency", b"k");
    let file = backup(&sb, &home, "before.json");
    sb.pp()
        .run(&["rotate", "webhook-secret", "--emergency"])
        .ok();
    let text = restore(&sb, &home, &file, &["--move-aliases"])
        .ok()
        .stdout();
    assert!(text.contains("compromised"), "{text}");
    let v = sb
        .pp()
        .run(&["secrets", "versions", "webhook-secret", "--json"])
        .ok()
        .json();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "nothing added: {v}");
    assert_ne!(
        access(sb.pp(), "webhook-secret", "current").ok().out,
        b"leaked-before-the-emergency"
    );
}

#[test]
fn uploading_a_private_key_announces_itself_first() {
    let sb = Sandbox::new();
    seeded(&sb, &sb.home(), b"w", b"k");
    let before = notices(&sb).len();
    let r = add(sb.pp(), &sb, "github-private-key", b"new-key-material").ok();
    assert!(r.err.contains("Announced"), "{}", r.err);
    let n = notices(&sb);
    let announced = &n[before];
    assert_eq!(announced["event"], "announced", "{n:?}");
    assert_eq!(announced["secret"], "github-private-key");
    assert!(announced["principal"].is_string(), "{announced}");
    assert!(announced["until"].is_string(), "{announced}");
    // The webhook secret's versions come from the rotator: no announcement.
    add(sb.pp(), &sb, "webhook-secret", b"hand-made").ok();
    assert_eq!(notices(&sb).len(), before + 1);
}
