//! Remote patient monitoring: what the server decides about a signed telemetry batch from
//! an enrolled device (pure rules, no storage or transport): who sent it, whether it is
//! authentic, new, plausible in time, of readings the device's model measures, and whether
//! the device's firmware lets its readings count as clinical data.

use telesafe_proto::telemetry::{Reason, SignedBatch, signing_message};

use crate::clock::Timestamp;

/// How far ahead of the server's clock a device clock or a reading may be.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

/// What the server knows of an enrolled device when a batch arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    pub id: String,
    /// Ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
    pub revoked: bool,
    /// The highest sequence number stored so far (0 before the first).
    pub last_seq: u64,
}

/// A model's policy: what it measures (LOINC code with its UCUM unit) and which firmware
/// may count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPolicy {
    pub measures: Vec<(String, String)>,
    pub min_firmware: String,
    /// Known-vulnerable versions with their advisory ids.
    pub vulnerable: Vec<(String, String)>,
}

/// The decision on one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Store it. `gap_from`: sequence numbers from there up to this batch's were skipped.
    /// `quarantine`: why its readings are kept but not clinical data until released.
    Store {
        gap_from: Option<u64>,
        quarantine: Option<String>,
    },
    /// Already stored (a replay or a resend): acknowledge, store nothing.
    Duplicate,
    Refuse(Reason),
}

/// Compares dotted numeric versions ("1.10.0" > "1.9.3"); `None` if either is not one.
pub fn compare_versions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let parse = |s: &str| -> Option<Vec<u64>> { s.split('.').map(|p| p.parse().ok()).collect() };
    let (mut x, mut y) = (parse(a)?, parse(b)?);
    let n = x.len().max(y.len());
    x.resize(n, 0);
    y.resize(n, 0);
    Some(x.cmp(&y))
}

/// Why readings from `firmware` cannot count as clinical data, if they cannot.
pub fn firmware_quarantine(policy: &ModelPolicy, firmware: &str) -> Option<String> {
    if let Some((_, advisory)) = policy.vulnerable.iter().find(|(v, _)| v == firmware) {
        return Some(format!("firmware {firmware} is known to be vulnerable ({advisory})"));
    }
    match compare_versions(firmware, &policy.min_firmware) {
        Some(std::cmp::Ordering::Less) => Some(format!(
            "firmware {firmware} is below the minimum secure version {}",
            policy.min_firmware
        )),
        Some(_) => None,
        None => Some(format!("firmware version {firmware} cannot be compared with the policy")),
    }
}

fn millis(rfc3339: &str) -> Option<i64> {
    crate::records::search::parse_date_range(rfc3339).map(|r| r.low)
}

/// Decides what to do with a well-formed batch (`telemetry::parse` already passed).
pub fn decide(
    device: Option<&DeviceState>,
    policy: &ModelPolicy,
    b: &SignedBatch,
    now: Timestamp,
) -> Outcome {
    let Some(device) = device.filter(|d| d.id == b.batch.device) else {
        return Outcome::Refuse(Reason::UnknownDevice);
    };
    if device.revoked {
        return Outcome::Refuse(Reason::Revoked);
    }
    let sig = telesafe_crypto::sign::decode_base64url(&b.sig).unwrap_or_default();
    if !telesafe_crypto::sign::verify_ed25519(&device.public_key, &signing_message(&b.batch), &sig)
    {
        return Outcome::Refuse(Reason::BadSignature);
    }
    // Authentic but not new: a replay, or a resend whose acknowledgement was lost.
    if b.batch.seq <= device.last_seq {
        return Outcome::Duplicate;
    }
    let limit = now.unix_millis() + MAX_FUTURE_MS;
    let times = std::iter::once(b.batch.clock.as_str())
        .chain(b.batch.readings.iter().map(|r| r.at.as_str()));
    for t in times {
        match millis(t) {
            Some(ms) if ms <= limit => {}
            Some(_) => return Outcome::Refuse(Reason::Future),
            None => return Outcome::Refuse(Reason::Malformed),
        }
    }
    let measured =
        |code: &str, unit: &str| policy.measures.iter().any(|(c, u)| c == code && u == unit);
    if !b.batch.readings.iter().all(|r| measured(&r.code, &r.unit)) {
        return Outcome::Refuse(Reason::UnsupportedReading);
    }
    Outcome::Store {
        gap_from: (b.batch.seq > device.last_seq + 1).then_some(device.last_seq + 1),
        quarantine: firmware_quarantine(policy, &b.batch.firmware),
    }
}

