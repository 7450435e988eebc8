//! The device's batch sequence counter, persisted so that it rises strictly across
//! restarts: the server treats a repeated sequence number as a replay.
//!
//! Written by hand because it is a dozen lines over `std::fs`: the new value goes to a
//! temporary file that is synced and renamed over the old one, so a power cut leaves
//! either the old value or the new, never a torn file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("the sequence file {path} could not be read or written: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the sequence file {path} is corrupt; refusing to reuse sequence numbers")]
    Corrupt { path: PathBuf },
    #[error("the sequence counter is exhausted")]
    Exhausted,
}

/// A strictly increasing counter stored in one file.
#[derive(Debug)]
pub struct SequenceFile {
    path: PathBuf,
    last: u64,
}

impl SequenceFile {
    /// Opens the counter at `path`, starting from 0 when the file does not exist.
    pub fn open(path: &Path) -> Result<Self, SequenceError> {
        let io = |source| SequenceError::Io { path: path.to_owned(), source };
        let last = match fs::read_to_string(path) {
            Ok(s) => {
                s.trim().parse().map_err(|_| SequenceError::Corrupt { path: path.to_owned() })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(e)),
        };
        Ok(Self { path: path.to_owned(), last })
    }

    /// The last number handed out (0 before the first).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Reserves and durably records the next number before returning it, so a crash after
    /// sending can never cause the same number to be sent for different data.
    pub fn reserve_next(&mut self) -> Result<u64, SequenceError> {
        let next = self.last.checked_add(1).ok_or(SequenceError::Exhausted)?;
        let io = |source| SequenceError::Io { path: self.path.clone(), source };
        let tmp = self.path.with_extension("tmp");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(next.to_string().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        self.last = next;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rises_strictly_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seq");
        let mut s = SequenceFile::open(&p).unwrap();
        assert_eq!(s.reserve_next().unwrap(), 1);
        assert_eq!(s.reserve_next().unwrap(), 2);
        drop(s);
        let mut s = SequenceFile::open(&p).unwrap();
        assert_eq!(s.last(), 2);
        assert_eq!(s.reserve_next().unwrap(), 3);
    }

    #[test]
    fn a_corrupt_file_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seq");
        std::fs::write(&p, "twelve").unwrap();
        assert!(matches!(SequenceFile::open(&p), Err(SequenceError::Corrupt { .. })));
    }
}
