//! rotation-worker's Secret Manager event notifications:
//! `events::parse` over arbitrary attributes, and the resource-name helpers
//! `secret_id_of` and `version_of`.
//!
//! Input: the secret prefix on the first line (empty: `patchpanda-`), then
//! `key=value` attribute lines (`eventType`, `secretId`, `versionId`).
//! Invariants: the event acted on is the one named by `eventType` and is
//! about the secret `secretId` names; versions are positive and are the
//! name's last segment; names the helpers accept have the resource shape;
//! a refusal is one bounded line.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use patchpanda_shared::names;
use rotation_worker::events::{self, SecretEvent};

fuzz_target!(|data: &[u8]| {
    let (prefix, rest) = patchpanda_fuzz::first_line(data);
    let prefix = match String::from_utf8_lossy(prefix).into_owned() {
        p if p.is_empty() => names::DEFAULT_SECRET_PREFIX.to_string(),
        p => p,
    };
    let attributes: BTreeMap<String, String> =
        patchpanda_fuzz::key_values(rest).into_iter().collect();

    for value in attributes.values() {
        if let Some(id) = events::secret_id_of(value) {
            assert!(!id.is_empty() && !id.contains('/'));
            assert!(value.starts_with("projects/"), "{value:?}");
            assert!(value.contains(&format!("/secrets/{id}")), "{value:?}");
        }
        if let Some(n) = events::version_of(value) {
            assert!(n > 0);
            let (head, tail) = value.rsplit_once("/versions/").expect("a version name");
            assert_eq!(tail.parse::<u64>().ok(), Some(n));
            assert!(events::secret_id_of(head).is_some());
        }
    }

    let event_type = attributes.get("eventType").map(String::as_str);
    let id_of = || {
        attributes
            .get("secretId")
            .and_then(|r| events::secret_id_of(r))
            .and_then(|id| names::logical_name(&prefix, id))
            .map(String::from)
    };
    match events::parse(&attributes, &prefix) {
        Ok(SecretEvent::Rotate(kind)) => {
            assert_eq!(event_type, Some("SECRET_ROTATE"));
            let logical = id_of().expect("a rotated secret is one of ours");
            assert_eq!(
                kind,
                rotation_worker::kinds::Kind::parse(&logical).expect("a kind")
            );
        }
        Ok(SecretEvent::VersionAdded { kind, version }) => {
            assert_eq!(event_type, Some("SECRET_VERSION_ADD"));
            assert!(version > 0);
            assert!(
                kind.is_upload(),
                "{kind:?}: its versions come from the worker"
            );
            let logical = id_of().expect("an added version is of one of ours");
            assert_eq!(
                kind,
                rotation_worker::kinds::Kind::parse(&logical).expect("a kind")
            );
            let version_id = attributes.get("versionId").expect("versionId");
            assert_eq!(events::version_of(version_id), Some(version));
        }
        Ok(SecretEvent::Ignored { event_type: t, why }) => {
            assert!(!why.is_empty());
            assert!(t.chars().count() <= 64);
            assert!(event_type.is_some_and(|e| e.starts_with(&t)));
        }
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "multi-line refusal: {m:?}");
            // The message quotes at most 200 characters of the input, each
            // escaped to at most 10 (`\u{10ffff}`).
            assert!(m.len() <= 2400, "refusal of {} bytes", m.len());
        }
    }
});
