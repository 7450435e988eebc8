//! Readings become FHIR Observations (the R4 vital-signs profiles), checked twice on the
//! way: **plausibility** (could a living person have this value, could it have changed
//! this fast since the device's previous reading; a failure flags the Observation as
//! suspicious, it is still filed) and the patient's **clinical thresholds** (a value
//! outside them is interpreted as high or low and raises an alert for the care team).
//!
//! Pure: no storage, no clock, no keys. The server supplies the previous readings and the
//! thresholds and stores what comes out.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use telesafe_proto::telemetry::Reading;

/// A measurement Telesafe knows how to file and judge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sign {
    pub loinc: &'static str,
    pub name: &'static str,
    pub ucum: &'static str,
    /// The unit as people read it.
    pub unit: &'static str,
    /// The R4 vital-signs profile the Observation claims, if one applies.
    pub profile: Option<&'static str>,
    /// What a living person can have.
    pub plausible: (f64, f64),
    /// The fastest credible change, in units per minute.
    pub max_rate_per_min: f64,
    /// The thresholds that apply when the care team set none for the patient.
    pub default_low: Option<f64>,
    pub default_high: Option<f64>,
}

pub const SYSTOLIC: &str = "8480-6";
pub const DIASTOLIC: &str = "8462-4";
/// LOINC "Blood pressure panel with all children optional" (the R4 `bp` profile's code).
pub const BP_PANEL: &str = "85354-9";
/// The LOINC code the R4 `oxygensat` profile requires beside the pulse-oximetry one.
const SPO2_PROFILE_CODE: &str = "2708-6";
const PROFILE: &str = "http://hl7.org/fhir/StructureDefinition/";

#[allow(clippy::too_many_arguments, reason = "a const table row")]
const fn sign(
    loinc: &'static str,
    name: &'static str,
    ucum: &'static str,
    unit: &'static str,
    profile: Option<&'static str>,
    plausible: (f64, f64),
    max_rate_per_min: f64,
    defaults: (Option<f64>, Option<f64>),
) -> Sign {
    Sign {
        loinc,
        name,
        ucum,
        unit,
        profile,
        plausible,
        max_rate_per_min,
        default_low: defaults.0,
        default_high: defaults.1,
    }
}

/// Every measurement a device may send (docs/device-protocol.md §2).
pub const SIGNS: &[Sign] = &[
    sign(
        "8867-4",
        "Heart rate",
        "/min",
        "beats/min",
        Some("heartrate"),
        (20.0, 300.0),
        60.0,
        (Some(40.0), Some(130.0)),
    ),
    sign(
        "59408-5",
        "Oxygen saturation (SpO2)",
        "%",
        "%",
        Some("oxygensat"),
        (50.0, 100.0),
        15.0,
        (Some(90.0), None),
    ),
    sign(
        SYSTOLIC,
        "Systolic blood pressure",
        "mm[Hg]",
        "mmHg",
        None,
        (50.0, 280.0),
        60.0,
        (Some(90.0), Some(180.0)),
    ),
    sign(
        DIASTOLIC,
        "Diastolic blood pressure",
        "mm[Hg]",
        "mmHg",
        None,
        (20.0, 180.0),
        40.0,
        (Some(50.0), Some(110.0)),
    ),
    sign(
        "8310-5",
        "Body temperature",
        "Cel",
        "°C",
        Some("bodytemp"),
        (30.0, 45.0),
        0.5,
        (Some(35.0), Some(38.5)),
    ),
    sign("29463-7", "Body weight", "kg", "kg", Some("bodyweight"), (0.5, 500.0), 0.5, (None, None)),
    sign(
        "9279-1",
        "Respiratory rate",
        "/min",
        "breaths/min",
        Some("resprate"),
        (3.0, 80.0),
        20.0,
        (Some(8.0), Some(30.0)),
    ),
    sign(
        "2339-0",
        "Blood glucose",
        "mg/dL",
        "mg/dL",
        None,
        (10.0, 1000.0),
        30.0,
        (Some(70.0), Some(250.0)),
    ),
];

/// The sign with this LOINC code.
pub fn sign_for(loinc: &str) -> Option<&'static Sign> {
    SIGNS.iter().find(|s| s.loinc == loinc)
}

