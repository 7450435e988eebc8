//! Device readings as FHIR Observations without a resource row each.
//!
//! A device's signed batch is stored once, sealed under the patient's key, together with
//! how each of its Observations was judged on arrival ([`BatchRecord`]). Each Observation
//! is then one narrow row ([`FiledReading`]: patient, device, place in the batch, a
//! blinded kind, time of measurement) and is read by opening its batch and rendering it
//! ([`vitals::render`]). Writing one row per reading instead of a sealed resource and
//! eight blind index entries is what lets a clinic's single machine file device readings
//! by the hundred thousand per second.
//!
//! Such an Observation has a stable id that names where it came from
//! (`d<device>.<seq>.<n>`, see [`reading_id`]) and is version 1. Editing or deleting it
//! stores version 2 onwards as ordinary resource versions, and its row is marked
//! superseded; version 1 stays readable from the batch.

use serde::{Deserialize, Serialize};
use telesafe_proto::telemetry::Batch;

use super::vitals::{self, Judgement};
use crate::ids::{PatientId, TenantId};

/// Where an Observation filed from a device reading comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadingRef {
    pub device: String,
    pub seq: u64,
    /// The reading's index in its batch.
    pub n: u32,
}

/// The id of the Observation filed from reading `n` of `device`'s batch `seq`:
/// `d` and the device id's 32 hex digits, then `.seq.n`. `None` if the device id is not
/// a UUID (every enrolled device's is) or the id would pass FHIR's 64 characters (it
/// cannot for a sequence number as stored, below 2^63, and a reading of a batch's 100).
pub fn reading_id(device: &str, seq: u64, n: u32) -> Option<String> {
    let uuid = uuid::Uuid::parse_str(device).ok()?;
    let id = format!("d{}.{seq}.{n}", uuid.simple());
    (id.len() <= 64).then_some(id)
}

/// The reading an id names, if it has the shape of [`reading_id`].
pub fn parse_reading_id(id: &str) -> Option<ReadingRef> {
    let rest = id.strip_prefix('d')?;
    let mut parts = rest.split('.');
    let (hex, seq, n) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(seq) || !digits(n) || (seq.len() > 1 && seq.starts_with('0')) {
        return None;
    }
    if n.len() > 1 && n.starts_with('0') {
        return None;
    }
    let device = uuid::Uuid::try_parse(hex).ok()?.hyphenated().to_string();
    // Only lower-case hex: one reading, one spelling.
    if !hex.bytes().all(|b| !b.is_ascii_uppercase()) {
        return None;
    }
    Some(ReadingRef { device, seq: seq.parse().ok()?, n: n.parse().ok()? })
}

/// Whether `id` of `resource_type` is reserved for a device reading's Observation.
pub fn is_reading(resource_type: &str, id: &str) -> bool {
    resource_type == "Observation" && parse_reading_id(id).is_some()
}

/// The associated data that binds a sealed batch to its row: tenant, patient, device and
/// sequence number.
pub fn batch_aad(tenant: TenantId, patient: PatientId, device: &str, seq: u64) -> Vec<u8> {
    format!("telesafe/device-batch/v1|{tenant}|{patient}|{device}|{seq}").into_bytes()
}

/// A batch as stored (sealed): the signed batch as the device sent it and, once its
/// readings are clinical data, how each of its Observations was judged on arrival.
/// Quarantined batches have no judgements until an administrator releases them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRecord {
    pub batch: Batch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filed: Option<Vec<Judgement>>,
}

impl BatchRecord {
    /// Reads a stored batch: a record, or a bare batch (how batches were stored before
    /// readings had rows of their own; their Observations are ordinary resources).
    pub fn parse(plain: &[u8]) -> Option<Self> {
        serde_json::from_slice(plain)
            .ok()
            .or_else(|| serde_json::from_slice(plain).ok().map(|batch| Self { batch, filed: None }))
    }

    /// The Observation filed from reading `n`, rendered as it was judged, without id and
    /// meta (the caller stamps them); `None` if no Observation is filed under `n`.
    pub fn observation(&self, patient: PatientId, n: u32) -> Option<serde_json::Value> {
        let j = self.filed.as_ref()?.iter().find(|j| j.i == n as usize)?;
        let b = &self.batch;
        let identifier = format!("{}/{}/{n}", b.device, b.seq);
        Some(vitals::render(&patient.to_string(), &b.device, &b.readings, j, &identifier))
    }
}

/// What a chart needs of one filed Observation, read straight from its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct FiledValues<'a> {
    /// The time of measurement as the device sent it.
    pub at: &'a str,
    /// Flagged by the plausibility checks.
    pub suspicious: bool,
    /// `(LOINC code, value)`: one, or a blood-pressure panel's two.
    pub values: Vec<(&'a str, f64)>,
}

