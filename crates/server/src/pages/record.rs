//! The patient chart for clinic staff and "my record" for patients: the encrypted FHIR
//! record, read and written through the same policy decision, audit entry and key path
//! as the FHIR API (`crate::fhir`). Nothing here touches storage directly.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use telesafe_core::identity::{PatientRepository, Role};

use super::chart;
use super::home::organisation;
use super::{PageError, Shell, failed, render, require};
use crate::auth::{CurrentUser, MaybeUser};
use crate::fhir::query::{RecordFor, RecordView, patient_record};
use crate::fhir::{FhirError, Session, read_value, write_resource};
use crate::http::form::ValidForm;
use crate::state::AppState;
use telesafe_core::devices::vitals::Threshold;
use telesafe_core::records::TimeWindow;

const CLINIC_STAFF: &[Role] = &[Role::Clinician, Role::Nurse, Role::FrontDesk];

/// A vital sign the chart can record.
#[derive(Debug, Clone, Copy)]
pub struct VitalKind {
    /// The form's value.
    pub key: &'static str,
    pub loinc: &'static str,
    pub name: &'static str,
    /// UCUM code and the unit as shown.
    pub ucum: &'static str,
    pub unit: &'static str,
    /// What a living person can have; outside it the reading is refused as a typo.
    pub plausible: (f64, f64),
}

const fn vital(
    key: &'static str,
    loinc: &'static str,
    name: &'static str,
    ucum: &'static str,
    unit: &'static str,
    plausible: (f64, f64),
) -> VitalKind {
    VitalKind { key, loinc, name, ucum, unit, plausible }
}

pub const VITALS: &[VitalKind] = &[
    vital("heart-rate", "8867-4", "Heart rate", "/min", "beats/min", (20.0, 300.0)),
    vital("spo2", "59408-5", "Oxygen saturation (SpO2)", "%", "%", (50.0, 100.0)),
    vital("temperature", "8310-5", "Body temperature", "Cel", "°C", (30.0, 45.0)),
    vital("weight", "29463-7", "Body weight", "kg", "kg", (0.5, 500.0)),
    vital("respiratory-rate", "9279-1", "Respiratory rate", "/min", "breaths/min", (3.0, 80.0)),
    vital("glucose", "2339-0", "Blood glucose", "mg/dL", "mg/dL", (10.0, 1000.0)),
];

/// Measurements of one code, gathered for a chart.
struct Series {
    code: String,
    name: String,
    unit: String,
    points: Vec<chart::Point>,
}

/// One line of a list (a problem, an allergy, a medication).
#[derive(Debug, Clone)]
pub struct Item {
    pub title: String,
    pub detail: String,
    pub date: String,
}

/// One vital sign's series: latest reading and a drawn chart.
#[derive(Debug, Clone)]
pub struct Vital {
    pub name: String,
    pub latest: String,
    pub when: String,
    pub count: usize,
    pub svg: String,
}

/// What the pages show of a record.
#[derive(Debug, Default)]
pub struct Summary {
    pub name: String,
    pub born: String,
    pub gender: String,
    pub mrn: String,
    pub phone: String,
    pub family: String,
    pub given: String,
    pub version: String,
    pub problems: Vec<Item>,
    pub allergies: Vec<Item>,
    pub medications: Vec<Item>,
    pub vitals: Vec<Vital>,
    /// The span the vital signs cover, in words.
    pub span_words: &'static str,
    /// The span held more device readings than a chart opens; the oldest are left out.
    pub more_readings: bool,
    /// The spans a reader can switch to, and the page they are links on.
    pub spans: Vec<SpanLink>,
    pub page: String,
}

/// A span the vital-signs charts can be switched to.
#[derive(Debug, Clone)]
pub struct SpanLink {
    pub span: Span,
    pub current: bool,
}

fn text_of(cc: &Value) -> String {
    cc["text"]
        .as_str()
        .or_else(|| cc["coding"][0]["display"].as_str())
        .or_else(|| cc["coding"][0]["code"].as_str())
        .unwrap_or("")
        .to_owned()
}

fn day(s: &Value) -> String {
    s.as_str().map(|d| d.chars().take(10).collect()).unwrap_or_default()
}

fn minute(s: &str) -> String {
    s.chars().take(16).collect::<String>().replace('T', " ")
}

/// A span of time the vital-signs charts can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// As the `span` query parameter spells it.
    pub key: &'static str,
    /// On its link, and in "Vital signs, …".
    pub link: &'static str,
    pub words: &'static str,
    /// How far back it reaches (ms); `None` for all of the record.
    pub reach: Option<i64>,
}

