//! `X-Hub-Signature-256`: `github::signature::{sign, verify, parse_header,
//! verify_digest}` and webhook-ingest's keyring check
//! (`WebhookKeyring::verify`: current, pending during a rotation, and
//! previous within its grace).
//!
//! Input: the secret on the first line, a candidate header on the second,
//! the body after.
//! Invariants: a body always verifies under its own signature, in any
//! letter case and surrounding blanks; one changed byte of the body, of the
//! secret or of the digest makes it fail; an arbitrary header verifies iff
//! it parses to the true digest; the keyring names the version that signed,
//! the pending one only while there is one, the previous one only within
//! its grace.
#![no_main]

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use libfuzzer_sys::fuzz_target;
use patchpanda_shared::SecretValue;
use patchpanda_shared::github::signature::{parse_header, sign, verify, verify_digest};
use patchpanda_shared::names;
use patchpanda_shared::secrets::cache::SecretSnapshot;
use patchpanda_shared::secrets::{AccessedVersion, Secret, SecretVersion, VersionState};
use webhook_ingest::secrets::WebhookKeyring;

fuzz_target!(|data: &[u8]| {
    let (secret, rest) = patchpanda_fuzz::first_line(data);
    let (header, body) = patchpanda_fuzz::first_line(rest);
    let header = String::from_utf8_lossy(header);

    let good = sign(secret, body);
    assert_eq!(good.len(), "sha256=".len() + 64, "{good}");
    assert!(good.starts_with("sha256="));
    assert!(
        good[7..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert!(verify(secret, body, &good));
    assert!(verify(
        secret,
        body,
        &format!("  {}\t", good.to_ascii_uppercase())
    ));
    let digest = parse_header(&good).expect("our own signature parses");
    assert!(verify_digest(secret, body, &digest));

    // One changed byte anywhere must fail. The position comes from the
    // input so the fuzzer explores it.
    let pick = body.first().copied().unwrap_or(0) as usize;
    if !body.is_empty() {
        let mut tampered = body.to_vec();
        tampered[pick % body.len()] ^= 0x01;
        assert!(!verify(secret, &tampered, &good), "tampered body verified");
    }
    if !secret.is_empty() {
        // A same-length change: HMAC zero-pads short keys, so only an
        // appended NUL could collide, never an in-place change.
        let mut other = secret.to_vec();
        other[pick % secret.len()] ^= 0x80;
        assert!(!verify(&other, body, &good), "another secret verified");
    }
    let mut wrong = digest;
    wrong[pick % 32] ^= 0x01;
    assert!(!verify_digest(secret, body, &wrong));

    // An arbitrary header: verifies exactly when it names the true digest.
    let parsed = parse_header(&header);
    assert_eq!(
        verify(secret, body, &header),
        parsed == Some(digest),
        "header {header:?}"
    );

    keyring(secret, body, &header, pick);
});

fn keyring(secret: &[u8], body: &[u8], header: &str, pick: usize) {
    let t0 = DateTime::from_timestamp(1_763_287_200, 0).unwrap_or_default();
    let until = t0 + TimeDelta::hours(1);
    let previous_secret = [secret, b"-previous"].concat();
    let pending_secret = [secret, b"-pending"].concat();
    let with_pending = pick % 2 == 0;
    let snapshot = snapshot(
        secret,
        &previous_secret,
        with_pending.then_some(&pending_secret[..]),
        until,
    );
    // Within the grace, at its last instant, and after it.
    let now = [t0, until - TimeDelta::nanoseconds(1), until][pick % 3];
    let in_grace = now < until;

    let current = WebhookKeyring::verify(&snapshot, body, &sign(secret, body), now);
    assert_eq!(current, Some(2), "the current secret's signature");
    let previous = WebhookKeyring::verify(&snapshot, body, &sign(&previous_secret, body), now);
    assert_eq!(
        previous,
        in_grace.then_some(1),
        "the previous secret's signature"
    );
    let pending = WebhookKeyring::verify(&snapshot, body, &sign(&pending_secret, body), now);
    assert_eq!(
        pending,
        with_pending.then_some(3),
        "the pending secret's signature"
    );

    let expected = if verify(secret, body, header) {
        Some(2)
    } else if with_pending && verify(&pending_secret, body, header) {
        Some(3)
    } else if in_grace && verify(&previous_secret, body, header) {
        Some(1)
    } else {
        None
    };
    assert_eq!(
        WebhookKeyring::verify(&snapshot, body, header, now),
        expected
    );
}

fn snapshot(
    current: &[u8],
    previous: &[u8],
    pending: Option<&[u8]>,
    until: DateTime<Utc>,
) -> SecretSnapshot {
    let id = "patchpanda-webhook-secret";
    let version = |number: u64, value: &[u8]| AccessedVersion {
        version: SecretVersion {
            secret: id.to_string(),
            number,
            state: VersionState::Enabled,
            create_time: until,
            destroy_time: None,
        },
        value: SecretValue::from(value),
    };
    SecretSnapshot {
        secret: Secret {
            id: id.to_string(),
            create_time: until,
            aliases: BTreeMap::from([
                ("current".to_string(), 2),
                ("previous".to_string(), 1),
                ("pending".to_string(), 3),
            ]),
            annotations: BTreeMap::from([(
                names::ANNOTATION_PREVIOUS_VALID_UNTIL.to_string(),
                until.to_rfc3339(),
            )]),
            etag: "1".to_string(),
            next_rotation_time: None,
            rotation_period: None,
        },
        current: version(2, current),
        previous: Some(version(1, previous)),
        pending: pending.map(|p| version(3, p)),
        fetched_at: Instant::now(),
    }
}
