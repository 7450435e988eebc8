//! Ed25519 device keys (aws-lc-rs, the provider rustls already uses): generated on the
//! device, the private half never leaving it; the server holds public keys only.

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
#[error("the device key could not be created or read")]
pub struct KeyPairError;

/// A device's Ed25519 key pair. `Debug` prints the public key only.
pub struct DeviceKey {
    pair: Ed25519KeyPair,
    /// The PKCS#8 document the device stores (secret).
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").field("public", &hex::encode(self.public_key())).finish()
    }
}

impl DeviceKey {
    /// A new random key pair.
    pub fn generate() -> Result<Self, KeyPairError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| KeyPairError)?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// The key pair stored as PKCS#8 (v1 or v2).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyPairError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| KeyPairError)?;
        Ok(Self { pair, pkcs8: Zeroizing::new(der.to_vec()) })
    }

    /// What to store on the device's disk (0600).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.pair.public_key().as_ref()[..32]);
        out
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// A server-side Ed25519 key made from a seed derived from the root key (it is kept,
/// backed up and rotated with the other keys). `Debug` shows the public key only.
pub struct SeedSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SeedSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedSigner").field("public", &hex::encode(self.public_key())).finish()
    }
}

impl SeedSigner {
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyPairError> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(|pair| Self { pair })
            .map_err(|_| KeyPairError)
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.pair.public_key().as_ref()[..32]);
        out
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// Whether `sig` is a valid Ed25519 signature of `message` under `public_key` (32 bytes).
pub fn verify_ed25519(public_key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    public_key.len() == 32
        && sig.len() == 64
        && UnparsedPublicKey::new(&signature::ED25519, public_key).verify(message, sig).is_ok()
}

