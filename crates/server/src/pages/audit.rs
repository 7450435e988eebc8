//! Audit pages: a patient's own access log (who looked at my record, with role, when,
//! what kind of data, and why), and the security officer's audit search with its activity
//! drawn as a chart. Looking at either is itself recorded.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use telesafe_core::access::break_glass::BreakGlassRepository;
use telesafe_core::access::{AccessContext, Action, PatientFacts, Principal, Resource};
use telesafe_core::audit::{AuditFilter, AuditRepository, Entry, Purpose};
use telesafe_core::identity::{Email, PatientRepository, Role, UserRepository};
use telesafe_core::{TenantId, Timestamp};

use super::chart::{self, Bar};
use super::home::organisation;
use super::{PageError, Shell, failed, render, require};
use crate::audit::{Access, record};
use crate::auth::{CurrentUser, MaybeUser};
use crate::state::AppState;

struct AccessLine {
    at: String,
    who: String,
    role: String,
    what: String,
    why: String,
}

#[derive(Template)]
#[template(path = "access_log.html")]
struct AccessLogPage {
    shell: Shell,
    lines: Vec<AccessLine>,
}

/// Plain words for a purpose of use.
fn purpose_words(p: Purpose) -> &'static str {
    match p {
        Purpose::Treatment => "Your care",
        Purpose::Payment => "Billing",
        Purpose::Operations => "Running the clinic",
        Purpose::Emergency => "Emergency access",
        Purpose::PatientRequest => "Your own request",
        Purpose::Security => "Security review",
    }
}

/// Plain words for what was done to which kind of data.
fn what_words(e: &Entry) -> String {
    let data = match e.resource_type.as_str() {
        "Patient" => "your name and registration",
        "AuditEvent" => "this access log",
        "Observation" => "your measurements",
        crate::fhir::query::CHART_ENTRY => "your measurements from home devices",
        "Condition" => "your health problems",
        "MedicationRequest" => "your medications",
        "AllergyIntolerance" => "your allergies",
        "Encounter" => "your visits",
        _ => "your record",
    };
    match e.action.as_str() {
        "list" | "search" => format!("Saw {data} in a list"),
        "read" => format!("Looked at {data}"),
        "chart" => format!("Saw {data} drawn on a chart ({})", chart_span(&e.resource_id)),
        "create" | "update" => format!("Changed {data}"),
        other => format!("{other}: {data}"),
    }
}

/// The span a `chart` entry names (an ISO 8601 interval), as dates people read.
fn chart_span(interval: &str) -> String {
    let day = |t: &str| t.get(..10).unwrap_or(t).to_owned();
    match interval.split_once('/') {
        Some(("..", "..")) => "all of them".to_owned(),
        Some((from, "..")) => format!("since {}", day(from)),
        Some(("..", to)) => format!("until {}", day(to)),
        Some((from, to)) => format!("{} to {}", day(from), day(to)),
        None => "a span of time".to_owned(),
    }
}

async fn names(
    state: &AppState,
    tenant: TenantId,
) -> Result<HashMap<String, (String, Role)>, PageError> {
    Ok(state
        .store
        .list_users(tenant)
        .await
        .map_err(failed(state))?
        .into_iter()
        .map(|u| (u.id.to_string(), (u.display_name.as_str().to_owned(), u.role)))
        .collect())
}