/// A patient's clinical threshold for one measurement, set by the care team. Stored sealed
/// under the patient's key: a threshold says something about the patient's condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub code: String,
    pub low: Option<f64>,
    pub high: Option<f64>,
}

/// The thresholds in force for `code`: the patient's own, else the defaults.
pub fn threshold_for(own: &[Threshold], code: &str) -> (Option<f64>, Option<f64>) {
    match own.iter().find(|t| t.code == code) {
        Some(t) => (t.low, t.high),
        None => sign_for(code).map_or((None, None), |s| (s.default_low, s.default_high)),
    }
}

/// Checks a threshold a person entered: numbers inside the plausible range, low < high.
pub fn check_threshold(t: &Threshold) -> Result<(), String> {
    let s = sign_for(&t.code).ok_or("choose one of the listed measurements")?;
    for v in [t.low, t.high].into_iter().flatten() {
        if !(s.plausible.0..=s.plausible.1).contains(&v) {
            return Err(format!(
                "a threshold for {} must lie between {} and {} {}",
                s.name.to_lowercase(),
                s.plausible.0,
                s.plausible.1,
                s.unit
            ));
        }
    }
    if let (Some(l), Some(h)) = (t.low, t.high)
        && l >= h
    {
        return Err("the low threshold must be below the high one".into());
    }
    Ok(())
}

/// Why a value is suspicious.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Suspicion {
    OutOfRange { code: String },
    RateOfChange { code: String },
}

/// A value outside the patient's thresholds: what the care team is alerted to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    pub code: String,
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// "below 90" or "above 130".
    pub limit: String,
    pub at: String,
}

/// One Observation to file, with what the checks found.
#[derive(Debug, Clone)]
pub struct VitalObservation {
    pub resource: Value,
    pub suspicious: Vec<Suspicion>,
    pub breaches: Vec<Breach>,
}

/// The device's previous value for each code, as (Unix ms, value): the input to the
/// rate-of-change check; updated as readings are filed.
pub type Previous = HashMap<String, (i64, f64)>;

struct Judged {
    interpretation: Option<&'static str>,
    suspicious: Vec<Suspicion>,
    breaches: Vec<Breach>,
}

fn judge(r: &Reading, at_ms: i64, previous: &mut Previous, thresholds: &[Threshold]) -> Judged {
    let value: f64 = r.value.parse().unwrap_or(f64::NAN);
    let sign = sign_for(&r.code);
    let mut suspicious = Vec::new();
    let mut breaches = Vec::new();
    let mut interpretation = None;
    if let Some(s) = sign {
        if !(s.plausible.0..=s.plausible.1).contains(&value) {
            suspicious.push(Suspicion::OutOfRange { code: r.code.clone() });
        }
        if let Some((t, v)) = previous.get(&r.code) {
            let minutes = ((at_ms - t).abs() as f64 / 60_000.0).max(1.0);
            if (value - v).abs() / minutes > s.max_rate_per_min {
                suspicious.push(Suspicion::RateOfChange { code: r.code.clone() });
            }
        }
        let (low, high) = threshold_for(thresholds, &r.code);
        let breach = |limit: String| Breach {
            code: r.code.clone(),
            name: s.name.to_owned(),
            value,
            unit: s.unit.to_owned(),
            limit,
            at: r.at.clone(),
        };
        if let Some(l) = low.filter(|l| value < *l) {
            interpretation = Some("L");
            breaches.push(breach(format!("below {}", trim(l))));
        } else if let Some(h) = high.filter(|h| value > *h) {
            interpretation = Some("H");
            breaches.push(breach(format!("above {}", trim(h))));
        }
    }
    if previous.get(&r.code).is_none_or(|(t, _)| *t <= at_ms) {
        previous.insert(r.code.clone(), (at_ms, value));
    }
    Judged { interpretation, suspicious, breaches }
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

fn code_concept(loinc: &str) -> Value {
    let display = sign_for(loinc).map(|s| s.name).unwrap_or(if loinc == BP_PANEL {
        "Blood pressure panel"
    } else {
        ""
    });
    let mut coding = vec![json!({"system": "http://loinc.org", "code": loinc, "display": display})];
    if loinc == "59408-5" {
        coding.push(json!({"system": "http://loinc.org", "code": SPO2_PROFILE_CODE, "display": "Oxygen saturation in Arterial blood"}));
    }
    json!({"coding": coding, "text": display})
}

fn interpretation(code: char) -> Value {
    let display = if code == 'L' { "Low" } else { "High" };
    json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": code, "display": display}]}])
}

/// What filing one Observation found: which readings it holds, how each component
/// compares with the patient's thresholds, and what the plausibility checks flagged. It
/// is stored (sealed, with the batch) so the Observation reads back exactly as it was
/// judged when it arrived, whatever the thresholds are now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The reading (its index in the batch) the Observation is filed under; a
    /// blood-pressure panel takes the systolic's.
    pub i: usize,
    /// The diastolic reading taken at the same moment, for a panel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<usize>,
    /// Components (0, or 1 for a panel's diastolic) interpreted low (`L`) or high (`H`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interp: Vec<(usize, char)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspicious: Vec<Suspicion>,
    /// The thresholds crossed: what the care team is alerted to (not stored: the alerts
    /// are).
    #[serde(skip)]
    pub breaches: Vec<Breach>,
}

