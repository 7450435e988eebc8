//! Each audience's home page.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use telesafe_core::access::break_glass::BreakGlassRepository;
use telesafe_core::access::{
    AccessContext, Action, CareTeamRepository, PatientFacts, Principal, Resource,
};
use telesafe_core::identity::{
    AuthEventKind, AuthEventRepository, PatientRepository, Role, SessionPolicy, TenantRepository,
    UserRepository,
};
use telesafe_core::{TenantId, Timestamp, UserId};

use super::{PageError, Shell, render, require};
use crate::auth::{CurrentUser, MaybeUser};
use crate::state::{AppState, Posture};

pub async fn root(MaybeUser(me): MaybeUser) -> Response {
    match me {
        Some(me) => Redirect::to(super::next_page(&me)).into_response(),
        None => Redirect::to("/signin").into_response(),
    }
}

pub(super) async fn organisation(state: &AppState, tenant: TenantId) -> Result<String, PageError> {
    let tenants = state.store.list_tenants().await.map_err(|e| PageError::new(state, e))?;
    Ok(tenants
        .into_iter()
        .find(|t| t.id == tenant)
        .map(|t| t.name.as_str().to_owned())
        .unwrap_or_default())
}

pub(super) fn minutes(d: std::time::Duration) -> u64 {
    d.as_secs() / 60
}

pub(super) fn hours(d: std::time::Duration) -> u64 {
    d.as_secs() / 3600
}

#[derive(Template)]
#[template(path = "portal.html")]
struct PortalPage {
    shell: Shell,
    name: String,
    email: String,
    organisation: String,
    signed_in: String,
    idle_minutes: u64,
    absolute_hours: u64,
    /// Upcoming video visits: (start, id, open to join now).
    visits: Vec<(String, String, bool)>,
}

pub async fn portal(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::Patient])?;
    let org = organisation(&state, me.user.tenant_id).await?;
    let visits = upcoming_visits(&state, &me).await?;
    let page = PortalPage {
        visits,
        shell: Shell::for_user(&state, "My health", &me, &org, "/portal"),
        name: me.user.display_name.as_str().to_owned(),
        email: me.user.email.as_str().to_owned(),
        organisation: org,
        signed_in: me.session.created_at.to_rfc3339(),
        idle_minutes: minutes(me.policy.idle),
        absolute_hours: hours(me.policy.absolute),
    };
    Ok(render(&page, StatusCode::OK))
}

/// The patient's own visits from two hours ago on: (start, id, joinable now).
async fn upcoming_visits(
    state: &AppState,
    me: &CurrentUser,
) -> Result<Vec<(String, String, bool)>, PageError> {
    use telesafe_core::visits::VisitRepository;
    let tenant = me.user.tenant_id;
    let fail = |e: telesafe_core::RepoError| PageError::new(state, e);
    let Some(own) = state.store.patient_by_user(tenant, me.user.id).await.map_err(fail)? else {
        return Ok(Vec::new());
    };
    let now = state.clock.now();
    let from = Timestamp::from_unix_millis(now.unix_millis() - 2 * 3600 * 1000);
    let to = now.plus(std::time::Duration::from_secs(90 * 24 * 3600));
    Ok(state
        .store
        .visits_between(tenant, from, to)
        .await
        .map_err(fail)?
        .into_iter()
        .filter(|v| v.patient == own.id && v.status.is_open() && v.window().1 > now)
        .map(|v| (v.starts_at.to_rfc3339(), v.id.to_string(), v.joinable(now)))
        .collect())
}

struct PatientLine {
    id: String,
    name: String,
    born: String,
    registered: String,
    account: &'static str,
    /// Shown under a break-glass grant: until when.
    emergency_until: Option<String>,
}

#[derive(Template)]
#[template(path = "console.html")]
struct ConsolePage {
    /// Home-monitoring alerts of the patients shown, newest first.
    alerts: Vec<super::monitoring::AlertLine>,
    acknowledged: bool,
    shell: Shell,
    organisation: String,
    patients: Vec<PatientLine>,
    /// Clinicians and nurses see their care team; front desk sees everyone.
    care_team_only: bool,
    can_break_glass: bool,
}

#[derive(Debug, serde::Deserialize)]
pub struct ConsoleQuery {
    #[serde(default)]
    done: Option<String>,
}

