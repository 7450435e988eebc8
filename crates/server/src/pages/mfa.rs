//! Second-factor pages: the challenge after a password (TOTP code or recovery code), and
//! authenticator enrolment (QR code, manual key, first code, recovery codes shown once).

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use telesafe_core::identity::mfa::MfaRepository;
use telesafe_core::identity::mfa::{self, MfaError};
use telesafe_core::identity::{
    AuthEventKind, SessionPolicy, SessionRepository, SessionStage, stepup,
};

use super::home::organisation;
use super::{PageError, Shell, failed, home_of, render};
use crate::auth::{CurrentUser, MaybeUser, session_cookie};
use crate::error::AppError;
use crate::http::form::ValidForm;
use crate::state::AppState;

/// Why a second factor was not accepted.
pub(crate) enum Refusal {
    /// A wrong or reused code: the message is for the person.
    Wrong(String),
    Failed(AppError),
}

/// Checks a TOTP or recovery code for `me`, records the outcome, and on success replaces
/// the session with a fully signed-in one (new id, second factor fresh for step-up).
/// The one path for the sign-in challenge, step-up and the native API.
pub(crate) async fn second_factor(
    state: &AppState,
    me: &CurrentUser,
    code: &str,
    recovery_code: &str,
    now: telesafe_core::Timestamp,
) -> Result<telesafe_crypto::OpaqueToken, Refusal> {
    let failed = |e: telesafe_core::RepoError| Refusal::Failed(e.into());
    match mfa::verify_any(&state.store, &state.mfa_keys, &me.user, code, recovery_code, now).await {
        Ok(kind) => {
            mfa::record(&state.store, &me.session, now, kind, "verified").await.map_err(failed)?;
            let (_, token) = mfa::complete_session(&state.store, &me.session, now, true)
                .await
                .map_err(failed)?;
            Ok(token)
        }
        Err(e) => match e.refusal_event() {
            Some((kind, outcome)) => {
                mfa::record(&state.store, &me.session, now, kind, outcome).await.map_err(failed)?;
                Err(Refusal::Wrong(e.to_string()))
            }
            None => Err(Refusal::Failed(match e {
                MfaError::Repo(r) => r.into(),
                other => AppError::internal(other),
            })),
        },
    }
}

/// What a stage-limited page needs: a session at one of `stages`, else where to go.
fn at_stage(me: Option<CurrentUser>, stages: &[SessionStage]) -> Result<CurrentUser, PageError> {
    match me {
        None => Err(PageError::Redirect("/signin")),
        Some(me) if stages.contains(&me.session.stage) => Ok(me),
        Some(me) => Err(PageError::Redirect(super::next_page(&me))),
    }
}

fn with_cookie(
    mut resp: Response,
    token: &telesafe_crypto::OpaqueToken,
    me: &CurrentUser,
) -> Response {
    let max_age = SessionPolicy::for_role(me.role()).absolute.as_secs();
    if let Ok(v) = HeaderValue::from_str(&session_cookie(token, max_age)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Template)]
#[template(path = "mfa_challenge.html")]
struct ChallengePage {
    shell: Shell,
    error: Option<String>,
    heading: &'static str,
    reason: Option<&'static str>,
    action: &'static str,
    return_to: Option<&'static str>,
    has_totp: bool,
    has_passkey: bool,
}

/// Which second factors the account can answer a challenge with.
async fn factors(state: &AppState, me: &CurrentUser) -> Result<(bool, bool), PageError> {
    let fail = |e| PageError::new(state, e);
    let totp = mfa::has_totp(&state.store, &me.user).await.map_err(fail)?;
    let passkey = state.store.has_passkey(me.user.tenant_id, me.user.id).await.map_err(fail)?;
    Ok((totp, passkey))
}

impl ChallengePage {
    async fn sign_in(
        state: &AppState,
        me: &CurrentUser,
        error: Option<String>,
    ) -> Result<Self, PageError> {
        let (has_totp, has_passkey) = factors(state, me).await?;
        Ok(Self {
            shell: Shell::signing_in(state, "Confirm it is you", me),
            error,
            heading: "Confirm it is you",
            reason: None,
            action: "/mfa",
            return_to: None,
            has_totp,
            has_passkey,
        })
    }
}

