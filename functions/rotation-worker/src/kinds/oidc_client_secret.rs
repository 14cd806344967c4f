//! The OIDC client secret: issued by the identity provider, uploaded by a
//! person, checked for plausibility here (there is no provider to ask).

use patchpanda_shared::SecretValue;

use super::StepError;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 512;

/// Non-empty printable ASCII of a plausible length. A trailing newline (from
/// `echo` into a file) is refused rather than trimmed: the provider would see
/// a different secret than the one stored.
pub(crate) fn validate(value: &SecretValue) -> Result<(), StepError> {
    let Some(s) = value.expose_str() else {
        return Err(StepError::permanent("the client secret is not UTF-8 text"));
    };
    if s.is_empty() {
        return Err(StepError::permanent("the client secret is empty"));
    }
    if let Some(pos) = s.chars().position(|c| !c.is_ascii_graphic()) {
        return Err(StepError::permanent(format!(
            "the client secret has whitespace or a non-printable character at position {pos} (a trailing newline? upload it with printf '%s')"
        )));
    }
    if !(MIN_LEN..=MAX_LEN).contains(&s.len()) {
        return Err(StepError::permanent(format!(
            "the client secret is {} characters long; expected {MIN_LEN} to {MAX_LEN}",
            s.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &[u8]) -> Result<(), StepError> {
        validate(&SecretValue::from(s))
    }

    #[test]
    fn plausible_secrets_pass_and_the_rest_say_why() {
        assert!(check(b"GOCSPX-abcdefghijklmnop_1234").is_ok());
        assert!(check(b"").unwrap_err().message.contains("empty"));
        assert!(
            check(b"short")
                .unwrap_err()
                .message
                .contains("5 characters")
        );
        assert!(
            check(b"abcdefghij\n")
                .unwrap_err()
                .message
                .contains("position 10")
        );
        assert!(
            check(&[0xff, 0xfe, 0x41])
                .unwrap_err()
                .message
                .contains("UTF-8")
        );
        assert!(check("x".repeat(513).as_bytes()).is_err());
        let e = check(b"has a space in it").unwrap_err();
        assert!(!e.retryable && !e.message.contains("has a space"));
    }
}