impl Judgement {
    /// The Observation's code: the panel's, or the reading's own.
    pub fn code<'a>(&self, readings: &'a [Reading]) -> &'a str {
        match self.pair {
            Some(_) => BP_PANEL,
            None => readings.get(self.i).map_or("", |r| r.code.as_str()),
        }
    }
}

/// Judges a batch's readings in order: pairs a systolic and a diastolic reading taken at
/// the same moment into one blood-pressure panel, checks every value's plausibility
/// (against `previous`, which it updates) and the patient's thresholds.
pub fn judge_batch(
    readings: &[Reading],
    at_ms: impl Fn(&str) -> Option<i64>,
    previous: &mut Previous,
    thresholds: &[Threshold],
) -> Vec<Judgement> {
    let mut out = Vec::with_capacity(readings.len());
    let mut paired = vec![false; readings.len()];
    for (i, r) in readings.iter().enumerate() {
        if paired[i] {
            continue;
        }
        let ms = at_ms(&r.at).unwrap_or_default();
        let partner = (r.code == SYSTOLIC)
            .then(|| {
                readings
                    .iter()
                    .enumerate()
                    .position(|(j, o)| !paired[j] && j != i && o.code == DIASTOLIC && o.at == r.at)
            })
            .flatten();
        let mut j = Judgement {
            i,
            pair: partner,
            interp: Vec::new(),
            suspicious: Vec::new(),
            breaches: Vec::new(),
        };
        if let Some(p) = partner {
            paired[p] = true;
        }
        for (c, reading) in std::iter::once(r).chain(partner.map(|p| &readings[p])).enumerate() {
            let jd = judge(reading, ms, previous, thresholds);
            if let Some(code) = jd.interpretation {
                j.interp.push((c, if code == "L" { 'L' } else { 'H' }));
            }
            j.suspicious.extend(jd.suspicious);
            j.breaches.extend(jd.breaches);
        }
        out.push(j);
    }
    out
}

fn quantity(r: &Reading) -> Value {
    let value: f64 = r.value.parse().unwrap_or(f64::NAN);
    let sign = sign_for(&r.code);
    json!({
        "value": serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number),
        "unit": sign.map_or(r.unit.as_str(), |s| s.unit),
        "system": "http://unitsofmeasure.org",
        "code": r.unit,
    })
}