impl BatchRecord {
    /// The values of the Observations filed under readings `ns` (ascending), without
    /// rendering them: a chart opens thousands, and building each Observation's JSON
    /// only to read two numbers back out of it was most of a chart's time.
    pub fn values(&self, ns: &[u32]) -> Vec<FiledValues<'_>> {
        let Some(filed) = &self.filed else { return Vec::new() };
        let rs = &self.batch.readings;
        let mut out = Vec::with_capacity(ns.len());
        for j in filed {
            let Ok(i) = u32::try_from(j.i) else { continue };
            let Some(r) = rs.get(j.i).filter(|_| ns.binary_search(&i).is_ok()) else {
                continue;
            };
            let values = std::iter::once(r)
                .chain(j.pair.and_then(|p| rs.get(p)))
                .filter_map(|x| Some((x.code.as_str(), x.value.parse::<f64>().ok()?)))
                .collect();
            out.push(FiledValues { at: &r.at, suspicious: !j.suspicious.is_empty(), values });
        }
        out
    }
}

/// One Observation's row: no clinical value, only what finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiledReading {
    pub patient: PatientId,
    /// The reading's index in its batch.
    pub n: u32,
    /// The blinded Observation code (under the tenant's index key): see [`KindEntry`].
    pub kind: String,
    /// When it was measured: the time's range (Unix ms), as the `date` index holds it.
    pub low: i64,
    pub high: i64,
}

/// One blind index value a kind of reading answers to (its code, category and status,
/// as a search sends them); the same for every reading of the kind, so stored once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KindEntry {
    pub kind: String,
    pub param: String,
    pub value: String,
}

/// The policy category of every device reading's Observation (vital signs).
pub const READING_CATEGORY: &str = "vitals";

/// The search parameters a kind answers for; any other token parameter (but
/// `identifier`, which names the reading) matches no device reading.
pub const KIND_PARAMS: &[&str] = &["code", "category", "status"];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn ids_round_trip_and_only_one_spelling_parses() {
        let device = "0191c3f2-6a4b-7c3d-8e9f-0a1b2c3d4e5f";
        let id = reading_id(device, 42, 3).unwrap();
        assert_eq!(id, "d0191c3f26a4b7c3d8e9f0a1b2c3d4e5f.42.3");
        assert_eq!(
            parse_reading_id(&id),
            Some(ReadingRef { device: device.into(), seq: 42, n: 3 })
        );
        let longest = reading_id(device, i64::MAX as u64, 999).unwrap();
        assert!(longest.len() <= 64, "{}", longest.len());
        assert_eq!(reading_id(device, u64::MAX, u32::MAX), None);
        for bad in [
            "d0191C3F26A4B7C3D8E9F0A1B2C3D4E5F.42.3",
            "d0191c3f26a4b7c3d8e9f0a1b2c3d4e5f.042.3",
            "d0191c3f26a4b7c3d8e9f0a1b2c3d4e5f.42.03",
            "d0191c3f26a4b7c3d8e9f0a1b2c3d4e5f.42",
            "d0191c3f26a4b7c3d8e9f0a1b2c3d4e5f.42.3.1",
            "d0191c3f26a4b7c3d8e9f0a1b2c3d4e5.42.3",
            "x0191c3f26a4b7c3d8e9f0a1b2c3d4e5f.42.3",
            "d0191c3f26a4b7c3d8e9f0a1b2c3d4e5f.-1.3",
            "0191c3f2-6a4b-7c3d-8e9f-0a1b2c3d4e5f",
        ] {
            assert_eq!(parse_reading_id(bad), None, "{bad}");
        }
        assert!(reading_id("not-a-uuid", 1, 0).is_none());
        assert!(is_reading("Observation", &id) && !is_reading("Condition", &id));
    }

    #[test]
    fn a_record_reads_back_a_bare_batch_and_renders_what_was_judged() {
        let batch = Batch {
            clock: "2026-12-05T10:00:00Z".into(),
            device: "0191c3f2-6a4b-7c3d-8e9f-0a1b2c3d4e5f".into(),
            firmware: "2.0.0".into(),
            readings: vec![telesafe_proto::telemetry::Reading {
                at: "2026-12-05T09:59:00Z".into(),
                code: "59408-5".into(),
                unit: "%".into(),
                value: "87".into(),
            }],
            seq: 7,
        };
        let bare = serde_json::to_vec(&batch).unwrap();
        assert_eq!(BatchRecord::parse(&bare).unwrap().filed, None);
        let t = [vitals::Threshold { code: "59408-5".into(), low: Some(90.0), high: None }];
        let judged = vitals::judge_batch(&batch.readings, |_| Some(0), &mut Default::default(), &t);
        let record = BatchRecord { batch, filed: Some(judged) };
        let stored = serde_json::to_vec(&record).unwrap();
        let back = BatchRecord::parse(&stored).unwrap();
        assert_eq!(back.batch, record.batch);
        let mut expected = record.filed.clone().unwrap();
        assert_eq!(expected[0].breaches.len(), 1, "87 % is below the threshold");
        expected[0].breaches.clear();
        assert_eq!(back.filed.as_ref(), Some(&expected), "judgements, not the alerts, stored");
        let patient: PatientId = "0191c3f2-0000-7000-8000-000000000001".parse().unwrap();
        let o = back.observation(patient, 0).unwrap();
        assert_eq!(o["interpretation"][0]["coding"][0]["code"], "L");
        assert_eq!(o["identifier"][0]["value"], "0191c3f2-6a4b-7c3d-8e9f-0a1b2c3d4e5f/7/0");
        assert!(back.observation(patient, 1).is_none());
    }
}
