//! Passkeys (WebAuthn, with webauthn-rs) over small JSON endpoints that the pages' script
//! calls: registering a passkey, signing in with a passkey alone (a discoverable
//! credential), and a passkey as the second factor at sign-in or for step-up.
//!
//! Every ceremony is two requests: `…/options` starts it (the challenge and its sealed
//! state are stored server-side under a random ceremony id), and the answer finishes it
//! (the state is taken once). webauthn-rs checks the challenge, the origin against this
//! deployment's public URL, the relying-party id hash, the signature and the signature
//! counter, and requires user verification (PIN or biometric) for every passkey: staff and
//! patients alike, so a passkey is two factors in one step.

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use telesafe_core::identity::mfa;
use telesafe_core::identity::passkey::{
    self, CeremonyPurpose, MAX_PASSKEYS, PasskeyError, PasskeyName, PasskeyRecord,
    PasskeyRepository,
};
use telesafe_core::identity::{
    AuthEventKind, PasskeyAttempt, SessionPolicy, SessionRepository, SessionStage, SignInError,
    User, sign_in_with_passkey, stepup,
};
use telesafe_core::{PasskeyId, Timestamp};
use telesafe_crypto::OpaqueToken;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Webauthn,
    WebauthnBuilder,
};
use webauthn_rs_proto::ResidentKeyRequirement;

use crate::auth::{CurrentUser, MaybeUser, session_cookie};
use crate::config::Config;
use crate::error::AppError;
use crate::http::json::ValidJson;
use crate::pages::home_of;
use crate::state::AppState;

/// The header carrying the session's CSRF token on these JSON requests.
const CSRF_HEADER: &str = "x-csrf-token";

/// The relying party for this deployment: the host of `server.public_url` is the RP id,
/// and that URL is the only origin accepted.
pub fn relying_party(config: &Config) -> Result<Webauthn, String> {
    let public = config.public_base();
    let origin = Url::parse(&public).map_err(|e| format!("{public}: {e}"))?;
    let rp_id = origin.host_str().ok_or_else(|| format!("{public} has no host"))?.to_owned();
    WebauthnBuilder::new(&rp_id, &origin)
        .and_then(|b| b.rp_name("Telesafe").build())
        .map_err(|e| format!("{public}: {e}"))
}

/// What `…/options` answers: the ceremony id to send back, and the options for
/// `navigator.credentials.create()` or `.get()`.
#[derive(Debug, Serialize)]
pub struct Options<T> {
    ceremony: String,
    options: T,
}

/// Where the page should go after a finished ceremony.
#[derive(Debug, Serialize)]
pub struct Next {
    next: String,
}

