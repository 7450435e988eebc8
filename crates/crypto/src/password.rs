//! Argon2id password hashing (RFC 9106) in PHC string format.
//!
//! Parameters follow the OWASP Password Storage Cheat Sheet's Argon2id baseline
//! (m = 19 MiB, t = 2, p = 1). The hasher is CPU-bound: callers on an async runtime must
//! run it on a bounded blocking pool, never on a runtime worker.

use argon2::password_hash::{PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

use crate::fill_random;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the stored password hash is malformed")]
    MalformedHash,
    #[error("password hashing failed")]
    Hashing,
    #[error(transparent)]
    Random(#[from] crate::RandomError),
}

/// Hashes and verifies passwords with fixed, reviewed parameters.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    params: Params,
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Wrong password.
    Mismatch,
    /// Right password, hash is current.
    Match,
    /// Right password, but the stored hash used weaker parameters: store this new hash.
    MatchRehashed(String),
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::owasp()
    }
}

impl PasswordHasher {
    /// OWASP baseline: m = 19456 KiB, t = 2, p = 1, 32-byte output.
    pub fn owasp() -> Self {
        let params = Params::new(19_456, 2, 1, Some(32)).unwrap_or_default();
        Self { params }
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes `password` with a fresh 128-bit salt into a PHC string.
    pub fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let mut salt = [0u8; 16];
        fill_random(&mut salt)?;
        let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordError::Hashing)?;
        let hash = argon2::PasswordHasher::hash_password(
            &self.argon2(),
            password.expose_secret().as_bytes(),
            &salt,
        )
        .map_err(|_| PasswordError::Hashing)?;
        Ok(hash.to_string())
    }

    /// Checks `password` against a stored PHC hash, offering a rehash when the stored
    /// parameters are weaker than ours.
    pub fn verify(
        &self,
        password: &SecretString,
        stored: &str,
    ) -> Result<Verification, PasswordError> {
        let parsed = PasswordHash::new(stored).map_err(|_| PasswordError::MalformedHash)?;
        let ok =
            self.argon2().verify_password(password.expose_secret().as_bytes(), &parsed).is_ok();
        if !ok {
            return Ok(Verification::Mismatch);
        }
        let current = Params::try_from(&parsed)
            .map(|p| {
                parsed.algorithm.as_str() == "argon2id"
                    && p.m_cost() >= self.params.m_cost()
                    && p.t_cost() >= self.params.t_cost()
            })
            .unwrap_or(false);
        if current {
            Ok(Verification::Match)
        } else {
            Ok(Verification::MatchRehashed(self.hash(password)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn hash_verifies_and_rejects_wrong_password() {
        let h = PasswordHasher::owasp();
        let stored = h.hash(&secret("correct horse battery staple")).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            h.verify(&secret("correct horse battery staple"), &stored).unwrap(),
            Verification::Match
        );
        assert_eq!(
            h.verify(&secret("correct horse battery stapler"), &stored).unwrap(),
            Verification::Mismatch
        );
    }

    #[test]
    fn weaker_stored_parameters_are_upgraded_on_match() {
        let weak = PasswordHasher { params: Params::new(8, 1, 1, Some(32)).unwrap() };
        let stored = weak.hash(&secret("a long enough passphrase")).unwrap();
        let strong = PasswordHasher::owasp();
        match strong.verify(&secret("a long enough passphrase"), &stored).unwrap() {
            Verification::MatchRehashed(new) => assert!(new.contains("m=19456,t=2")),
            other => panic!("expected a rehash, got {other:?}"),
        }
    }

    #[test]
    fn malformed_hash_is_an_error_not_a_match() {
        let h = PasswordHasher::owasp();
        assert!(matches!(
            h.verify(&secret("x"), "not-a-phc-string"),
            Err(PasswordError::MalformedHash)
        ));
    }
}
