//! Secret Manager's naming and size rules, in one place, so the local store,
//! the gcp backend and [`VersionRef`] parsing accept exactly the same things
//! (docs/gcp-behavior.md, Secret Manager, has each rule's source):
//!
//! - secret id: 1-255 of `[A-Za-z0-9_-]`;
//! - version alias: 1-63 of `[A-Za-z0-9_-]`, a letter first, not `latest` or
//!   `new` in any case; at most 50 per secret;
//! - annotation key: 1-63 of `[A-Za-z0-9._-]`, alphanumeric at both ends;
//!   keys and values together under 16 KiB;
//! - payload: 1 byte to 64 KiB.

use super::{SecretUpdate, VersionRef};
use crate::{Error, Result};

/// Secret Manager's payload limit.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Secret Manager's limit of aliases per secret.
pub const MAX_ALIASES: usize = 50;
/// Secret Manager's limit on the total size of annotation keys and values.
pub const MAX_ANNOTATIONS_BYTES: usize = 16 * 1024;
/// Longest secret id.
pub const MAX_SECRET_ID: usize = 255;
/// Longest alias and annotation key.
pub const MAX_ALIAS: usize = 63;

/// The version segment that names the newest version.
pub const LATEST: &str = "latest";

/// A string as it may appear in an error or an audit entry: an invalid one
/// is cut short so a huge bad argument cannot bloat either.
pub fn shown(s: &str) -> &str {
    match s.char_indices().nth(MAX_SECRET_ID) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn shown_short(s: &str) -> String {
    s.chars().take(MAX_ALIAS + 1).collect()
}

pub fn validate_secret_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SECRET_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "secret id {:?}: expected 1-255 of [A-Za-z0-9_-]",
            shown(id)
        )))
    }
}

/// Whether `alias` may be set as a version alias (and so read back).
pub fn validate_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= MAX_ALIAS
        && alias.starts_with(|c: char| c.is_ascii_alphabetic())
        && alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        // Reserved in any case ("You cannot use Latest or New
        // (case-insensitive) as an alias name").
        && !alias.eq_ignore_ascii_case(LATEST)
        && !alias.eq_ignore_ascii_case("new");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "version alias {:?}: expected 1-63 of [A-Za-z0-9_-] starting with a letter, not `latest` or `new`",
            shown_short(alias)
        )))
    }
}

pub fn validate_annotation_key(key: &str) -> Result<()> {
    let b = key.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_ALIAS
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "annotation key {:?}: expected 1-63 of [A-Za-z0-9._-], alphanumeric at both ends",
            shown_short(key)
        )))
    }
}

pub fn validate_payload(data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Err(Error::InvalidArgument(
            "Secret Payload cannot be empty.".into(),
        ));
    }
    if data.len() > MAX_PAYLOAD {
        return Err(Error::InvalidArgument(format!(
            "Secret Payload is {} bytes; the limit is {MAX_PAYLOAD}",
            data.len()
        )));
    }
    Ok(())
}

/// Everything about an update that can be checked without the secret.
pub fn validate_update(update: &SecretUpdate) -> Result<()> {
    if update.aliases.is_none() && update.annotations.is_none() {
        return Err(Error::InvalidArgument(
            "the update names no field (versionAliases or annotations)".into(),
        ));
    }
    if let Some(aliases) = &update.aliases {
        if aliases.len() > MAX_ALIASES {
            return Err(Error::InvalidArgument(format!(
                "{} version aliases; at most {MAX_ALIASES} are allowed",
                aliases.len()
            )));
        }
        for (alias, &n) in aliases {
            validate_alias(alias)?;
            if n == 0 {
                return Err(Error::InvalidArgument(format!(
                    "version alias {alias:?} points to version 0; versions start at 1"
                )));
            }
        }
    }
    if let Some(annotations) = &update.annotations {
        let mut total = 0usize;
        for (k, v) in annotations {
            validate_annotation_key(k)?;
            total += k.len() + v.len();
        }
        if total >= MAX_ANNOTATIONS_BYTES {
            return Err(Error::InvalidArgument(format!(
                "annotations total {total} bytes; they must be under {MAX_ANNOTATIONS_BYTES}"
            )));
        }
    }
    Ok(())
}

