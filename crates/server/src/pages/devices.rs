//! Device administration (tenant administrators): the model registry with each model's
//! firmware policy, one-time enrolment codes with their QR code, and the enrolled devices
//! with their state: active, quarantined with the reason, or revoked. Quarantined readings
//! are released here after checking, and devices revoked. Every change is audited.
//!
//! Administrators see devices and the accounts they belong to, never a reading.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use telesafe_core::RepoError;
use telesafe_core::audit::Purpose;
use telesafe_core::devices::{
    DeviceModel, DeviceRepository, DeviceSummary, ENROLLMENT_LIFETIME, Enrollment,
    firmware_quarantine,
};
use telesafe_core::identity::{PatientRepository, Role, UserRepository};
use telesafe_crypto::OpaqueToken;

use super::home::organisation;
use super::{PageError, Shell, failed, render, require};
use crate::audit::{Access, Actor, record_as};
use crate::auth::{CurrentUser, MaybeUser};
use crate::http::form::ValidForm;
use crate::state::AppState;

struct ModelLine {
    id: String,
    name: String,
    measures: String,
    min_firmware: String,
    vulnerable: String,
    /// The vulnerable list as the form edits it: one "VERSION ADVISORY" per line.
    vulnerable_lines: String,
}

struct DeviceLine {
    id: String,
    serial: String,
    model: String,
    patient: String,
    firmware: String,
    /// "Active", "Quarantined", "Revoked".
    status: &'static str,
    why: String,
    waiting: u64,
    last_received: String,
    revoked: bool,
}