pub async fn console(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    axum::extract::Query(q): axum::extract::Query<ConsoleQuery>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::Clinician, Role::Nurse, Role::FrontDesk])?;
    let tenant = me.user.tenant_id;
    let org = organisation(&state, tenant).await?;
    let fail = |e: telesafe_core::RepoError| PageError::new(&state, e);
    // Search results are filtered by the same policy decisions as any read: a clinician or
    // nurse sees their care team's patients, front desk sees everyone's demographics. The
    // hidden ones leave no trace on the page (no count, no id).
    let mut teams: HashMap<telesafe_core::PatientId, Vec<UserId>> = HashMap::new();
    for (p, u) in state.store.care_teams(tenant).await.map_err(fail)? {
        teams.entry(p).or_default().push(u);
    }
    let who = Principal::User { id: me.user.id, tenant, role: me.role() };
    let now = state.clock.now();
    // Patients this user holds an active break-glass grant for, and until when.
    let grants: HashMap<telesafe_core::PatientId, Timestamp> = state
        .store
        .active_grants(tenant, me.user.id, now)
        .await
        .map_err(fail)?
        .into_iter()
        .map(|g| (g.patient_id, g.expires_at))
        .collect();
    let set =
        crate::policy::tenant_set(&state, tenant).await.map_err(|e| PageError::new(&state, e))?;
    let mut patients = Vec::new();
    // Patients visible only under a break-glass grant: their entries say "emergency".
    let mut under_grant = std::collections::HashSet::new();
    // The record's own view: consent denials are read from each patient's record.
    let fhir = crate::fhir::Session::for_user(&state, &me)
        .await
        .map_err(|e| super::record::page_error(&state, e))?;
    for p in state.store.list_patients(tenant).await.map_err(fail)? {
        let mut facts = PatientFacts::of(&p, teams.remove(&p.id).unwrap_or_default());
        fhir.apply_consents(&mut facts).await.map_err(|e| super::record::page_error(&state, e))?;
        let resource = Resource::Patient(facts);
        let ordinary = AccessContext { purpose: "treatment".to_owned(), break_glass: false };
        if state.policy.decide(&who, Action::Search, &resource, &ordinary, set.as_deref()).allowed {
            patients.push(p);
        } else if grants.contains_key(&p.id) {
            let ctx = AccessContext { purpose: "emergency".to_owned(), break_glass: true };
            if state.policy.decide(&who, Action::Search, &resource, &ctx, set.as_deref()).allowed {
                under_grant.insert(p.id);
                patients.push(p);
            }
        }
    }
    let emergency = |p: &telesafe_core::identity::Patient| under_grant.contains(&p.id);
    let names: HashMap<UserId, String> = state
        .store
        .list_users(tenant)
        .await
        .map_err(fail)?
        .into_iter()
        .map(|u| (u.id, u.display_name.as_str().to_owned()))
        .collect();
    // Fail closed: the list is shown only once its audit entries are durable. One entry for
    // the search, and one per patient shown, so each patient's access log has it.
    let mut accesses = vec![crate::audit::Access {
        action: "search",
        resource_type: "Patient",
        resource_id: String::new(),
        patient_id: String::new(),
        purpose: telesafe_core::audit::Purpose::Treatment,
        outcome: "success",
    }];
    accesses.extend(patients.iter().map(|p| crate::audit::Access {
        action: "list",
        resource_type: "Patient",
        resource_id: p.id.to_string(),
        patient_id: p.id.to_string(),
        purpose: if emergency(p) {
            telesafe_core::audit::Purpose::Emergency
        } else {
            telesafe_core::audit::Purpose::Treatment
        },
        outcome: "success",
    }));
    crate::audit::record(&state, &me, &accesses).await.map_err(|e| PageError::new(&state, e))?;
    // Names and birth dates come from each patient's encrypted record; the list entries
    // logged above cover showing them.
    let ids: Vec<String> = patients.iter().map(|p| p.id.to_string()).collect();
    let records = crate::fhir::patients_unlogged(&fhir, &ids)
        .await
        .map_err(|e| super::record::page_error(&state, e))?;
    let patients: Vec<PatientLine> = patients
        .into_iter()
        .map(|p| PatientLine {
            id: p.id.to_string(),
            born: records
                .get(&p.id.to_string())
                .and_then(|r| r["birthDate"].as_str())
                .unwrap_or("")
                .to_owned(),
            name: records
                .get(&p.id.to_string())
                .map(super::record::display_name)
                .filter(|n| !n.is_empty())
                .or_else(|| p.user_id.and_then(|u| names.get(&u).cloned()))
                .unwrap_or_else(|| "Patient without a record".to_owned()),
            registered: p.created_at.to_rfc3339(),
            account: if p.user_id.is_some() { "Yes" } else { "No" },
            emergency_until: emergency(&p)
                .then(|| grants.get(&p.id).map(|t| t.to_rfc3339()))
                .flatten(),
        })
        .collect();
    let alerts = if matches!(me.role(), Role::Clinician | Role::Nurse) {
        let visible: HashMap<String, String> =
            patients.iter().map(|p: &PatientLine| (p.id.clone(), p.name.clone())).collect();
        let mut fhir = fhir;
        super::monitoring::console_alerts(&state, &mut fhir, tenant, &visible).await?
    } else {
        Vec::new()
    };
    let page = ConsolePage {
        alerts,
        acknowledged: q.done.as_deref() == Some("acknowledged"),
        shell: Shell::for_user(&state, "Clinic console", &me, &org, "/console"),
        organisation: org,
        patients,
        care_team_only: me.role() != Role::FrontDesk,
        can_break_glass: me.role() == Role::Clinician,
    };
    Ok(render(&page, StatusCode::OK))
}

