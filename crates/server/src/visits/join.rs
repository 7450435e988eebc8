//! The ways into a visit: the patient's link and date of birth (`/join/{token}`), the
//! device check, the visit page and its socket; and the clinician's notes afterwards.

use askama::Template;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use telesafe_core::audit::Purpose;
use telesafe_core::records::ResourceRepository;
use telesafe_core::visits::{LinkRefusal, VisitPass, VisitRepository};
use telesafe_crypto::OpaqueToken;

use super::hub::Event;
use super::{Participant, Peer, Who, participant, record, source_of};
use crate::audit::{Access, Actor, record_as};
use crate::auth::MaybeUser;
use crate::error::AppError;
use crate::http::headers::PERMISSIONS_POLICY_VISIT;
use crate::pages::{PageError, Shell, render};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "visit_join.html")]
struct JoinPage {
    shell: Shell,
    token: String,
    /// Why the link does not work now (then there is no form).
    refusal: Option<String>,
    error: Option<String>,
    day: String,
    month: String,
    year: String,
}

fn join_page(state: &AppState, token: &str) -> JoinPage {
    JoinPage {
        shell: Shell::anonymous(state, "Join your video visit"),
        token: token.to_owned(),
        refusal: None,
        error: None,
        day: String::new(),
        month: String::new(),
        year: String::new(),
    }
}

/// The visit a presented link opens, and whether it works now.
async fn linked_visit(
    state: &AppState,
    token: &str,
) -> Result<Result<telesafe_core::visits::Visit, LinkRefusal>, AppError> {
    let Some(link) = OpaqueToken::parse(token) else { return Err(AppError::NotFound) };
    let visit = state.store.visit_by_link(&link.hash()).await?.ok_or(AppError::NotFound)?;
    let now = state.clock.now();
    Ok(visit.link_usable(now).map(|()| visit))
}

fn refused(state: &AppState, token: &str, why: LinkRefusal) -> Response {
    let mut page = join_page(state, token);
    page.refusal = Some(crate::pages::sentence(&why.to_string()));
    let status = match why {
        LinkRefusal::Locked => StatusCode::TOO_MANY_REQUESTS,
        LinkRefusal::NotYet | LinkRefusal::Closed | LinkRefusal::Over => StatusCode::FORBIDDEN,
    };
    render(&page, status)
}

