//! Remote monitoring for the care team: the alerts raised when a device reading crossed a
//! patient's threshold (on the console, acknowledged there), and each patient's thresholds
//! (set on the chart, drawn on its vitals charts).
//!
//! An alert is shown only through a read of the Observation that raised it, by the same
//! FHIR session as any read: policy decision, audit entry, key. A patient who is hidden
//! from this clinician, or whose consent denies them vital signs, raises nothing here.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;
use telesafe_core::audit::Purpose;
use telesafe_core::devices::DeviceRepository;
use telesafe_core::devices::vitals::{self, Threshold, check_threshold};
use telesafe_core::identity::Role;
use telesafe_core::{PatientId, TenantId};

use super::{PageError, failed, require};
use crate::auth::MaybeUser;
use crate::fhir::Session;
use crate::http::form::ValidForm;
use crate::state::AppState;

/// The roles that watch over home monitoring.
const CARE: &[Role] = &[Role::Clinician, Role::Nurse];

/// One alert as the console lists it.
#[derive(Debug)]
pub(crate) struct AlertLine {
    pub id: String,
    pub patient_id: String,
    pub patient: String,
    pub what: String,
    pub at: String,
    pub suspicious: bool,
    /// Filed by a device whose key anyone can sign for (before keys were checked).
    pub unprovable: bool,
}

