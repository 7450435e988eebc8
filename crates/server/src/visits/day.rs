//! The clinician's day: the visits of one day with the waiting room's live state, and the
//! form that books a visit (clinicians for their care team's patients, front desk for
//! everyone's).

use std::collections::HashMap;
use std::time::Duration;

use askama::Template;
use axum::Json;
use axum::extract::{Query, RawForm, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use telesafe_core::access::{Action, CareTeamRepository};
use telesafe_core::identity::outbox;
use telesafe_core::identity::{PatientRepository, Role, UserRepository, UserStatus};
use telesafe_core::visits::{self, Visit, VisitRepository, VisitStatus};
use telesafe_core::{PatientId, Timestamp, UserId};
use telesafe_crypto::OpaqueToken;

use super::record;
use crate::auth::{CurrentUser, MaybeUser};
use crate::error::AppError;
use crate::fhir::{Session, Target};
use crate::pages::{PageError, Shell, render, require};
use crate::state::AppState;

const STAFF: &[Role] = &[Role::Clinician, Role::Nurse, Role::FrontDesk];
const DAY_MS: i64 = 24 * 3600 * 1000;

struct VisitLine {
    id: String,
    time: String,
    length: u64,
    patient: String,
    clinicians: String,
    status: &'static str,
    waiting: &'static str,
    /// Whether this user is one of its clinicians (and may open it).
    mine: bool,
}

struct Option_ {
    value: String,
    label: String,
}

#[derive(Template)]
#[template(path = "visits_day.html")]
struct DayPage {
    shell: Shell,
    date: String,
    previous: String,
    next: String,
    visits: Vec<VisitLine>,
    patients: Vec<Option_>,
    clinicians: Vec<Option_>,
    error: Option<String>,
    booked: Option<String>,
    /// A link to pass on by hand, for a patient without a portal account.
    link: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct DayQuery {
    #[serde(default)]
    date: Option<String>,
}

/// The UTC day `date` (YYYY-MM-DD) starts at, or today's.
fn day_start(date: Option<&str>, now: Timestamp) -> Option<Timestamp> {
    match date.filter(|d| !d.is_empty()) {
        None => Some(Timestamp::from_unix_millis(now.unix_millis().div_euclid(DAY_MS) * DAY_MS)),
        Some(d) => {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            let day = time::Date::parse(d, fmt).ok()?;
            let ms = day.midnight().assume_utc().unix_timestamp() * 1000;
            Some(Timestamp::from_unix_millis(ms))
        }
    }
}

fn date_of(t: Timestamp) -> String {
    t.to_rfc3339().chars().take(10).collect()
}

fn time_of(t: Timestamp) -> String {
    t.to_rfc3339().chars().skip(11).take(5).collect()
}

fn failed(state: &AppState) -> impl Fn(crate::fhir::FhirError) -> PageError + '_ {
    move |e| PageError::new(state, super::fhir_error(e))
}

/// The patients this user may book: decided one by one like any search (care team for
/// clinicians and nurses, everyone for front desk), each shown name logged as a list entry.
async fn bookable_patients(
    state: &AppState,
    s: &mut Session,
) -> Result<Vec<(PatientId, String)>, PageError> {
    let mut ids = Vec::new();
    for p in state.store.list_patients(s.tenant).await.map_err(|e| PageError::new(state, e))? {
        if s.decide(Action::Search, &Target::Patient(p.id)).await.map_err(failed(state))?.is_some()
        {
            ids.push(p.id);
        }
    }
    names(state, s, &ids).await
}

/// Patient names from their records, each logged as a list entry before it is shown.
async fn names(
    state: &AppState,
    s: &mut Session,
    ids: &[PatientId],
) -> Result<Vec<(PatientId, String)>, PageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let accesses: Vec<_> = ids
        .iter()
        .map(|p| crate::audit::Access {
            action: "list",
            resource_type: "Patient",
            resource_id: p.to_string(),
            patient_id: p.to_string(),
            purpose: s.purpose(),
            outcome: "success",
        })
        .collect();
    s.audit(&accesses).await.map_err(failed(state))?;
    let keys: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let records = crate::fhir::patients_unlogged(s, &keys).await.map_err(failed(state))?;
    Ok(ids
        .iter()
        .map(|p| {
            let name = records
                .get(&p.to_string())
                .map(crate::pages::patient_name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "(name not recorded)".to_owned());
            (*p, name)
        })
        .collect())
}