/// `GET /join/{token}`: the date-of-birth question, or why the link does not work now.
pub async fn show_join(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, PageError> {
    match linked_visit(&state, &token).await.map_err(|e| PageError::new(&state, e))? {
        Ok(_) => Ok(render(&join_page(&state, &token), StatusCode::OK)),
        Err(why) => Ok(refused(&state, &token, why)),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct DobForm {
    #[serde(default)]
    day: String,
    #[serde(default)]
    month: String,
    #[serde(default)]
    year: String,
}

/// The date of birth as FHIR writes it, if the three fields make a real date.
fn birth_date(f: &DobForm) -> Option<String> {
    let d: u8 = f.day.trim().parse().ok()?;
    let m: u8 = f.month.trim().parse().ok()?;
    let y: i32 = f.year.trim().parse().ok()?;
    let month = time::Month::try_from(m).ok()?;
    let date = time::Date::from_calendar_date(y, month, d).ok()?;
    Some(format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day()))
}

/// `POST /join/{token}`: checks the date of birth against the patient's record. A right
/// answer issues the visit pass (and ends any earlier one); a wrong one is counted, and the
/// fifth locks the link for 15 minutes. Either way it is in the audit log.
pub async fn join(
    State(state): State<AppState>,
    Path(token): Path<String>,
    peer: Peer,
    Form(form): Form<DobForm>,
) -> Result<Response, PageError> {
    let visit = match linked_visit(&state, &token).await.map_err(|e| PageError::new(&state, e))? {
        Ok(v) => v,
        Err(why) => return Ok(refused(&state, &token, why)),
    };
    let now = state.clock.now();
    let given = birth_date(&form);
    let mut page = join_page(&state, &token);
    (page.day, page.month, page.year) = (form.day.clone(), form.month.clone(), form.year.clone());
    if given.is_none() {
        page.error = Some("Enter your date of birth as numbers, for example 7 3 1948.".into());
        return Ok(render(&page, StatusCode::UNPROCESSABLE_ENTITY));
    }
    // Counted before it is checked: parallel guesses cannot outrun the lockout.
    let claimed = state
        .store
        .claim_link_attempt(visit.tenant, visit.id, now)
        .await
        .map_err(|e| PageError::new(&state, e))?;
    if !claimed {
        return Ok(refused(&state, &token, LinkRefusal::Locked));
    }
    let recorded =
        recorded_birth_date(&state, &visit).await.map_err(|e| PageError::new(&state, e))?;
    let right = recorded.is_some()
        && telesafe_crypto::constant_time_eq(
            recorded.as_deref().unwrap_or("").as_bytes(),
            given.as_deref().unwrap_or("").as_bytes(),
        );
    let actor = Actor {
        tenant: visit.tenant.to_string(),
        kind: telesafe_core::audit::ActorKind::VisitLink,
        id: visit.id.to_string(),
        role: "patient".to_owned(),
        source: source_of(&peer),
        session: String::new(),
    };
    let entry = Access {
        action: "verify-identity",
        resource_type: "Patient",
        resource_id: visit.patient.to_string(),
        patient_id: visit.patient.to_string(),
        purpose: Purpose::PatientRequest,
        outcome: if right { "success" } else { "denied" },
    };
    record_as(&state, &actor, &[entry]).await.map_err(|e| PageError::new(&state, e))?;
    if !right {
        let failures = state
            .store
            .link_failed(visit.tenant, visit.id, now)
            .await
            .map_err(|e| PageError::new(&state, e))?;
        if failures >= telesafe_core::visits::MAX_LINK_FAILURES {
            return Ok(refused(&state, &token, LinkRefusal::Locked));
        }
        page.error = Some(
            "That date of birth does not match our records. Check it and try again; after \
             a few wrong tries the link locks for 15 minutes."
                .into(),
        );
        return Ok(render(&page, StatusCode::UNPROCESSABLE_ENTITY));
    }
    let token =
        OpaqueToken::generate().map_err(|e| PageError::new(&state, AppError::internal(e)))?;
    let expires = visit.window().1;
    let pass = VisitPass {
        hash: token.hash(),
        tenant: visit.tenant,
        visit: visit.id,
        patient: visit.patient,
        created_at: now,
        expires_at: expires,
    };
    state.store.issue_pass(&pass).await.map_err(|e| PageError::new(&state, e))?;
    // A browser that joined with this link before is closed: one patient browser at a time.
    state.visits.publish(visit.tenant, visit.id, Event::Supersede { peer: String::new() }).await;
    let max_age = expires.since(now).as_secs();
    let cookie = format!(
        "{}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}",
        super::PASS_COOKIE,
        token.reveal()
    );
    let mut resp = Redirect::to(&format!("/visits/{}/check", visit.id)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// The patient's recorded date of birth, read for the comparison only (never shown).
async fn recorded_birth_date(
    state: &AppState,
    visit: &telesafe_core::visits::Visit,
) -> Result<Option<String>, AppError> {
    let Some(row) =
        state.store.current(visit.tenant, "Patient", &visit.patient.to_string()).await?
    else {
        return Ok(None);
    };
    let now = state.clock.now();
    let key = match (row.patient, telesafe_crypto::keys::sealed_key_version(&row.body)) {
        (Some(p), Some(v)) => state.keys.patient_at(&state.store, visit.tenant, p, v, now).await,
        (Some(p), None) => state.keys.patient(&state.store, visit.tenant, p, now, false).await,
        _ => return Ok(None),
    };
    let Ok(key) = key else { return Ok(None) };
    let bytes = telesafe_core::records::open_resource(&key, &row).map_err(AppError::internal)?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(AppError::internal)?;
    Ok(body["birthDate"].as_str().map(str::to_owned))
}

async fn participant_for_page(
    state: &AppState,
    id: &str,
    me: MaybeUser,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Participant, PageError> {
    let p = participant(state, id, me.0, headers, source_of(peer))
        .await
        .map_err(|e| PageError::new(state, e))?;
    if !p.visit.joinable(state.clock.now()) {
        return Err(PageError::new(
            state,
            AppError::Conflict("this visit is not open now: it is over, or not yet started".into()),
        ));
    }
    Ok(p)
}

fn with_media_permissions(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        axum::http::HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static(PERMISSIONS_POLICY_VISIT),
    );
    resp
}

fn shell_for(state: &AppState, p: &Participant, title: &str) -> Shell {
    match &p.who {
        Who::Clinician(me) | Who::Patient(me) => {
            let mut s = Shell::for_user(state, title, me, "", "");
            if let Some(u) = s.user.as_mut() {
                u.organisation = String::new();
            }
            s
        }
        Who::Guest(_) => Shell::anonymous(state, title),
    }
}

#[derive(Template)]
#[template(path = "visit_check.html")]
struct CheckPage {
    shell: Shell,
    visit_id: String,
    check_js: String,
}

/// `GET /visits/{id}/check`: camera, microphone and connection, before the waiting room.
pub async fn check(
    State(state): State<AppState>,
    Path(id): Path<String>,
    me: MaybeUser,
    headers: HeaderMap,
    peer: Peer,
) -> Result<Response, PageError> {
    let p = participant_for_page(&state, &id, me, &headers, &peer).await?;
    let page = CheckPage {
        shell: shell_for(&state, &p, "Check your camera and microphone"),
        visit_id: p.visit.id.to_string(),
        check_js: state.assets.url("device-check.js").to_owned(),
    };
    Ok(with_media_permissions(render(&page, StatusCode::OK)))
}

#[derive(Template)]
#[template(path = "visit.html")]
struct VisitPage {
    shell: Shell,
    visit_id: String,
    role: &'static str,
    heading: String,
    clinicians: String,
    visit_js: String,
}

/// `GET /visits/{id}`: the visit page (waiting room, video, chat, verification code).
pub async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    me: MaybeUser,
    headers: HeaderMap,
    peer: Peer,
) -> Result<Response, PageError> {
    let p = participant_for_page(&state, &id, me, &headers, &peer).await?;
    let names = super::clinician_names(&state, &p.visit)
        .await
        .map_err(|e| PageError::new(&state, super::fhir_error(e)))?;
    let clinicians = names.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>().join(" and ");
    let heading = match p.who {
        Who::Clinician(_) => "Video visit".to_owned(),
        _ => format!("Your video visit with {clinicians}"),
    };
    let page = VisitPage {
        shell: shell_for(&state, &p, "Video visit"),
        visit_id: p.visit.id.to_string(),
        role: p.role(),
        heading,
        clinicians,
        visit_js: state.assets.url("visit.js").to_owned(),
    };
    Ok(with_media_permissions(render(&page, StatusCode::OK)))
}

#[derive(Debug, serde::Deserialize)]
pub struct SocketQuery {
    #[serde(default)]
    peer: String,
}

/// `GET /visits/{id}/socket`: the signaling socket. Same participants as the page, from
/// this site's own pages only (the `Origin` must be ours: no cross-site socket).
pub async fn socket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    me: MaybeUser,
    headers: HeaderMap,
    peer_addr: Peer,
    axum::extract::Query(q): axum::extract::Query<SocketQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    let p = participant(&state, &id, me.0, &headers, source_of(&peer_addr)).await?;
    let ours = state.config.server.public_url.as_deref().map(|u| u.trim_end_matches('/'));
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if origin.is_none() || origin != ours {
        return Err(AppError::Forbidden);
    }
    if !p.visit.joinable(state.clock.now()) {
        return Err(AppError::Conflict("this visit is not open now".into()));
    }
    if !super::messages::valid_peer(&q.peer) {
        return Err(AppError::BadRequest("peer must be a UUID chosen by the page".into()));
    }
    let Ok(ws) = ws else { return Ok(StatusCode::UPGRADE_REQUIRED.into_response()) };
    Ok(ws
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(super::messages::MAX_FRAME)
        .max_frame_size(super::messages::MAX_FRAME)
        .on_upgrade(move |socket| super::socket::run(state, socket, p, q.peer)))
}

#[derive(Template)]
#[template(path = "visit_notes.html")]
struct NotesPage {
    shell: Shell,
    visit_id: String,
    text: String,
    saved: bool,
    error: Option<String>,
}

async fn clinician_of(
    state: &AppState,
    id: &str,
    me: MaybeUser,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<(Participant, crate::auth::CurrentUser), PageError> {
    if me.0.as_ref().is_some_and(|m| m.role() == telesafe_core::identity::Role::Patient) {
        return Err(PageError::new(state, AppError::Forbidden));
    }
    let p = participant(state, id, me.0, headers, source_of(peer))
        .await
        .map_err(|e| PageError::new(state, e))?;
    match &p.who {
        Who::Clinician(me) => {
            let me = me.clone();
            Ok((p, me))
        }
        _ => Err(PageError::new(state, AppError::Forbidden)),
    }
}

/// `GET /visits/{id}/notes`: the clinician's notes of the visit.
pub async fn notes(
    State(state): State<AppState>,
    Path(id): Path<String>,
    me: MaybeUser,
    headers: HeaderMap,
    peer: Peer,
) -> Result<Response, PageError> {
    let (p, me) = clinician_of(&state, &id, me, &headers, &peer).await?;
    let mut s = crate::fhir::Session::for_user(&state, &me)
        .await
        .map_err(|e| PageError::new(&state, super::fhir_error(e)))?;
    let text = record::note(&mut s, &p.visit)
        .await
        .map_err(|e| PageError::new(&state, super::fhir_error(e)))?
        .unwrap_or_default();
    let page = NotesPage {
        shell: shell_for(&state, &p, "Visit notes"),
        visit_id: p.visit.id.to_string(),
        text,
        saved: false,
        error: None,
    };
    Ok(render(&page, StatusCode::OK))
}

#[derive(Debug, serde::Deserialize)]
pub struct NotesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
}

/// The longest visit note.
const MAX_NOTES: usize = 20_000;

/// `POST /visits/{id}/notes`: saves the notes as a DocumentReference (a new version each
/// time), linked to the visit's Encounter.
pub async fn save_notes(
    State(state): State<AppState>,
    Path(id): Path<String>,
    me: MaybeUser,
    headers: HeaderMap,
    peer: Peer,
    Form(form): Form<NotesForm>,
) -> Result<Response, PageError> {
    let (p, me) = clinician_of(&state, &id, me, &headers, &peer).await?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let mut page = NotesPage {
        shell: shell_for(&state, &p, "Visit notes"),
        visit_id: p.visit.id.to_string(),
        text: form.text.clone(),
        saved: false,
        error: None,
    };
    let text = form.text.trim();
    if text.is_empty() || text.chars().count() > MAX_NOTES {
        page.error = Some(format!("Write the notes (at most {MAX_NOTES} characters)."));
        return Ok(render(&page, StatusCode::UNPROCESSABLE_ENTITY));
    }
    let mut s = crate::fhir::Session::for_user(&state, &me)
        .await
        .map_err(|e| PageError::new(&state, super::fhir_error(e)))?;
    let now = state.clock.now();
    let author = (me.user.id, me.user.display_name.as_str());
    let note_id = record::save_note(&mut s, &p.visit, author, text, now)
        .await
        .map_err(|e| PageError::new(&state, super::fhir_error(e)))?;
    if p.visit.note_id.is_none() {
        state
            .store
            .set_note(p.visit.tenant, p.visit.id, &note_id)
            .await
            .map_err(|e| PageError::new(&state, e))?;
    }
    page.saved = true;
    Ok(render(&page, StatusCode::OK))
}
