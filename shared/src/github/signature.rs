//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body keyed with the webhook
//! secret, sent as `sha256=<hex>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header GitHub signs deliveries with.
pub const HEADER: &str = "x-hub-signature-256";
/// The legacy SHA-1 header; never enough on its own.
pub const LEGACY_HEADER: &str = "x-hub-signature";
const PREFIX: &str = "sha256=";

/// `sha256=<lowercase hex>` of `body` keyed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = new_mac(secret);
    mac.update(body);
    format!("{PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is a valid `X-Hub-Signature-256` of `body` under
/// `secret`. The digest comparison is constant time.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    match parse_header(header) {
        Some(digest) => verify_digest(secret, body, &digest),
        None => false,
    }
}

/// The 32 digest bytes of a `sha256=<hex>` header, or None if malformed.
/// Parse once, then try each secret with [`verify_digest`].
pub fn parse_header(header: &str) -> Option<[u8; 32]> {
    let header = header.trim();
    let hex_part = header
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .and_then(|_| header.get(PREFIX.len()..))?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut digest).ok()?;
    Some(digest)
}

/// Constant-time check of a parsed digest against `body` under `secret`.
pub fn verify_digest(secret: &[u8], body: &[u8], digest: &[u8; 32]) -> bool {
    let mut mac = new_mac(secret);
    mac.update(body);
    mac.verify_slice(digest).is_ok()
}

fn new_mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented test vector (validating-webhook-deliveries.md).
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const PAYLOAD: &[u8] = b"Hello, World!";
    const EXPECTED: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn matches_githubs_test_vector() {
        assert_eq!(sign(SECRET, PAYLOAD), EXPECTED);
        assert!(verify(SECRET, PAYLOAD, EXPECTED));
        assert!(verify(
            SECRET,
            PAYLOAD,
            &EXPECTED.to_uppercase().replace("SHA256=", "sha256=")
        ));
    }

    #[test]
    fn rejects_anything_else() {
        assert!(!verify(SECRET, b"Hello, World?", EXPECTED));
        assert!(!verify(b"another secret", PAYLOAD, EXPECTED));
        assert!(!verify(SECRET, PAYLOAD, &EXPECTED[7..]));
        assert!(!verify(
            SECRET,
            PAYLOAD,
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d"
        ));
        assert!(!verify(SECRET, PAYLOAD, &EXPECTED[..EXPECTED.len() - 2]));
        assert!(!verify(SECRET, PAYLOAD, ""));
        assert!(!verify(SECRET, PAYLOAD, "sha256=zz"));
        assert!(!verify(SECRET, PAYLOAD, "sha256=é"));
    }
}
