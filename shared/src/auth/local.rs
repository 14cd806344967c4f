//! The local OIDC issuer: stands in for Google's token service on the local
//! backend. The local bus, the local scheduler and `patchpanda token` mint
//! with it; the functions' [`super::PushVerifier`] checks against its public
//! key. One RSA key per PATCHPANDA_HOME, shared by every process using it.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::{Error, Result, names};

/// Where the key lives, relative to PATCHPANDA_HOME.
pub const KEY_FILE: &str = "oidc/issuer-key.pem";

/// The local issuer's signing key. Debug never shows key material.
pub struct LocalIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
    kid: String,
}

impl fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The claims of a Google-style OIDC ID token.
#[derive(Serialize)]
struct MintClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    azp: &'a str,
    email: &'a str,
    email_verified: bool,
    iat: u64,
    exp: u64,
}

impl LocalIssuer {
    /// Loads the key under `home`, generating it on first use. Processes that
    /// start together race to publish their key with a no-replace link, then
    /// all read back whichever won, so they agree on one key.
    pub fn open_or_create(home: &Path) -> Result<LocalIssuer> {
        Self::open_or_create_with(home, generate_pem)
    }

    fn open_or_create_with(
        home: &Path,
        generate: impl FnOnce() -> Result<Zeroizing<String>>,
    ) -> Result<LocalIssuer> {
        let path = home.join(KEY_FILE);
        if let Some(pem) = read_key(&path)? {
            return Self::from_pem(&pem, &path);
        }
        let dir = path
            .parent()
            .ok_or_else(|| Error::Internal(format!("no parent folder for {}", path.display())))?;
        create_private_dir(dir)?;
        let pem = generate()?;
        publish(dir, &path, pem.as_bytes())?;
        let pem = read_key(&path)?.ok_or_else(|| {
            Error::Unavailable(format!("{} vanished right after creation", path.display()))
        })?;
        Self::from_pem(&pem, &path)
    }

    fn from_pem(pem: &[u8], path: &Path) -> Result<LocalIssuer> {
        let corrupt = |what: &str| {
            Error::DataLoss(format!("local OIDC issuer key {}: {what}", path.display()))
        };
        let encoding = EncodingKey::from_rsa_pem(pem).map_err(|_| corrupt("not an RSA key"))?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
            .map_err(|_| corrupt("public key not derivable"))?;
        // The RFC 7638 thumbprint names the key without any extra state, so
        // every process derives the same kid from the same file.
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|_| corrupt("bad public key"))?;
        Ok(LocalIssuer {
            encoding,
            decoding,
            jwk,
            kid,
        })
    }

    /// A signed RS256 ID token for `audience`, as Google would mint for the
    /// service account `email`.
    pub fn mint(&self, audience: &str, email: &str, ttl: Duration) -> Result<String> {
        if audience.trim().is_empty() {
            return Err(Error::InvalidArgument("token audience is empty".into()));
        }
        if email.trim().is_empty() {
            return Err(Error::InvalidArgument("token email is empty".into()));
        }
        if ttl.is_zero() {
            return Err(Error::InvalidArgument("token lifetime is zero".into()));
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::Internal("system clock is before 1970".into()))?
            .as_secs();
        let claims = MintClaims {
            iss: names::LOCAL_ISSUER,
            aud: audience,
            sub: email,
            azp: email,
            email,
            email_verified: true,
            iat,
            exp: iat.saturating_add(ttl.as_secs().max(1)),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing a local OIDC token failed: {e}")))
    }

    /// The key id put in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK set, the shape Google publishes its keys in.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// The public key, ready for verification.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

fn read_key(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("cannot read", path, &e)),
    }
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> Error {
    Error::Unavailable(format!("{what} {}: {e}", path.display()))
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| io_error("cannot create", dir, &e))
}

fn generate_pem() -> Result<Zeroizing<String>> {
    let pair = KeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| Error::Internal("RSA key generation failed".into()))?;
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
        .map_err(|_| Error::Internal("RSA key encoding failed".into()))?;
    let pem = pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec());
    Ok(Zeroizing::new(pem::encode(&pem)))
}

/// Writes the key to a private temp file, then links it into place only if
/// no key exists yet: a reader never sees a half-written file, and the first
/// writer wins.
fn publish(dir: &Path, path: &Path, pem: &[u8]) -> Result<()> {
    let tmp = temp_path(dir);
    let result = write_private(&tmp, pem).and_then(|()| link_no_replace(&tmp, path));
    let _ = fs::remove_file(&tmp);
    result
}

