//! Telesafe's cryptographic building blocks, as small safe functions over well-reviewed
//! crates (RustCrypto, `getrandom`): random secrets, opaque bearer tokens stored only as
//! hashes, constant-time comparison, fingerprints, and Argon2id password hashing.
//!
//! This crate must never invent a primitive, log or `Debug`-print secret material, or know
//! about storage and HTTP. Secret values travel in types whose `Debug` prints `[redacted]`.

pub mod keys;
pub mod password;
pub mod sign;
pub mod stream;

pub mod token;

pub use password::{PasswordError, PasswordHasher, Verification};
pub use token::{OpaqueToken, TokenHash};

use sha2::{Digest, Sha256};

/// Errors from the operating system's random source. There is no fallback: without entropy
/// nothing secret can be made, so the caller must fail.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|_| RandomError)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The colon-separated upper-case hex SHA-256 fingerprint of a DER certificate, in the form
/// browsers and `openssl x509 -fingerprint -sha256` print.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    sha256(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_known_vector() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            sha256_fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sama"));
        assert!(!constant_time_eq(b"same", b"same!"));
    }
}
