//! Opaque bearer tokens (session cookies, setup tokens, activation links).
//!
//! A token is 256 bits from the OS CSPRNG, shown to its holder once as unpadded base64url,
//! and stored only as its SHA-256. A high-entropy token needs no slow hash: guessing is
//! infeasible, so SHA-256 suffices to make a stolen database useless for replay.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};

use crate::{RandomError, fill_random, sha256};

/// A freshly minted or presented token. `Debug` never prints it.
#[derive(Debug, Clone)]
pub struct OpaqueToken(SecretString);

/// The stored form of a token: lower-case hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl OpaqueToken {
    /// Mints a new 256-bit token.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes)?;
        let text = URL_SAFE_NO_PAD.encode(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(Self(SecretString::from(text)))
    }

    /// Wraps a token presented by a client. Returns `None` when it cannot be one of ours
    /// (wrong length or alphabet), so garbage never reaches a database lookup.
    pub fn parse(presented: &str) -> Option<Self> {
        let ok = presented.len() == 43
            && presented.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(SecretString::from(presented.to_owned())))
    }

    /// The token text, for the one place it is handed to its holder.
    pub fn reveal(&self) -> &str {
        self.0.expose_secret()
    }

    /// The hash under which the token is stored and looked up.
    pub fn hash(&self) -> TokenHash {
        TokenHash(hex::encode(sha256(self.0.expose_secret().as_bytes())))
    }
}

impl TokenHash {
    /// Wraps a hash read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_and_hash_stably() {
        let t = OpaqueToken::generate().unwrap();
        let parsed = OpaqueToken::parse(t.reveal()).unwrap();
        assert_eq!(t.hash(), parsed.hash());
        assert_eq!(t.hash().as_str().len(), 64);
    }

    #[test]
    fn tokens_are_distinct_and_debug_is_redacted() {
        let a = OpaqueToken::generate().unwrap();
        let b = OpaqueToken::generate().unwrap();
        assert_ne!(a.reveal(), b.reveal());
        let dbg = format!("{a:?}");
        assert!(!dbg.contains(a.reveal()), "{dbg}");
    }

    #[test]
    fn malformed_tokens_are_rejected_before_lookup() {
        assert!(OpaqueToken::parse("").is_none());
        assert!(OpaqueToken::parse("short").is_none());
        assert!(OpaqueToken::parse(&"a".repeat(42)).is_none());
        assert!(OpaqueToken::parse(&format!("{}=", "a".repeat(42))).is_none());
        assert!(OpaqueToken::parse(&"a".repeat(43)).is_some());
    }
}
