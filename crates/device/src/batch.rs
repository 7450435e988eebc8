//! Making signed batches, as docs/device-protocol.md §2–3 specify: readings in, a batch
//! with the next sequence number from the durable counter, signed with the device's key.

use telesafe_crypto::sign::{DeviceKey, encode_base64url};
use telesafe_proto::telemetry::{Batch, Reading, SignedBatch, signing_message, well_formed};

use crate::sequence::{SequenceError, SequenceFile};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("the batch does not follow the protocol: {0:?}")]
    Shape(telesafe_proto::telemetry::Reason),
}

/// A device's identity as the SDK holds it: its id from enrolment, its key, its firmware.
#[derive(Debug)]
pub struct DeviceIdentity {
    pub device_id: String,
    pub key: DeviceKey,
    pub firmware: String,
}

impl DeviceIdentity {
    /// Signs `readings` as the next batch. The sequence number is taken from `counter`
    /// (and persisted) before signing, so a crash never reuses it.
    pub fn sign(
        &self,
        counter: &mut SequenceFile,
        clock: &str,
        readings: Vec<Reading>,
    ) -> Result<SignedBatch, BatchError> {
        let seq = counter.reserve_next()?;
        let batch = Batch {
            clock: clock.to_owned(),
            device: self.device_id.clone(),
            firmware: self.firmware.clone(),
            readings,
            seq,
        };
        let sig = encode_base64url(&self.key.sign(&signing_message(&batch)));
        let signed = SignedBatch { batch, sig };
        well_formed(&signed).map_err(BatchError::Shape)?;
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn batches_verify_under_the_public_key_and_numbers_rise() {
        let dir = tempfile::tempdir().unwrap();
        let mut counter = SequenceFile::open(&dir.path().join("seq")).unwrap();
        let id = DeviceIdentity {
            device_id: "dev-1".into(),
            key: DeviceKey::generate().unwrap(),
            firmware: "2.3.1".into(),
        };
        let reading = || Reading {
            at: "2026-11-25T09:59:30Z".into(),
            code: "8867-4".into(),
            unit: "/min".into(),
            value: "72".into(),
        };
        let a = id.sign(&mut counter, "2026-11-25T10:00:00Z", vec![reading()]).unwrap();
        let b = id.sign(&mut counter, "2026-11-25T10:00:00Z", vec![reading()]).unwrap();
        assert_eq!((a.batch.seq, b.batch.seq), (1, 2));
        let sig = telesafe_crypto::sign::decode_base64url(&a.sig).unwrap();
        assert!(telesafe_crypto::sign::verify_ed25519(
            &id.key.public_key(),
            &signing_message(&a.batch),
            &sig
        ));
        // A reading outside the protocol is refused before anything is sent.
        let mut bad = reading();
        bad.value = "seventy".into();
        assert!(id.sign(&mut counter, "2026-11-25T10:00:00Z", vec![bad]).is_err());
        // The wire form parses back as a protocol batch.
        let wire = serde_json::to_vec(&b).unwrap();
        assert_eq!(telesafe_proto::telemetry::parse(&wire).unwrap(), b);
    }
}
