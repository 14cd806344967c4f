//! Envelope encryption: each payload gets a fresh 256-bit data key
//! (AES-256-GCM with `ring`); only the data key goes to KMS, wrapped under the
//! same AAD, so KMS sees 32 bytes per payload and a sealed payload cannot be
//! moved to another context (row, file) without failing its integrity check.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Kms;
use crate::{Error, Result, SecretValue};

const DATA_KEY_LEN: usize = 32;

/// A sealed payload. Every field is safe to store: the data key is wrapped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The KMS key that wrapped the data key (its full resource name).
    pub key_name: String,
    #[serde(with = "crate::bus::b64")]
    pub wrapped_key: Vec<u8>,
    #[serde(with = "nonce_b64")]
    pub nonce: [u8; 12],
    /// AES-256-GCM ciphertext with its 16-byte tag appended.
    #[serde(with = "crate::bus::b64")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_name", &self.key_name)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Seals `plaintext` under a fresh data key wrapped by `kms`; `aad` is bound
/// to both the payload and the wrapped key.
pub async fn seal(kms: &dyn Kms, plaintext: &[u8], aad: &[u8]) -> Result<Sealed> {
    let rng = SystemRandom::new();
    let mut data_key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    rng.fill(&mut data_key[..])
        .map_err(|_| Error::Internal("no randomness for a data key".into()))?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .map_err(|_| Error::Internal("no randomness for a nonce".into()))?;
    let mut ciphertext = plaintext.to_vec();
    data_cipher(&data_key[..])?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut ciphertext,
        )
        .map_err(|_| Error::Internal("payload encryption failed".into()))?;
    let wrapped_key = kms.encrypt(&data_key[..], aad).await?;
    let key_name = kms.key_info().await?.name;
    Ok(Sealed {
        key_name,
        wrapped_key,
        nonce,
        ciphertext,
    })
}

/// Opens a sealed payload. Any sign of tampering (payload, wrapped key,
/// nonce, or a different AAD) is `DataLoss`; a KMS key version that is no
/// longer enabled stays `FailedPrecondition`.
pub async fn open(kms: &dyn Kms, sealed: &Sealed, aad: &[u8]) -> Result<SecretValue> {
    let data_key = kms
        .decrypt(&sealed.wrapped_key, aad)
        .await
        .map_err(|e| match e {
            Error::InvalidArgument(_) => {
                Error::DataLoss("sealed data key failed integrity check".into())
            }
            other => other,
        })?;
    if data_key.len() != DATA_KEY_LEN {
        return Err(Error::DataLoss(
            "sealed data key failed integrity check (wrong length)".into(),
        ));
    }
    let mut body = Zeroizing::new(sealed.ciphertext.clone());
    let len = data_cipher(data_key.expose())?
        .open_in_place(
            Nonce::assume_unique_for_key(sealed.nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| Error::DataLoss("sealed payload failed integrity check".into()))?
        .len();
    body.truncate(len);
    Ok(SecretValue::new(std::mem::take(&mut *body)))
}

fn data_cipher(key: &[u8]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| Error::DataLoss("sealed data key failed integrity check".into()))
}

mod nonce_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 12], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 12], D::Error> {
        let s = String::deserialize(d)?;
        let bytes = STANDARD.decode(s).map_err(serde::de::Error::custom)?;
        <[u8; 12]>::try_from(bytes.as_slice())
            .map_err(|_| serde::de::Error::custom("a nonce is 12 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::local::LocalKms;
    use crate::local::Home;

    fn kms(dir: &std::path::Path) -> LocalKms {
        LocalKms::open(&Home::open(dir).unwrap(), "test@patchpanda.local", None).unwrap()
    }

    #[tokio::test]
    async fn seals_and_opens() {
        let dir = tempfile::tempdir().unwrap();
        let kms = kms(dir.path());
        let sealed = seal(&kms, b"the payload", b"row-1").await.unwrap();
        assert_eq!(sealed.key_name, crate::kms::local::KEY_NAME);
        assert_eq!(sealed.ciphertext.len(), b"the payload".len() + 16);
        assert_ne!(&sealed.ciphertext[..11], b"the payload");
        let opened = open(&kms, &sealed, b"row-1").await.unwrap();
        assert_eq!(opened.expose(), b"the payload");
        // Same plaintext twice: different data keys and nonces.
        let again = seal(&kms, b"the payload", b"row-1").await.unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
        assert_ne!(again.wrapped_key, sealed.wrapped_key);
        let empty = seal(&kms, b"", b"").await.unwrap();
        assert!(open(&kms, &empty, b"").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn tamper_truncation_and_wrong_aad_are_data_loss() {
        let dir = tempfile::tempdir().unwrap();
        let kms = kms(dir.path());
        let sealed = seal(&kms, b"the payload", b"row-1").await.unwrap();
        let integrity = |r: Result<SecretValue>| match r {
            Err(Error::DataLoss(m)) => assert!(m.contains("failed integrity check"), "{m}"),
            other => panic!("expected DataLoss, got {:?}", other.map(|_| ())),
        };
        integrity(open(&kms, &sealed, b"row-2").await);
        let mut s = sealed.clone();
        s.ciphertext[0] ^= 0x80;
        integrity(open(&kms, &s, b"row-1").await);
        let mut s = sealed.clone();
        s.ciphertext.truncate(s.ciphertext.len() - 1);
        integrity(open(&kms, &s, b"row-1").await);
        let mut s = sealed.clone();
        s.ciphertext.clear();
        integrity(open(&kms, &s, b"row-1").await);
        let mut s = sealed.clone();
        s.nonce[3] ^= 1;
        integrity(open(&kms, &s, b"row-1").await);
        let mut s = sealed.clone();
        let n = s.wrapped_key.len() - 1;
        s.wrapped_key[n] ^= 1;
        integrity(open(&kms, &s, b"row-1").await);
        let mut s = sealed.clone();
        s.wrapped_key.truncate(5);
        integrity(open(&kms, &s, b"row-1").await);
        // Swapping wrapped keys between two sealed payloads fails too.
        let other = seal(&kms, b"other payload", b"row-1").await.unwrap();
        let mut s = sealed.clone();
        s.wrapped_key = other.wrapped_key;
        integrity(open(&kms, &s, b"row-1").await);
    }

    #[tokio::test]
    async fn opens_after_key_rotation_and_json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let kms = kms(dir.path());
        let sealed = seal(&kms, b"before rotation", b"a").await.unwrap();
        let v = kms.create_version().await.unwrap();
        kms.set_primary(v.number).await.unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains("before rotation"));
        let back: Sealed = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sealed);
        assert_eq!(
            open(&kms, &back, b"a").await.unwrap().expose(),
            b"before rotation"
        );
        let bad = json.replace(&base64_nonce(&sealed), "AAAA");
        assert!(serde_json::from_str::<Sealed>(&bad).is_err());
        let shown = format!("{sealed:?}");
        assert!(shown.contains("ciphertext_len"), "{shown}");
        assert!(!shown.contains('['), "no byte lists: {shown}");
    }

    fn base64_nonce(s: &Sealed) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s.nonce)
    }
}
