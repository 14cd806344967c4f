//! `patchpanda webhook sign` and `send`.

use super::*;

#[test]
fn webhook_sign_matches_githubs_test_vector() {
    let sb = Sandbox::new();
    let secret = format!("{FIXTURES}/github-vector-secret.txt");
    let payload = format!("{FIXTURES}/github-vector-payload.txt");
    assert!(
        std::fs::read(&secret).expect("fixture").ends_with(b"\n"),
        "fixture has the trailing newline"
    );

    let r = sb
        .pp()
        .run(&[
            "webhook",
            "sign",
            "--secret-file",
            &secret,
            "--payload-file",
            &payload,
        ])
        .ok();
    assert_eq!(r.stdout(), format!("{GITHUB_VECTOR}\n"));
    let r = sb
        .pp()
        .stdin(b"Hello, World!")
        .run(&["webhook", "sign", "--secret-file", &secret])
        .ok();
    assert_eq!(r.stdout(), format!("{GITHUB_VECTOR}\n"));
    let r = sb
        .pp()
        .stdin(b"Hello, World!")
        .run(&[
            "webhook",
            "sign",
            "--secret-file",
            &secret,
            "--payload-file",
            "-",
        ])
        .ok();
    assert_eq!(r.stdout(), format!("{GITHUB_VECTOR}\n"));

    // Without the newline: the same; with a changed payload: different.
    let bare = sb.file("bare-secret", b"It's a Secret to Everybody");
    let r = sb
        .pp()
        .run(&[
            "webhook".as_ref(),
            "sign".as_ref(),
            "--secret-file".as_ref(),
            bare.as_os_str(),
            "--payload-file".as_ref(),
            payload.as_ref(),
        ])
        .ok();
    assert_eq!(r.stdout(), format!("{GITHUB_VECTOR}\n"));
    let r = sb
        .pp()
        .stdin(b"Hello, World!\n")
        .run(&["webhook", "sign", "--secret-file", &secret])
        .ok();
    assert_ne!(
        r.stdout(),
        format!("{GITHUB_VECTOR}\n"),
        "the payload is signed byte for byte"
    );

    sb.pp()
        .run(&[
            "webhook",
            "sign",
            "--secret-file",
            "/no/such/secret",
            "--payload-file",
            &payload,
        ])
        .fails_one_line();
    assert!(!sb.home().exists(), "signing needs no local state");
}

/// `patchpanda webhook send --event ping` of `payload` to `url`.
fn send(sb: &Sandbox, payload: &std::ffi::OsStr, url: &str, extra: &[&str]) -> Run {
    let mut args: Vec<&std::ffi::OsStr> = ["webhook", "send", "--event", "ping", "--payload-file"]
        .iter()
        .map(|a| a.as_ref())
        .collect();
    args.push(payload);
    args.push("--url".as_ref());
    args.push(url.as_ref());
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    sb.pp().run(&args)
}

#[test]
fn webhook_send_signs_with_the_current_secret() {
    let sb = Sandbox::new();
    seeded(&sb, &sb.home(), b"send-secret-value", b"k");
    let before = super::rotation_ops::notices(&sb).len();
    let ingest = MiniServer::start(202, "accepted");
    let payload = format!("{FIXTURES}/ping.json");
    let body = std::fs::read(&payload).expect("fixture");
    let r = send(
        &sb,
        payload.as_ref(),
        &ingest.url("/webhook"),
        &["--delivery", "d-1"],
    )
    .ok();
    assert!(r.stdout().starts_with("202"), "{}", r.stdout());
    assert!(!r.stdout().contains("send-secret-value"));
    // The operator's read of the secret was announced first, so the
    // alerter records it instead of paging (make run's first command).
    let n = super::rotation_ops::notices(&sb);
    let announced = n[before..]
        .iter()
        .find(|v| v["event"] == "announced" && v["secret"] == "webhook-secret")
        .unwrap_or_else(|| panic!("no announcement: {n:?}"));
    assert!(announced["until"].is_string(), "{announced}");
    let seen = ingest.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/webhook")
    );
    assert_eq!(req.body, body, "sent byte for byte");
    assert_eq!(
        req.headers.get("x-github-event").map(String::as_str),
        Some("ping")
    );
    assert_eq!(
        req.headers.get("x-github-delivery").map(String::as_str),
        Some("d-1")
    );
    assert_eq!(
        req.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"send-secret-value");
    let want = format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, &body).as_ref())
    );
    assert_eq!(req.headers.get("x-hub-signature-256"), Some(&want));

    // A refusal is a failure; a non-JSON payload is refused before sending.
    let refusing = MiniServer::start(401, "bad signature");
    let line = send(&sb, payload.as_ref(), &refusing.url("/webhook"), &[]).fails_one_line();
    assert!(line.contains("401"), "{line}");
    let junk = sb.file("junk.txt", b"not json");
    send(&sb, junk.as_os_str(), &ingest.url("/webhook"), &[]).fails_one_line();
    assert_eq!(ingest.seen().len(), 1, "nothing sent for a bad payload");
}
