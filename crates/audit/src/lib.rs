//! The tamper-evident audit log's pure core: Merkle tree hashing exactly as RFC 9162
//! (Certificate Transparency v2) defines it, so that any independent CT verifier can check
//! Telesafe's tree heads and proofs.
//!
//! This crate must never touch storage, clocks or the network, and must never see patient
//! data: it hashes serialized audit entries that hold ids, actions and purposes only.

pub mod merkle;

pub use merkle::{Hash, empty_root, leaf_hash, node_hash, root};