pub async fn show_mfa_challenge(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
) -> Result<Response, PageError> {
    let me = at_stage(me, &[SessionStage::MfaPending])?;
    let page = ChallengePage::sign_in(&state, &me, None).await?;
    Ok(render(&page, StatusCode::OK))
}

#[derive(Debug, Deserialize)]
pub struct ChallengeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
}

pub async fn mfa_challenge(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<ChallengeForm>,
) -> Result<Response, PageError> {
    let me = at_stage(me, &[SessionStage::MfaPending])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let now = state.clock.now();
    match second_factor(&state, &me, &form.code, &form.recovery_code, now).await {
        Ok(token) => Ok(with_cookie(Redirect::to(home_of(me.role())).into_response(), &token, &me)),
        Err(Refusal::Wrong(msg)) => {
            let page = ChallengePage::sign_in(&state, &me, Some(msg)).await?;
            Ok(render(&page, StatusCode::UNAUTHORIZED))
        }
        Err(Refusal::Failed(e)) => Err(PageError::new(&state, e)),
    }
}

#[derive(Template)]
#[template(path = "mfa_enroll.html")]
struct EnrollPage {
    shell: Shell,
    required: bool,
    error: Option<String>,
    qr_svg: String,
    secret_groups: Vec<String>,
}

#[derive(Template)]
#[template(path = "mfa_recovery_codes.html")]
struct RecoveryCodesPage {
    shell: Shell,
    codes: Vec<String>,
    next: &'static str,
}

/// A QR code of `text` as inline SVG (no image request, so nothing to cache or leak).
pub fn qr_svg(text: &str) -> Result<String, AppError> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(AppError::internal)?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(220, 220)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build();
    // Drop the XML declaration; the element is embedded in HTML.
    Ok(svg.find("<svg").map(|i| svg[i..].to_owned()).unwrap_or(svg))
}

async fn enroll_page(
    state: &AppState,
    me: &CurrentUser,
    error: Option<String>,
) -> Result<Response, PageError> {
    let now = state.clock.now();
    let seed = match mfa::pending_seed(&state.store, &state.mfa_keys, &me.user).await {
        Ok(Some(seed)) => seed,
        Ok(None) => mfa::begin_totp_enrollment(&state.store, &state.mfa_keys, &me.user, now)
            .await
            .map_err(|e| PageError::new(state, AppError::internal(e)))?,
        Err(e) => return Err(PageError::new(state, AppError::internal(e))),
    };
    let org = organisation(state, me.user.tenant_id).await?;
    let issuer = format!("Telesafe {org}");
    let url = seed
        .otpauth_url(&issuer, me.user.email.as_str())
        .map_err(|e| PageError::new(state, AppError::internal(e)))?;
    let base32 = seed.base32();
    let page = EnrollPage {
        shell: match me.session.stage {
            SessionStage::Full => {
                Shell::for_user(state, "Set up an authenticator app", me, &org, "/account")
            }
            _ => Shell::signing_in(state, "Set up an authenticator app", me),
        },
        required: me.session.stage == SessionStage::EnrollRequired,
        error: error.clone(),
        qr_svg: qr_svg(&url).map_err(failed(state))?,
        secret_groups: base32
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect(),
    };
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let mut resp = render(&page, status);
    // The page shows a secret: never cache it, anywhere.
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub async fn show_enroll(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
) -> Result<Response, PageError> {
    let me = at_stage(me, &[SessionStage::EnrollRequired, SessionStage::Full])?;
    let (has_totp, has_passkey) = factors(&state, &me).await?;
    if has_totp {
        return Err(PageError::Redirect("/account"));
    }
    // Adding a factor to an account that has one is a change of second factors.
    if has_passkey && !stepup::is_fresh(&me.session, state.clock.now()) {
        return Err(PageError::Redirect("/mfa/step-up?return=/mfa/enroll"));
    }
    enroll_page(&state, &me, None).await
}

#[derive(Debug, Deserialize)]
pub struct EnrollForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

pub async fn enroll(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<EnrollForm>,
) -> Result<Response, PageError> {
    let me = at_stage(me, &[SessionStage::EnrollRequired, SessionStage::Full])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let now = state.clock.now();
    let (_, has_passkey) = factors(&state, &me).await?;
    if has_passkey && !stepup::is_fresh(&me.session, now) {
        return Err(PageError::Redirect("/mfa/step-up?return=/mfa/enroll"));
    }
    let codes = match mfa::confirm_totp_enrollment(
        &state.store,
        &state.mfa_keys,
        &me.user,
        &form.code,
        now,
    )
    .await
    {
        Ok(codes) => codes,
        Err(e @ (MfaError::WrongCode | MfaError::NoEnrollment)) => {
            return enroll_page(&state, &me, Some(e.to_string())).await;
        }
        Err(MfaError::Repo(e)) => return Err(PageError::new(&state, e)),
        Err(e) => return Err(PageError::new(&state, AppError::internal(e))),
    };
    mfa::record(&state.store, &me.session, now, AuthEventKind::MfaEnrolled, "enrolled")
        .await
        .map_err(failed(&state))?;
    // A new session id at the privilege change; every other session of this account ends.
    let (session, token) = mfa::complete_session(&state.store, &me.session, now, true)
        .await
        .map_err(failed(&state))?;
    state
        .store
        .delete_sessions_of_user(me.user.tenant_id, me.user.id, Some(&session.token_hash))
        .await
        .map_err(failed(&state))?;
    let me = CurrentUser { user: me.user, session, policy: me.policy };
    let org = organisation(&state, me.user.tenant_id).await?;
    let page = RecoveryCodesPage {
        shell: Shell::for_user(&state, "Your recovery codes", &me, &org, "/account"),
        codes,
        next: home_of(me.role()),
    };
    let mut resp = render(&page, StatusCode::OK);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(with_cookie(resp, &token, &me))
}

/// Where a step-up may return to: an allowlist, so the parameter cannot redirect anywhere
/// else (no open redirect).
pub(crate) fn safe_return(r: Option<&str>) -> &'static str {
    match r {
        Some("/admin") => "/admin",
        Some("/mfa/enroll") => "/mfa/enroll",
        Some("/platform") => "/platform",
        Some("/console/break-glass") => "/console/break-glass",
        _ => "/account",
    }
}