/// A device model a tenant's administrators registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceModel {
    pub id: String,
    pub tenant: crate::ids::TenantId,
    pub manufacturer: String,
    pub model: String,
    pub policy: ModelPolicy,
    pub created_at: Timestamp,
}

/// A one-time enrolment: a code (stored as a hash) that lets one device of `model_id`
/// enrol for `patient` until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub code_hash: telesafe_crypto::TokenHash,
    pub tenant: crate::ids::TenantId,
    pub patient: crate::ids::PatientId,
    pub model_id: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// How long an enrolment code is valid.
pub const ENROLLMENT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub tenant: crate::ids::TenantId,
    pub patient: crate::ids::PatientId,
    pub model_id: String,
    pub public_key: Vec<u8>,
    pub serial: String,
    pub firmware: String,
    pub revoked: bool,
    pub last_seq: u64,
    pub enrolled_at: Timestamp,
}

impl Device {
    pub fn state(&self) -> DeviceState {
        DeviceState {
            id: self.id.clone(),
            public_key: self.public_key.clone(),
            revoked: self.revoked,
            last_seq: self.last_seq,
        }
    }
}

/// A stored batch (its readings live on as Observations, or wait in quarantine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub tenant: crate::ids::TenantId,
    pub device_id: String,
    pub seq: u64,
    pub received_at: Timestamp,
    pub gap_from: Option<u64>,
    pub quarantine: Option<String>,
    /// The readings, sealed under the patient's data key.
    pub body: Vec<u8>,
}