async fn render_day(
    state: &AppState,
    me: &CurrentUser,
    date: Option<&str>,
    status: StatusCode,
    error: Option<String>,
    booked: Option<String>,
    link: Option<String>,
) -> Result<Response, PageError> {
    let now = state.clock.now();
    let Some(start) = day_start(date, now) else {
        return Err(PageError::new(
            state,
            AppError::BadRequest("the date must be YYYY-MM-DD".into()),
        ));
    };
    let end = Timestamp::from_unix_millis(start.unix_millis() + DAY_MS);
    let tenant = me.user.tenant_id;
    let all = state
        .store
        .visits_between(tenant, start, end)
        .await
        .map_err(|e| PageError::new(state, e))?;
    // Front desk keeps the whole clinic's schedule; clinicians and nurses see theirs.
    let shown: Vec<Visit> = if me.role() == Role::FrontDesk {
        all
    } else {
        all.into_iter().filter(|v| v.is_clinician(me.user.id)).collect()
    };
    let mut s = Session::for_user(state, me).await.map_err(failed(state))?;
    let mut patient_ids: Vec<PatientId> = shown.iter().map(|v| v.patient).collect();
    patient_ids.sort();
    patient_ids.dedup();
    let patient_names: HashMap<PatientId, String> =
        names(state, &mut s, &patient_ids).await?.into_iter().collect();
    let users = state.store.list_users(tenant).await.map_err(|e| PageError::new(state, e))?;
    let user_name = |u: &UserId| {
        users
            .iter()
            .find(|x| x.id == *u)
            .map(|x| x.display_name.as_str().to_owned())
            .unwrap_or_default()
    };
    let visits = shown
        .iter()
        .map(|v| VisitLine {
            id: v.id.to_string(),
            time: time_of(v.starts_at),
            length: v.ends_at.since(v.starts_at).as_secs() / 60,
            patient: patient_names.get(&v.patient).cloned().unwrap_or_default(),
            clinicians: v.clinicians.iter().map(user_name).collect::<Vec<_>>().join(", "),
            status: status_label(v.status),
            waiting: waiting_label(v, now),
            mine: v.is_clinician(me.user.id),
        })
        .collect();
    let patients = bookable_patients(state, &mut s)
        .await?
        .into_iter()
        .map(|(id, name)| Option_ { value: id.to_string(), label: name })
        .collect();
    let clinicians = users
        .iter()
        .filter(|u| {
            matches!(u.role, Role::Clinician | Role::Nurse) && u.status == UserStatus::Active
        })
        .map(|u| Option_ { value: u.id.to_string(), label: u.display_name.as_str().to_owned() })
        .collect();
    let org = crate::pages::organisation_name(state, tenant).await?;
    let page = DayPage {
        shell: Shell::for_user(state, "Video visits", me, &org, "/console/visits"),
        date: date_of(start),
        previous: date_of(Timestamp::from_unix_millis(start.unix_millis() - DAY_MS)),
        next: date_of(end),
        visits,
        patients,
        clinicians,
        error,
        booked,
        link,
    };
    Ok(render(&page, status))
}

fn status_label(s: VisitStatus) -> &'static str {
    match s {
        VisitStatus::Booked => "Booked",
        VisitStatus::InProgress => "In progress",
        VisitStatus::Finished => "Finished",
        VisitStatus::Cancelled => "Cancelled",
    }
}

fn waiting_label(v: &Visit, now: Timestamp) -> &'static str {
    if !v.status.is_open() {
        return "";
    }
    match v.patient_state(now) {
        visits::PatientState::Absent => "Not arrived",
        visits::PatientState::Waiting => "Waiting",
        visits::PatientState::Admitted => "In the call",
    }
}

/// `GET /console/visits`: the day view.
pub async fn day(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Query(q): Query<DayQuery>,
) -> Result<Response, PageError> {
    let me = require(&state, me, STAFF)?;
    render_day(&state, &me, q.date.as_deref(), StatusCode::OK, None, None, None).await
}

/// `GET /console/visits/status`: the waiting room of each of the day's visits, for the day
/// view to refresh itself.
pub async fn status(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Query(q): Query<DayQuery>,
) -> Result<Response, AppError> {
    let me = me
        .filter(|m| m.session.stage == telesafe_core::identity::SessionStage::Full)
        .ok_or(AppError::Unauthenticated)?;
    if !STAFF.contains(&me.role()) {
        return Err(AppError::Forbidden);
    }
    let now = state.clock.now();
    let start = day_start(q.date.as_deref(), now)
        .ok_or_else(|| AppError::BadRequest("the date must be YYYY-MM-DD".into()))?;
    let end = Timestamp::from_unix_millis(start.unix_millis() + DAY_MS);
    let list = state.store.visits_between(me.user.tenant_id, start, end).await?;
    let out: Vec<_> = list
        .iter()
        .filter(|v| me.role() == Role::FrontDesk || v.is_clinician(me.user.id))
        .map(|v| json!({"id": v.id.to_string(), "status": status_label(v.status), "waiting": waiting_label(v, now)}))
        .collect();
    Ok(Json(json!({"visits": out})).into_response())
}

/// The booking form, checked.
struct Booking {
    patient: PatientId,
    clinicians: Vec<UserId>,
    starts: Timestamp,
    length: Duration,
    reason: String,
    date: String,
}

