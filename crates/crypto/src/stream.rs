//! Encryption of a stream too large to hold in memory (a backup of the whole database):
//! AES-256-GCM in the STREAM construction (Hoang, Reyhanitabar, Rogaway and Vizár, "Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015), as RustCrypto's
//! `aead::stream` implements it.
//!
//! The plaintext is cut into chunks of [`CHUNK`] bytes. Each chunk's nonce is a per-stream
//! random prefix, the chunk's number, and a flag set only on the last chunk, so a chunk
//! cannot be moved, dropped, repeated or swapped, and a stream cut short after any chunk
//! fails to open: the chunk it now ends with was not sealed as the last. Every chunk also
//! authenticates `aad` (a backup's header), so the header cannot be edited either.
//!
//! On the wire each chunk is its ciphertext's length (4 bytes, big-endian) then the
//! ciphertext (the chunk and its 16-byte tag).

use std::io::{Read, Write};

use aead::stream::{NewStream, StreamBE32, StreamPrimitive};
use aead::{KeyInit, Payload};
use aes_gcm::Aes256Gcm;

use crate::keys::SecretKey;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 1 << 20;
/// Bytes of the random nonce prefix (AES-GCM's 12-byte nonce less STREAM's 5-byte counter
/// and last-chunk flag).
pub const NONCE_PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading or writing failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the file ends early: it was cut short after chunk {chunks}")]
    Truncated { chunks: u64 },
    #[error(
        "chunk {chunk} does not authenticate: the file was altered, or it was sealed under another key"
    )]
    Corrupt { chunk: u64 },
    #[error("the stream holds too many chunks")]
    TooLong,
}