/// The open alerts of `patients` (the ones this user may see, by name), newest first.
pub(crate) async fn console_alerts(
    state: &AppState,
    s: &mut Session,
    tenant: TenantId,
    patients: &HashMap<String, String>,
) -> Result<Vec<AlertLine>, PageError> {
    let mut out = Vec::new();
    for a in state.store.open_clinical_alerts(tenant).await.map_err(failed(state))? {
        let Some(name) = patients.get(&a.patient.to_string()) else { continue };
        // Decided, logged and decrypted like any read; hidden or gone means not shown.
        let Ok((observation, _)) =
            crate::fhir::read_value(s, "Observation", &a.observation_id, None).await
        else {
            continue;
        };
        let key = state
            .keys
            .patient(&state.store, tenant, a.patient, state.clock.now(), false)
            .await
            .map_err(|e| PageError::new(state, crate::error::AppError::internal(e)))?;
        let Some(b) = crate::devices::open_alert(&key, &a) else { continue };
        out.push(AlertLine {
            id: a.id.clone(),
            patient_id: a.patient.to_string(),
            patient: name.clone(),
            what: format!(
                "{} {} {}, {} the patient's threshold",
                b.name,
                trim(b.value),
                b.unit,
                b.limit
            ),
            at: b.at,
            suspicious: vitals::is_suspicious(&observation),
            unprovable: vitals::is_unprovable(&observation),
        });
    }
    Ok(out)
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// `POST /console/alerts/{id}/acknowledge`: a clinician or nurse who can see the reading
/// marks the alert as seen.
pub async fn acknowledge_alert(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    ValidForm(form): ValidForm<super::account::CsrfOnly>,
) -> Result<Response, PageError> {
    let me = require(&state, me, CARE)?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let tenant = me.user.tenant_id;
    let alerts = state.store.open_clinical_alerts(tenant).await.map_err(failed(&state))?;
    let mut s =
        Session::for_user(&state, &me).await.map_err(|e| super::record::page_error(&state, e))?;
    if let Some(a) = alerts.iter().find(|a| a.id == id) {
        // Only someone allowed to read the reading may dismiss its alert (this read is
        // logged like any other).
        crate::fhir::read_value(&mut s, "Observation", &a.observation_id, None)
            .await
            .map_err(|e| super::record::page_error(&state, e))?;
        crate::audit::record(
            &state,
            &me,
            &[crate::audit::Access {
                action: "acknowledge",
                resource_type: "Observation",
                resource_id: a.observation_id.clone(),
                patient_id: a.patient.to_string(),
                purpose: Purpose::Treatment,
                outcome: "success",
            }],
        )
        .await
        .map_err(|e| PageError::new(&state, e))?;
        state
            .store
            .acknowledge_clinical_alert(tenant, &id, &me.user.id.to_string(), state.clock.now())
            .await
            .map_err(failed(&state))?;
    }
    // Acknowledged now or already by a colleague: either way it is off the list.
    Ok(Redirect::to("/console?done=acknowledged").into_response())
}

/// The thresholds in force for the chart, per LOINC code, with whether they are the
/// patient's own.
pub(crate) fn thresholds_in_force(
    own: &[Threshold],
) -> Vec<(&'static vitals::Sign, Option<f64>, Option<f64>, bool)> {
    vitals::SIGNS
        .iter()
        .map(|s| {
            let (low, high) = vitals::threshold_for(own, s.loinc);
            (s, low, high, own.iter().any(|t| t.code == s.loinc))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct ThresholdForm {
    #[serde(default)]
    csrf: String,
    code: String,
    #[serde(default)]
    low: String,
    #[serde(default)]
    high: String,
}

fn number(raw: &str) -> Result<Option<f64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(Some)
        .ok_or_else(|| "Enter thresholds as numbers, for example 90 or 37.5.".to_owned())
}

/// `POST /console/patients/{id}/thresholds`: a clinician or nurse on the care team sets
/// the patient's alert thresholds for one measurement (both empty: back to the default).
pub async fn set_threshold(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    ValidForm(form): ValidForm<ThresholdForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, CARE)?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let tenant = me.user.tenant_id;
    // Setting a threshold is writing to the record: the same decision as writing an
    // Observation for this patient.
    let mut s =
        Session::for_user(&state, &me).await.map_err(|e| super::record::page_error(&state, e))?;
    let (patient_resource, _) = crate::fhir::read_value(&mut s, "Patient", &id, None)
        .await
        .map_err(|e| super::record::page_error(&state, e))?;
    let patient: PatientId = patient_resource["id"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| PageError::new(&state, crate::error::AppError::NotFound))?;
    crate::fhir::check_write(&mut s, "Observation", patient)
        .await
        .map_err(|e| super::record::page_error(&state, e))?;
    let threshold = match (number(&form.low), number(&form.high)) {
        (Ok(low), Ok(high)) => Threshold { code: form.code.clone(), low, high },
        (Err(e), _) | (_, Err(e)) => return super::record::chart_error(&state, &me, &id, e).await,
    };
    let mut list = crate::devices::thresholds(&state, tenant, patient)
        .await
        .map_err(|e| PageError::new(&state, e))?;
    list.retain(|t| t.code != threshold.code);
    if threshold.low.is_some() || threshold.high.is_some() {
        if let Err(e) = check_threshold(&threshold) {
            let msg = format!("{}.", super::sentence(&e));
            return super::record::chart_error(&state, &me, &id, msg).await;
        }
        list.push(threshold);
    } else if vitals::sign_for(&threshold.code).is_none() {
        let msg = "Choose one of the listed measurements.".to_owned();
        return super::record::chart_error(&state, &me, &id, msg).await;
    }
    crate::audit::record(
        &state,
        &me,
        &[crate::audit::Access {
            action: "update",
            resource_type: "Thresholds",
            resource_id: patient.to_string(),
            patient_id: patient.to_string(),
            purpose: Purpose::Treatment,
            outcome: "success",
        }],
    )
    .await
    .map_err(|e| PageError::new(&state, e))?;
    crate::devices::set_thresholds(&state, tenant, patient, &list, &me.user.id.to_string())
        .await
        .map_err(|e| PageError::new(&state, e))?;
    Ok(Redirect::to(&format!("/console/patients/{id}?saved=thresholds")).into_response())
}

/// Whether a stored Observation's value is one of these sign's points: plain values and
/// blood-pressure components alike, as (LOINC code, value).
pub(crate) fn values_of(o: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if let Some(v) = o["valueQuantity"]["value"].as_f64() {
        out.push((o["code"]["coding"][0]["code"].as_str().unwrap_or("").to_owned(), v));
    }
    for c in o["component"].as_array().into_iter().flatten() {
        if let Some(v) = c["valueQuantity"]["value"].as_f64() {
            out.push((c["code"]["coding"][0]["code"].as_str().unwrap_or("").to_owned(), v));
        }
    }
    out
}
