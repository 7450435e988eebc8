//! Video visits on the server: scheduling and the clinician's day view (`day`), the
//! patient's way in by link and date of birth (`join`), the visit page and its signaling
//! socket (`socket`, `messages`), the rooms of live visits and the relay between nodes
//! (`hub`), and what a visit writes into the record (`record`).
//!
//! Who takes part is decided here, in one place, for the page and the socket alike
//! ([`participant`]): a clinician of the visit whom the policy lets admit its patient, the
//! patient signed in to the portal, or the patient holding the visit's current pass.

mod day;
pub mod hub;
mod join;
pub mod messages;
mod record;
mod socket;

use axum::http::HeaderMap;
use telesafe_core::access::{Action, Resource};
use telesafe_core::identity::{PatientRepository, Role, SessionRepository, UserRepository};
use telesafe_core::visits::{Visit, VisitPass, VisitRepository, account_key};
use telesafe_core::{UserId, VisitId};
use telesafe_crypto::OpaqueToken;

pub use day::{day, schedule, status};
pub use hub::Hub;
pub use join::{check, join, notes, page, save_notes, show_join, socket};

use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::state::AppState;

/// The patient's visit pass. `__Host-` binds it to this origin over HTTPS, path `/`.
pub const PASS_COOKIE: &str = "__Host-telesafe_visit";

/// How someone takes part in a visit.
#[derive(Debug, Clone)]
pub(crate) enum Who {
    Clinician(CurrentUser),
    Patient(CurrentUser),
    Guest(VisitPass),
}

/// A participant of one visit.
#[derive(Debug, Clone)]
pub(crate) struct Participant {
    pub visit: Visit,
    pub who: Who,
    /// The patient participant key (pass or account); `None` for clinicians.
    pub key: Option<String>,
    /// The client address, for the audit log.
    pub source: String,
}

impl Participant {
    pub(crate) fn role(&self) -> &'static str {
        match self.who {
            Who::Clinician(_) => "clinician",
            Who::Patient(_) | Who::Guest(_) => "patient",
        }
    }
}

fn presented_pass(headers: &HeaderMap) -> Option<OpaqueToken> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == PASS_COOKIE)
        .and_then(|(_, v)| OpaqueToken::parse(v))
}

/// Whether the policy lets `me` admit the patient of `visit` (which is also what lets
/// them join it as a clinician).
async fn may_admit(state: &AppState, me: &CurrentUser, visit: &Visit) -> Result<bool, AppError> {
    let mut s = crate::fhir::Session::for_user(state, me).await.map_err(fhir_error)?;
    let Some(facts) = s.facts(visit.patient).await.map_err(fhir_error)? else {
        return Ok(false);
    };
    let resource = Resource::Appointment {
        id: visit.appointment_id.clone(),
        tenant: visit.tenant,
        patient: facts,
        clinicians: visit.clinicians.clone(),
    };
    let ctx = telesafe_core::access::AccessContext {
        purpose: "treatment".to_owned(),
        break_glass: false,
    };
    Ok(state
        .policy
        .decide(&s.principal, Action::Admit, &resource, &ctx, s.policies.as_deref())
        .allowed)
}

pub(crate) fn fhir_error(e: crate::fhir::FhirError) -> AppError {
    match e.status.as_u16() {
        403 => AppError::Forbidden,
        404 | 410 => AppError::NotFound,
        503 => AppError::Unavailable,
        _ => AppError::internal(format!("record: {}", e.status)),
    }
}

/// Who the caller is in visit `id`: refused before the visit is looked up when the
/// caller's role never takes part in visits, so the answer does not reveal whether the
/// visit exists.
pub(crate) async fn participant(
    state: &AppState,
    id: &str,
    me: Option<CurrentUser>,
    headers: &HeaderMap,
    source: String,
) -> Result<Participant, AppError> {
    let me = me.filter(|m| m.session.stage == telesafe_core::identity::SessionStage::Full);
    let pass = presented_pass(headers);
    if me.is_none() && pass.is_none() {
        return Err(AppError::Unauthenticated);
    }
    if let Some(me) = &me
        && !matches!(me.role(), Role::Clinician | Role::Nurse | Role::Patient)
    {
        return Err(AppError::Forbidden);
    }
    let id: VisitId = id.parse().map_err(|_| AppError::NotFound)?;
    if let Some(me) = me {
        let tenant = me.user.tenant_id;
        let visit = state.store.visit(tenant, id).await?.ok_or(AppError::NotFound)?;
        return match me.role() {
            Role::Patient => {
                let own = state.store.patient_by_user(tenant, me.user.id).await?;
                if own.map(|p| p.id) != Some(visit.patient) {
                    return Err(AppError::NotFound);
                }
                let key = Some(account_key(me.user.id));
                Ok(Participant { visit, who: Who::Patient(me), key, source })
            }
            _ if visit.is_clinician(me.user.id) && may_admit(state, &me, &visit).await? => {
                Ok(Participant { visit, who: Who::Clinician(me), key: None, source })
            }
            _ => Err(AppError::NotFound),
        };
    }
    let pass = pass.ok_or(AppError::Unauthenticated)?;
    let now = state.clock.now();
    let pass = state
        .store
        .visit_pass(&pass.hash(), now)
        .await?
        .filter(|p| p.visit == id)
        .ok_or(AppError::Unauthenticated)?;
    let visit = state.store.visit(pass.tenant, id).await?.ok_or(AppError::NotFound)?;
    let key = Some(pass.participant_key());
    Ok(Participant { visit, who: Who::Guest(pass), key, source })
}

/// Whether a participant's session or pass still holds (checked by live sockets).
pub(crate) async fn still_valid(state: &AppState, p: &Participant) -> Result<bool, AppError> {
    let now = state.clock.now();
    Ok(match &p.who {
        Who::Clinician(me) | Who::Patient(me) => {
            match state.store.session_by_hash(&me.session.token_hash).await? {
                Some(s) => me.policy.state(&s, now) == telesafe_core::identity::SessionState::Live,
                None => false,
            }
        }
        Who::Guest(pass) => state.store.visit_pass(&pass.hash, now).await?.is_some(),
    })
}

/// The visit's clinicians with their names (for the Encounter and pages).
pub(crate) async fn clinician_names(
    state: &AppState,
    visit: &Visit,
) -> Result<Vec<(UserId, String)>, crate::fhir::FhirError> {
    let users = state.store.list_users(visit.tenant).await?;
    Ok(visit
        .clinicians
        .iter()
        .map(|c| {
            let name = users
                .iter()
                .find(|u| u.id == *c)
                .map(|u| u.display_name.as_str().to_owned())
                .unwrap_or_default();
            (*c, name)
        })
        .collect())
}

/// The client address of a request, for the audit log.
pub(crate) type Peer =
    Option<axum::extract::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

pub(crate) fn source_of(peer: &Peer) -> String {
    peer.as_ref().map(|p| p.0.0.ip().to_string()).unwrap_or_default()
}
