//! The signed telemetry format devices send (docs/device-protocol.md is the normative
//! text; this is one implementation of it).
//!
//! A batch is encoded as canonical JSON: the JSON Canonicalization Scheme (RFC 8785)
//! restricted to what the format needs, which makes it trivial to reproduce exactly on any
//! platform: objects with keys in ascending order, no insignificant whitespace, strings
//! without control characters, integers only (no floating point: measurement values are
//! decimal strings, as FHIR's decimals are). The signature is Ed25519 over
//! `telesafe-telemetry-v1\n` followed by the canonical bytes of `batch`.

use serde::{Deserialize, Serialize};

/// The prefix every signed message starts with (domain separation).
pub const SIGNING_CONTEXT: &[u8] = b"telesafe-telemetry-v1\n";
/// The most readings one batch may carry.
pub const MAX_READINGS: usize = 100;
/// The most bytes one signed batch may take on the wire.
pub const MAX_BATCH_BYTES: usize = 32 * 1024;
/// The longest string field.
pub const MAX_FIELD: usize = 64;
/// The largest sequence number (2^53 - 1, exact in every JSON implementation).
pub const MAX_SEQ: u64 = (1 << 53) - 1;

/// One measurement. Fields are declared in canonical (sorted) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    /// When it was measured: RFC 3339 UTC with `Z`, seconds precision.
    pub at: String,
    /// LOINC code.
    pub code: String,
    /// UCUM unit code.
    pub unit: String,
    /// Decimal value as a string (`"72"`, `"36.6"`).
    pub value: String,
}

/// A batch of readings from one device. Fields are declared in canonical (sorted) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The device's clock when it signed the batch (RFC 3339 UTC with `Z`).
    pub clock: String,
    /// The device id the server gave at enrolment.
    pub device: String,
    /// The firmware version running when the batch was made.
    pub firmware: String,
    pub readings: Vec<Reading>,
    /// Strictly rising per device, from 1.
    pub seq: u64,
}

/// A batch and its signature (base64url without padding, 64 bytes decoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBatch {
    pub batch: Batch,
    pub sig: String,
}

/// Why a batch was refused (the `reason` of a refusal; stable strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not a batch in the documented shape (bad JSON, unknown or missing fields, bad
    /// strings or times).
    Malformed,
    /// Over `MAX_BATCH_BYTES` or `MAX_READINGS`.
    Oversized,
    /// No enrolled device with that id (in this organisation).
    UnknownDevice,
    /// The device was revoked by an administrator.
    Revoked,
    /// The signature does not verify under the device's key.
    BadSignature,
    /// The device clock or a reading lies too far in the future.
    Future,
    /// A reading's code is not one the device's model measures, or its unit is wrong.
    UnsupportedReading,
    /// The device clock or a reading lies too far in the past (or a key rotation request
    /// is older than the server accepts).
    Stale,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Oversized => "oversized",
            Reason::UnknownDevice => "unknown_device",
            Reason::Revoked => "revoked",
            Reason::BadSignature => "bad_signature",
            Reason::Future => "future",
            Reason::UnsupportedReading => "unsupported_reading",
            Reason::Stale => "stale",
        }
    }
}

/// How the server answered one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Ack {
    /// Stored now. `gap_from` is set when sequence numbers were skipped (recorded).
    /// `quarantined` names why the readings are kept but not shown as clinical data.
    Stored { seq: u64, gap_from: Option<u64>, quarantined: Option<String> },
    /// Seen before (a replay or a resend): acknowledged, not stored twice.
    Duplicate { seq: u64 },
    /// Refused; nothing stored.
    Refused { seq: Option<u64>, reason: Reason },
}

/// The canonical bytes of a batch (what is signed).
pub fn canonical(batch: &Batch) -> Vec<u8> {
    // Struct fields are declared in sorted order and serde_json writes them in that order
    // with no whitespace; strings are checked free of control characters by `well_formed`,
    // so its escaping and RFC 8785's coincide.
    serde_json::to_vec(batch).unwrap_or_default()
}

/// The message a device signs.
pub fn signing_message(batch: &Batch) -> Vec<u8> {
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend_from_slice(&canonical(batch));
    m
}

fn good_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_FIELD && !s.chars().any(char::is_control)
}

