//! `secrets::VersionRef::from_str`: the version argument of the CLI and of
//! every secret read (a number, `latest`, or an alias).
//!
//! Input: the text as-is (invalid UTF-8 is replaced).
//! Invariants: an accepted reference prints as text that parses back to
//! it; numbers are what `u64` reads and never 0; aliases keep Secret
//! Manager's alias rules (lowercase letter first, then lowercase letters,
//! digits, `-` and `_`, at most 63); a refusal is an InvalidArgument on one
//! line.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use patchpanda_shared::Error;
use patchpanda_shared::secrets::VersionRef;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match VersionRef::from_str(&text) {
        Ok(v) => {
            match &v {
                VersionRef::Number(n) => {
                    assert!(*n > 0);
                    assert_eq!(text.parse::<u64>().ok(), Some(*n));
                }
                VersionRef::Latest => assert_eq!(text, "latest"),
                VersionRef::Alias(a) => {
                    assert_eq!(a.as_str(), text);
                    assert!(!a.is_empty() && a.len() <= 63);
                    assert!(a.starts_with(|c: char| c.is_ascii_lowercase()));
                    assert!(a.chars().all(|c| c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || c == '-'
                        || c == '_'));
                }
            }
            let printed = v.to_string();
            assert_eq!(
                VersionRef::from_str(&printed).ok(),
                Some(v.clone()),
                "{printed:?}"
            );
        }
        Err(Error::InvalidArgument(m)) => assert!(!m.contains('\n'), "multi-line: {m:?}"),
        Err(other) => panic!("a bad version must be InvalidArgument, got {other:?}"),
    }
});
