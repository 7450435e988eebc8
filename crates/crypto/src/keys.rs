//! The root key and the purpose keys derived from it, and AES-256-GCM sealing with a
//! versioned header.
//!
//! The root key is 32 random bytes from a 0600 file or an environment variable (an external
//! KMS plugs in behind the same type later). Purpose keys are derived with HKDF-SHA256
//! (RFC 5869) under a distinct `info` per purpose, so a key for TOTP seeds can never
//! decrypt anything else. Key material lives in `Zeroizing` buffers and never prints.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{RandomError, fill_random};

/// Header byte 0: format version.
const FORMAT_V1: u8 = 1;
/// Header byte 1: algorithm identifier.
const ALG_AES_256_GCM: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 2 + 4 + NONCE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key must be exactly 32 bytes")]
    Length,
    #[error("the ciphertext is malformed, was made with another key, or was moved")]
    Open,
    #[error("encryption failed")]
    Seal,
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// 32 bytes of key material. `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
    pub fn generate() -> Result<Self, RandomError> {
        let mut k = Zeroizing::new([0u8; 32]);
        fill_random(k.as_mut())?;
        Ok(Self(k))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Length)?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The raw bytes, for writing the key file once.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// HKDF-SHA256 (RFC 5869) expansion of this key for one purpose.
    pub fn derive(&self, purpose: &str) -> SecretKey {
        let hk = Hkdf::<Sha256>::new(Some(b"telesafe-key-derivation-v1"), self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hk.expand(purpose.as_bytes(), out.as_mut());
        SecretKey(out)
    }

    /// HMAC-SHA256 of `data` under this key (for keyed hashes such as recovery codes).
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref())
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        m.update(data);
        m.finalize().into_bytes().into()
    }
}

/// An AES-256-GCM key with the version number written into every ciphertext it makes.
#[derive(Debug, Clone)]
pub struct SealingKey {
    key: SecretKey,
    version: u32,
}

impl SealingKey {
    pub fn new(key: SecretKey, version: u32) -> Self {
        Self { key, version }
    }

