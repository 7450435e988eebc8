//! Remote patient monitoring: what the server decides about a signed telemetry batch from
//! an enrolled device (pure rules, no storage or transport): who sent it, whether it is
//! authentic, new, plausible in time, of readings the device's model measures, and whether
//! the device's firmware lets its readings count as clinical data.

pub mod readings;
pub mod vitals;

use telesafe_proto::telemetry::{Reason, SignedBatch, signing_message};

use crate::clock::Timestamp;

/// How far ahead of the server's clock a device clock or a reading may be.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// How far in the past a device clock or a reading may be: a week covers any outage a
/// device's buffer is meant to ride out; older readings are no use for monitoring and are
/// more likely a replay of captured traffic under a reset counter.
pub const MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;

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
/// `already_stored`: a batch with this device and sequence number is stored. Batches may
/// arrive out of order (MQTT delivers concurrently, a device resends after a gap), so a
/// number below the highest seen is not a replay by itself: only one already stored is.
pub fn decide(
    device: Option<&DeviceState>,
    policy: &ModelPolicy,
    b: &SignedBatch,
    now: Timestamp,
    already_stored: bool,
) -> Outcome {
    decide_checked(device, policy, b, now, already_stored, SignatureCheck::Pending)
}

/// Whether a batch's signature is still to be checked, or was checked already with
/// others under the same device's key ([`batch_signatures_valid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    Pending,
    Verified,
}

/// Whether every batch's signature is valid under its device's public key, checked
/// together: a request's or an MQTT group's batches at about half the cost of one by
/// one. `false` when any is not (or is malformed): [`decide`] then checks each alone and
/// refuses only the bad ones.
pub fn batch_signatures_valid(batches: &[(&[u8], &SignedBatch)]) -> bool {
    let mut messages = Vec::with_capacity(batches.len());
    let mut sigs = Vec::with_capacity(batches.len());
    for (_, b) in batches {
        messages.push(signing_message(&b.batch));
        sigs.push(telesafe_crypto::sign::decode_base64url(&b.sig).unwrap_or_default());
    }
    let items: Vec<(&[u8], &[u8], &[u8])> = batches
        .iter()
        .zip(messages.iter().zip(&sigs))
        .map(|((key, _), (m, s))| (*key, m.as_slice(), s.as_slice()))
        .collect();
    telesafe_crypto::sign::verify_ed25519_batch(&items)
}

