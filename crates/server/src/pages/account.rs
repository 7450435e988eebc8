//! "My account": who I am, where I am signed in (with revoke and sign out everywhere
//! else), and my recent sign-in activity.

use crate::http::form::ValidForm;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::Deserialize;
use telesafe_core::identity::SessionPolicy;
use telesafe_core::identity::activation::{self, ChangeError};
use telesafe_core::identity::mfa::{self, MfaRepository};
use telesafe_core::identity::passkey::{self, PasskeyError, PasskeyName, PasskeyRepository};
use telesafe_core::identity::password::{MIN_SINGLE_FACTOR, MIN_WITH_MFA};
use telesafe_core::identity::stepup;
use telesafe_core::identity::{
    AuthEvent, AuthEventKind, AuthEventRepository, Role, SessionRepository,
};
use telesafe_core::{PasskeyId, Timestamp};

use super::home::organisation;
use super::{PageError, Shell, render, require, sentence};
use crate::auth::{CurrentUser, MaybeUser, session_cookie};
use crate::error::AppError;
use crate::state::AppState;

const EVERYONE: &[Role] = &Role::ALL;

struct SessionLine {
    label: String,
    device: String,
    source: String,
    first_seen: String,
    last_seen: String,
    current: bool,
}

struct PasskeyLine {
    id: String,
    name: String,
    added: String,
    last_used: Option<String>,
}

struct ActivityLine {
    at: String,
    what: &'static str,
    source: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    shell: Shell,
    notice: Option<&'static str>,
    name: String,
    email: String,
    role: &'static str,
    organisation: String,
    sessions: Vec<SessionLine>,
    activity: Vec<ActivityLine>,
    has_totp: bool,
    has_mfa: bool,
    recovery_left: u32,
    passkeys: Vec<PasskeyLine>,
    passkey_error: Option<String>,
    password_error: Option<String>,
    min_length: usize,
}