pub trait DeviceRepository: Send + Sync {
    fn create_model(
        &self,
        m: &DeviceModel,
    ) -> impl std::future::Future<Output = Result<(), crate::repo::RepoError>> + Send;
    fn model(
        &self,
        tenant: crate::ids::TenantId,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<DeviceModel>, crate::repo::RepoError>> + Send;
    fn create_enrollment(
        &self,
        e: &Enrollment,
    ) -> impl std::future::Future<Output = Result<(), crate::repo::RepoError>> + Send;
    /// Uses up an unexpired, unused enrolment atomically; `None` otherwise.
    fn redeem_enrollment(
        &self,
        code: &telesafe_crypto::TokenHash,
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<Option<Enrollment>, crate::repo::RepoError>> + Send;
    fn create_device(
        &self,
        d: &Device,
    ) -> impl std::future::Future<Output = Result<(), crate::repo::RepoError>> + Send;
    /// A device by its (globally unique) id.
    fn device(
        &self,
        id: &str,
    ) -> impl std::future::Future<Output = Result<Option<Device>, crate::repo::RepoError>> + Send;
    /// Stores a batch and raises the device's last sequence number, atomically;
    /// `Conflict` when the number is not above the last (stored exactly once).
    fn record_batch(
        &self,
        b: &StoredBatch,
    ) -> impl std::future::Future<Output = Result<(), crate::repo::RepoError>> + Send;
    /// A device's quarantined batches not yet released.
    fn quarantined_batches(
        &self,
        tenant: crate::ids::TenantId,
        device: &str,
    ) -> impl std::future::Future<Output = Result<Vec<StoredBatch>, crate::repo::RepoError>> + Send;
    /// Marks one released; `false` if it was released already.
    fn release_batch(
        &self,
        tenant: crate::ids::TenantId,
        device: &str,
        seq: u64,
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<bool, crate::repo::RepoError>> + Send;
    fn revoke_device(
        &self,
        tenant: crate::ids::TenantId,
        id: &str,
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<bool, crate::repo::RepoError>> + Send;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;
    use telesafe_crypto::sign::DeviceKey;
    use telesafe_proto::telemetry::{Batch, Reading};

    const NOW: Timestamp = Timestamp::from_unix_millis(1_795_000_000_000);

    fn policy() -> ModelPolicy {
        ModelPolicy {
            measures: vec![("8867-4".into(), "/min".into()), ("59408-5".into(), "%".into())],
            min_firmware: "2.0.0".into(),
            vulnerable: vec![("2.1.0".into(), "ADV-2026-0042".into())],
        }
    }

    fn signed(key: &DeviceKey, seq: u64, firmware: &str, at: &str) -> SignedBatch {
        let batch = Batch {
            clock: NOW.to_rfc3339().replace(".000", "").chars().take(19).collect::<String>() + "Z",
            device: "dev-1".into(),
            firmware: firmware.into(),
            readings: vec![Reading {
                at: at.into(),
                code: "8867-4".into(),
                unit: "/min".into(),
                value: "72".into(),
            }],
            seq,
        };
        let sig = telesafe_crypto::sign::encode_base64url(&key.sign(&signing_message(&batch)));
        SignedBatch { batch, sig }
    }

    #[test]
    fn every_rule_with_its_reason() {
        let key = DeviceKey::generate().unwrap();
        let dev = DeviceState {
            id: "dev-1".into(),
            public_key: key.public_key().to_vec(),
            revoked: false,
            last_seq: 4,
        };
        let at = "2026-11-17T08:00:00Z";
        let ok = signed(&key, 5, "2.2.0", at);
        assert_eq!(
            decide(Some(&dev), &policy(), &ok, NOW),
            Outcome::Store { gap_from: None, quarantine: None }
        );
        assert_eq!(decide(None, &policy(), &ok, NOW), Outcome::Refuse(Reason::UnknownDevice));
        let revoked = DeviceState { revoked: true, ..dev.clone() };
        assert_eq!(decide(Some(&revoked), &policy(), &ok, NOW), Outcome::Refuse(Reason::Revoked));
        let mut forged = ok.clone();
        forged.batch.readings[0].value = "73".into();
        assert_eq!(
            decide(Some(&dev), &policy(), &forged, NOW),
            Outcome::Refuse(Reason::BadSignature)
        );
        let other = DeviceKey::generate().unwrap();
        assert_eq!(
            decide(Some(&dev), &policy(), &signed(&other, 5, "2.2.0", at), NOW),
            Outcome::Refuse(Reason::BadSignature)
        );
        assert_eq!(
            decide(Some(&dev), &policy(), &signed(&key, 4, "2.2.0", at), NOW),
            Outcome::Duplicate
        );
        assert_eq!(
            decide(Some(&dev), &policy(), &signed(&key, 9, "2.2.0", at), NOW),
            Outcome::Store { gap_from: Some(5), quarantine: None }
        );
        assert_eq!(
            decide(Some(&dev), &policy(), &signed(&key, 5, "2.2.0", "2099-01-01T00:00:00Z"), NOW),
            Outcome::Refuse(Reason::Future)
        );
        let mut odd = signed(&key, 5, "2.2.0", at);
        odd.batch.readings[0].unit = "%".into();
        odd.sig = telesafe_crypto::sign::encode_base64url(&key.sign(&signing_message(&odd.batch)));
        assert_eq!(
            decide(Some(&dev), &policy(), &odd, NOW),
            Outcome::Refuse(Reason::UnsupportedReading)
        );
        match decide(Some(&dev), &policy(), &signed(&key, 5, "1.9.9", at), NOW) {
            Outcome::Store { quarantine: Some(q), .. } => {
                assert!(q.contains("below the minimum secure version 2.0.0"))
            }
            other => panic!("{other:?}"),
        }
        match decide(Some(&dev), &policy(), &signed(&key, 5, "2.1.0", at), NOW) {
            Outcome::Store { quarantine: Some(q), .. } => assert!(q.contains("ADV-2026-0042")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Some(Greater));
        assert_eq!(compare_versions("2.0", "2.0.0"), Some(Equal));
        assert_eq!(compare_versions("2.0.0-beta", "2.0.0"), None);
    }
}
