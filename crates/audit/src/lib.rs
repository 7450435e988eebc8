//! The tamper-evident audit log's pure core: Merkle tree hashing exactly as RFC 9162
//! (Certificate Transparency v2) defines it, so that any independent CT verifier can check
//! Telesafe's tree heads and proofs; an append-only tree with inclusion and consistency
//! proofs; the canonical encoding of an entry; and Ed25519 signed tree heads.
//!
//! This crate must never touch storage, clocks or the network, and must never see patient
//! data: it hashes serialized audit entries that hold ids, actions and purposes only.

pub mod entry;
pub mod merkle;
pub mod segment;
pub mod sth;

pub use entry::{ActorKind, Entry, Purpose};
pub use merkle::{
    Frontier, Hash, ProofError, Tree, empty_root, leaf_hash, node_hash, root, verify_consistency,
    verify_inclusion,
};
pub use segment::{EntryView, Segment, SegmentBuilder, SegmentError, search_key};
pub use sth::{HeadSigner, SignedTreeHead};
