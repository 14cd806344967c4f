//! The App's JWT: RS256, `iat` 60 s in the past (GitHub's advice against
//! clock drift), `exp` 9 min ahead (GitHub refuses more than 10), `iss` the
//! App id or client id.

use aws_lc_rs::signature::RsaKeyPair;
use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::GitHubError;
use crate::SecretValue;

/// How far `iat` is set in the past.
pub const BACKDATE_SECS: i64 = 60;
/// How far `exp` is set in the future (GitHub's limit is 10 minutes).
pub const LIFETIME_SECS: i64 = 9 * 60;

/// The claims GitHub reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// A parsed private key plus the issuer, to mint many JWTs from one parse.
pub struct AppSigner {
    iss: String,
    key: EncodingKey,
    modulus_bits: u32,
}

impl AppSigner {
    pub fn new(app_id: &str, private_key_pem: &SecretValue) -> Result<Self, GitHubError> {
        let app_id = app_id.trim();
        if app_id.is_empty() {
            return Err(GitHubError::InvalidInput(
                "the GitHub App id is empty".into(),
            ));
        }
        let modulus_bits = validate_private_key(private_key_pem)?;
        // Validation above proved the PEM parses; jsonwebtoken unwraps PKCS#8
        // to the PKCS#1 form its signer wants.
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose()).map_err(|_| {
            GitHubError::InvalidKey("the RSA key could not be loaded for signing".into())
        })?;
        Ok(Self {
            iss: app_id.to_string(),
            key,
            modulus_bits,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.iss
    }

    pub fn modulus_bits(&self) -> u32 {
        self.modulus_bits
    }

    /// A JWT valid from `now - 60 s` to `now + 9 min` (`now` in Unix seconds).
    pub fn mint_at(&self, now: i64) -> Result<String, GitHubError> {
        let claims = Claims {
            iat: now - BACKDATE_SECS,
            exp: now + LIFETIME_SECS,
            iss: self.iss.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|_| GitHubError::InvalidKey("signing the App JWT failed".into()))
    }

    pub fn mint(&self) -> Result<String, GitHubError> {
        self.mint_at(Utc::now().timestamp())
    }
}

impl std::fmt::Debug for AppSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSigner")
            .field("iss", &self.iss)
            .field("modulus_bits", &self.modulus_bits)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// A fresh App JWT. Parses the key each time; hold an [`AppSigner`] to mint
/// many.
pub fn mint(app_id: &str, private_key_pem: &SecretValue) -> Result<String, GitHubError> {
    AppSigner::new(app_id, private_key_pem)?.mint()
}

/// Checks that the PEM holds one usable RSA private key, PKCS#1
/// (`BEGIN RSA PRIVATE KEY`, what GitHub issues) or PKCS#8
/// (`BEGIN PRIVATE KEY`), and returns its modulus size in bits. Errors
/// describe the problem, never the key.
pub fn validate_private_key(pem: &SecretValue) -> Result<u32, GitHubError> {
    let parsed = pem::parse(pem.expose()).map_err(|_| {
        GitHubError::InvalidKey("not a PEM document (expected BEGIN RSA PRIVATE KEY)".into())
    })?;
    // Keep the DER out of reach of the allocator's reuse once we are done.
    let der = zeroize::Zeroizing::new(parsed.contents().to_vec());
    let pair = match parsed.tag() {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "ENCRYPTED PRIVATE KEY" => {
            return Err(GitHubError::InvalidKey(
                "the key is passphrase-encrypted; store it unencrypted".into(),
            ));
        }
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(GitHubError::InvalidKey(format!(
                "expected BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY, found BEGIN {shown}"
            )));
        }
    }
    .map_err(|rejected| {
        GitHubError::InvalidKey(format!(
            "not an acceptable RSA private key ({})",
            rejected.description_()
        ))
    })?;
    let bits = pair.public_modulus_len() * 8;
    u32::try_from(bits).map_err(|_| GitHubError::InvalidKey("the key is implausibly large".into()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::KeyPair;
    use jsonwebtoken::{DecodingKey, Validation};

    /// A fresh 2048-bit key as (PKCS#1 PEM, PKCS#8 PEM, public key DER).
    pub(crate) fn test_key() -> (SecretValue, SecretValue, Vec<u8>) {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap().as_ref().to_vec();
        let pkcs1 = pkcs1_from_pkcs8(&pkcs8);
        let public = pair.public_key().as_ref().to_vec();
        let pem1 = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", pkcs1));
        let pem8 = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8));
        (SecretValue::from(pem1), SecretValue::from(pem8), public)
    }

    /// PKCS#8 wraps the PKCS#1 key in an OCTET STRING after the version and
    /// algorithm; this walks just enough DER to pull it out.
    fn pkcs1_from_pkcs8(der: &[u8]) -> Vec<u8> {
        fn header(d: &[u8]) -> (u8, usize, usize) {
            let tag = d[0];
            if d[1] & 0x80 == 0 {
                return (tag, 2, d[1] as usize);
            }
            let n = (d[1] & 0x7f) as usize;
            let len = d[2..2 + n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize);
            (tag, 2 + n, len)
        }
        let (_, hl, _) = header(der);
        let mut rest = &der[hl..];
        loop {
            let (tag, hl, len) = header(rest);
            if tag == 0x04 {
                return rest[hl..hl + len].to_vec();
            }
            rest = &rest[hl + len..];
        }
    }

    #[test]
    fn mints_a_jwt_github_would_accept() {
        let (pkcs1, pkcs8, public) = test_key();
        for pem in [&pkcs1, &pkcs8] {
            assert_eq!(validate_private_key(pem).unwrap(), 2048);
            let signer = AppSigner::new("12345", pem).unwrap();
            let now = 1_700_000_000;
            let jwt = signer.mint_at(now).unwrap();
            let mut v = Validation::new(Algorithm::RS256);
            v.validate_exp = false;
            v.set_required_spec_claims(&["iss"]);
            let got = jsonwebtoken::decode::<Claims>(&jwt, &DecodingKey::from_rsa_der(&public), &v)
                .unwrap()
                .claims;
            assert_eq!(got.iss, "12345");
            assert_eq!(got.iat, now - 60);
            assert!(got.exp - now <= 600 && got.exp > now);
            assert!(got.exp - got.iat <= 600);
        }
        let fresh = mint("Iv1.abc", &pkcs1).unwrap();
        assert_eq!(fresh.split('.').count(), 3);
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let (pkcs1, _, _) = test_key();
        let body = pkcs1.expose_str().unwrap().to_string();
        let mut broken = body.clone();
        broken.replace_range(100..140, &"A".repeat(40));
        let cases = [
            SecretValue::from("not a key at all".to_string()),
            SecretValue::from(broken),
            SecretValue::from(body.replace("RSA PRIVATE KEY", "CERTIFICATE")),
            SecretValue::from(body.replace("RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY")),
            SecretValue::from(body.replace("RSA PRIVATE KEY", "PRIVATE KEY")),
        ];
        for case in cases {
            let err = validate_private_key(&case).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(matches!(err, GitHubError::InvalidKey(_)), "{shown}");
            let b64_line = body.lines().nth(1).unwrap();
            assert!(!shown.contains(&b64_line[..20]), "{shown}");
            assert!(AppSigner::new("1", &case).is_err());
        }
        let signer = AppSigner::new("1", &pkcs1).unwrap();
        assert!(!format!("{signer:?}").contains(&body.lines().nth(1).unwrap()[..20]));
    }
}