const fn span(key: &'static str, link: &'static str, words: &'static str, days: i64) -> Span {
    Span { key, link, words, reach: Some(days * 86_400_000) }
}

/// The spans, shortest first. The default is 30 days: long enough for a monthly weight,
/// short enough to draw from a month of minute readings.
pub const SPANS: &[Span] = &[
    span("1d", "24 hours", "last 24 hours", 1),
    span("7d", "7 days", "last 7 days", 7),
    span("30d", "30 days", "last 30 days", 30),
    span("90d", "90 days", "last 90 days", 90),
    span("1y", "12 months", "last 12 months", 365),
    Span { key: "all", link: "All", words: "all time", reach: None },
];
const DEFAULT_SPAN: usize = 2;

/// The most device readings a chart view opens: the newest ones in the span beyond it.
/// About 35 days of a pulse oximeter sending heart rate and SpO2 every minute.
pub const MAX_CHART_READINGS: u32 = 100_000;

/// The span a page asked for (the default for an unknown or absent key).
pub fn span_of(key: Option<&str>) -> Span {
    key.and_then(|k| SPANS.iter().find(|s| s.key == k)).copied().unwrap_or(SPANS[DEFAULT_SPAN])
}

/// The shortest span, from the default on, that shows a measurement taken at `at`.
fn span_showing(at: i64, now: telesafe_core::Timestamp) -> Span {
    SPANS[DEFAULT_SPAN..]
        .iter()
        .copied()
        .find(|s| window_of(*s, now).contains(at))
        .unwrap_or(SPANS[SPANS.len() - 1])
}

/// The window of measurement times a span covers, ending now (readings a device stamped
/// a little ahead of the server's clock included).
pub fn window_of(span: Span, now: telesafe_core::Timestamp) -> TimeWindow {
    TimeWindow { from: span.reach.map(|r| now.unix_millis() - r), to: None }
}

/// One value into its series (one per LOINC code), named as the chart's own list names
/// it, else as `fallback` gives (name, unit).
fn add_point(
    series: &mut Vec<Series>,
    code: &str,
    point: chart::Point,
    fallback: impl FnOnce() -> (String, String),
) {
    if let Some(s) = series.iter_mut().find(|s| s.code == code) {
        s.points.push(point);
        return;
    }
    let sign = telesafe_core::devices::vitals::sign_for(code);
    let (name, unit) = fallback();
    series.push(Series {
        name: VITALS
            .iter()
            .find(|x| x.loinc == code)
            .map(|x| x.name.to_owned())
            .or_else(|| sign.map(|s| s.name.to_owned()))
            .unwrap_or(name),
        unit: sign.map_or(unit, |s| s.unit.to_owned()),
        points: vec![point],
        code: code.to_owned(),
    });
}

/// One Observation's values into their series (a blood-pressure panel gives two).
fn add_observation(series: &mut Vec<Series>, r: &Value, window: TimeWindow) {
    let Some(at) = r["effectiveDateTime"].as_str() else { return };
    let Some(range) = telesafe_core::records::search::parse_date_range(at) else { return };
    if !window.contains(range.low) {
        return;
    }
    let suspicious = telesafe_core::devices::vitals::is_suspicious(r);
    for (code, v) in super::monitoring::values_of(r) {
        let point = chart::Point { at: range.low, value: v, label: minute(at), suspicious };
        add_point(series, &code, point, || {
            let unit = r["valueQuantity"]["unit"].as_str().unwrap_or("").to_owned();
            (text_of(&r["code"]), unit)
        });
    }
}