/// Checks a reference before it goes into a resource name: a number from
/// 1, `latest`, or an alias that could have been set.
pub fn validate_version(version: &VersionRef) -> Result<()> {
    match version {
        VersionRef::Number(0) => Err(Error::InvalidArgument("version numbers start at 1".into())),
        VersionRef::Number(_) | VersionRef::Latest => Ok(()),
        VersionRef::Alias(a) => validate_alias(a),
    }
}

/// Parses a version segment: a number, `latest`, or an alias by
/// [`validate_alias`], so every alias that can be set can be named.
pub fn parse_version(s: &str) -> Result<VersionRef> {
    if s == LATEST {
        return Ok(VersionRef::Latest);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u64>() {
            Ok(0) => Err(Error::InvalidArgument("version numbers start at 1".into())),
            Ok(n) => Ok(VersionRef::Number(n)),
            Err(_) => Err(Error::InvalidArgument(format!(
                "version {:?} is too large a number",
                shown_short(s)
            ))),
        };
    }
    match validate_alias(s) {
        Ok(()) => Ok(VersionRef::Alias(s.to_string())),
        Err(_) => Err(Error::InvalidArgument(format!(
            "version {:?} is neither a number, `latest`, nor an alias",
            shown_short(s)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn every_alias_that_can_be_set_can_be_parsed_back() {
        for alias in [
            "current",
            "Current",
            "PENDING",
            "a",
            "x-1_Y",
            &"a".repeat(63),
        ] {
            validate_alias(alias).unwrap();
            assert_eq!(
                parse_version(alias).unwrap(),
                VersionRef::Alias(alias.to_string()),
                "{alias}"
            );
        }
    }

    #[test]
    fn reserved_and_malformed_aliases_are_refused_everywhere() {
        for bad in [
            "latest", "Latest", "LATEST", "new", "NEW", "New", "", "1abc", "-a", "_a", "a b",
            "a/b", "a.b", "ünï",
        ] {
            assert!(validate_alias(bad).is_err(), "{bad:?} can be set");
            if bad != "latest" {
                assert!(parse_version(bad).is_err(), "{bad:?} parses");
            }
        }
        assert!(validate_alias(&"a".repeat(64)).is_err());
        assert!(parse_version(&"a".repeat(64)).is_err());
    }

    #[test]
    fn numbers_and_latest() {
        assert_eq!(parse_version("latest").unwrap(), VersionRef::Latest);
        assert_eq!(parse_version("7").unwrap(), VersionRef::Number(7));
        assert!(parse_version("0").is_err());
        assert!(parse_version("99999999999999999999999").is_err());
        assert!(validate_version(&VersionRef::Number(0)).is_err());
        assert!(validate_version(&VersionRef::alias("Current")).is_ok());
        assert!(validate_version(&VersionRef::alias("Latest")).is_err());
    }

    #[test]
    fn ids_payloads_and_updates() {
        validate_secret_id(&"A_z-9".repeat(51)).unwrap();
        for bad in ["", "a/b", "with space", "dot.ted", "ünï", &"x".repeat(256)] {
            assert!(validate_secret_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_payload(b"").is_err());
        validate_payload(&[0; MAX_PAYLOAD]).unwrap();
        assert!(validate_payload(&[0; MAX_PAYLOAD + 1]).is_err());
        assert!(validate_update(&SecretUpdate::default()).is_err());
        let big = SecretUpdate {
            aliases: None,
            annotations: Some(BTreeMap::from([(
                "k".to_string(),
                "v".repeat(MAX_ANNOTATIONS_BYTES),
            )])),
        };
        assert!(validate_update(&big).is_err());
        assert_eq!(shown(&"x".repeat(1000)).len(), MAX_SECRET_ID);
    }
}