/// `GET /portal/access`: who has seen my record.
pub async fn access_log(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::Patient])?;
    let tenant = me.user.tenant_id;
    let mine = state.store.patient_by_user(tenant, me.user.id).await.map_err(failed(&state))?;
    let mut entries = Vec::new();
    let mut grants = Vec::new();
    if let Some(p) = &mine {
        // A patient reads the access log of their own record: the same decision as reading
        // their demographics.
        let who = Principal::User { id: me.user.id, tenant, role: me.role() };
        let ctx = AccessContext { purpose: "patient_request".to_owned(), break_glass: false };
        let facts = PatientFacts::of(p, Vec::new());
        let set = crate::policy::tenant_set(&state, tenant)
            .await
            .map_err(|e| PageError::new(&state, e))?;
        if !state
            .policy
            .decide(&who, Action::Read, &Resource::Patient(facts), &ctx, set.as_deref())
            .allowed
        {
            return Err(PageError::new(&state, crate::error::AppError::Forbidden));
        }
        grants = state.store.grants_for_patient(tenant, p.id).await.map_err(failed(&state))?;
        record(
            &state,
            &me,
            &[Access {
                action: "read",
                resource_type: "AuditEvent",
                resource_id: String::new(),
                patient_id: p.id.to_string(),
                purpose: Purpose::PatientRequest,
                outcome: "success",
            }],
        )
        .await
        .map_err(|e| PageError::new(&state, e))?;
        let filter = AuditFilter { patient_id: Some(p.id.to_string()), ..AuditFilter::default() };
        entries = state.store.search_audit(tenant, &filter, 200).await.map_err(failed(&state))?;
    }
    let people = names(&state, tenant).await?;
    let lines = entries
        .iter()
        .map(|e| {
            let (who, role) = if e.actor_id == me.user.id.to_string() {
                ("You".to_owned(), "Patient".to_owned())
            } else {
                match people.get(&e.actor_id) {
                    Some((name, role)) => (name.clone(), role.label().to_owned()),
                    None => ("Someone no longer at the clinic".to_owned(), e.actor_role.clone()),
                }
            };
            AccessLine {
                at: Timestamp::from_unix_millis(e.at).to_rfc3339(),
                who,
                role,
                what: what_words(e),
                // Emergency access shows the clinician's stated reason.
                why: match grants.iter().find(|g| {
                    e.purpose == Purpose::Emergency
                        && g.user_id.to_string() == e.actor_id
                        && g.granted_at.unix_millis() <= e.at
                        && e.at < g.expires_at.unix_millis()
                }) {
                    Some(g) => format!("Emergency access ({}): {}", g.category.label(), g.reason),
                    None => purpose_words(e.purpose).to_owned(),
                },
            }
        })
        .collect();
    let org = organisation(&state, tenant).await?;
    let page = AccessLogPage {
        shell: Shell::for_user(&state, "Who has seen my record", &me, &org, "/portal"),
        lines,
    };
    Ok(render(&page, StatusCode::OK))
}

struct AuditLine {
    seq: u64,
    at: String,
    actor: String,
    role: String,
    action: String,
    resource: String,
    patient: String,
    purpose: &'static str,
    outcome: String,
    source: String,
}

#[derive(Template)]
#[template(path = "audit_search.html")]
struct AuditSearchPage {
    shell: Shell,
    q: AuditQuery,
    lines: Vec<AuditLine>,
    chart_svg: String,
    total: usize,
    error: Option<String>,
    log_size: u64,
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    patient: String,
    #[serde(default)]
    action: String,
    /// YYYY-MM-DD, inclusive.
    #[serde(default)]
    from: String,
    /// YYYY-MM-DD, inclusive.
    #[serde(default)]
    to: String,
}

const DAY_MS: i64 = 86_400_000;

/// Unix milliseconds at the start of a `YYYY-MM-DD` day (UTC).
fn day_start(s: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s.trim(), &format).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp() * 1000)
}

fn day_label(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .map(|t| format!("{:02}-{:02}", u8::from(t.month()), t.day()))
        .unwrap_or_default()
}