fn temp_path(dir: &Path) -> PathBuf {
    dir.join(format!(
        ".issuer-key.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

fn write_private(tmp: &Path, pem: &[u8]) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(tmp)
        .map_err(|e| io_error("cannot create", tmp, &e))?;
    file.write_all(pem)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("cannot write", tmp, &e))
}

fn link_no_replace(tmp: &Path, path: &Path) -> Result<()> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        // Another process published first; its key is the one to use.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        // Filesystems without hard links: a rename is still atomic for
        // readers; two processes racing here may briefly disagree, and the
        // re-read after publishing settles on the survivor.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
            ) && !path.exists() =>
        {
            fs::rename(tmp, path).map_err(|e| io_error("cannot create", path, &e))
        }
        Err(e) => Err(io_error("cannot create", path, &e)),
    }
}

/// Ready-made keys for tests: RSA generation in an unoptimised build takes
/// seconds, so each test binary generates two keys once and copies them.
#[cfg(test)]
pub(crate) mod test_keys {
    use super::*;
    use std::sync::OnceLock;

    fn pems() -> &'static [Zeroizing<String>; 2] {
        static PEMS: OnceLock<[Zeroizing<String>; 2]> = OnceLock::new();
        PEMS.get_or_init(|| {
            let other = std::thread::spawn(|| generate_pem().unwrap());
            let first = generate_pem().unwrap();
            [first, other.join().unwrap()]
        })
    }

    pub(crate) fn pem(i: usize) -> Zeroizing<String> {
        pems()[i % 2].clone()
    }

    /// Puts test key `i` where [`LocalIssuer::open_or_create`] looks.
    pub(crate) fn seed(home: &Path, i: usize) {
        create_private_dir(&home.join("oidc")).unwrap();
        publish(&home.join("oidc"), &home.join(KEY_FILE), pem(i).as_bytes()).unwrap();
    }

    /// A fresh home holding test key `i`.
    pub(crate) fn home_with_key(i: usize) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        seed(home.path(), i);
        home
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Validation;

    #[derive(serde::Deserialize)]
    struct Claims {
        iss: String,
        aud: String,
        email: String,
        email_verified: bool,
        iat: u64,
        exp: u64,
    }

    #[test]
    fn creates_once_and_reopens_the_same_key() {
        let home = tempfile::tempdir().unwrap();
        let a = LocalIssuer::open_or_create(home.path()).unwrap();
        let b = LocalIssuer::open_or_create(home.path()).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.jwks(), b.jwks());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(home.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(home.path().join("oidc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }

    #[test]
    fn concurrent_starts_agree_on_one_key() {
        let home = tempfile::tempdir().unwrap();
        let kids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let home = home.path();
                    // Two different candidate keys race to be published.
                    s.spawn(move || {
                        LocalIssuer::open_or_create_with(home, || Ok(test_keys::pem(i)))
                            .unwrap()
                            .kid()
                            .to_string()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(kids.iter().all(|k| k == &kids[0]), "{kids:?}");
    }

    #[test]
    fn minted_tokens_verify_with_the_public_key() {
        let home = test_keys::home_with_key(0);
        let issuer = LocalIssuer::open_or_create(home.path()).unwrap();
        let token = issuer
            .mint(
                "http://127.0.0.1:8081/rotate",
                names::PRINCIPAL_SCHEDULER,
                Duration::from_secs(300),
            )
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.kid.as_deref(), Some(issuer.kid()));
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["http://127.0.0.1:8081/rotate"]);
        v.set_issuer(&[names::LOCAL_ISSUER]);
        let got = jsonwebtoken::decode::<Claims>(&token, issuer.decoding_key(), &v).unwrap();
        assert_eq!(got.claims.iss, names::LOCAL_ISSUER);
        assert_eq!(got.claims.aud, "http://127.0.0.1:8081/rotate");
        assert_eq!(got.claims.email, names::PRINCIPAL_SCHEDULER);
        assert!(got.claims.email_verified);
        assert_eq!(got.claims.exp - got.claims.iat, 300);
        // The published JWK must verify too, as a remote verifier would use it.
        let from_jwk = DecodingKey::from_jwk(&issuer.jwks().keys[0]).unwrap();
        assert!(jsonwebtoken::decode::<Claims>(&token, &from_jwk, &v).is_ok());
    }

    #[test]
    fn bad_inputs_and_corrupt_files_are_refused() {
        let home = test_keys::home_with_key(0);
        let issuer = LocalIssuer::open_or_create(home.path()).unwrap();
        assert!(matches!(
            issuer.mint("", "a@b", Duration::from_secs(60)),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            issuer.mint("http://x", "a@b", Duration::ZERO),
            Err(Error::InvalidArgument(_))
        ));
        let other = tempfile::tempdir().unwrap();
        fs::create_dir_all(other.path().join("oidc")).unwrap();
        fs::write(other.path().join(KEY_FILE), "not a key").unwrap();
        let err = LocalIssuer::open_or_create(other.path()).unwrap_err();
        assert!(matches!(err, Error::DataLoss(_)), "{err}");
        assert!(!format!("{issuer:?}").contains("PRIVATE"));
    }
}
