//! A secret's bytes: redacted in `Debug`, zeroized on drop, compared in
//! constant time.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Secret bytes. There is deliberately no `Display` and no `Serialize`.
#[derive(Clone, Default)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw bytes; keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as UTF-8, for PEM keys and hex webhook secrets.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for SecretValue {}

impl From<Vec<u8>> for SecretValue {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl From<&[u8]> for SecretValue {
    fn from(v: &[u8]) -> Self {
        Self::new(v.to_vec())
    }
}

impl From<String> for SecretValue {
    fn from(v: String) -> Self {
        Self::new(v.into_bytes())
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let v = SecretValue::from("hunter2".to_string());
        let shown = format!("{v:?} {:#?}", v);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn equality_compares_contents() {
        assert_eq!(
            SecretValue::from(&b"abc"[..]),
            SecretValue::from(&b"abc"[..])
        );
        assert_ne!(
            SecretValue::from(&b"abc"[..]),
            SecretValue::from(&b"abd"[..])
        );
        assert_ne!(
            SecretValue::from(&b"abc"[..]),
            SecretValue::from(&b"abcd"[..])
        );
    }
}