/// A new enrolment code, shown once.
struct NewCode {
    code: String,
    qr_svg: String,
    expires: String,
    patient: String,
    model: String,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    shell: Shell,
    notice: Option<String>,
    error: Option<String>,
    models: Vec<ModelLine>,
    devices: Vec<DeviceLine>,
    /// Patients with a portal account, as (patient id, "name (email)").
    patients: Vec<(String, String)>,
    signs: Vec<(&'static str, &'static str, &'static str)>,
    new_code: Option<NewCode>,
}

#[derive(Debug, Deserialize)]
pub struct DevicesQuery {
    #[serde(default)]
    done: Option<String>,
}

fn names(models: &[DeviceModel]) -> HashMap<String, String> {
    models.iter().map(|m| (m.id.clone(), format!("{} {}", m.manufacturer, m.model))).collect()
}

/// Patients with a portal account, named by their account (admins see no record).
async fn patient_choices(
    state: &AppState,
    me: &CurrentUser,
) -> Result<Vec<(String, String)>, PageError> {
    let tenant = me.user.tenant_id;
    let users: HashMap<_, _> = state
        .store
        .list_users(tenant)
        .await
        .map_err(failed(state))?
        .into_iter()
        .map(|u| (u.id, format!("{} ({})", u.display_name.as_str(), u.email.as_str())))
        .collect();
    let mut out: Vec<(String, String)> = state
        .store
        .list_patients(tenant)
        .await
        .map_err(failed(state))?
        .into_iter()
        .filter_map(|p| Some((p.id.to_string(), users.get(&p.user_id?)?.clone())))
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// A device's state as people read it, with the reason.
fn status(state: &AppState, s: &DeviceSummary, models: &[DeviceModel]) -> (&'static str, String) {
    let d = &s.device;
    let policy = models.iter().find(|m| m.id == d.model_id).map(|m| &m.policy);
    let firmware_issue = policy.and_then(|p| firmware_quarantine(p, &d.firmware));
    if d.revoked {
        ("Revoked", "Its batches are refused.".to_owned())
    } else if !crate::devices::key_is_sound(state, &d.public_key) {
        (
            UNSAFE_KEY,
            "Its key is one anyone could sign for (it was enrolled before keys were \
             checked), so its batches are refused. Revoke it and enrol it again."
                .to_owned(),
        )
    } else if s.quarantined > 0 || firmware_issue.is_some() {
        ("Quarantined", firmware_issue.or_else(|| s.quarantine_reason.clone()).unwrap_or_default())
    } else {
        ("Active", String::new())
    }
}

/// The status of a device whose key anyone could sign for.
const UNSAFE_KEY: &str = "Unsafe key";

/// A device the security console lists: on unsafe firmware, holding readings back, or with
/// a key anyone could sign for.
pub(super) struct UnsafeDevice {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub why: String,
    pub waiting: u64,
}

/// The tenant's quarantined devices with the advisory or policy that put them there, and
/// its devices with unsafe keys.
pub(super) async fn unsafe_devices(
    state: &AppState,
    tenant: telesafe_core::TenantId,
) -> Result<Vec<UnsafeDevice>, PageError> {
    let models = state.store.list_models(tenant).await.map_err(failed(state))?;
    let model_names = names(&models);
    Ok(state
        .store
        .list_devices(tenant)
        .await
        .map_err(failed(state))?
        .into_iter()
        .filter_map(|s| {
            let (st, why) = status(state, &s, &models);
            (st == "Quarantined" || st == UNSAFE_KEY).then(|| UnsafeDevice {
                model: model_names.get(&s.device.model_id).cloned().unwrap_or_default(),
                serial: s.device.serial.clone(),
                firmware: s.device.firmware.clone(),
                why,
                waiting: s.quarantined,
            })
        })
        .collect())
}

async fn page(
    state: &AppState,
    me: &CurrentUser,
    notice: Option<String>,
    error: Option<String>,
    new_code: Option<NewCode>,
) -> Result<DevicesPage, PageError> {
    let tenant = me.user.tenant_id;
    let org = organisation(state, tenant).await?;
    let models = state.store.list_models(tenant).await.map_err(failed(state))?;
    let model_names = names(&models);
    let patients = patient_choices(state, me).await?;
    let patient_names: HashMap<&str, &str> =
        patients.iter().map(|(id, n)| (id.as_str(), n.as_str())).collect();
    let devices = state
        .store
        .list_devices(tenant)
        .await
        .map_err(failed(state))?
        .into_iter()
        .map(|s| {
            let d = &s.device;
            let (status, why) = status(state, &s, &models);
            DeviceLine {
                id: d.id.clone(),
                serial: d.serial.clone(),
                model: model_names.get(&d.model_id).cloned().unwrap_or_else(|| d.model_id.clone()),
                patient: patient_names
                    .get(d.patient.to_string().as_str())
                    .map_or_else(|| format!("patient {}", d.patient), |n| (*n).to_owned()),
                firmware: d.firmware.clone(),
                status,
                why,
                waiting: s.quarantined,
                last_received: s.last_received.map(|t| t.to_rfc3339()).unwrap_or_default(),
                revoked: d.revoked,
            }
        })
        .collect();
    let models = models
        .iter()
        .map(|m| ModelLine {
            id: m.id.clone(),
            name: format!("{} {}", m.manufacturer, m.model),
            measures: m
                .policy
                .measures
                .iter()
                .map(|(c, _)| {
                    telesafe_core::devices::vitals::sign_for(c).map_or(c.as_str(), |s| s.name)
                })
                .collect::<Vec<_>>()
                .join(", "),
            min_firmware: m.policy.min_firmware.clone(),
            vulnerable: m
                .policy
                .vulnerable
                .iter()
                .map(|(v, a)| format!("{v} ({a})"))
                .collect::<Vec<_>>()
                .join(", "),
            vulnerable_lines: m
                .policy
                .vulnerable
                .iter()
                .map(|(v, a)| format!("{v} {a}"))
                .collect::<Vec<_>>()
                .join("\n"),
        })
        .collect();
    Ok(DevicesPage {
        shell: Shell::for_user(state, "Devices", me, &org, "/admin/devices"),
        notice,
        error,
        models,
        devices,
        patients,
        signs: telesafe_core::devices::vitals::SIGNS
            .iter()
            .map(|s| (s.loinc, s.name, s.ucum))
            .collect(),
        new_code,
    })
}

/// `GET /admin/devices`.
pub async fn devices(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Query(q): Query<DevicesQuery>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    let notice = match q.done.as_deref() {
        Some("model") => Some("The model is registered. Its devices can be enrolled now."),
        Some("policy") => Some(
            "The firmware policy is saved. Every device of the model is judged by it from its next batch.",
        ),
        Some("revoked") => Some("The device is revoked. Its batches are refused from now on."),
        Some("released") => {
            Some("The device's readings were released and are part of the patient's record now.")
        }
        _ => None,
    };
    Ok(render(&page(&state, &me, notice.map(str::to_owned), None, None).await?, StatusCode::OK))
}

/// Enrolment codes, releases, revocations and firmware policy are sensitive: they need a
/// second factor within the last few minutes, as adding people does.
fn step_up_first(state: &AppState, me: &CurrentUser) -> Option<Response> {
    (!telesafe_core::identity::stepup::is_fresh(&me.session, state.clock.now()))
        .then(|| Redirect::to("/mfa/step-up?return=/admin/devices").into_response())
}

async fn invalid(state: &AppState, me: &CurrentUser, msg: String) -> Result<Response, PageError> {
    Ok(render(&page(state, me, None, Some(msg), None).await?, StatusCode::UNPROCESSABLE_ENTITY))
}

#[derive(Debug, Deserialize)]
pub struct ModelForm {
    #[serde(default)]
    csrf: String,
    id: String,
    manufacturer: String,
    model: String,
    /// One checkbox per measurement, named `measure-<LOINC code>` (a repeated field
    /// name does not survive URL-encoded form decoding).
    #[serde(flatten)]
    checked: HashMap<String, String>,
    min_firmware: String,
    /// One "VERSION ADVISORY" per line.
    #[serde(default)]
    vulnerable: String,
}

/// `POST /admin/devices/models`: registers a model with its firmware policy.
pub async fn add_model(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<ModelForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let measures = telesafe_core::devices::vitals::SIGNS
        .iter()
        .filter(|s| form.checked.contains_key(&format!("measure-{}", s.loinc)))
        .map(|s| (s.loinc.to_owned(), s.ucum.to_owned()))
        .collect();
    let vulnerable = match parse_vulnerable(&form.vulnerable) {
        Ok(v) => v,
        Err(msg) => return invalid(&state, &me, msg).await,
    };
    let model = match DeviceModel::new(
        me.user.tenant_id,
        form.id.trim(),
        &form.manufacturer,
        &form.model,
        measures,
        form.min_firmware.trim(),
        vulnerable,
        state.clock.now(),
    ) {
        Ok(m) => m,
        Err(e) => return invalid(&state, &me, format!("{}.", super::sentence(&e))).await,
    };
    audit_admin(&state, &me, "device-model-add", &model.id, "").await?;
    match state.store.create_model(&model).await {
        Ok(()) => Ok(Redirect::to("/admin/devices?done=model").into_response()),
        Err(RepoError::Conflict) => {
            invalid(&state, &me, "A model with that id or name is registered already.".into()).await
        }
        Err(e) => Err(PageError::new(&state, e)),
    }
}

/// "VERSION ADVISORY" lines as (version, advisory) pairs.
fn parse_vulnerable(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(char::is_whitespace) {
            Some((v, a)) => out.push((v.trim().to_owned(), a.trim().to_owned())),
            None => {
                return Err("Write each vulnerable firmware as its version, a space, and the \
                            advisory id."
                    .into());
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    csrf: String,
    min_firmware: String,
    #[serde(default)]
    vulnerable: String,
}

/// `POST /admin/devices/models/{id}`: changes a model's firmware policy (a new minimum, a
/// new advisory). It applies to the next batch of every device of the model: devices now
/// below it are quarantined from then on.
pub async fn update_model(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    ValidForm(form): ValidForm<PolicyForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    if let Some(r) = step_up_first(&state, &me) {
        return Ok(r);
    }
    let vulnerable = match parse_vulnerable(&form.vulnerable) {
        Ok(v) => v,
        Err(msg) => return invalid(&state, &me, msg).await,
    };
    let min = form.min_firmware.trim();
    if let Err(e) = telesafe_core::devices::check_firmware_policy(min, &vulnerable) {
        return invalid(&state, &me, format!("{}.", super::sentence(&e))).await;
    }
    audit_admin(&state, &me, "device-model-policy", &id, "").await?;
    let tenant = me.user.tenant_id;
    if !state
        .store
        .update_model_policy(tenant, &id, min, &vulnerable)
        .await
        .map_err(failed(&state))?
    {
        return invalid(&state, &me, "There is no such device model here.".into()).await;
    }
    crate::devices::forget_model(&state, tenant, &id);
    Ok(Redirect::to("/admin/devices?done=policy").into_response())
}

async fn audit_admin(
    state: &AppState,
    me: &CurrentUser,
    action: &'static str,
    id: &str,
    patient: &str,
) -> Result<(), PageError> {
    record_as(
        state,
        &Actor::user(me),
        &[Access {
            action,
            resource_type: "Device",
            resource_id: id.to_owned(),
            patient_id: patient.to_owned(),
            purpose: Purpose::Operations,
            outcome: "success",
        }],
    )
    .await
    .map_err(failed(state))
}

#[derive(Debug, Deserialize)]
pub struct EnrollForm {
    #[serde(default)]
    csrf: String,
    patient: String,
    model: String,
}

/// `POST /admin/devices/enrollments`: a one-time code (and its QR) for one patient's
/// device of one model, shown once.
pub async fn create_enrollment(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<EnrollForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    if let Some(r) = step_up_first(&state, &me) {
        return Ok(r);
    }
    let tenant = me.user.tenant_id;
    let choices = patient_choices(&state, &me).await?;
    let Some((patient_id, patient_name)) = choices.iter().find(|(id, _)| *id == form.patient)
    else {
        return invalid(&state, &me, "Choose the patient the device is for.".into()).await;
    };
    let Ok(patient) = patient_id.parse() else {
        return invalid(&state, &me, "Choose the patient the device is for.".into()).await;
    };
    let Some(model) = state.store.model(tenant, &form.model).await.map_err(failed(&state))? else {
        return invalid(&state, &me, "Choose a registered device model.".into()).await;
    };
    let code = OpaqueToken::generate()
        .map_err(|e| PageError::new(&state, crate::error::AppError::internal(e)))?;
    let now = state.clock.now();
    let e = Enrollment {
        code_hash: code.hash(),
        tenant,
        patient,
        model_id: model.id.clone(),
        created_at: now,
        expires_at: now.plus(ENROLLMENT_LIFETIME),
    };
    audit_admin(&state, &me, "device-enroll", &model.id, patient_id).await?;
    state.store.create_enrollment(&e).await.map_err(failed(&state))?;
    let new_code = NewCode {
        qr_svg: super::qr_svg(code.reveal()).map_err(|e| PageError::new(&state, e))?,
        code: code.reveal().to_owned(),
        expires: e.expires_at.to_rfc3339(),
        patient: patient_name.clone(),
        model: format!("{} {}", model.manufacturer, model.model),
    };
    let mut resp = render(&page(&state, &me, None, None, Some(new_code)).await?, StatusCode::OK);
    // The code is a credential: never cached.
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// `POST /admin/devices/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    ValidForm(form): ValidForm<super::account::CsrfOnly>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    if let Some(r) = step_up_first(&state, &me) {
        return Ok(r);
    }
    let tenant = me.user.tenant_id;
    let Some(device) =
        state.store.device(&id).await.map_err(failed(&state))?.filter(|d| d.tenant == tenant)
    else {
        return invalid(&state, &me, "There is no such device here.".into()).await;
    };
    audit_admin(&state, &me, "device-revoke", &device.id, &device.patient.to_string()).await?;
    if state
        .store
        .revoke_device(tenant, &device.id, state.clock.now())
        .await
        .map_err(failed(&state))?
        && let Some(model) =
            state.store.model(tenant, &device.model_id).await.map_err(failed(&state))?
    {
        // The patient's record says so too.
        crate::devices::write_fhir_device(&state, &Actor::user(&me), &device, &model, "inactive")
            .await
            .map_err(|e| PageError::new(&state, e))?;
    }
    Ok(Redirect::to("/admin/devices?done=revoked").into_response())
}

/// `POST /admin/devices/{id}/release`: files the device's quarantined readings.
pub async fn release(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    ValidForm(form): ValidForm<super::account::CsrfOnly>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    if let Some(r) = step_up_first(&state, &me) {
        return Ok(r);
    }
    match crate::devices::release_device(&state, &me, &id).await {
        Ok(_) => Ok(Redirect::to("/admin/devices?done=released").into_response()),
        Err(crate::error::AppError::NotFound) => {
            invalid(&state, &me, "There is no such device here.".into()).await
        }
        Err(crate::error::AppError::BadRequest(why)) => {
            invalid(&state, &me, format!("Nothing was released: {why}.")).await
        }
        Err(e) => Err(PageError::new(&state, e)),
    }
}