/// The Observation (vital-signs profile, provenance, interpretation, plausibility flags)
/// a judged reading is filed as, without id or meta.versionId: a pure function of the
/// signed readings and the stored judgement. `identifier` names the reading in its batch.
pub fn render(
    patient: &str,
    device: &str,
    readings: &[Reading],
    j: &Judgement,
    identifier: &str,
) -> Value {
    let Some(r) = readings.get(j.i) else { return Value::Null };
    let mut resource = json!({
        "resourceType": "Observation",
        "meta": {"tag": [{"system": "urn:telesafe:provenance", "code": "device-signature-verified", "display": "From an enrolled device; batch signature verified"}]},
        "identifier": [{"system": "urn:telesafe:device-batch", "value": identifier}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}], "text": "Vital Signs"}],
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": r.at,
        "device": {"reference": format!("Device/{device}")},
    });
    let interp = |c: usize| j.interp.iter().find(|(k, _)| *k == c).map(|(_, code)| *code);
    if let Some(p) = j.pair.and_then(|p| readings.get(p)) {
        resource["code"] = code_concept(BP_PANEL);
        resource["meta"]["profile"] = json!([format!("{PROFILE}bp")]);
        let mut components = Vec::new();
        for (c, reading) in [r, p].into_iter().enumerate() {
            let mut v =
                json!({"code": code_concept(&reading.code), "valueQuantity": quantity(reading)});
            if let Some(code) = interp(c) {
                v["interpretation"] = interpretation(code);
            }
            components.push(v);
        }
        resource["component"] = Value::Array(components);
    } else {
        resource["code"] = code_concept(&r.code);
        if let Some(p) = sign_for(&r.code).and_then(|s| s.profile) {
            resource["meta"]["profile"] = json!([format!("{PROFILE}{p}")]);
        }
        resource["valueQuantity"] = quantity(r);
        if let Some(code) = interp(0) {
            resource["interpretation"] = interpretation(code);
        }
    }
    if !j.suspicious.is_empty() {
        for s in &j.suspicious {
            let (code, display) = match s {
                Suspicion::OutOfRange { .. } => {
                    ("out-of-range", "Outside the physiological range: check the device")
                }
                Suspicion::RateOfChange { .. } => {
                    ("rate-of-change", "Changed faster than physiologically credible")
                }
            };
            let tag =
                json!({"system": "urn:telesafe:plausibility", "code": code, "display": display});
            if let Some(tags) = resource["meta"]["tag"].as_array_mut()
                && !tags.contains(&tag)
            {
                tags.push(tag);
            }
        }
        resource["note"] = json!([{"text": "Suspicious reading: flagged by Telesafe's plausibility checks; confirm before acting on it."}]);
    }
    resource
}

/// Relabels a rendered Observation whose device was enrolled, before enrolment checked
/// keys, with a key anyone can sign for (docs/device-protocol.md §1): its batch's signature
/// proves nothing, so its provenance says so instead of "signature verified", and a note
/// tells the reader to confirm the value before acting on it.
pub fn mark_unprovable(resource: &mut Value) {
    resource["meta"]["tag"][0] = json!({
        "system": "urn:telesafe:provenance",
        "code": "device-key-unsound",
        "display": "From a device enrolled with a key anyone can sign for: not proven to come from it",
    });
    let note = json!({"text": "Unverifiable reading: the device that filed it was enrolled with a key anyone can sign for, so its signature proves nothing; confirm before acting on it."});
    match resource["note"].as_array_mut() {
        Some(notes) => notes.insert(0, note),
        None => resource["note"] = json!([note]),
    }
}

/// Turns a batch's readings into Observations: [`judge_batch`], then [`render`].
/// `identifier(i)` names reading `i` of the batch (the panel takes the systolic's), so a
/// filed Observation can always be traced to its signed batch.
pub fn observations(
    patient: &str,
    device: &str,
    readings: &[Reading],
    at_ms: impl Fn(&str) -> Option<i64>,
    identifier: impl Fn(usize) -> String,
    previous: &mut Previous,
    thresholds: &[Threshold],
) -> Vec<VitalObservation> {
    judge_batch(readings, at_ms, previous, thresholds)
        .into_iter()
        .map(|j| VitalObservation {
            resource: render(patient, device, readings, &j, &identifier(j.i)),
            suspicious: j.suspicious,
            breaches: j.breaches,
        })
        .collect()
}

/// Whether an Observation was filed by a device whose key anyone can sign for
/// ([`mark_unprovable`]).
pub fn is_unprovable(observation: &Value) -> bool {
    observation["meta"]["tag"].as_array().is_some_and(|tags| {
        tags.iter()
            .any(|t| t["system"] == "urn:telesafe:provenance" && t["code"] == "device-key-unsound")
    })
}