/// What a page shows of a record: the lists, and the vital signs measured in `span`
/// (device readings opened one batch at a time, so only their points are ever held).
pub(crate) async fn summarise(
    s: &Session,
    view: &RecordView,
    thresholds: &[Threshold],
    span: Span,
    window: TimeWindow,
) -> Result<Summary, FhirError> {
    let mut out = Summary {
        span_words: span.words,
        more_readings: view.next.is_some(),
        spans: SPANS.iter().map(|&s| SpanLink { span: s, current: s == span }).collect(),
        ..Summary::default()
    };
    let mut series: Vec<Series> = Vec::new();
    for r in &view.resources {
        match r["resourceType"].as_str().unwrap_or("") {
            "Patient" => {
                let n = &r["name"][0];
                out.family = n["family"].as_str().unwrap_or("").to_owned();
                out.given = n["given"]
                    .as_array()
                    .map(|g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default();
                out.name = format!("{} {}", out.given, out.family).trim().to_owned();
                out.born = day(&r["birthDate"]);
                out.gender = r["gender"].as_str().unwrap_or("").to_owned();
                out.mrn = r["identifier"][0]["value"].as_str().unwrap_or("").to_owned();
                out.phone = r["telecom"]
                    .as_array()
                    .and_then(|t| t.iter().find(|c| c["system"] == "phone"))
                    .and_then(|c| c["value"].as_str())
                    .unwrap_or("")
                    .to_owned();
                out.version = r["meta"]["versionId"].as_str().unwrap_or("").to_owned();
            }
            "Condition" => out.problems.push(Item {
                title: text_of(&r["code"]),
                detail: text_of(&r["clinicalStatus"]),
                date: day(r.get("onsetDateTime").unwrap_or(&r["recordedDate"])),
            }),
            "AllergyIntolerance" => out.allergies.push(Item {
                title: text_of(&r["code"]),
                detail: r["criticality"]
                    .as_str()
                    .map(|c| format!("criticality {c}"))
                    .unwrap_or_default(),
                date: day(&r["recordedDate"]),
            }),
            "MedicationRequest" => out.medications.push(Item {
                title: text_of(&r["medicationCodeableConcept"]),
                detail: format!(
                    "{}{}",
                    r["dosageInstruction"][0]["text"].as_str().unwrap_or(""),
                    r["status"].as_str().map(|s| format!(" ({s})")).unwrap_or_default()
                )
                .trim()
                .to_owned(),
                date: day(&r["authoredOn"]),
            }),
            "Observation" => add_observation(&mut series, r, window),
            _ => {}
        }
    }
    for b in &view.readings {
        let record = s.open_batch(b).await?;
        // A reading its device's key cannot vouch for is drawn as a suspicious one is.
        let unprovable = s.unprovable(&record.batch.device).await?;
        for v in record.values(&b.readings) {
            let Some(range) = telesafe_core::records::search::parse_date_range(v.at) else {
                continue;
            };
            if !window.contains(range.low) {
                continue;
            }
            for (code, value) in v.values {
                let label = minute(v.at);
                let suspicious = v.suspicious || unprovable;
                let point = chart::Point { at: range.low, value, label, suspicious };
                add_point(&mut series, code, point, || (code.to_owned(), String::new()));
            }
        }
    }
    for Series { name, unit, mut points, code } in series {
        points.sort_by_key(|p| p.at);
        let Some(last) = points.last() else { continue };
        let (low, high) = telesafe_core::devices::vitals::threshold_for(thresholds, &code);
        out.vitals.push(Vital {
            latest: format!("{} {unit}", chart_number(last.value)),
            when: last.label.clone(),
            count: points.len(),
            svg: chart::line(
                &format!("{name}, {}", span.words),
                &unit,
                &points,
                chart::Limits { low, high },
            ),
            name,
        });
    }
    out.vitals.sort_by(|a, b| a.name.cmp(&b.name));
    for list in [&mut out.problems, &mut out.allergies, &mut out.medications] {
        list.sort_by(|a, b| b.date.cmp(&a.date));
    }
    Ok(out)
}

/// "Given Family" from a Patient resource's first name.
pub fn display_name(patient: &Value) -> String {
    let n = &patient["name"][0];
    let given = n["given"]
        .as_array()
        .map(|g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{given} {}", n["family"].as_str().unwrap_or("")).trim().to_owned()
}

fn chart_number(v: f64) -> String {
    if v.fract() == 0.0 { format!("{}", v as i64) } else { format!("{v:.1}") }
}

/// A FHIR failure in words for a page.
fn sentence_of(e: &FhirError) -> String {
    match e.status.as_u16() {
        403 => "You may not change this patient's record.".to_owned(),
        404 | 410 => "This patient's record is not available to you.".to_owned(),
        409 | 412 => "Someone else changed this record while you were editing; nothing was saved. Review it and try again.".to_owned(),
        503 => "The record cannot be changed right now because the audit log is unavailable; nothing was saved.".to_owned(),
        400 | 422 => {
            let d: Vec<String> = e.issues.iter().map(|i| i.2.clone()).collect();
            format!("That could not be saved: {}.", d.join("; "))
        }
        _ => "Something went wrong on our side; nothing was saved.".to_owned(),
    }
}

pub(super) fn page_error(state: &AppState, e: FhirError) -> PageError {
    use crate::error::AppError;
    let err = match e.status.as_u16() {
        404 | 410 => AppError::NotFound,
        403 => AppError::Forbidden,
        503 => AppError::Unavailable,
        _ => AppError::Internal(e.issues.first().map(|i| i.2.clone()).unwrap_or_default()),
    };
    PageError::new(state, err)
}

#[derive(Template)]
#[template(path = "patient_chart.html")]
struct ChartPage {
    shell: Shell,
    id: String,
    r: Summary,
    emergency: bool,
    error: Option<String>,
    saved: Option<String>,
    vitals: Vec<(&'static str, &'static str)>,
    can_edit: bool,
    /// The alert thresholds in force for device readings.
    thresholds: Vec<ThresholdLine>,
}

struct ThresholdLine {
    code: &'static str,
    name: &'static str,
    unit: &'static str,
    low: String,
    high: String,
    /// Set for this patient (otherwise the organisation's default).
    own: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChartQuery {
    saved: Option<String>,
    span: Option<String>,
}

async fn chart_page(
    state: &AppState,
    me: &CurrentUser,
    id: &str,
    error: Option<String>,
    saved: Option<String>,
    span: Option<&str>,
) -> Result<Response, PageError> {
    let mut s = Session::for_user(state, me).await.map_err(|e| page_error(state, e))?;
    let span = span_of(span);
    let window = window_of(span, s.now());
    let view = patient_record(&mut s, id, window, RecordFor::Chart { limit: MAX_CHART_READINGS })
        .await
        .map_err(|e| page_error(state, e))?;
    let patient: Option<telesafe_core::PatientId> = id.parse().ok();
    let thresholds = match patient {
        Some(p) => crate::devices::thresholds(state, me.user.tenant_id, p)
            .await
            .map_err(|e| PageError::new(state, e))?,
        None => Vec::new(),
    };
    let mut r =
        summarise(&s, &view, &thresholds, span, window).await.map_err(|e| page_error(state, e))?;
    r.page = format!("/console/patients/{id}");
    let org = organisation(state, me.user.tenant_id).await?;
    let title = if r.name.is_empty() { "Patient".to_owned() } else { r.name.clone() };
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = ChartPage {
        shell: Shell::for_user(state, &title, me, &org, "/console"),
        id: id.to_owned(),
        r,
        emergency: view.emergency,
        error,
        saved: saved.and_then(|k| saved_words(&k)),
        vitals: VITALS.iter().map(|v| (v.key, v.name)).collect(),
        can_edit: matches!(me.role(), Role::Clinician | Role::Nurse),
        thresholds: super::monitoring::thresholds_in_force(&thresholds)
            .into_iter()
            .map(|(s, low, high, own)| ThresholdLine {
                code: s.loinc,
                name: s.name,
                unit: s.unit,
                low: low.map(chart_number).unwrap_or_default(),
                high: high.map(chart_number).unwrap_or_default(),
                own,
            })
            .collect(),
    };
    Ok(render(&page, status))
}

/// The chart again, with a sentence saying what to fix (422).
pub(super) async fn chart_error(
    state: &AppState,
    me: &CurrentUser,
    id: &str,
    msg: String,
) -> Result<Response, PageError> {
    chart_page(state, me, id, Some(msg), None, None).await
}

fn saved_words(kind: &str) -> Option<String> {
    Some(
        match kind {
            "condition" => "The problem was added.",
            "allergy" => "The allergy was added.",
            "medication" => "The medication was added.",
            "vital" => "The measurement was recorded.",
            "demographics" => "The patient's details were saved.",
            "thresholds" => "The alert thresholds were saved; new readings are judged by them.",
            _ => return None,
        }
        .to_owned(),
    )
}

/// `GET /console/patients/{id}`: the chart.
pub async fn show_chart(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    Query(q): Query<ChartQuery>,
) -> Result<Response, PageError> {
    let me = require(&state, me, CLINIC_STAFF)?;
    chart_page(&state, &me, &id, None, q.saved, q.span.as_deref()).await
}

#[derive(Debug, Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    date: String,
    #[serde(default)]
    criticality: String,
    #[serde(default)]
    dosage: String,
    #[serde(default)]
    vital: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    when: String,
}

/// Turns the chart's add form into a FHIR resource, or a sentence saying what to fix.
fn resource_from(
    form: &AddForm,
    patient: &str,
    now: &str,
) -> Result<(&'static str, Value), String> {
    let subject = json!({"reference": format!("Patient/{patient}")});
    let text = form.text.trim();
    let date = form.date.trim();
    if !date.is_empty() && telesafe_core::records::search::parse_date_range(date).is_none() {
        return Err("Enter the date as YYYY-MM-DD.".to_owned());
    }
    match form.kind.as_str() {
        "condition" => {
            if text.is_empty() {
                return Err("Describe the problem.".to_owned());
            }
            let status = match form.status.as_str() {
                s @ ("active" | "resolved" | "inactive") => s,
                _ => return Err("Choose whether the problem is active or resolved.".to_owned()),
            };
            let mut r = json!({
                "resourceType": "Condition",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]},
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
                "code": {"text": text},
                "subject": subject,
                "recordedDate": now,
            });
            if !date.is_empty() {
                r["onsetDateTime"] = json!(date);
            }
            Ok(("Condition", r))
        }
        "allergy" => {
            if text.is_empty() {
                return Err("Name the substance the patient reacts to.".to_owned());
            }
            let criticality = match form.criticality.as_str() {
                c @ ("low" | "high" | "unable-to-assess") => c,
                _ => return Err("Choose how serious a reaction would be.".to_owned()),
            };
            Ok((
                "AllergyIntolerance",
                json!({
                    "resourceType": "AllergyIntolerance",
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
                    "code": {"text": text},
                    "criticality": criticality,
                    "patient": subject,
                    "recordedDate": now,
                }),
            ))
        }
        "medication" => {
            if text.is_empty() {
                return Err("Name the medication.".to_owned());
            }
            let mut r = json!({
                "resourceType": "MedicationRequest",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"text": text},
                "subject": subject,
                "authoredOn": now,
            });
            if !form.dosage.trim().is_empty() {
                r["dosageInstruction"] = json!([{"text": form.dosage.trim()}]);
            }
            Ok(("MedicationRequest", r))
        }
        "vital" => {
            let Some(v) = VITALS.iter().find(|v| v.key == form.vital) else {
                return Err("Choose what was measured.".to_owned());
            };
            let Ok(value) = form.value.trim().replace(',', ".").parse::<f64>() else {
                return Err(format!("Enter the {} as a number.", v.name.to_lowercase()));
            };
            if !(v.plausible.0..=v.plausible.1).contains(&value) {
                return Err(format!(
                    "{} {value} {} is outside what a person can have ({}–{}); check the reading.",
                    v.name, v.unit, v.plausible.0, v.plausible.1
                ));
            }
            let when = form.when.trim();
            let at = if when.is_empty() {
                now.to_owned()
            } else {
                // A datetime-local input: minutes, no zone; taken as UTC (the form says so).
                let full = format!("{when}:00Z");
                if telesafe_core::records::search::parse_date_range(&full).is_none() {
                    return Err(
                        "Enter the time of the measurement, or leave it empty for now.".to_owned()
                    );
                }
                full
            };
            Ok((
                "Observation",
                json!({
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": v.loinc, "display": v.name}], "text": v.name},
                    "subject": subject,
                    "effectiveDateTime": at,
                    "valueQuantity": {"value": value, "unit": v.unit, "system": "http://unitsofmeasure.org", "code": v.ucum},
                }),
            ))
        }
        _ => Err("Choose what to add.".to_owned()),
    }
}

