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

/// The largest power of two strictly smaller than `n` (n ≥ 2): where RFC 9162 splits.
fn split(n: u64) -> u64 {
    1u64 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// An append-only Merkle tree that keeps the hash of every complete, aligned subtree
/// (level k holds the hashes of leaves `[i·2^k, (i+1)·2^k)`), so the root of any earlier
/// size, inclusion proofs and consistency proofs take O(log² n) hash lookups and no I/O.
/// Memory: about two hashes (64 bytes) per entry.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

/// A proof could not be made for the sizes asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the index or size is beyond the tree")]
    OutOfRange,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves the tree holds.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash, completing every subtree it closes.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(node);
            let len = self.levels[level].len();
            if !len.is_multiple_of(2) {
                break;
            }
            node = node_hash(&self.levels[level][len - 2], &self.levels[level][len - 1]);
            level += 1;
        }
    }

    /// Drops every leaf from `size` on (used when a batch could not be made durable).
    pub fn truncate(&mut self, size: u64) {
        for (k, level) in self.levels.iter_mut().enumerate() {
            level.truncate(usize::try_from(size >> k).unwrap_or(usize::MAX));
        }
        while self.levels.last().is_some_and(Vec::is_empty) {
            self.levels.pop();
        }
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(usize::try_from(index).ok()?).copied()
    }

    /// MTH of leaves `[start, start + len)`, assembled from stored complete subtrees.
    fn range_hash(&self, start: u64, len: u64) -> Hash {
        if len == 0 {
            return empty_root();
        }
        if len.is_power_of_two() && start.is_multiple_of(len) {
            let k = len.trailing_zeros() as usize;
            if let Some(h) = self.levels.get(k).and_then(|l| l.get((start >> k) as usize)) {
                return *h;
            }
        }
        let k = split(len);
        node_hash(&self.range_hash(start, k), &self.range_hash(start + k, len - k))
    }

    /// The root of the tree when it had `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::OutOfRange);
        }
        Ok(self.range_hash(0, size))
    }

    /// RFC 9162 §2.1.3.1: the inclusion proof of leaf `index` in the tree of `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size || size > self.size() {
            return Err(ProofError::OutOfRange);
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, n: u64, out: &mut Vec<Hash>) {
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, k, out);
            out.push(self.range_hash(start + k, n - k));
        } else {
            self.path(m - k, start + k, n - k, out);
            out.push(self.range_hash(start, k));
        }
    }

    /// RFC 9162 §2.1.4.1: the consistency proof between sizes `old` and `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        if old > new || new > self.size() {
            return Err(ProofError::OutOfRange);
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, n: u64, complete: bool, out: &mut Vec<Hash>) {
        if m == n {
            if !complete {
                out.push(self.range_hash(start, n));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, k, complete, out);
            out.push(self.range_hash(start + k, n - k));
        } else {
            self.subproof(m - k, start + k, n - k, false, out);
            out.push(self.range_hash(start, k));
        }
    }
}

/// The right edge of a Merkle tree: the roots of its complete subtrees, largest first.
/// Enough to compute the root at the current size while streaming leaves, in O(log n)
/// memory (verifying 10M entries needs kilobytes, not the whole [`Tree`]).
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// (height, hash), heights strictly decreasing.
    stack: Vec<(u32, Hash)>,
}

impl Frontier {
    /// How many leaves have been pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(h, left)) = self.stack.last() {
            if h != node.0 {
                break;
            }
            self.stack.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// The root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// RFC 9162 §2.1.3.2: checks that `leaf` is at `index` in the tree of `size` with `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnum, mut snum) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snum == 0 {
            return false;
        }
        if fnum & 1 == 1 || fnum == snum {
            r = node_hash(p, &r);
            if fnum & 1 == 0 {
                while fnum & 1 == 0 && fnum != 0 {
                    fnum >>= 1;
                    snum >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    snum == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: checks that the tree of size `new` with `new_root` extends the tree
/// of size `old` with `old_root`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if old.is_power_of_two() {
        path.insert(0, *old_root);
    }
    let (mut fnum, mut snum) = (old - 1, new - 1);
    while fnum & 1 == 1 {
        fnum >>= 1;
        snum >>= 1;
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snum == 0 {
            return false;
        }
        if fnum & 1 == 1 || fnum == snum {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnum & 1 == 0 {
                while fnum & 1 == 0 && fnum != 0 {
                    fnum >>= 1;
                    snum >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnum >>= 1;
        snum >>= 1;
    }
    fr == *old_root && sr == *new_root && snum == 0
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

    #[test]
    fn frontier_root_matches_the_tree() {
        let mut f = Frontier::default();
        let mut t = Tree::new();
        for i in 0u64..300 {
            let leaf = leaf_hash(&i.to_be_bytes());
            f.push(leaf);
            t.push(leaf);
            assert_eq!(f.root(), t.root_at(t.size()).unwrap(), "size {}", i + 1);
        }
    }

    proptest! {
        #[test]
        fn tree_roots_and_proofs_agree_with_the_definition(n in 1u64..140, seed in 0u64..1000) {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&(i ^ seed).to_be_bytes())).collect();
            let mut t = Tree::new();
            for l in &leaves { t.push(*l); }
            prop_assert_eq!(t.size(), n);
            for size in [1, n / 2 + 1, n] {
                let r = t.root_at(size).unwrap();
                prop_assert_eq!(r, mth_recursive(&leaves[..size as usize]));
                let i = seed % size;
                let p = t.inclusion_proof(i, size).unwrap();
                prop_assert!(verify_inclusion(&leaves[i as usize], i, size, &p, &r));
                if size >= 2 {
                    let j = (i + 1) % size;
                    prop_assert!(!verify_inclusion(&leaves[i as usize], j, size, &p, &r));
                }
                let old = 1 + seed % size;
                let c = t.consistency_proof(old, size).unwrap();
                prop_assert!(verify_consistency(old, size, &t.root_at(old).unwrap(), &r, &c));
                if old < size {
                    prop_assert!(!verify_consistency(old, size, &leaf_hash(b"x"), &r, &c));
                }
            }
            // Truncating restores the earlier tree exactly.
            let half = n / 2;
            let mut u = t.clone();
            u.truncate(half);
            prop_assert_eq!(u.size(), half);
            prop_assert_eq!(u.root_at(half).unwrap(), mth_recursive(&leaves[..half as usize]));
            for l in &leaves[half as usize..] { u.push(*l); }
            prop_assert_eq!(u.root_at(n).unwrap(), t.root_at(n).unwrap());
        }
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }
}