fn parse_booking(form: &[(String, String)]) -> Result<Booking, String> {
    let one = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim()).unwrap_or("");
    let patient = one("patient").parse().map_err(|_| "Choose the patient.".to_owned())?;
    let clinicians = form
        .iter()
        .filter(|(n, _)| n == "clinicians")
        .map(|(_, v)| v.parse().map_err(|_| "Choose the clinicians from the list.".to_owned()))
        .collect::<Result<Vec<UserId>, _>>()?;
    let mut clinicians = clinicians;
    clinicians.sort();
    clinicians.dedup();
    let date = one("date").to_owned();
    let at = format!("{date}T{}:00Z", one("time"));
    let starts =
        time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .map_err(|_| "Give the date as YYYY-MM-DD and the time as HH:MM (UTC).".to_owned())?;
    let minutes: u64 =
        one("length").parse().map_err(|_| "Give the length in minutes.".to_owned())?;
    let reason = one("reason").to_owned();
    if reason.chars().count() > 200 {
        return Err("Keep the reason under 200 characters.".into());
    }
    Ok(Booking {
        patient,
        clinicians,
        starts: Timestamp::from_unix_millis(starts.unix_timestamp() * 1000),
        length: Duration::from_secs(minutes.saturating_mul(60)),
        reason,
        date,
    })
}

/// `POST /console/visits`: books a visit. The Appointment is written through the record
/// (decided and audited), the clinicians join the patient's care team, and the patient
/// gets the link through the outbox (or, without a portal account, the page shows it once
/// to pass on).
pub async fn schedule(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    RawForm(body): RawForm,
) -> Result<Response, PageError> {
    let me = require(&state, me, STAFF)?;
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let csrf = form.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
    me.check_csrf(csrf).map_err(|e| PageError::new(&state, e))?;
    let refuse = |msg: String, date: Option<String>| {
        let state = state.clone();
        let me = me.clone();
        async move {
            render_day(
                &state,
                &me,
                date.as_deref(),
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(msg),
                None,
                None,
            )
            .await
        }
    };
    let b = match parse_booking(&form) {
        Ok(b) => b,
        Err(msg) => return refuse(msg, None).await,
    };
    let now = state.clock.now();
    let tenant = me.user.tenant_id;
    if let Err(e) = visits::check_schedule(b.starts, b.length, &b.clinicians, now) {
        return refuse(crate::pages::sentence(&e.to_string()), Some(b.date)).await;
    }
    let users = state.store.list_users(tenant).await.map_err(|e| PageError::new(&state, e))?;
    let mut named = Vec::new();
    for c in &b.clinicians {
        match users.iter().find(|u| u.id == *c && matches!(u.role, Role::Clinician | Role::Nurse)) {
            Some(u) => named.push((u.id, u.display_name.as_str().to_owned())),
            None => {
                return refuse("Choose the clinicians from the list.".into(), Some(b.date)).await;
            }
        }
    }
    let Some(patient) = state
        .store
        .patient_by_id(tenant, b.patient)
        .await
        .map_err(|e| PageError::new(&state, e))?
    else {
        return refuse("Choose the patient.".into(), Some(b.date)).await;
    };
    let link =
        OpaqueToken::generate().map_err(|e| PageError::new(&state, AppError::internal(e)))?;
    let mut visit = Visit::booked(
        tenant,
        patient.id,
        b.clinicians.clone(),
        (b.starts, b.starts.plus(b.length)),
        link.hash(),
        me.user.id,
        now,
    );
    let mut s = Session::for_user(&state, &me).await.map_err(failed(&state))?;
    match record::book(&mut s, &visit, &named, &b.reason).await {
        Ok(id) => visit.appointment_id = id,
        Err(e) if e.status == StatusCode::FORBIDDEN => {
            return refuse("You may not book visits for this patient.".into(), Some(b.date)).await;
        }
        Err(e) => return Err(failed(&state)(e)),
    }
    // Seeing the patient in a visit is care: the visit's clinicians join the care team.
    for c in &b.clinicians {
        state
            .store
            .add_to_care_team(tenant, patient.id, *c, now)
            .await
            .map_err(|e| PageError::new(&state, e))?;
    }
    state.store.create_visit(&visit).await.map_err(|e| PageError::new(&state, e))?;
    let url = format!(
        "{}/join/{}",
        state.config.server.public_url.as_deref().unwrap_or("").trim_end_matches('/'),
        link.reveal()
    );
    let (booked, shown_link) = match patient.user_id {
        Some(user) => {
            let body = format!(
                "Hello,\n\nyour clinic has booked a video visit for you. When it is time, open \
                 this link (it works from 30 minutes before the start):\n\n{url}\n\nYou will be \
                 asked for your date of birth. Your visits are also listed when you sign in."
            );
            outbox::enqueue(
                &state.store,
                &state.outbox_key,
                tenant,
                user,
                "Your video visit",
                &body,
                now,
            )
            .await
            .map_err(|e| PageError::new(&state, e))?;
            ("The visit is booked. The patient has been sent the link.".to_owned(), None)
        }
        None => (
            "The visit is booked. The patient has no portal account: give them the link below \
             (by phone or letter). It is shown only now."
                .to_owned(),
            Some(url),
        ),
    };
    render_day(&state, &me, Some(&b.date), StatusCode::OK, None, Some(booked), shown_link).await
}