/// `POST /console/patients/{id}/records`: add a problem, allergy, medication or vital sign.
pub async fn add_record(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    ValidForm(form): ValidForm<AddForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, CLINIC_STAFF)?;
    me.check_csrf(&form.csrf).map_err(failed(&state))?;
    let now = state.clock.now().to_rfc3339();
    let (resource_type, resource) = match resource_from(&form, &id, &now) {
        Ok(r) => r,
        Err(msg) => return chart_page(&state, &me, &id, Some(msg), None, None).await,
    };
    let mut s = Session::for_user(&state, &me).await.map_err(|e| page_error(&state, e))?;
    // A measurement recorded after the fact is shown on a span that reaches it.
    let taken = resource["effectiveDateTime"]
        .as_str()
        .and_then(telesafe_core::records::search::parse_date_range)
        .map(|r| span_showing(r.low, state.clock.now()));
    let span = taken.map(|s| format!("&span={}", s.key)).unwrap_or_default();
    match write_resource(&mut s, resource_type, None, resource, None).await {
        Ok(_) => Ok(Redirect::to(&format!("/console/patients/{id}?saved={}{span}", form.kind))
            .into_response()),
        Err(e) => chart_page(&state, &me, &id, Some(sentence_of(&e)), None, None).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct DemographicsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    given: String,
    #[serde(default)]
    family: String,
    #[serde(default)]
    birth_date: String,
    #[serde(default)]
    phone: String,
}

