//! Signed tree heads: (index, size, root, time) signed with Ed25519 (aws-lc-rs).
//!
//! The signed message is `telesafe-sth-v1` followed by the head's index, the tree size and
//! the time (each 8 bytes big-endian) and the 32-byte root. The index numbers heads 0, 1,
//! 2, ... so that putting an older head in a newer one's place is detected.

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::Hash;

const CONTEXT: &[u8] = b"telesafe-sth-v1";

/// A tree head and its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTreeHead {
    pub index: u64,
    pub size: u64,
    pub root: Hash,
    /// Unix milliseconds.
    pub at: i64,
    pub signature: Vec<u8>,
}

impl SignedTreeHead {
    /// The bytes the signature covers.
    pub fn message(index: u64, size: u64, at: i64, root: &Hash) -> Vec<u8> {
        let mut m = Vec::with_capacity(CONTEXT.len() + 24 + 32);
        m.extend_from_slice(CONTEXT);
        m.extend_from_slice(&index.to_be_bytes());
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&at.to_be_bytes());
        m.extend_from_slice(root);
        m
    }

    /// Whether the signature is `public_key`'s over this head.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        let msg = Self::message(self.index, self.size, self.at, &self.root);
        UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(&msg, &self.signature)
            .is_ok()
    }
}

/// The log's signing key. `Debug` shows only the public key.
pub struct HeadSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for HeadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadSigner").field("public_key", &hex(self.public_key())).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the tree-head signing key could not be made from its seed")]
pub struct BadSeed;

impl HeadSigner {
    /// From a 32-byte seed (derived from the root key, so it is kept with the other keys).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, BadSeed> {
        Ed25519KeyPair::from_seed_unchecked(seed).map(|pair| Self { pair }).map_err(|_| BadSeed)
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    pub fn sign(&self, index: u64, size: u64, at: i64, root: Hash) -> SignedTreeHead {
        let msg = SignedTreeHead::message(index, size, at, &root);
        let signature = self.pair.sign(&msg).as_ref().to_vec();
        SignedTreeHead { index, size, root, at, signature }
    }
}

/// Lower-case hex, for keys and roots in files and pages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_verify_only_unchanged_and_under_their_key() {
        let signer = HeadSigner::from_seed(&[7u8; 32]).unwrap();
        let other = HeadSigner::from_seed(&[8u8; 32]).unwrap();
        let head = signer.sign(3, 100, 1_790_000_000_000, [1u8; 32]);
        assert!(head.verify(signer.public_key()));
        assert!(!head.verify(other.public_key()));
        for tweak in 0..4 {
            let mut h = head.clone();
            match tweak {
                0 => h.index = 2,
                1 => h.size = 99,
                2 => h.at += 1,
                _ => h.root[0] ^= 1,
            }
            assert!(!h.verify(signer.public_key()), "tweak {tweak}");
        }
        assert!(!format!("{signer:?}").contains("seed"));
    }
}
