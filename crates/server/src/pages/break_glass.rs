//! Asking for emergency (break-glass) access to one patient: a reason, a fresh second
//! factor, a one-hour grant, a security alert, and an audit entry the patient will see.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use telesafe_core::PatientId;
use telesafe_core::access::break_glass::{self, BreakGlassError, Category};
use telesafe_core::access::{CareTeamRepository, PatientFacts};
use telesafe_core::audit::Purpose;
use telesafe_core::identity::{PatientRepository, Role, stepup};

use super::home::organisation;
use super::{PageError, Shell, failed, render, require, sentence};
use crate::audit::{Access, record};
use crate::auth::{CurrentUser, MaybeUser};
use crate::http::form::ValidForm;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "break_glass.html")]
struct BreakGlassPage {
    shell: Shell,
    categories: Vec<(&'static str, &'static str)>,
    error: Option<String>,
    patient: String,
    reason: String,
}

async fn page(
    state: &AppState,
    me: &CurrentUser,
    error: Option<String>,
    patient: String,
    reason: String,
) -> Result<BreakGlassPage, PageError> {
    let org = organisation(state, me.user.tenant_id).await?;
    Ok(BreakGlassPage {
        shell: Shell::for_user(state, "Emergency access", me, &org, "/console"),
        categories: Category::ALL.iter().map(|c| (c.as_str(), c.label())).collect(),
        error,
        patient,
        reason,
    })
}

pub async fn show_break_glass(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::Clinician])?;
    if !stepup::is_fresh(&me.session, state.clock.now()) {
        return Ok(Redirect::to("/mfa/step-up?return=/console/break-glass").into_response());
    }
    Ok(render(&page(&state, &me, None, String::new(), String::new()).await?, StatusCode::OK))
}

#[derive(Debug, Deserialize)]
pub struct BreakGlassForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    patient: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    reason: String,
}

pub async fn break_glass(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<BreakGlassForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::Clinician])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let now = state.clock.now();
    let tenant = me.user.tenant_id;
    let keep = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let invalid = |msg: String| async {
        let p =
            page(&state, &me, Some(msg), keep(&form.patient, 64), keep(&form.reason, 500)).await?;
        Ok::<Response, PageError>(render(&p, StatusCode::UNPROCESSABLE_ENTITY))
    };
    let Some(category) = Category::parse(&form.category) else {
        return invalid("Choose why you need emergency access.".into()).await;
    };
    let patient = form.patient.trim().parse::<PatientId>().ok();
    let found = match patient {
        Some(id) => state
            .store
            .list_patients(tenant)
            .await
            .map_err(failed(&state))?
            .into_iter()
            .find(|p| p.id == id),
        None => None,
    };
    let Some(patient) = found else {
        return invalid("No patient with that patient id in this organisation. Check the id on the patient's wristband or referral.".into()).await;
    };
    let team: Vec<_> = state
        .store
        .care_teams(tenant)
        .await
        .map_err(failed(&state))?
        .into_iter()
        .filter(|(p, _)| *p == patient.id)
        .map(|(_, u)| u)
        .collect();
    let facts = PatientFacts::of(&patient, team);
    match break_glass::request(
        &state.store,
        &state.policy,
        &me.user,
        &me.session,
        facts,
        category,
        &form.reason,
        now,
    )
    .await
    {
        Ok(grant) => {
            record(
                &state,
                &me,
                &[Access {
                    action: "break_glass",
                    resource_type: "Patient",
                    resource_id: grant.id.to_string(),
                    patient_id: patient.id.to_string(),
                    purpose: Purpose::Emergency,
                    outcome: "granted",
                }],
            )
            .await
            .map_err(|e| PageError::new(&state, e))?;
            Ok(Redirect::to("/console").into_response())
        }
        Err(BreakGlassError::StepUpRequired) => {
            Ok(Redirect::to("/mfa/step-up?return=/console/break-glass").into_response())
        }
        Err(BreakGlassError::Repo(e)) => Err(PageError::new(&state, e)),
        Err(e) => invalid(sentence(&e.to_string())).await,
    }
}