/// `POST /console/patients/{id}/demographics`: a new version of the Patient, refused if
/// someone saved another since the form was shown.
pub async fn save_demographics(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    ValidForm(form): ValidForm<DemographicsForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, CLINIC_STAFF)?;
    me.check_csrf(&form.csrf).map_err(failed(&state))?;
    let invalid = |msg: &str| chart_page(&state, &me, &id, Some(msg.to_owned()), None, None);
    if form.family.trim().is_empty() && form.given.trim().is_empty() {
        return invalid("Enter the patient's name.").await;
    }
    let born = form.birth_date.trim();
    if !born.is_empty()
        && (born.len() != 10 || telesafe_core::records::search::parse_date_range(born).is_none())
    {
        return invalid("Enter the date of birth as YYYY-MM-DD.").await;
    }
    let Ok(expected) = form.version.parse::<u32>() else {
        return invalid("The form is out of date; reload the page.").await;
    };
    let mut s = Session::for_user(&state, &me).await.map_err(|e| page_error(&state, e))?;
    let (mut patient, _) =
        read_value(&mut s, "Patient", &id, None).await.map_err(|e| page_error(&state, e))?;
    let mut name = json!({"use": "official"});
    if !form.family.trim().is_empty() {
        name["family"] = json!(form.family.trim());
    }
    let given: Vec<&str> = form.given.split_whitespace().collect();
    if !given.is_empty() {
        name["given"] = json!(given);
    }
    patient["name"] = json!([name]);
    match born {
        "" => drop(patient.as_object_mut().map(|m| m.remove("birthDate"))),
        b => patient["birthDate"] = json!(b),
    }
    let mut telecom: Vec<Value> = patient["telecom"]
        .as_array()
        .map(|t| t.iter().filter(|c| c["system"] != "phone").cloned().collect())
        .unwrap_or_default();
    if !form.phone.trim().is_empty() {
        telecom.push(json!({"system": "phone", "value": form.phone.trim()}));
    }
    match telecom.is_empty() {
        true => drop(patient.as_object_mut().map(|m| m.remove("telecom"))),
        false => patient["telecom"] = json!(telecom),
    }
    match write_resource(&mut s, "Patient", Some(&id), patient, Some(expected)).await {
        Ok(_) => {
            Ok(Redirect::to(&format!("/console/patients/{id}?saved=demographics")).into_response())
        }
        Err(e) => chart_page(&state, &me, &id, Some(sentence_of(&e)), None, None).await,
    }
}

