//! The JSON sign-in API for native apps. It calls exactly the functions the pages call
//! (`sign_in`, `verify_totp`, `use_recovery_code`, `complete_session`), so throttling,
//! lockout, second factors and events are the same; the session token travels as
//! `Authorization: Bearer` instead of a cookie.

use std::net::SocketAddr;

use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use telesafe_core::identity::mfa;
use telesafe_core::identity::{
    AuthEventKind, SessionPolicy, SessionRepository, SessionStage, SignInAttempt, SignInError,
    sign_in,
};

use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::http::json::ValidJson;
use crate::oauth::{Bearer, bearer};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct SignInRequest {
    organisation: String,
    email: String,
    password: SecretString,
}

impl std::fmt::Debug for SignInRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInRequest").finish_non_exhaustive()
    }
}

/// A session handed to a native app.
#[derive(Debug, Serialize)]
pub struct SessionResponse {
    session_token: String,
    /// `full`, `mfa_pending` (call `POST /api/v1/sessions/mfa`) or `enroll_required`
    /// (the person must set up an authenticator on the web first).
    stage: &'static str,
    expires_in: u64,
}

fn session_response(
    token: &telesafe_crypto::OpaqueToken,
    me_role: telesafe_core::identity::Role,
    stage: SessionStage,
) -> SessionResponse {
    SessionResponse {
        session_token: token.reveal().to_owned(),
        stage: stage.as_str(),
        expires_in: SessionPolicy::for_role(me_role).absolute.as_secs(),
    }
}

/// `POST /api/v1/sessions`
pub async fn create_session(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ValidJson(req): ValidJson<SignInRequest>,
) -> Result<Response, AppError> {
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let attempt = SignInAttempt {
        organisation: &req.organisation,
        email: &req.email,
        password: req.password,
        source: peer.map(|p| p.0.0.ip()),
        user_agent,
    };
    match sign_in(&state.store, &state.passwords, &state.addresses, state.clock.as_ref(), attempt)
        .await
    {
        Ok(done) => {
            tracing::info!(user = %done.user.id, tenant = %done.user.tenant_id, "signed in (native)");
            let body = session_response(&done.token, done.user.role, done.session.stage);
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        Err(e @ SignInError::InvalidCredentials) => {
            Err(AppError::InvalidCredentials(e.to_string()))
        }
        Err(SignInError::Throttled { retry_after }) => {
            let mut resp = AppError::RateLimited.into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(resp)
        }
        Err(SignInError::Repo(e)) => Err(e.into()),
        Err(e) => Err(AppError::internal(e)),
    }
}

async fn session_of(state: &AppState, headers: &HeaderMap) -> Result<CurrentUser, AppError> {
    match bearer(state, headers).await? {
        Some(Bearer::Session(me)) => Ok(*me),
        _ => Err(AppError::Unauthenticated),
    }
}

#[derive(Deserialize)]
pub struct MfaRequest {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

impl std::fmt::Debug for MfaRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaRequest").finish_non_exhaustive()
    }
}

/// `POST /api/v1/sessions/mfa`: the second factor for a session at `mfa_pending`; answers
/// with a new session token (the old one ends).
pub async fn complete_mfa(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidJson(req): ValidJson<MfaRequest>,
) -> Result<Json<SessionResponse>, AppError> {
    let me = session_of(&state, &headers).await?;
    if me.session.stage != SessionStage::MfaPending {
        return Err(AppError::Conflict("this session does not owe a second factor".into()));
    }
    let now = state.clock.now();
    let (code, recovery) = match (req.code.as_deref(), req.recovery_code.as_deref()) {
        (Some(code), None) => (code, ""),
        (None, Some(rc)) => ("", rc),
        _ => return Err(AppError::BadRequest("send exactly one of code or recovery_code".into())),
    };
    match crate::pages::second_factor(&state, &me, code, recovery, now).await {
        Ok(token) => Ok(Json(session_response(&token, me.role(), SessionStage::Full))),
        Err(crate::pages::Refusal::Wrong(msg)) => Err(AppError::InvalidCredentials(msg)),
        Err(crate::pages::Refusal::Failed(e)) => Err(e),
    }
}

/// `DELETE /api/v1/sessions/current`: sign out this app.
pub async fn delete_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let me = session_of(&state, &headers).await?;
    state.store.delete_session(me.session.tenant_id, &me.session.token_hash).await?;
    mfa::record(&state.store, &me.session, state.clock.now(), AuthEventKind::SignedOut, "user")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