/// `GET /security/audit`: the security officer's search over this organisation's log.
pub async fn audit_search(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Query(q): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let me: CurrentUser = require(&state, me, &[Role::SecurityOfficer])?;
    let tenant = me.user.tenant_id;
    // The role gate above keeps the page from other consoles; the policy decides access to
    // the log itself, as for any data.
    let who = Principal::User { id: me.user.id, tenant, role: me.role() };
    let ctx = AccessContext { purpose: "security".to_owned(), break_glass: false };
    let set =
        crate::policy::tenant_set(&state, tenant).await.map_err(|e| PageError::new(&state, e))?;
    if !state
        .policy
        .decide(&who, Action::ReadAudit, &Resource::AuditLog(tenant), &ctx, set.as_deref())
        .allowed
    {
        return Err(PageError::new(&state, crate::error::AppError::Forbidden));
    }
    let now = state.clock.now().unix_millis();
    let mut error = None;
    let from = if q.from.trim().is_empty() {
        Some(now - 13 * DAY_MS - now.rem_euclid(DAY_MS))
    } else {
        day_start(&q.from)
    };
    let until =
        if q.to.trim().is_empty() { Some(now + 1) } else { day_start(&q.to).map(|d| d + DAY_MS) };
    let (Some(from), Some(until)) = (from, until) else {
        error = Some("Dates are written as year-month-day, for example 2026-11-25.".to_owned());
        return show(&state, &me, q, Vec::new(), Vec::new(), error).await;
    };
    if until <= from || until - from > 366 * DAY_MS {
        error = Some(
            "Choose a range of one day to one year, with the start before the end.".to_owned(),
        );
        return show(&state, &me, q, Vec::new(), Vec::new(), error).await;
    }
    // The actor may be given as an email address or an account id.
    let actor = q.actor.trim();
    let actor_id = if actor.is_empty() {
        None
    } else if let Ok(email) = Email::parse(actor) {
        match state.store.user_by_email(tenant, &email).await.map_err(failed(&state))? {
            Some(u) => Some(u.id.to_string()),
            None => Some(String::from("-")),
        }
    } else {
        Some(actor.to_owned())
    };
    let filter = AuditFilter {
        actor_id,
        patient_id: Some(q.patient.trim().to_owned()).filter(|s| !s.is_empty()),
        action: Some(q.action.trim().to_owned()).filter(|s| !s.is_empty()),
        from: Some(from),
        until: Some(until),
    };
    record(
        &state,
        &me,
        &[Access {
            action: "search",
            resource_type: "AuditEvent",
            resource_id: String::new(),
            patient_id: filter.patient_id.clone().unwrap_or_default(),
            purpose: Purpose::Security,
            outcome: "success",
        }],
    )
    .await
    .map_err(|e| PageError::new(&state, e))?;
    let entries = state.store.search_audit(tenant, &filter, 2000).await.map_err(failed(&state))?;
    // Activity per day over the range, drawn.
    let days = ((until - from) / DAY_MS).max(1);
    let mut buckets: Vec<Bar> =
        (0..days).map(|i| Bar { label: day_label(from + i * DAY_MS), value: 0 }).collect();
    for e in &entries {
        if let Some(b) =
            usize::try_from((e.at - from) / DAY_MS).ok().and_then(|i| buckets.get_mut(i))
        {
            b.value += 1;
        }
    }
    show(&state, &me, q, entries, buckets, error).await
}

async fn show(
    state: &AppState,
    me: &CurrentUser,
    q: AuditQuery,
    entries: Vec<Entry>,
    buckets: Vec<Bar>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let people = names(state, me.user.tenant_id).await?;
    let total = entries.len();
    let lines = entries
        .into_iter()
        .take(200)
        .map(|e| AuditLine {
            seq: e.seq,
            at: Timestamp::from_unix_millis(e.at).to_rfc3339(),
            actor: people
                .get(&e.actor_id)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| e.actor_id.clone()),
            role: e.actor_role.clone(),
            action: e.action.clone(),
            resource: e.resource_type.clone(),
            patient: e.patient_id.clone(),
            purpose: purpose_words(e.purpose),
            outcome: e.outcome.clone(),
            source: e.source.clone(),
        })
        .collect();
    let org = organisation(state, me.user.tenant_id).await?;
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = AuditSearchPage {
        shell: Shell::for_user(state, "Audit log", me, &org, "/security"),
        q,
        chart_svg: chart::bars("Audit entries per day", &buckets),
        lines,
        total,
        error,
        log_size: state.audit.size(),
    };
    Ok(render(&page, status))
}