#[derive(Template)]
#[template(path = "my_record.html")]
struct MyRecordPage {
    shell: Shell,
    r: Summary,
    has_record: bool,
}

/// `GET /portal/record`: the patient's own record, read-only.
pub async fn my_record(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Query(q): Query<ChartQuery>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::Patient])?;
    let tenant = me.user.tenant_id;
    let org = organisation(&state, tenant).await?;
    let mine = state.store.patient_by_user(tenant, me.user.id).await.map_err(failed(&state))?;
    let mut s = Session::for_user(&state, &me).await.map_err(|e| page_error(&state, e))?;
    let span = span_of(q.span.as_deref());
    let window = window_of(span, s.now());
    let chart = RecordFor::Chart { limit: MAX_CHART_READINGS };
    let summary = match mine {
        Some(p) => match patient_record(&mut s, &p.id.to_string(), window, chart).await {
            Ok(view) => {
                let thresholds = crate::devices::thresholds(&state, tenant, p.id)
                    .await
                    .map_err(|e| PageError::new(&state, e))?;
                let mut r = summarise(&s, &view, &thresholds, span, window)
                    .await
                    .map_err(|e| page_error(&state, e))?;
                r.page = "/portal/record".to_owned();
                Some(r)
            }
            Err(e) if e.status == StatusCode::NOT_FOUND => None,
            Err(e) => return Err(page_error(&state, e)),
        },
        None => None,
    };
    let page = MyRecordPage {
        shell: Shell::for_user(&state, "My record", &me, &org, "/portal"),
        has_record: summary.is_some(),
        r: summary.unwrap_or_default(),
    };
    Ok(render(&page, StatusCode::OK))
}
