//! What the gcp backends of secrets, KMS and the bus share: the client
//! libraries' errors and well-known types turned into this crate's, and the
//! scrubbing of response buffers that held plaintext.

pub(crate) mod gax;

/// Overwrites a response buffer we own alone, so the plaintext does not
/// linger in freed memory. Shared buffers are left to their other owner.
pub(crate) fn zeroize_bytes(b: bytes::Bytes) {
    if let Ok(mut m) = b.try_into_mut() {
        zeroize::Zeroize::zeroize(m.as_mut());
    }
}