fn describe(kind: AuthEventKind, outcome: &str) -> &'static str {
    match (kind, outcome) {
        (AuthEventKind::SignIn, "passkey") => "Signed in with a passkey",
        (AuthEventKind::SignIn, _) => "Signed in",
        (AuthEventKind::SignInFailed, "bad_credentials") => "Sign-in failed: wrong password",
        (AuthEventKind::SignInFailed, "locked") => "Sign-in refused: account locked",
        (AuthEventKind::SignInFailed, _) => "Sign-in failed",
        (AuthEventKind::SignInThrottled, _) => "Sign-in refused: too many attempts",
        (AuthEventKind::AccountLocked, _) => "Account locked after too many failed sign-ins",
        (AuthEventKind::AccountUnlocked, _) => "Account unlocked by an administrator",
        (AuthEventKind::SignedOut, _) => "Signed out",
        (AuthEventKind::SignedOutEverywhere, _) => "Signed out everywhere else",
        (AuthEventKind::SessionRevoked, _) => "Ended a sign-in on another device",
        (AuthEventKind::MfaEnrolled, _) => "Set up an authenticator app",
        (AuthEventKind::MfaVerified, "passkey") => "Confirmed it was you with a passkey",
        (AuthEventKind::MfaVerified, _) => "Confirmed sign-in with the authenticator app",
        (AuthEventKind::MfaFailed, "passkey_invalid") => "A passkey was refused",
        (AuthEventKind::MfaFailed, _) => "Wrong authenticator code entered",
        (AuthEventKind::MfaReplayed, _) => "An authenticator code was used a second time (refused)",
        (AuthEventKind::RecoveryCodeUsed, _) => "Signed in with a recovery code",
        (AuthEventKind::PasswordSet, _) => "Password set",
        (AuthEventKind::PasskeyAdded, _) => "Added a passkey",
        (AuthEventKind::PasskeyRemoved, _) => "Removed a passkey",
        (AuthEventKind::SessionLimitsChanged, _) => {
            "Changed the organisation's sign-in time limits"
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    #[serde(default)]
    done: Option<String>,
}

pub async fn account(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    axum::extract::Query(q): axum::extract::Query<AccountQuery>,
) -> Result<Response, PageError> {
    let me = require(&state, me, EVERYONE)?;
    let notice = match q.done.as_deref() {
        Some("revoked") => Some("That sign-in has ended."),
        Some("others") => Some("You are now signed out everywhere else."),
        Some("password") => {
            Some("Your password has been changed, and you are signed out everywhere else.")
        }
        Some("passkey-added") => {
            Some("Your passkey has been added, and you are signed out everywhere else.")
        }
        Some("passkey-renamed") => Some("The passkey has been renamed."),
        Some("passkey-removed") => Some("The passkey has been removed."),
        _ => None,
    };
    Ok(render(&account_page(&state, &me, notice, Problems::default()).await?, StatusCode::OK))
}

/// What went wrong with a form on the account page, shown next to that form.
#[derive(Debug, Default)]
struct Problems {
    password: Option<String>,
    passkey: Option<String>,
}

async fn account_page(
    state: &AppState,
    me: &CurrentUser,
    notice: Option<&'static str>,
    problems: Problems,
) -> Result<AccountPage, PageError> {
    let (tenant, user) = (me.user.tenant_id, me.user.id);
    let fail = |e| PageError::new(state, e);
    let org = organisation(state, tenant).await?;
    let sessions = state.store.list_sessions(tenant, user).await.map_err(fail)?;
    let events = state.store.list_auth_events(tenant, Some(user), 20).await.map_err(fail)?;
    let has_totp = mfa::has_totp(&state.store, &me.user).await.map_err(fail)?;
    let passkeys = state.store.passkeys_of(tenant, user).await.map_err(fail)?;
    let has_mfa = has_totp || !passkeys.is_empty();
    let recovery_left = state.store.unused_recovery_codes(tenant, user).await.map_err(fail)?;
    Ok(AccountPage {
        shell: Shell::for_user(state, "My account", me, &org, "/account"),
        notice,
        password_error: problems.password,
        passkey_error: problems.passkey,
        min_length: if has_mfa { MIN_WITH_MFA } else { MIN_SINGLE_FACTOR },
        name: me.user.display_name.as_str().to_owned(),
        email: me.user.email.as_str().to_owned(),
        role: me.role().label(),
        has_totp,
        has_mfa,
        recovery_left,
        passkeys: passkeys
            .into_iter()
            .map(|k| PasskeyLine {
                id: k.id.to_string(),
                name: k.name.as_str().to_owned(),
                added: k.created_at.to_rfc3339(),
                last_used: k.last_used_at.map(Timestamp::to_rfc3339),
            })
            .collect(),
        organisation: org,
        sessions: sessions
            .iter()
            .map(|s| SessionLine {
                label: CurrentUser::session_label(s),
                device: s.user_agent.clone(),
                source: if s.source.is_empty() { "unknown".into() } else { s.source.clone() },
                first_seen: s.created_at.to_rfc3339(),
                last_seen: s.last_seen_at.to_rfc3339(),
                current: s.token_hash == me.session.token_hash,
            })
            .collect(),
        activity: events
            .iter()
            .map(|e| ActivityLine {
                at: e.at.to_rfc3339(),
                what: describe(e.kind, e.outcome),
                source: if e.source.is_empty() { "unknown".into() } else { e.source.clone() },
            })
            .collect(),
    })
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    session: String,
}

async fn record(state: &AppState, me: &CurrentUser, kind: AuthEventKind) -> Result<(), PageError> {
    let e = AuthEvent::new(
        me.user.tenant_id,
        state.clock.now(),
        kind,
        Some(me.user.id),
        &me.session.source,
        "user",
    );
    state.store.record_auth_event(&e).await.map_err(|e| PageError::new(state, e))
}

/// Ends one of my other sessions.
pub async fn revoke_session(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<RevokeForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, EVERYONE)?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let (tenant, user) = (me.user.tenant_id, me.user.id);
    let sessions =
        state.store.list_sessions(tenant, user).await.map_err(|e| PageError::new(&state, e))?;
    // Only my own sessions can match, so a label guessed for someone else's finds nothing.
    let target = sessions.iter().find(|s| {
        s.token_hash != me.session.token_hash && CurrentUser::session_label(s) == form.session
    });
    if let Some(target) = target {
        state
            .store
            .delete_session(tenant, &target.token_hash)
            .await
            .map_err(|e| PageError::new(&state, e))?;
        record(&state, &me, AuthEventKind::SessionRevoked).await?;
    }
    Ok(Redirect::to("/account?done=revoked").into_response())
}