/// Encrypts everything `input` yields into `output`; `progress` is told the plaintext
/// bytes done so far. Returns the plaintext's length.
pub fn seal(
    key: &SecretKey,
    nonce_prefix: &[u8; NONCE_PREFIX_LEN],
    aad: &[u8],
    mut input: impl Read,
    mut output: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, StreamError> {
    let stream = StreamBE32::from_aead(Aes256Gcm::new(key.expose().into()), nonce_prefix.into());
    // One chunk ahead, to know which chunk is the last before sealing it.
    let mut current = read_chunk(&mut input)?;
    let mut position = 0u32;
    let mut total = 0u64;
    loop {
        let next = if current.len() == CHUNK { read_chunk(&mut input)? } else { Vec::new() };
        let last = next.is_empty();
        total += current.len() as u64;
        let ct = stream
            .encrypt(position, last, Payload { msg: &current, aad })
            .map_err(|_| StreamError::TooLong)?;
        write_chunk(&mut output, &ct)?;
        progress(total);
        if last {
            output.flush()?;
            return Ok(total);
        }
        position = position.checked_add(1).ok_or(StreamError::TooLong)?;
        current = next;
    }
}

/// Decrypts what [`seal`] made with the same key, prefix and `aad` into `output`;
/// `progress` is told the ciphertext bytes read so far. Returns the plaintext's length.
/// Whatever was written before an error must be discarded by the caller.
pub fn open(
    key: &SecretKey,
    nonce_prefix: &[u8; NONCE_PREFIX_LEN],
    aad: &[u8],
    mut input: impl Read,
    mut output: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, StreamError> {
    let stream = StreamBE32::from_aead(Aes256Gcm::new(key.expose().into()), nonce_prefix.into());
    let mut position = 0u32;
    let mut read = 0u64;
    let mut total = 0u64;
    let Some(mut current) = read_sealed(&mut input, 0)? else {
        return Err(StreamError::Truncated { chunks: 0 });
    };
    loop {
        let chunk = u64::from(position);
        read += 4 + current.len() as u64;
        let next = read_sealed(&mut input, chunk + 1)?;
        let last = next.is_none();
        let pt = match stream.decrypt(position, last, Payload { msg: &current, aad }) {
            Ok(pt) => pt,
            // The file ends on a whole chunk that was not sealed as the last: it was cut
            // short there, not altered.
            Err(_)
                if last
                    && stream.decrypt(position, false, Payload { msg: &current, aad }).is_ok() =>
            {
                return Err(StreamError::Truncated { chunks: chunk + 1 });
            }
            Err(_) => return Err(StreamError::Corrupt { chunk }),
        };
        total += pt.len() as u64;
        output.write_all(&pt)?;
        progress(read);
        match next {
            None => {
                output.flush()?;
                return Ok(total);
            }
            Some(n) => current = n,
        }
        position = position.checked_add(1).ok_or(StreamError::TooLong)?;
    }
}

/// Up to [`CHUNK`] bytes; fewer only at the end of the input.
fn read_chunk(input: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(CHUNK);
    input.take(CHUNK as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn write_chunk(output: &mut impl Write, ct: &[u8]) -> std::io::Result<()> {
    // A chunk's ciphertext is at most CHUNK + 16 bytes, far below u32::MAX.
    output.write_all(&(ct.len() as u32).to_be_bytes())?;
    output.write_all(ct)
}

/// The next sealed chunk, or `None` at a clean end of input (between chunks).
fn read_sealed(input: &mut impl Read, chunk: u64) -> Result<Option<Vec<u8>>, StreamError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(StreamError::Truncated { chunks: chunk }),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if !(TAG_LEN..=CHUNK + TAG_LEN).contains(&len) {
        return Err(StreamError::Corrupt { chunk });
    }
    let mut buf = vec![0u8; len];
    input.read_exact(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => StreamError::Truncated { chunks: chunk },
        _ => StreamError::Io(e),
    })?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(data: &[u8], aad: &[u8]) -> (SecretKey, [u8; NONCE_PREFIX_LEN], Vec<u8>) {
        let key = SecretKey::generate().unwrap();
        let prefix = [3u8; NONCE_PREFIX_LEN];
        let mut out = Vec::new();
        let n = seal(&key, &prefix, aad, data, &mut out, |_| {});
        assert_eq!(n.ok(), Some(data.len() as u64));
        (key, prefix, out)
    }

    fn opened(
        key: &SecretKey,
        prefix: &[u8; 7],
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        open(key, prefix, aad, ct, &mut out, |_| {})?;
        Ok(out)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn streams_of_every_shape_round_trip() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 5] {
            let d = data(len);
            let (key, prefix, ct) = sealed(&d, b"header");
            let chunks = len.div_ceil(CHUNK).max(1);
            assert_eq!(ct.len(), len + chunks * (4 + TAG_LEN), "length {len}");
            assert!(
                matches!(opened(&key, &prefix, b"header", &ct), Ok(p) if p == d),
                "length {len}"
            );
        }
    }

    #[test]
    fn a_stream_cut_short_altered_or_under_another_key_or_header_does_not_open() {
        let d = data(2 * CHUNK + 100);
        let (key, prefix, ct) = sealed(&d, b"header");
        let first = 4 + CHUNK + TAG_LEN;
        // Cut after the first chunk, after the second, and inside the third: each is
        // reported as cut short (not as altered, nor as another key).
        for (cut, chunks) in [(first, 1), (2 * first, 2), (ct.len() - 1, 2)] {
            let r = opened(&key, &prefix, b"header", &ct[..cut]);
            assert!(
                matches!(r, Err(StreamError::Truncated { chunks: c }) if c == chunks),
                "cut at {cut}: {r:?}"
            );
        }
        // A flipped byte in the second chunk names that chunk.
        let mut bad = ct.clone();
        bad[first + 10] ^= 1;
        assert!(matches!(
            opened(&key, &prefix, b"header", &bad),
            Err(StreamError::Corrupt { chunk: 1 })
        ));
        // Chunks dropped from the middle, or data appended, do not open.
        let mut dropped = ct[..first].to_vec();
        dropped.extend_from_slice(&ct[2 * first..]);
        assert!(opened(&key, &prefix, b"header", &dropped).is_err());
        let mut longer = ct.clone();
        longer.extend_from_slice(&ct[..first]);
        assert!(opened(&key, &prefix, b"header", &longer).is_err());
        // Another header, key or prefix.
        assert!(matches!(
            opened(&key, &prefix, b"headeR", &ct),
            Err(StreamError::Corrupt { chunk: 0 })
        ));
        let other = SecretKey::from_bytes(&[9; 32]).unwrap();
        assert!(matches!(
            opened(&other, &prefix, b"header", &ct),
            Err(StreamError::Corrupt { chunk: 0 })
        ));
        assert!(opened(&key, &[4; 7], b"header", &ct).is_err());
        // An empty file is not an empty stream.
        assert!(matches!(
            opened(&key, &prefix, b"header", &[]),
            Err(StreamError::Truncated { chunks: 0 })
        ));
    }
}