#[derive(Template)]
#[template(path = "security.html")]
struct SecurityPage {
    /// Devices quarantined for their firmware, with the advisory.
    devices: Vec<super::devices::UnsafeDevice>,
    shell: Shell,
    posture: Posture,
    idle_minutes: u64,
    admin_idle_minutes: u64,
    absolute_hours: u64,
    staff_count: usize,
    patient_count: usize,
    security_events: Vec<EventLine>,
    failed_last_day: u64,
    alerts: Vec<AlertLine>,
}

struct AlertLine {
    at: String,
    who: String,
    patient: String,
    why: String,
}

struct EventLine {
    at: String,
    what: &'static str,
    account: String,
    source: String,
    outcome: &'static str,
}

pub async fn security(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
) -> Result<Response, PageError> {
    let me: CurrentUser = require(&state, me, &[Role::SecurityOfficer])?;
    let org = organisation(&state, me.user.tenant_id).await?;
    let users =
        state.store.list_users(me.user.tenant_id).await.map_err(|e| PageError::new(&state, e))?;
    let staff_count = users.iter().filter(|u| u.role.is_staff()).count();
    let events = state
        .store
        .list_auth_events(me.user.tenant_id, None, 500)
        .await
        .map_err(|e| PageError::new(&state, e))?;
    // Ids only: a security officer sees who (by account id) and what, never clinical content.
    let security_events = events
        .iter()
        .filter(|e| e.kind.is_security_event())
        .take(30)
        .map(|e| EventLine {
            at: e.at.to_rfc3339(),
            what: e.kind.as_str(),
            account: e.user_id.map(|u| u.to_string()).unwrap_or_else(|| "unknown account".into()),
            source: if e.source.is_empty() { "-".into() } else { e.source.clone() },
            outcome: e.outcome,
        })
        .collect();
    let day_ago = Timestamp::from_unix_millis(state.clock.now().unix_millis() - 86_400_000);
    let failed_last_day = state
        .store
        .count_auth_events(
            me.user.tenant_id,
            &[AuthEventKind::SignInFailed, AuthEventKind::SignInThrottled],
            day_ago,
        )
        .await
        .map_err(|e| PageError::new(&state, e))?;
    // Break-glass grants waiting for review, with the stated reasons.
    let names: HashMap<String, String> =
        users.iter().map(|u| (u.id.to_string(), u.display_name.as_str().to_owned())).collect();
    let mut alerts = Vec::new();
    for a in
        state.store.open_alerts(me.user.tenant_id).await.map_err(|e| PageError::new(&state, e))?
    {
        let Some(patient) = a.patient_id else { continue };
        let grant = state
            .store
            .grants_for_patient(me.user.tenant_id, patient)
            .await
            .map_err(|e| PageError::new(&state, e))?
            .into_iter()
            .find(|g| g.id.to_string() == a.ref_id);
        alerts.push(AlertLine {
            at: a.created_at.to_rfc3339(),
            who: a
                .user_id
                .and_then(|u| names.get(&u.to_string()).cloned())
                .unwrap_or_else(|| "unknown account".into()),
            patient: patient.to_string(),
            why: grant.map(|g| format!("{}: {}", g.category.label(), g.reason)).unwrap_or_default(),
        });
    }
    let devices = super::devices::unsafe_devices(&state, me.user.tenant_id).await?;
    let page = SecurityPage {
        devices,
        alerts,
        security_events,
        failed_last_day,
        shell: Shell::for_user(&state, "Security", &me, &org, "/security"),
        posture: (*state.posture).clone(),
        idle_minutes: minutes(SessionPolicy::default().idle),
        admin_idle_minutes: minutes(SessionPolicy::for_role(Role::TenantAdmin).idle),
        absolute_hours: hours(SessionPolicy::default().absolute),
        staff_count,
        patient_count: users.len() - staff_count,
    };
    Ok(render(&page, StatusCode::OK))
}