/// [`decide`], told whether the signature was verified already.
pub fn decide_checked(
    device: Option<&DeviceState>,
    policy: &ModelPolicy,
    b: &SignedBatch,
    now: Timestamp,
    already_stored: bool,
    signature: SignatureCheck,
) -> Outcome {
    let Some(device) = device.filter(|d| d.id == b.batch.device) else {
        return Outcome::Refuse(Reason::UnknownDevice);
    };
    if device.revoked {
        return Outcome::Refuse(Reason::Revoked);
    }
    if signature == SignatureCheck::Pending {
        let sig = telesafe_crypto::sign::decode_base64url(&b.sig).unwrap_or_default();
        let msg = signing_message(&b.batch);
        if !telesafe_crypto::sign::verify_ed25519(&device.public_key, &msg, &sig) {
            return Outcome::Refuse(Reason::BadSignature);
        }
    }
    // Authentic but not new: a replay, or a resend whose acknowledgement was lost.
    if already_stored {
        return Outcome::Duplicate;
    }
    let limit = now.unix_millis() + MAX_FUTURE_MS;
    let oldest = now.unix_millis() - MAX_AGE_MS;
    let times = std::iter::once(b.batch.clock.as_str())
        .chain(b.batch.readings.iter().map(|r| r.at.as_str()));
    for t in times {
        match millis(t) {
            Some(ms) if ms > limit => return Outcome::Refuse(Reason::Future),
            Some(ms) if ms < oldest => return Outcome::Refuse(Reason::Stale),
            Some(_) => {}
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

/// How old a key-rotation request may be.
pub const MAX_ROTATION_AGE_MS: i64 = 10 * 60 * 1000;

/// Decides a key rotation (`parse_rotation` already passed): the device is enrolled and
/// not revoked, the request is fresh, the current key signed it and the new key did too.
/// Returns the new public key.
pub fn decide_rotation(
    device: Option<&DeviceState>,
    r: &telesafe_proto::telemetry::SignedRotation,
    now: Timestamp,
) -> Result<Vec<u8>, Reason> {
    use telesafe_crypto::sign::{decode_base64url, verify_ed25519};
    let device = device.filter(|d| d.id == r.rotation.device).ok_or(Reason::UnknownDevice)?;
    if device.revoked {
        return Err(Reason::Revoked);
    }
    // A new key must be a sound one (see `ed25519_public_key_is_sound`).
    let new_key = decode_base64url(&r.rotation.new_key)
        .filter(|k| telesafe_crypto::sign::ed25519_public_key_is_sound(k))
        .ok_or(Reason::Malformed)?;
    let msg = telesafe_proto::telemetry::rotation_message(&r.rotation);
    let sig = decode_base64url(&r.sig).unwrap_or_default();
    let new_sig = decode_base64url(&r.new_sig).unwrap_or_default();
    if !verify_ed25519(&device.public_key, &msg, &sig) || !verify_ed25519(&new_key, &msg, &new_sig)
    {
        return Err(Reason::BadSignature);
    }
    let at = millis(&r.rotation.at).ok_or(Reason::Malformed)?;
    if at > now.unix_millis() + MAX_FUTURE_MS {
        return Err(Reason::Future);
    }
    if at < now.unix_millis() - MAX_ROTATION_AGE_MS {
        return Err(Reason::Stale);
    }
    Ok(new_key)
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

impl DeviceModel {
    /// A new model from what an administrator entered, checked: a short id, names of
    /// 1-100 printable characters, measurements Telesafe knows with their UCUM units, a
    /// dotted minimum firmware version, and vulnerable versions with advisory ids.
    #[allow(clippy::too_many_arguments, reason = "one field per form input")]
    pub fn new(
        tenant: crate::ids::TenantId,
        id: &str,
        manufacturer: &str,
        model: &str,
        measures: Vec<(String, String)>,
        min_firmware: &str,
        vulnerable: Vec<(String, String)>,
        now: Timestamp,
    ) -> Result<Self, String> {
        if id.is_empty()
            || id.len() > 64
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err("the model id may hold only letters, digits and '-' (at most 64)".into());
        }
        let text =
            |s: &str| !s.trim().is_empty() && s.len() <= 100 && !s.chars().any(char::is_control);
        if !text(manufacturer) || !text(model) {
            return Err("give the manufacturer and the model name (at most 100 characters)".into());
        }
        if measures.is_empty() {
            return Err("name at least one measurement the model takes".into());
        }
        for (code, unit) in &measures {
            match vitals::sign_for(code) {
                Some(s) if s.ucum == unit => {}
                Some(s) => {
                    return Err(format!(
                        "{} ({code}) is measured in {}, not {unit}",
                        s.name, s.ucum
                    ));
                }
                None => return Err(format!("Telesafe does not know the measurement {code}")),
            }
        }
        check_firmware_policy(min_firmware, &vulnerable)?;
        Ok(Self {
            id: id.to_owned(),
            tenant,
            manufacturer: manufacturer.trim().to_owned(),
            model: model.trim().to_owned(),
            policy: ModelPolicy { measures, min_firmware: min_firmware.to_owned(), vulnerable },
            created_at: now,
        })
    }
}

/// Checks a firmware policy an administrator entered: a dotted minimum version, and each
/// vulnerable version dotted with an advisory id.
pub fn check_firmware_policy(
    min_firmware: &str,
    vulnerable: &[(String, String)],
) -> Result<(), String> {
    if compare_versions(min_firmware, min_firmware).is_none() {
        return Err("the minimum firmware must be a dotted version such as 2.0.0".into());
    }
    let text = |s: &str| !s.trim().is_empty() && s.len() <= 100 && !s.chars().any(char::is_control);
    for (version, advisory) in vulnerable {
        if compare_versions(version, version).is_none() || !text(advisory) {
            return Err("each vulnerable firmware needs a dotted version and an advisory id".into());
        }
    }
    Ok(())
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

/// A batch ready to store with everything that comes of it, in one transaction: the
/// batch itself, the Observations filed from its readings (none while quarantined), and
/// the alerts its readings raised. Storing the batch and filing its readings together
/// means a crash can never leave a batch acknowledged as a duplicate whose readings were
/// never filed.
#[derive(Debug, Clone)]
pub struct FiledBatch {
    pub batch: StoredBatch,
    /// The firmware the batch was signed under, now the device's known firmware.
    pub firmware: String,
    /// One row per Observation filed from the batch (none while it is quarantined).
    pub readings: Vec<readings::FiledReading>,
    /// The blind index values of the readings' kinds (stored once per tenant and kind).
    pub kinds: Vec<readings::KindEntry>,
    pub alerts: Vec<ClinicalAlert>,
}

/// A quarantined batch released by an administrator: its body (the batch with its
/// judgements), and its readings' rows and kinds.
#[derive(Debug, Clone)]
pub struct Release {
    pub seq: u64,
    pub at: Timestamp,
    pub body: Vec<u8>,
    pub readings: Vec<readings::FiledReading>,
    pub kinds: Vec<readings::KindEntry>,
}

/// An alert for the care team: a device reading crossed the patient's threshold. What was
/// measured lives in `body`, sealed under the patient's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicalAlert {
    pub id: String,
    pub tenant: crate::ids::TenantId,
    pub patient: crate::ids::PatientId,
    pub observation_id: String,
    pub created_at: Timestamp,
    pub body: Vec<u8>,
}

/// A device as the administrators' list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    pub device: Device,
    pub key_rotated_at: Option<Timestamp>,
    /// Batches waiting in quarantine, and the reason of the latest.
    pub quarantined: u64,
    pub quarantine_reason: Option<String>,
    pub last_received: Option<Timestamp>,
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
    /// Stores batches in one transaction (group commit). For each: if no batch with its
    /// device and number is stored yet, stores it, raises the device's last sequence
    /// number (and records its firmware) if it is the newest, files its Observations and
    /// raises its alerts, and answers `true`; otherwise stores nothing of it and answers
    /// `false` (a duplicate: exactly once).
    fn record_batches(
        &self,
        batches: &[FiledBatch],
    ) -> impl std::future::Future<Output = Result<Vec<bool>, crate::repo::RepoError>> + Send;
    /// Replaces a model's firmware policy (its minimum and known-vulnerable versions);
    /// `false` if there is no such model.
    fn update_model_policy(
        &self,
        tenant: crate::ids::TenantId,
        id: &str,
        min_firmware: &str,
        vulnerable: &[(String, String)],
    ) -> impl std::future::Future<Output = Result<bool, crate::repo::RepoError>> + Send;
    /// Whether a batch with this number is stored for the device.
    fn batch_stored(
        &self,
        tenant: crate::ids::TenantId,
        device: &str,
        seq: u64,
    ) -> impl std::future::Future<Output = Result<bool, crate::repo::RepoError>> + Send;
    fn list_devices(
        &self,
        tenant: crate::ids::TenantId,
    ) -> impl std::future::Future<Output = Result<Vec<DeviceSummary>, crate::repo::RepoError>> + Send;
    fn list_models(
        &self,
        tenant: crate::ids::TenantId,
    ) -> impl std::future::Future<Output = Result<Vec<DeviceModel>, crate::repo::RepoError>> + Send;
    /// Replaces a device's key if it is still `old` (the key that signed the rotation).
    fn rotate_device_key(
        &self,
        tenant: crate::ids::TenantId,
        id: &str,
        old: &[u8],
        new: &[u8],
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<bool, crate::repo::RepoError>> + Send;
    /// A patient's sealed thresholds, if the care team set any.
    fn thresholds(
        &self,
        tenant: crate::ids::TenantId,
        patient: crate::ids::PatientId,
    ) -> impl std::future::Future<Output = Result<Option<Vec<u8>>, crate::repo::RepoError>> + Send;
    fn set_thresholds(
        &self,
        tenant: crate::ids::TenantId,
        patient: crate::ids::PatientId,
        body: &[u8],
        by: &str,
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<(), crate::repo::RepoError>> + Send;
    /// Alerts nobody acknowledged yet, newest first.
    fn open_clinical_alerts(
        &self,
        tenant: crate::ids::TenantId,
    ) -> impl std::future::Future<Output = Result<Vec<ClinicalAlert>, crate::repo::RepoError>> + Send;
    /// Marks one acknowledged; `false` if it was already, or is not this tenant's.
    fn acknowledge_clinical_alert(
        &self,
        tenant: crate::ids::TenantId,
        id: &str,
        by: &str,
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<bool, crate::repo::RepoError>> + Send;
    /// A device's quarantined batches not yet released.
    fn quarantined_batches(
        &self,
        tenant: crate::ids::TenantId,
        device: &str,
    ) -> impl std::future::Future<Output = Result<Vec<StoredBatch>, crate::repo::RepoError>> + Send;
    /// Marks one released and files its Observations, atomically: its body replaced by
    /// `body` (the batch with its judgements) and its readings' rows stored; `false` (and
    /// nothing filed) if it was released already.
    fn release_batch(
        &self,
        tenant: crate::ids::TenantId,
        device: &str,
        release: &Release,
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
    fn signatures_checked_together_agree_with_one_by_one() {
        let (a, b) = (DeviceKey::generate().unwrap(), DeviceKey::generate().unwrap());
        let (ka, kb) = (a.public_key(), b.public_key());
        let at = "2026-11-17T08:00:00Z";
        let (x, y) = (signed(&a, 5, "2.2.0", at), signed(&b, 6, "2.2.0", at));
        assert!(batch_signatures_valid(&[(&ka[..], &x), (&kb[..], &y)]));
        assert!(!batch_signatures_valid(&[(&ka[..], &y), (&kb[..], &x)]), "each its own key");
        let mut forged = y.clone();
        forged.batch.readings[0].value = "190".into();
        assert!(!batch_signatures_valid(&[(&ka[..], &x), (&kb[..], &forged)]));
        let mut garbled = x.clone();
        garbled.sig = "not base64url!".into();
        assert!(!batch_signatures_valid(&[(&ka[..], &garbled), (&kb[..], &y)]));
        // Checked already: decide does not check again; pending: it does.
        let dev = DeviceState {
            id: "dev-1".into(),
            public_key: kb.to_vec(),
            revoked: false,
            last_seq: 4,
        };
        let store = Outcome::Store { gap_from: Some(5), quarantine: None };
        let verified = SignatureCheck::Verified;
        assert_eq!(decide_checked(Some(&dev), &policy(), &y, NOW, false, verified), store);
        let pending = SignatureCheck::Pending;
        assert_eq!(
            decide_checked(Some(&dev), &policy(), &forged, NOW, false, pending),
            Outcome::Refuse(Reason::BadSignature)
        );
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
            decide(Some(&dev), &policy(), &ok, NOW, false),
            Outcome::Store { gap_from: None, quarantine: None }
        );
        assert_eq!(
            decide(None, &policy(), &ok, NOW, false),
            Outcome::Refuse(Reason::UnknownDevice)
        );
        let revoked = DeviceState { revoked: true, ..dev.clone() };
        assert_eq!(
            decide(Some(&revoked), &policy(), &ok, NOW, false),
            Outcome::Refuse(Reason::Revoked)
        );
        let mut forged = ok.clone();
        forged.batch.readings[0].value = "73".into();
        assert_eq!(
            decide(Some(&dev), &policy(), &forged, NOW, false),
            Outcome::Refuse(Reason::BadSignature)
        );
        let other = DeviceKey::generate().unwrap();
        assert_eq!(
            decide(Some(&dev), &policy(), &signed(&other, 5, "2.2.0", at), NOW, false),
            Outcome::Refuse(Reason::BadSignature)
        );
        assert_eq!(
            decide(Some(&dev), &policy(), &signed(&key, 4, "2.2.0", at), NOW, true),
            Outcome::Duplicate
        );
        // Below the highest number but never stored: a late arrival fills its gap.
        assert_eq!(
            decide(Some(&dev), &policy(), &signed(&key, 3, "2.2.0", at), NOW, false),
            Outcome::Store { gap_from: None, quarantine: None }
        );
        assert_eq!(
            decide(Some(&dev), &policy(), &signed(&key, 9, "2.2.0", at), NOW, false),
            Outcome::Store { gap_from: Some(5), quarantine: None }
        );
        assert_eq!(
            decide(
                Some(&dev),
                &policy(),
                &signed(&key, 5, "2.2.0", "2099-01-01T00:00:00Z"),
                NOW,
                false
            ),
            Outcome::Refuse(Reason::Future)
        );
        assert_eq!(
            decide(
                Some(&dev),
                &policy(),
                &signed(&key, 5, "2.2.0", "2026-11-01T00:00:00Z"),
                NOW,
                false
            ),
            Outcome::Refuse(Reason::Stale)
        );
        let mut odd = signed(&key, 5, "2.2.0", at);
        odd.batch.readings[0].unit = "%".into();
        odd.sig = telesafe_crypto::sign::encode_base64url(&key.sign(&signing_message(&odd.batch)));
        assert_eq!(
            decide(Some(&dev), &policy(), &odd, NOW, false),
            Outcome::Refuse(Reason::UnsupportedReading)
        );
        match decide(Some(&dev), &policy(), &signed(&key, 5, "1.9.9", at), NOW, false) {
            Outcome::Store { quarantine: Some(q), .. } => {
                assert!(q.contains("below the minimum secure version 2.0.0"))
            }
            other => panic!("{other:?}"),
        }
        match decide(Some(&dev), &policy(), &signed(&key, 5, "2.1.0", at), NOW, false) {
            Outcome::Store { quarantine: Some(q), .. } => assert!(q.contains("ADV-2026-0042")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_rotation_needs_both_keys_and_freshness() {
        use telesafe_proto::telemetry::{Rotation, SignedRotation, rotation_message};
        let old = DeviceKey::generate().unwrap();
        let new = DeviceKey::generate().unwrap();
        let dev = DeviceState {
            id: "dev-1".into(),
            public_key: old.public_key().to_vec(),
            revoked: false,
            last_seq: 4,
        };
        let make = |signer: &DeviceKey, holder: &DeviceKey, at: &str| {
            let rotation = Rotation {
                at: at.into(),
                device: "dev-1".into(),
                new_key: telesafe_crypto::sign::encode_base64url(&new.public_key()),
            };
            let m = rotation_message(&rotation);
            SignedRotation {
                sig: telesafe_crypto::sign::encode_base64url(&signer.sign(&m)),
                new_sig: telesafe_crypto::sign::encode_base64url(&holder.sign(&m)),
                rotation,
            }
        };
        let now = "2026-11-17T08:00:00Z";
        let now_ts = Timestamp::from_unix_millis(millis(now).unwrap());
        assert_eq!(
            decide_rotation(Some(&dev), &make(&old, &new, now), now_ts),
            Ok(new.public_key().to_vec())
        );
        // Signed by the new key only: anyone could claim a device that way.
        assert_eq!(
            decide_rotation(Some(&dev), &make(&new, &new, now), now_ts),
            Err(Reason::BadSignature)
        );
        // Without proof of holding the new key.
        assert_eq!(
            decide_rotation(Some(&dev), &make(&old, &old, now), now_ts),
            Err(Reason::BadSignature)
        );
        assert_eq!(
            decide_rotation(Some(&dev), &make(&old, &new, "2026-11-17T07:30:00Z"), now_ts),
            Err(Reason::Stale)
        );
        let revoked = DeviceState { revoked: true, ..dev.clone() };
        assert_eq!(
            decide_rotation(Some(&revoked), &make(&old, &new, now), now_ts),
            Err(Reason::Revoked)
        );
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Some(Greater));
        assert_eq!(compare_versions("2.0", "2.0.0"), Some(Equal));
        assert_eq!(compare_versions("2.0.0-beta", "2.0.0"), None);
    }
}