    /// Encrypts `plaintext`, binding `aad` (which is not stored: the caller must present it
    /// again to open). Output: version, algorithm, key version, random nonce, ciphertext.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let cipher = Aes256Gcm::new_from_slice(self.key.0.as_ref()).map_err(|_| KeyError::Seal)?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| KeyError::Seal)?;
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.extend_from_slice(&[FORMAT_V1, ALG_AES_256_GCM]);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`SealingKey::seal`] made with the same key and `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.len() < HEADER_LEN || sealed[0] != FORMAT_V1 || sealed[1] != ALG_AES_256_GCM {
            return Err(KeyError::Open);
        }
        let version = u32::from_be_bytes([sealed[2], sealed[3], sealed[4], sealed[5]]);
        if version != self.version {
            return Err(KeyError::Open);
        }
        let cipher = Aes256Gcm::new_from_slice(self.key.0.as_ref()).map_err(|_| KeyError::Open)?;
        let nonce = Nonce::from_slice(&sealed[6..HEADER_LEN]);
        cipher
            .decrypt(nonce, Payload { msg: &sealed[HEADER_LEN..], aad })
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Open)
    }
}

/// The key version written in a sealed value's header, if the header is well-formed.
pub fn sealed_key_version(sealed: &[u8]) -> Option<u32> {
    (sealed.len() >= HEADER_LEN && sealed[0] == FORMAT_V1 && sealed[1] == ALG_AES_256_GCM)
        .then(|| u32::from_be_bytes([sealed[2], sealed[3], sealed[4], sealed[5]]))
}

/// Wraps and unwraps the keys at the top of the hierarchy (tenant key-encryption keys).
///
/// The local provider below keeps the root key in this process; an external KMS (which
/// never lets the root key out) implements the same two operations.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// The root key version new wraps are made under.
    fn current_version(&self) -> u32;
    /// Wraps `key` under the current root key, binding `aad`.
    fn wrap(&self, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Unwraps what [`KeyProvider::wrap`] made, under whichever root version made it.
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, KeyError>;
}

/// Wraps a data key under a sealing key (AES-256-GCM, header naming the wrapping key's version).
pub fn wrap_key(wrapping: &SealingKey, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
    wrapping.seal(key.expose(), aad)
}

/// Unwraps what [`wrap_key`] made.
pub fn unwrap_key(
    wrapping: &SealingKey,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<SecretKey, KeyError> {
    let bytes = wrapping.open(wrapped, aad)?;
    SecretKey::from_bytes(&bytes)
}

/// The root key(s) held in this process: the current one and, during a rotation, the older
/// ones still needed to unwrap what they wrapped.
#[derive(Debug, Clone)]
pub struct LocalKeyProvider {
    /// (version, wrapping key derived from that root key), newest last.
    keys: Vec<SealingKey>,
}

impl LocalKeyProvider {
    /// One root key at `version`.
    pub fn new(root: &SecretKey, version: u32) -> Self {
        Self { keys: vec![Self::wrapping(root, version)] }
    }

    /// Adds an older root key, still accepted for unwrapping (during a rotation).
    pub fn with_previous(mut self, root: &SecretKey, version: u32) -> Self {
        self.keys.insert(0, Self::wrapping(root, version));
        self
    }

    fn wrapping(root: &SecretKey, version: u32) -> SealingKey {
        SealingKey::new(root.derive("telesafe/v1/tenant-kek-wrap"), version)
    }

    fn current(&self) -> &SealingKey {
        // `new` puts one key in and nothing removes keys, so the list is never empty.
        &self.keys[self.keys.len() - 1]
    }
}

impl KeyProvider for LocalKeyProvider {
    fn current_version(&self) -> u32 {
        self.current().version
    }

    fn wrap(&self, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        wrap_key(self.current(), key, aad)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, KeyError> {
        let version = sealed_key_version(wrapped).ok_or(KeyError::Open)?;
        let key = self.keys.iter().find(|k| k.version == version).ok_or(KeyError::Open)?;
        unwrap_key(key, wrapped, aad)
    }
}

impl SealingKey {
    /// The version written into every ciphertext this key makes.
    pub fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let k = SealingKey::new(SecretKey::generate().unwrap(), 1);
        let sealed = k.seal(b"JBSWY3DPEHPK3PXP", b"tenant-a/user-1").unwrap();
        assert_eq!(&k.open(&sealed, b"tenant-a/user-1").unwrap()[..], b"JBSWY3DPEHPK3PXP");
        // Moved to another row: refused.
        assert!(k.open(&sealed, b"tenant-a/user-2").is_err());
        // Another key, or another key version: refused.
        let other = SealingKey::new(SecretKey::generate().unwrap(), 1);
        assert!(other.open(&sealed, b"tenant-a/user-1").is_err());
        assert!(SealingKey::new(k.key.clone(), 2).open(&sealed, b"tenant-a/user-1").is_err());
        assert_eq!(&sealed[..2], &[FORMAT_V1, ALG_AES_256_GCM]);
    }

    #[test]
    fn derived_keys_differ_per_purpose_and_are_stable() {
        let root = SecretKey::from_bytes(&[7u8; 32]).unwrap();
        assert_eq!(root.derive("a").expose(), root.derive("a").expose());
        assert_ne!(root.derive("a").expose(), root.derive("b").expose());
        assert_ne!(root.derive("a").expose(), root.expose());
        assert!(!format!("{root:?}").contains('7'));
    }

    #[test]
    fn a_million_encryptions_under_one_key_repeat_no_nonce() {
        // Random 96-bit nonces: the birthday bound for a repeat among 10^6 is ~10^-17.
        // A broken random source (a constant, a counter reset) shows at once.
        let k = SealingKey::new(SecretKey::generate().unwrap(), 1);
        let mut seen = std::collections::HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            let sealed = k.seal(b"", b"").unwrap();
            let nonce: [u8; NONCE_LEN] = sealed[6..HEADER_LEN].try_into().unwrap();
            assert!(seen.insert(nonce), "nonce repeated after {} encryptions", seen.len());
        }
    }

    #[test]
    fn local_provider_unwraps_under_the_version_that_wrapped() {
        let old_root = SecretKey::generate().unwrap();
        let new_root = SecretKey::generate().unwrap();
        let data = SecretKey::generate().unwrap();
        let old = LocalKeyProvider::new(&old_root, 1);
        let wrapped = old.wrap(&data, b"tenant-a").unwrap();
        assert_eq!(sealed_key_version(&wrapped), Some(1));
        let rotating = LocalKeyProvider::new(&new_root, 2).with_previous(&old_root, 1);
        assert_eq!(rotating.current_version(), 2);
        assert_eq!(rotating.unwrap(&wrapped, b"tenant-a").unwrap().expose(), data.expose());
        let rewrapped = rotating.wrap(&data, b"tenant-a").unwrap();
        assert_eq!(sealed_key_version(&rewrapped), Some(2));
        // Wrong binding, or the old root gone: refused.
        assert!(rotating.unwrap(&wrapped, b"tenant-b").is_err());
        assert!(LocalKeyProvider::new(&new_root, 2).unwrap(&wrapped, b"tenant-a").is_err());
        let shown = format!("{rotating:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains(&format!("{:?}", old_root.expose())));
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_detected(msg in proptest::collection::vec(any::<u8>(), 0..64), bit in 0usize..512) {
            let k = SealingKey::new(SecretKey::from_bytes(&[3u8; 32]).unwrap(), 1);
            let mut sealed = k.seal(&msg, b"aad").unwrap();
            let i = bit % (sealed.len() * 8);
            sealed[i / 8] ^= 1 << (i % 8);
            prop_assert!(k.open(&sealed, b"aad").is_err());
        }
    }
}