/// Whether a filed Observation was flagged as suspicious.
pub fn is_suspicious(observation: &Value) -> bool {
    observation["meta"]["tag"]
        .as_array()
        .is_some_and(|tags| tags.iter().any(|t| t["system"] == "urn:telesafe:plausibility"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::records::fhir::validate;

    fn reading(code: &str, unit: &str, value: &str, at: &str) -> Reading {
        Reading { at: at.into(), code: code.into(), unit: unit.into(), value: value.into() }
    }

    fn ms(at: &str) -> Option<i64> {
        crate::records::search::parse_date_range(at).map(|r| r.low)
    }

    fn file(readings: &[Reading], prev: &mut Previous, t: &[Threshold]) -> Vec<VitalObservation> {
        observations("p1", "d1", readings, ms, |i| format!("d1/7/{i}"), prev, t)
    }

    #[test]
    fn a_blood_pressure_pair_becomes_one_valid_panel() {
        let at = "2026-11-25T08:00:00Z";
        let obs = file(
            &[
                reading(SYSTOLIC, "mm[Hg]", "128", at),
                reading("8867-4", "/min", "71", at),
                reading(DIASTOLIC, "mm[Hg]", "82", at),
            ],
            &mut Previous::new(),
            &[],
        );
        assert_eq!(obs.len(), 2);
        let bp = &obs[0].resource;
        assert_eq!(bp["code"]["coding"][0]["code"], BP_PANEL);
        assert_eq!(bp["component"][0]["valueQuantity"]["value"], 128.0);
        assert_eq!(bp["component"][1]["code"]["coding"][0]["code"], DIASTOLIC);
        assert_eq!(bp["meta"]["profile"][0], "http://hl7.org/fhir/StructureDefinition/bp");
        assert!(bp.get("valueQuantity").is_none());
        assert_eq!(obs[1].resource["identifier"][0]["value"], "d1/7/1");
        for o in &obs {
            assert_eq!(validate("Observation", &o.resource), vec![]);
            assert!(o.breaches.is_empty() && o.suspicious.is_empty());
        }
    }

    #[test]
    fn thresholds_the_patients_own_before_the_defaults() {
        let at = "2026-11-25T08:00:00Z";
        let spo2 = |v| reading("59408-5", "%", v, at);
        let low = file(&[spo2("88")], &mut Previous::new(), &[]);
        assert_eq!(low[0].breaches[0].limit, "below 90");
        assert_eq!(low[0].resource["interpretation"][0]["coding"][0]["code"], "L");
        let own = [Threshold { code: "59408-5".into(), low: Some(85.0), high: None }];
        assert!(file(&[spo2("88")], &mut Previous::new(), &own)[0].breaches.is_empty());
        assert_eq!(file(&[spo2("84")], &mut Previous::new(), &own)[0].breaches.len(), 1);
        assert!(check_threshold(&own[0]).is_ok());
        let bad = Threshold { code: "59408-5".into(), low: Some(95.0), high: Some(90.0) };
        assert!(check_threshold(&bad).is_err());
        let absurd = Threshold { code: "8867-4".into(), low: None, high: Some(900.0) };
        assert!(check_threshold(&absurd).unwrap_err().contains("between 20 and 300"));
    }

    #[test]
    fn implausible_values_and_jumps_are_flagged_but_filed() {
        let mut prev = Previous::new();
        let hr = |v, at| reading("8867-4", "/min", v, at);
        let first = file(&[hr("70", "2026-11-25T08:00:00Z")], &mut prev, &[]);
        assert!(first[0].suspicious.is_empty());
        // 70 to 190 in one minute: not a heart.
        let jump = file(&[hr("190", "2026-11-25T08:01:00Z")], &mut prev, &[]);
        assert_eq!(jump[0].suspicious, vec![Suspicion::RateOfChange { code: "8867-4".into() }]);
        assert!(is_suspicious(&jump[0].resource));
        // 190 to 120 over an hour is credible.
        let calm = file(&[hr("120", "2026-11-25T09:01:00Z")], &mut prev, &[]);
        assert!(calm[0].suspicious.is_empty());
        let absurd = file(&[hr("400", "2026-11-25T09:02:00Z")], &mut prev, &[]);
        assert!(absurd[0].suspicious.contains(&Suspicion::OutOfRange { code: "8867-4".into() }));
        assert_eq!(validate("Observation", &absurd[0].resource), vec![]);
        assert!(!is_suspicious(&calm[0].resource));
    }
}