/// Whether every `(public_key, message, sig)` is a valid Ed25519 signature, checked
/// together (ed25519-dalek's batch verification: one multiscalar multiplication, about
/// half the time per signature of checking each). `false` says only that at least one is
/// not valid, or not well formed: check them one by one ([`verify_ed25519`]) to learn
/// which. An empty list is valid.
///
/// The batch equation is cofactored, so it also accepts a signature whose `R` has a
/// small-order component added, which [`verify_ed25519`] (cofactorless, as RFC 8032's
/// strict reading) refuses. Such a signature can only be made from a valid one, over the
/// same message and key: what it authenticates is the same. Callers must not treat
/// signature bytes as identifiers (Telesafe keys device batches by sequence number and
/// does not store their signatures), and keys must be checked with
/// [`ed25519_public_key_is_sound`] (small-order keys would make forgeries easy).
pub fn verify_ed25519_batch(items: &[(&[u8], &[u8], &[u8])]) -> bool {
    let mut keys = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    let mut messages = Vec::with_capacity(items.len());
    // Each distinct key is decompressed once: a request's batches usually share one
    // device's key, and decompressing it for each was a fifth of the check's time.
    let mut decompressed: std::collections::HashMap<[u8; 32], ed25519_dalek::VerifyingKey> =
        std::collections::HashMap::new();
    for (key, message, sig) in items {
        let Ok(key) = <[u8; 32]>::try_from(*key) else { return false };
        let key = match decompressed.get(&key) {
            Some(k) => *k,
            None => {
                let Ok(k) = ed25519_dalek::VerifyingKey::from_bytes(&key) else { return false };
                decompressed.insert(key, k);
                k
            }
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else { return false };
        keys.push(key);
        sigs.push(sig);
        messages.push(*message);
    }
    ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok()
}

/// Whether `public_key` is a usable Ed25519 public key: 32 bytes that canonically encode
/// a point of the prime-order subgroup. A small-order key (the identity, or one of the
/// other seven torsion points) lets anyone forge a signature that verifies under it with
/// a few guesses; a key with a torsion component, or a non-canonical encoding, makes
/// signatures malleable and lets verifiers disagree. A device's key is checked when it
/// enrols and when it rotates.
pub fn ed25519_public_key_is_sound(public_key: &[u8]) -> bool {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    let Ok(compressed) = CompressedEdwardsY::from_slice(public_key) else { return false };
    let Some(point) = compressed.decompress() else { return false };
    point.compress() == compressed && !point.is_small_order() && point.is_torsion_free()
}

/// base64url without padding (RFC 4648 §5), as signatures and keys travel.
pub fn encode_base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes [`encode_base64url`]'s form; `None` for anything else.
pub fn decode_base64url(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_prime_order_keys_are_sound() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let k = DeviceKey::generate().unwrap().public_key();
        assert!(ed25519_public_key_is_sound(&k));
        assert!(!ed25519_public_key_is_sound(&k[..31]));
        // The identity, a point of order 2 (y = -1) and one of order 4 (y = 0).
        let identity = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        let order_two = {
            let mut b = [0xffu8; 32];
            b[0] = 0xec;
            b[31] = 0x7f;
            b
        };
        for weak in [identity, order_two, [0u8; 32]] {
            assert!(!ed25519_public_key_is_sound(&weak), "{weak:02x?}");
        }
        // A good key plus a torsion point: not of small order, but not in the subgroup.
        let point = |b: &[u8]| CompressedEdwardsY::from_slice(b).unwrap().decompress().unwrap();
        let mixed = (point(&k) + point(&order_two)).compress().to_bytes();
        assert!(!ed25519_public_key_is_sound(&mixed));
        // The identity again, encoded non-canonically (y = p + 1).
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        assert!(!ed25519_public_key_is_sound(&non_canonical));
    }

    #[test]
    fn batches_verify_together_and_one_bad_signature_fails_the_lot() {
        let keys: Vec<DeviceKey> = (0..5).map(|_| DeviceKey::generate().unwrap()).collect();
        let pks: Vec<Vec<u8>> = keys.iter().map(|k| k.public_key().to_vec()).collect();
        let msgs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let sigs: Vec<[u8; 64]> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let items = |sigs: &[[u8; 64]]| -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
            (0..5).map(|i| (pks[i].clone(), msgs[i].clone(), sigs[i].to_vec())).collect()
        };
        let check = |v: &[(Vec<u8>, Vec<u8>, Vec<u8>)]| {
            let refs: Vec<(&[u8], &[u8], &[u8])> =
                v.iter().map(|(k, m, s)| (k.as_slice(), m.as_slice(), s.as_slice())).collect();
            verify_ed25519_batch(&refs)
        };
        let good = items(&sigs);
        assert!(check(&good));
        assert!(check(&good[..1]) && check(&[]));
        // Several batches under one key, as a request's usually are: the key is decompressed
        // once, and every signature still counts.
        let one: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = (0..4u8)
            .map(|i| (pks[0].clone(), vec![i; 20], keys[0].sign(&[i; 20]).to_vec()))
            .collect();
        assert!(check(&one));
        let mut bad = one.clone();
        bad[2].1[0] ^= 1;
        assert!(!check(&bad));
        let mut bad = one.clone();
        bad[3].2 = sigs[1].to_vec();
        assert!(!check(&bad));
        // Each agrees with the single check.
        assert!(good.iter().all(|(k, m, s)| verify_ed25519(k, m, s)));
        // One tampered message, signature, swapped key, or malformed part fails the lot.
        let mut bad = good.clone();
        bad[3].1[0] ^= 1;
        assert!(!check(&bad));
        let mut bad = good.clone();
        bad[0].2[5] ^= 1;
        assert!(!check(&bad));
        let mut bad = good.clone();
        bad.swap(1, 2);
        bad[1].1 = good[1].1.clone();
        assert!(!check(&bad));
        let mut bad = good.clone();
        bad[4].0.truncate(31);
        assert!(!check(&bad));
        let mut bad = good.clone();
        bad[2].2.push(0);
        assert!(!check(&bad));
        // A non-canonical s (s + L) is refused, as the single check refuses it.
        let mut bad = good.clone();
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (s_byte, l_byte) in bad[0].2[32..].iter_mut().zip(l) {
            let v = u16::from(*s_byte) + u16::from(l_byte) + carry;
            *s_byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        assert!(!verify_ed25519(&bad[0].0, &bad[0].1, &bad[0].2));
        assert!(!check(&bad));
    }

    #[test]
    fn sign_verify_and_refuse_tampering() {
        let k = DeviceKey::generate().unwrap();
        let sig = k.sign(b"reading");
        assert!(verify_ed25519(&k.public_key(), b"reading", &sig));
        assert!(!verify_ed25519(&k.public_key(), b"readinG", &sig));
        let other = DeviceKey::generate().unwrap();
        assert!(!verify_ed25519(&other.public_key(), b"reading", &sig));
        assert!(!verify_ed25519(&k.public_key()[..31], b"reading", &sig));
        let again = DeviceKey::from_pkcs8(k.pkcs8()).unwrap();
        assert_eq!(again.public_key(), k.public_key());
        let shown = format!("{k:?}");
        assert!(shown.contains(&hex::encode(k.public_key())));
        assert!(!shown.contains(&hex::encode(&k.pkcs8()[16..32])));
    }

    #[test]
    fn rfc8032_test_vector_1_verifies() {
        // RFC 8032 §7.1, TEST 1 (empty message).
        let pk = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .unwrap();
        let sig = hex::decode("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b").unwrap();
        assert!(verify_ed25519(&pk, b"", &sig));
    }
}
