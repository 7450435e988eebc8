//! A device as it runs: enrolled once (its identity and key kept in its state directory),
//! every measurement signed into a batch and buffered on disk before anything is sent,
//! and delivery that forgets a batch only when the server's signed acknowledgement says
//! it was stored (or was already).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use telesafe_crypto::sign::{DeviceKey, decode_base64url, encode_base64url};
use telesafe_proto::telemetry::{Ack, Reading, Reason};

use crate::batch::{BatchError, DeviceIdentity};
use crate::outbox::{Outbox, OutboxError};
use crate::sequence::SequenceFile;
use crate::transport::{Transport, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the device state in {path} is unreadable: {why}")]
    State { path: PathBuf, why: String },
    #[error("enrolment was refused: {0}")]
    Enrolment(String),
}

/// What the device keeps about itself (`identity.json`, readable by the device only).
#[derive(Serialize, Deserialize)]
struct Saved {
    device_id: String,
    /// PKCS#8 of the Ed25519 key, base64url.
    key: String,
    firmware: String,
    server_public_key: String,
}

/// An enrolled device with its state directory.
#[derive(Debug)]
pub struct Device {
    pub identity: DeviceIdentity,
    pub server_key: Vec<u8>,
    counter: SequenceFile,
    outbox: Outbox,
}

/// What one delivery round achieved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub stored: usize,
    pub duplicate: usize,
    /// Refused batches (set aside, never resent) with the server's reason.
    pub refused: Vec<(u64, Reason)>,
    /// The server's reason when a stored batch was quarantined (firmware update needed).
    pub update_required: Option<String>,
    /// Batches still waiting.
    pub remaining: usize,
}

fn state_err(path: &Path, why: impl ToString) -> DeviceError {
    DeviceError::State { path: path.to_owned(), why: why.to_string() }
}

impl Device {
    fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        (dir.join("identity.json"), dir.join("sequence"), dir.join("outbox"))
    }

    /// Enrols with a one-time code over HTTPS and saves the identity in `dir`.
    pub async fn enroll(
        client: &reqwest::Client,
        base: &str,
        code: &str,
        serial: &str,
        firmware: &str,
        dir: &Path,
    ) -> Result<Self, DeviceError> {
        let key = DeviceKey::generate().map_err(|_| state_err(dir, "no randomness for a key"))?;
        let r = client
            .post(format!("{}/api/v1/devices/enroll", base.trim_end_matches('/')))
            .json(&serde_json::json!({
                "code": code,
                "public_key": encode_base64url(&key.public_key()),
                "serial": serial,
                "firmware": firmware,
            }))
            .send()
            .await
            .map_err(|e| TransportError::Unreachable(e.to_string()))?;
        let status = r.status();
        let body: serde_json::Value =
            r.json().await.map_err(|e| TransportError::Unreachable(e.to_string()))?;
        if status.as_u16() != 201 {
            let why = body["message"].as_str().unwrap_or("no reason given").to_owned();
            return Err(DeviceError::Enrolment(why));
        }
        let saved = Saved {
            device_id: body["device_id"].as_str().unwrap_or_default().to_owned(),
            key: encode_base64url(key.pkcs8()),
            firmware: firmware.to_owned(),
            server_public_key: body["server_public_key"].as_str().unwrap_or_default().to_owned(),
        };
        std::fs::create_dir_all(dir).map_err(|e| state_err(dir, e))?;
        let (identity, _, _) = Self::paths(dir);
        let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| state_err(dir, e))?;
        write_private(&identity, &bytes).map_err(|e| state_err(&identity, e))?;
        Self::open(dir)
    }

    /// Opens an enrolled device's state (after a restart).
    pub fn open(dir: &Path) -> Result<Self, DeviceError> {
        let (identity, sequence, outbox) = Self::paths(dir);
        let raw = std::fs::read(&identity).map_err(|e| state_err(&identity, e))?;
        let saved: Saved = serde_json::from_slice(&raw).map_err(|e| state_err(&identity, e))?;
        let der = decode_base64url(&saved.key).ok_or_else(|| state_err(&identity, "bad key"))?;
        let key = DeviceKey::from_pkcs8(&der).map_err(|_| state_err(&identity, "bad key"))?;
        let server_key = decode_base64url(&saved.server_public_key)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| state_err(&identity, "bad server key"))?;
        Ok(Self {
            identity: DeviceIdentity { device_id: saved.device_id, key, firmware: saved.firmware },
            server_key,
            counter: SequenceFile::open(&sequence).map_err(BatchError::from)?,
            outbox: Outbox::open(&outbox)?,
        })
    }

    /// Signs readings into the next batch and buffers it durably; returns its number.
    /// `clock` is the device's time now (injected, so tests and simulators control it).
    pub fn record(&mut self, clock: &str, readings: Vec<Reading>) -> Result<u64, DeviceError> {
        let b = self.identity.sign(&mut self.counter, clock, readings)?;
        self.outbox.push(&b)?;
        Ok(b.batch.seq)
    }

    /// Batches waiting for an acknowledgement.
    pub fn waiting(&self) -> Result<usize, DeviceError> {
        Ok(self.outbox.len()?)
    }

    /// Sends everything waiting, oldest first, in chunks the transport takes. Stops at the
    /// first transport failure with everything unacknowledged still buffered.
    pub async fn deliver(&mut self, t: &mut impl Transport) -> Result<Delivery, DeviceError> {
        let mut out = Delivery::default();
        let pending = self.outbox.pending()?;
        for chunk in pending.chunks(t.max_batches().max(1)) {
            let batches =
                chunk.iter().map(|s| self.outbox.get(*s)).collect::<Result<Vec<_>, _>>()?;
            let acks = match t.send(&batches).await {
                Ok(acks) => acks,
                Err(e) => {
                    out.remaining = self.outbox.len()?;
                    return if out.stored + out.duplicate > 0 { Ok(out) } else { Err(e.into()) };
                }
            };
            for (b, ack) in batches.iter().zip(acks) {
                let seq = b.batch.seq;
                match ack {
                    Ack::Stored { quarantined, .. } => {
                        self.outbox.acknowledge(seq)?;
                        out.stored += 1;
                        if quarantined.is_some() {
                            out.update_required = quarantined;
                        }
                    }
                    Ack::Duplicate { .. } => {
                        self.outbox.acknowledge(seq)?;
                        out.duplicate += 1;
                    }
                    Ack::Refused { reason, .. } => {
                        self.outbox.set_aside(seq)?;
                        out.refused.push((seq, reason));
                    }
                }
            }
        }
        out.remaining = self.outbox.len()?;
        Ok(out)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