fn good_time(s: &str) -> bool {
    // YYYY-MM-DDTHH:MM:SSZ exactly.
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn good_decimal(s: &str) -> bool {
    let t = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = t.split_once('.').unwrap_or((t, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && s.len() <= 20
        && int.bytes().all(|c| c.is_ascii_digit())
        && frac.bytes().all(|c| c.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'))
}

/// Parses and checks the shape of a signed batch; `Err` carries the refusal reason.
pub fn parse(bytes: &[u8]) -> Result<SignedBatch, Reason> {
    if bytes.len() > MAX_BATCH_BYTES {
        return Err(Reason::Oversized);
    }
    let b: SignedBatch = serde_json::from_slice(bytes).map_err(|_| Reason::Malformed)?;
    well_formed(&b)?;
    Ok(b)
}

/// The shape rules of the protocol document, for a batch already decoded.
pub fn well_formed(b: &SignedBatch) -> Result<(), Reason> {
    let batch = &b.batch;
    if batch.readings.len() > MAX_READINGS {
        return Err(Reason::Oversized);
    }
    let ok = batch.seq >= 1
        && batch.seq <= MAX_SEQ
        && good_text(&batch.device)
        && good_text(&batch.firmware)
        && good_time(&batch.clock)
        && !batch.readings.is_empty()
        && b.sig.len() == 86
        && b.sig.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        && batch.readings.iter().all(|r| {
            good_time(&r.at) && good_text(&r.code) && good_text(&r.unit) && good_decimal(&r.value)
        });
    if ok { Ok(()) } else { Err(Reason::Malformed) }
}

/// The prefix of a key-rotation message.
pub const ROTATION_CONTEXT: &[u8] = b"telesafe-rotate-v1\n";

/// A device replacing its key: signed by the current key (`sig`) and by the new one
/// (`new_sig`, proof that the device holds it). Fields in canonical (sorted) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    /// When the device made the request (same form as a batch's `clock`).
    pub at: String,
    pub device: String,
    /// base64url of the new 32-byte Ed25519 public key.
    pub new_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRotation {
    pub new_sig: String,
    pub rotation: Rotation,
    pub sig: String,
}

/// The message both keys sign for a rotation.
pub fn rotation_message(r: &Rotation) -> Vec<u8> {
    let mut m = ROTATION_CONTEXT.to_vec();
    m.extend_from_slice(&serde_json::to_vec(r).unwrap_or_default());
    m
}

/// Checks a rotation's shape (`Malformed` otherwise).
pub fn parse_rotation(bytes: &[u8]) -> Result<SignedRotation, Reason> {
    if bytes.len() > 4096 {
        return Err(Reason::Oversized);
    }
    let r: SignedRotation = serde_json::from_slice(bytes).map_err(|_| Reason::Malformed)?;
    let sig_ok = |s: &str| {
        s.len() == 86 && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    };
    let ok = good_time(&r.rotation.at)
        && good_text(&r.rotation.device)
        && r.rotation.new_key.len() == 43
        && sig_ok(&r.sig)
        && sig_ok(&r.new_sig);
    if ok { Ok(r) } else { Err(Reason::Malformed) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn batch() -> Batch {
        Batch {
            clock: "2026-11-25T10:00:00Z".into(),
            device: "dev-1".into(),
            firmware: "1.4.2".into(),
            readings: vec![Reading {
                at: "2026-11-25T09:59:30Z".into(),
                code: "8867-4".into(),
                unit: "/min".into(),
                value: "72".into(),
            }],
            seq: 7,
        }
    }

    #[test]
    fn canonical_form_is_sorted_compact_json() {
        assert_eq!(
            String::from_utf8(canonical(&batch())).unwrap(),
            r#"{"clock":"2026-11-25T10:00:00Z","device":"dev-1","firmware":"1.4.2","readings":[{"at":"2026-11-25T09:59:30Z","code":"8867-4","unit":"/min","value":"72"}],"seq":7}"#
        );
        assert!(signing_message(&batch()).starts_with(b"telesafe-telemetry-v1\n{"));
    }

    #[test]
    fn shape_rules() {
        let good = SignedBatch { batch: batch(), sig: "A".repeat(86) };
        assert_eq!(well_formed(&good), Ok(()));
        let with = |f: &dyn Fn(&mut SignedBatch)| {
            let mut b = good.clone();
            f(&mut b);
            well_formed(&b)
        };
        assert_eq!(with(&|b| b.batch.seq = 0), Err(Reason::Malformed));
        assert_eq!(with(&|b| b.batch.readings[0].value = "7e2".into()), Err(Reason::Malformed));
        assert_eq!(with(&|b| b.batch.readings[0].value = "072".into()), Err(Reason::Malformed));
        assert_eq!(with(&|b| b.batch.readings[0].value = "-0.5".into()), Ok(()));
        assert_eq!(with(&|b| b.batch.clock = "2026-11-25 10:00:00".into()), Err(Reason::Malformed));
        assert_eq!(with(&|b| b.batch.device = "a\nb".into()), Err(Reason::Malformed));
        assert_eq!(with(&|b| b.sig = "A".repeat(85)), Err(Reason::Malformed));
        assert_eq!(with(&|b| b.batch.readings = vec![]), Err(Reason::Malformed));
        assert_eq!(
            with(&|b| b.batch.readings = vec![b.batch.readings[0].clone(); MAX_READINGS + 1]),
            Err(Reason::Oversized)
        );
        assert_eq!(parse(b"{\"batch\":1}"), Err(Reason::Malformed));
        assert_eq!(parse(&vec![b' '; MAX_BATCH_BYTES + 1]), Err(Reason::Oversized));
        let mut extra = serde_json::to_value(&good).unwrap();
        extra["batch"]["extra"] = serde_json::json!(1);
        assert_eq!(parse(extra.to_string().as_bytes()), Err(Reason::Malformed));
    }
}