/// Ends every session of mine but this one.
pub async fn revoke_other_sessions(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<RevokeForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, EVERYONE)?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let (tenant, user) = (me.user.tenant_id, me.user.id);
    state
        .store
        .delete_sessions_of_user(tenant, user, Some(&me.session.token_hash))
        .await
        .map_err(|e| PageError::new(&state, e))?;
    record(&state, &me, AuthEventKind::SignedOutEverywhere).await?;
    Ok(Redirect::to("/account?done=others").into_response())
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    current: SecretString,
    new: SecretString,
    confirm: SecretString,
}

impl std::fmt::Debug for PasswordForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordForm").finish_non_exhaustive()
    }
}

/// Changes my password: every other session ends, and this one gets a new id.
pub async fn change_password(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<PasswordForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, EVERYONE)?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let now = state.clock.now();
    let has_totp =
        mfa::has_mfa(&state.store, &me.user).await.map_err(|e| PageError::new(&state, e))?;
    let result = activation::change_password(
        &state.store,
        &state.passwords,
        &me.user,
        &me.session.token_hash,
        form.current,
        form.new,
        form.confirm,
        has_totp,
        now,
    )
    .await;
    match result {
        Ok(()) => {
            let (_, token) = mfa::complete_session(&state.store, &me.session, now, false)
                .await
                .map_err(|e| PageError::new(&state, e))?;
            let mut resp = Redirect::to("/account?done=password").into_response();
            let max_age = SessionPolicy::for_role(me.role()).absolute.as_secs();
            if let Ok(v) = HeaderValue::from_str(&session_cookie(&token, max_age)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(resp)
        }
        Err(ChangeError::Repo(e)) => Err(PageError::new(&state, e)),
        Err(ChangeError::Hashing) => Err(PageError::new(&state, AppError::internal("hashing"))),
        Err(e) => {
            let problems = Problems { password: Some(sentence(&e.to_string())), passkey: None };
            Ok(render(
                &account_page(&state, &me, None, problems).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RenamePasskeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

/// Renames one of my passkeys.
pub async fn rename_passkey(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    ValidForm(form): ValidForm<RenamePasskeyForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, EVERYONE)?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let id: PasskeyId = id.parse().map_err(|_| PageError::new(&state, AppError::NotFound))?;
    let name = match PasskeyName::parse(&form.name) {
        Ok(n) => n,
        Err(e) => {
            let problems = Problems { passkey: Some(sentence(&e.to_string())), password: None };
            return Ok(render(
                &account_page(&state, &me, None, problems).await?,
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
    };
    let (tenant, user) = (me.user.tenant_id, me.user.id);
    if !state
        .store
        .rename_passkey(tenant, user, id, &name)
        .await
        .map_err(|e| PageError::new(&state, e))?
    {
        return Err(PageError::new(&state, AppError::NotFound));
    }
    Ok(Redirect::to("/account?done=passkey-renamed").into_response())
}

/// Removes one of my passkeys: a change of second factors, so it needs a recent second
/// step, and staff cannot remove their last one.
pub async fn delete_passkey(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Path(id): Path<String>,
    ValidForm(form): ValidForm<CsrfOnly>,
) -> Result<Response, PageError> {
    let me = require(&state, me, EVERYONE)?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let id: PasskeyId = id.parse().map_err(|_| PageError::new(&state, AppError::NotFound))?;
    let now = state.clock.now();
    if !stepup::is_fresh(&me.session, now) {
        return Ok(Redirect::to("/mfa/step-up?return=/account").into_response());
    }
    match passkey::check_removal(&state.store, &me.user, id).await {
        Ok(()) => {}
        Err(PasskeyError::NotFound) => return Err(PageError::new(&state, AppError::NotFound)),
        Err(PasskeyError::Repo(e)) => return Err(PageError::new(&state, e)),
        Err(e) => {
            let problems = Problems { passkey: Some(sentence(&e.to_string())), password: None };
            return Ok(render(
                &account_page(&state, &me, None, problems).await?,
                StatusCode::CONFLICT,
            ));
        }
    }
    let (tenant, user) = (me.user.tenant_id, me.user.id);
    state.store.delete_passkey(tenant, user, id).await.map_err(|e| PageError::new(&state, e))?;
    record(&state, &me, AuthEventKind::PasskeyRemoved).await?;
    // A change of second factors: every other session ends.
    state
        .store
        .delete_sessions_of_user(tenant, user, Some(&me.session.token_hash))
        .await
        .map_err(|e| PageError::new(&state, e))?;
    Ok(Redirect::to("/account?done=passkey-removed").into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub(super) csrf: String,
}