#[derive(Debug, Deserialize)]
pub struct StepUpQuery {
    #[serde(default, rename = "return")]
    return_to: Option<String>,
}

async fn step_up_page(
    state: &AppState,
    me: &CurrentUser,
    org: &str,
    ret: &'static str,
    error: Option<String>,
) -> Result<ChallengePage, PageError> {
    let (has_totp, has_passkey) = factors(state, me).await?;
    Ok(ChallengePage {
        shell: Shell::for_user(state, "Confirm it is you", me, org, ret),
        error,
        heading: "Confirm it is you",
        reason: Some(
            "This action changes who can see patient information, so it needs your authenticator code from the last five minutes.",
        ),
        action: "/mfa/step-up",
        return_to: Some(ret),
        has_totp,
        has_passkey,
    })
}

pub async fn show_step_up(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    axum::extract::Query(q): axum::extract::Query<StepUpQuery>,
) -> Result<Response, PageError> {
    let me = at_stage(me, &[SessionStage::Full])?;
    if !mfa::has_mfa(&state.store, &me.user).await.map_err(failed(&state))? {
        return Err(PageError::Redirect("/mfa/enroll"));
    }
    let org = organisation(&state, me.user.tenant_id).await?;
    Ok(render(
        &step_up_page(&state, &me, &org, safe_return(q.return_to.as_deref()), None).await?,
        StatusCode::OK,
    ))
}

#[derive(Debug, Deserialize)]
pub struct StepUpForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
    #[serde(default, rename = "return")]
    return_to: Option<String>,
}

pub async fn step_up(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<StepUpForm>,
) -> Result<Response, PageError> {
    let me = at_stage(me, &[SessionStage::Full])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let ret = safe_return(form.return_to.as_deref());
    let now = state.clock.now();
    match second_factor(&state, &me, &form.code, &form.recovery_code, now).await {
        Ok(token) => Ok(with_cookie(Redirect::to(ret).into_response(), &token, &me)),
        Err(Refusal::Wrong(msg)) => {
            let org = organisation(&state, me.user.tenant_id).await?;
            let page = step_up_page(&state, &me, &org, ret, Some(msg)).await?;
            Ok(render(&page, StatusCode::UNAUTHORIZED))
        }
        Err(Refusal::Failed(e)) => Err(PageError::new(&state, e)),
    }
}
