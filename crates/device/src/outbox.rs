//! The device's on-disk buffer of signed batches not yet acknowledged: one file per batch,
//! named by its sequence number, so a restart (or a week without a network) loses nothing
//! and a resend carries the original bytes, sequence number and signature.
//!
//! Written by hand over `std::fs`: each batch is written to a temporary file, synced and
//! renamed into place (and the directory synced), which is all the durability a device
//! buffer needs; an embedded database would be a large dependency for a queue of files.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use telesafe_proto::telemetry::SignedBatch;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("the buffer {path} could not be read or written: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the buffered batch {path} is corrupt")]
    Corrupt { path: PathBuf },
}

/// Signed batches waiting for an acknowledgement, oldest first.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io { path: path.to_owned(), source }
}

impl Outbox {
    /// Opens (creating) the buffer in `dir`.
    pub fn open(dir: &Path) -> Result<Self, OutboxError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::create_dir_all(dir.join("refused")).map_err(io(dir))?;
        Ok(Self { dir: dir.to_owned() })
    }

    fn file(&self, seq: u64) -> PathBuf {
        // Zero-padded: directory order is sequence order.
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Durably buffers a batch before it is first sent.
    pub fn push(&self, b: &SignedBatch) -> Result<(), OutboxError> {
        let path = self.file(b.batch.seq);
        let tmp = path.with_extension("tmp");
        let bytes =
            serde_json::to_vec(b).map_err(|_| OutboxError::Corrupt { path: path.clone() })?;
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))
    }

    /// The sequence numbers waiting, in order.
    pub fn pending(&self) -> Result<Vec<u64>, OutboxError> {
        let mut out: Vec<u64> = fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// How many batches wait.
    pub fn len(&self) -> Result<usize, OutboxError> {
        self.pending().map(|p| p.len())
    }

    pub fn is_empty(&self) -> Result<bool, OutboxError> {
        self.len().map(|n| n == 0)
    }

    /// A buffered batch, exactly as it was signed.
    pub fn get(&self, seq: u64) -> Result<SignedBatch, OutboxError> {
        let path = self.file(seq);
        let bytes = fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|_| OutboxError::Corrupt { path })
    }

    /// Forgets a batch the server acknowledged (stored or duplicate).
    pub fn acknowledge(&self, seq: u64) -> Result<(), OutboxError> {
        let path = self.file(seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Sets aside a batch the server refused: resending it could never succeed, and it is
    /// kept (in `refused/`) for whoever services the device.
    pub fn set_aside(&self, seq: u64) -> Result<(), OutboxError> {
        let path = self.file(seq);
        let to = self.dir.join("refused").join(format!("{seq:020}.json"));
        fs::rename(&path, &to).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use telesafe_proto::telemetry::{Batch, Reading};

    fn batch(seq: u64) -> SignedBatch {
        SignedBatch {
            batch: Batch {
                clock: "2026-11-25T10:00:00Z".into(),
                device: "d".into(),
                firmware: "1.0".into(),
                readings: vec![Reading {
                    at: "2026-11-25T10:00:00Z".into(),
                    code: "8867-4".into(),
                    unit: "/min".into(),
                    value: "70".into(),
                }],
                seq,
            },
            sig: "A".repeat(86),
        }
    }

    #[test]
    fn batches_survive_reopening_in_order_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        for seq in [3, 1, 12] {
            o.push(&batch(seq)).unwrap();
        }
        drop(o);
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.pending().unwrap(), vec![1, 3, 12]);
        assert_eq!(o.get(12).unwrap(), batch(12));
        o.acknowledge(1).unwrap();
        o.acknowledge(1).unwrap();
        o.set_aside(3).unwrap();
        assert_eq!(o.pending().unwrap(), vec![12]);
        assert!(dir.path().join("refused").join(format!("{:020}.json", 3)).exists());
    }
}
