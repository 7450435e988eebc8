//! RFC 9162 §2.1.1 Merkle Tree Hash (MTH).

use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// RFC 9162 §2.1.1: the hash of an empty tree is the hash of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// RFC 9162 §2.1.1: leaf hash = SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// RFC 9162 §2.1.1: interior node hash = SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// MTH over already-computed leaf hashes: the left subtree holds the largest power of two
/// strictly smaller than n leaves (RFC 9162 §2.1.1). Iterative, so depth never grows the stack.
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return empty_root();
    }
    // Level-by-level reduction pairs adjacent nodes and promotes an odd last node unchanged,
    // which yields the same tree shape as the recursive split definition.
    let mut level: Vec<Hash> = leaves.to_vec();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [l, r] => next.push(node_hash(l, r)),
                [single] => next.push(*single),
                _ => {}
            }
        }
        level = next;
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The recursive definition, written straight from RFC 9162 §2.1.1 as an oracle.
    fn mth_recursive(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                // Largest power of two strictly smaller than n.
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(&mth_recursive(&leaves[..k]), &mth_recursive(&leaves[k..]))
            }
        }
    }

    #[test]
    fn empty_tree_is_hash_of_empty_string() {
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn leaf_and_node_use_domain_separation_prefixes() {
        let mut expected = Sha256::new();
        expected.update([0u8]);
        expected.update(b"entry");
        assert_eq!(leaf_hash(b"entry"), <Hash>::from(expected.finalize()));
        assert_ne!(leaf_hash(b""), empty_root());
    }

    proptest! {
        #[test]
        fn iterative_root_matches_rfc_recursive_definition(n in 0usize..200) {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            prop_assert_eq!(root(&leaves), mth_recursive(&leaves));
        }
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }
}