fn encode_credential_id(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

fn internal(e: impl std::fmt::Display) -> AppError {
    AppError::internal(e)
}

fn passkey_error(e: PasskeyError) -> AppError {
    match e {
        PasskeyError::Repo(r) => r.into(),
        PasskeyError::Crypto => AppError::internal(e),
        PasskeyError::Refused | PasskeyError::CeremonyExpired => {
            AppError::InvalidCredentials(e.to_string())
        }
        PasskeyError::NotFound => AppError::NotFound,
        PasskeyError::BadName | PasskeyError::LastFactor | PasskeyError::TooMany => {
            AppError::BadRequest(e.to_string())
        }
    }
}

/// The signed-in caller of a JSON passkey endpoint, at one of `stages`, with the CSRF
/// header matching the session's token.
fn caller(
    me: Option<CurrentUser>,
    headers: &HeaderMap,
    stages: &[SessionStage],
) -> Result<CurrentUser, AppError> {
    let me = me.ok_or(AppError::Unauthenticated)?;
    if !stages.contains(&me.session.stage) {
        return Err(AppError::Forbidden);
    }
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    me.check_csrf(presented)?;
    Ok(me)
}

/// A JSON answer that also sets the (new) session cookie.
fn signed_in(next: &str, token: &OpaqueToken, user: &User) -> Response {
    let mut resp = axum::Json(Next { next: next.to_owned() }).into_response();
    let max_age = SessionPolicy::for_role(user.role).absolute.as_secs();
    if let Ok(v) = HeaderValue::from_str(&session_cookie(token, max_age)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// Checks an assertion against one stored credential, returning the credential to store
/// back when its signature counter moved. webauthn-rs refuses a counter that went
/// backwards (a sign of a cloned authenticator).
fn check_assertion(
    record: &PasskeyRecord,
    finish: impl FnOnce(&Passkey) -> Result<AuthenticationResult, webauthn_rs::prelude::WebauthnError>,
) -> Result<Option<String>, ()> {
    let mut key: Passkey = serde_json::from_str(&record.credential).map_err(|_| ())?;
    match finish(&key) {
        Ok(result) => {
            if key.update_credential(&result) == Some(true) {
                serde_json::to_string(&key).map(Some).map_err(|_| ())
            } else {
                Ok(None)
            }
        }
        Err(e) => {
            tracing::info!(reason = %e, "passkey assertion refused");
            Err(())
        }
    }
}

/// Starts a ceremony whose verifier state is `auth`; returns the id the page sends back.
async fn begin<T: Serialize>(
    state: &AppState,
    purpose: CeremonyPurpose,
    user: Option<&User>,
    verifier_state: &T,
) -> Result<String, AppError> {
    let blob = serde_json::to_vec(verifier_state).map_err(internal)?;
    let now = state.clock.now();
    passkey::start_ceremony(&state.store, &state.ceremony_key, purpose, user, &blob, now)
        .await
        .map(|id| id.reveal().to_owned())
        .map_err(passkey_error)
}

/// Takes the ceremony `id` (once) and restores its verifier state.
async fn resume<T: serde::de::DeserializeOwned>(
    state: &AppState,
    purpose: CeremonyPurpose,
    id: &str,
    user: Option<&User>,
    now: Timestamp,
) -> Result<T, AppError> {
    let blob = passkey::finish_ceremony(&state.store, &state.ceremony_key, purpose, id, user, now)
        .await
        .map_err(passkey_error)?;
    serde_json::from_slice(&blob).map_err(internal)
}

// ---- Sign in with a passkey alone -------------------------------------------------------

pub async fn sign_in_options(
    State(state): State<AppState>,
) -> Result<axum::Json<Options<webauthn_rs::prelude::RequestChallengeResponse>>, AppError> {
    let (mut options, auth) =
        state.webauthn.start_discoverable_authentication().map_err(internal)?;
    // The page asks when the person presses "Sign in with a passkey", not via autofill.
    options.mediation = None;
    let ceremony = begin(&state, CeremonyPurpose::SignIn, None, &auth).await?;
    Ok(axum::Json(Options { ceremony, options }))
}

#[derive(Debug, Deserialize)]
pub struct SignInAnswer {
    ceremony: String,
    credential: PublicKeyCredential,
}

pub async fn sign_in(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ValidJson(answer): ValidJson<SignInAnswer>,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    let refused = || AppError::InvalidCredentials(PasskeyError::Refused.to_string());
    let auth: DiscoverableAuthentication =
        resume(&state, CeremonyPurpose::SignIn, &answer.ceremony, None, now).await?;
    let user_handle = state
        .webauthn
        .identify_discoverable_authentication(&answer.credential)
        .ok()
        .map(|(u, _)| u);
    let credential_id = encode_credential_id(answer.credential.get_credential_id());
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let attempt = PasskeyAttempt {
        credential_id: &credential_id,
        user_handle,
        source: peer.map(|p| p.0.0.ip()),
        user_agent,
    };
    let webauthn = state.webauthn.clone();
    let credential = &answer.credential;
    let result = sign_in_with_passkey(
        &state.store,
        &state.addresses,
        state.clock.as_ref(),
        attempt,
        |record| {
            check_assertion(record, |key| {
                webauthn.finish_discoverable_authentication_v2(credential, auth, key)
            })
        },
    )
    .await;
    match result {
        Ok(done) => {
            tracing::info!(user = %done.user.id, tenant = %done.user.tenant_id, "signed in with a passkey");
            Ok(signed_in(home_of(done.user.role), &done.token, &done.user))
        }
        Err(SignInError::InvalidCredentials) => Err(refused()),
        Err(SignInError::Throttled { .. }) => Err(AppError::RateLimited),
        Err(SignInError::Repo(e)) => Err(e.into()),
        Err(e) => Err(internal(e)),
    }
}

// ---- A passkey as the second factor -----------------------------------------------------

const SECOND_FACTOR_STAGES: &[SessionStage] = &[SessionStage::MfaPending, SessionStage::Full];

pub async fn second_factor_options(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    headers: HeaderMap,
) -> Result<axum::Json<Options<webauthn_rs::prelude::RequestChallengeResponse>>, AppError> {
    let me = caller(me, &headers, SECOND_FACTOR_STAGES)?;
    let keys = stored_passkeys(&state, &me.user).await?;
    if keys.is_empty() {
        return Err(AppError::BadRequest("this account has no passkey".into()));
    }
    let (options, auth) = state.webauthn.start_passkey_authentication(&keys).map_err(internal)?;
    let ceremony = begin(&state, CeremonyPurpose::SecondFactor, Some(&me.user), &auth).await?;
    Ok(axum::Json(Options { ceremony, options }))
}

#[derive(Debug, Deserialize)]
pub struct SecondFactorAnswer {
    ceremony: String,
    credential: PublicKeyCredential,
    /// For step-up: where to go afterwards (an allowlisted path).
    #[serde(default, rename = "return")]
    return_to: Option<String>,
}

pub async fn second_factor(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    headers: HeaderMap,
    ValidJson(answer): ValidJson<SecondFactorAnswer>,
) -> Result<Response, AppError> {
    let me = caller(me, &headers, SECOND_FACTOR_STAGES)?;
    let now = state.clock.now();
    let auth: PasskeyAuthentication =
        resume(&state, CeremonyPurpose::SecondFactor, &answer.ceremony, Some(&me.user), now)
            .await?;
    let credential_id = encode_credential_id(answer.credential.get_credential_id());
    let webauthn = state.webauthn.clone();
    let credential = &answer.credential;
    let verified =
        passkey::verify_second_factor(&state.store, &me.user, &credential_id, now, |record| {
            check_assertion(record, |_| webauthn.finish_passkey_authentication(credential, &auth))
        })
        .await;
    match verified {
        Ok(()) => {
            mfa::record(&state.store, &me.session, now, AuthEventKind::MfaVerified, "passkey")
                .await?;
            let (_, token) = mfa::complete_session(&state.store, &me.session, now, true).await?;
            let next = match me.session.stage {
                SessionStage::Full => crate::pages::safe_return(answer.return_to.as_deref()),
                _ => home_of(me.role()),
            };
            Ok(signed_in(next, &token, &me.user))
        }
        Err(e @ PasskeyError::Refused) => {
            mfa::record(
                &state.store,
                &me.session,
                now,
                AuthEventKind::MfaFailed,
                "passkey_invalid",
            )
            .await?;
            Err(passkey_error(e))
        }
        Err(e) => Err(passkey_error(e)),
    }
}

async fn stored_passkeys(state: &AppState, user: &User) -> Result<Vec<Passkey>, AppError> {
    state
        .store
        .passkeys_of(user.tenant_id, user.id)
        .await?
        .iter()
        .map(|r| serde_json::from_str::<Passkey>(&r.credential).map_err(internal))
        .collect()
}

// ---- Registering a passkey ---------------------------------------------------------------

const REGISTER_STAGES: &[SessionStage] = &[SessionStage::EnrollRequired, SessionStage::Full];

/// Adding a second factor to an account that has one is a sensitive change: it needs a
/// second factor from the last five minutes, so a stolen session cannot plant a passkey.
async fn require_fresh_factor(
    state: &AppState,
    me: &CurrentUser,
    now: Timestamp,
) -> Result<(), AppError> {
    if me.session.stage == SessionStage::Full
        && mfa::has_mfa(&state.store, &me.user).await?
        && !stepup::is_fresh(&me.session, now)
    {
        return Err(AppError::StepUpRequired("/mfa/step-up?return=/account"));
    }
    Ok(())
}

pub async fn register_options(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    headers: HeaderMap,
) -> Result<axum::Json<Options<webauthn_rs::prelude::CreationChallengeResponse>>, AppError> {
    let me = caller(me, &headers, REGISTER_STAGES)?;
    let now = state.clock.now();
    require_fresh_factor(&state, &me, now).await?;
    let existing = stored_passkeys(&state, &me.user).await?;
    if existing.len() >= MAX_PASSKEYS {
        return Err(passkey_error(PasskeyError::TooMany));
    }
    let exclude = existing.iter().map(|k| k.cred_id().clone()).collect::<Vec<_>>();
    let (mut options, reg) = state
        .webauthn
        .start_passkey_registration(
            *me.user.id.as_uuid(),
            me.user.email.as_str(),
            me.user.display_name.as_str(),
            Some(exclude),
        )
        .map_err(internal)?;
    // Ask for a discoverable credential, so the passkey can later sign in on its own
    // (without typing an organisation or email). webauthn-rs does not check this at
    // finish; an authenticator that cannot store one still works as a second factor.
    if let Some(sel) = options.public_key.authenticator_selection.as_mut() {
        sel.resident_key = Some(ResidentKeyRequirement::Required);
        sel.require_resident_key = true;
    }
    let ceremony = begin(&state, CeremonyPurpose::Register, Some(&me.user), &reg).await?;
    Ok(axum::Json(Options { ceremony, options }))
}

#[derive(Debug, Deserialize)]
pub struct RegisterAnswer {
    ceremony: String,
    #[serde(default)]
    name: String,
    credential: RegisterPublicKeyCredential,
}

pub async fn register(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    headers: HeaderMap,
    ValidJson(answer): ValidJson<RegisterAnswer>,
) -> Result<Response, AppError> {
    let me = caller(me, &headers, REGISTER_STAGES)?;
    let now = state.clock.now();
    require_fresh_factor(&state, &me, now).await?;
    let name = if answer.name.trim().is_empty() {
        PasskeyName::parse(&format!(
            "Passkey on {}",
            telesafe_core::identity::describe_user_agent(
                headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("")
            )
        ))
    } else {
        PasskeyName::parse(&answer.name)
    }
    .map_err(passkey_error)?;
    let reg: PasskeyRegistration =
        resume(&state, CeremonyPurpose::Register, &answer.ceremony, Some(&me.user), now).await?;
    let key =
        state.webauthn.finish_passkey_registration(&answer.credential, &reg).map_err(|e| {
            tracing::info!(reason = %e, "passkey registration refused");
            AppError::BadRequest(
                "the passkey could not be registered; try again, or use another device".into(),
            )
        })?;
    let record = PasskeyRecord {
        id: PasskeyId::new_v7(),
        tenant_id: me.user.tenant_id,
        user_id: me.user.id,
        credential_id: encode_credential_id(key.cred_id().as_ref()),
        name,
        credential: serde_json::to_string(&key).map_err(internal)?,
        created_at: now,
        last_used_at: None,
    };
    match state.store.add_passkey(&record).await {
        Ok(()) => {}
        Err(telesafe_core::RepoError::Conflict) => {
            return Err(AppError::Conflict("this passkey is already registered".into()));
        }
        Err(e) => return Err(e.into()),
    }
    mfa::record(&state.store, &me.session, now, AuthEventKind::PasskeyAdded, "added").await?;
    // A change of second factors: a new session id here, every other session ends.
    let (session, token) = mfa::complete_session(&state.store, &me.session, now, true).await?;
    state
        .store
        .delete_sessions_of_user(me.user.tenant_id, me.user.id, Some(&session.token_hash))
        .await?;
    tracing::info!(user = %me.user.id, "passkey registered");
    let next = match me.session.stage {
        SessionStage::EnrollRequired => home_of(me.role()),
        _ => "/account?done=passkey-added",
    };
    Ok(signed_in(next, &token, &me.user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relying_party_follows_the_public_url() {
        let mut cfg = Config::default();
        cfg.server.public_url = Some("https://telehealth.clinic.example".into());
        assert!(relying_party(&cfg).is_ok());
        cfg.server.public_url = Some("https://localhost:8443/".into());
        assert!(relying_party(&cfg).is_ok());
        cfg.server.public_url = Some("not a url".into());
        assert!(relying_party(&cfg).is_err());
    }
}
