//! The signed-in user behind a request, from the session cookie.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use telesafe_core::identity::{
    Role, Session, SessionPolicy, SessionRepository, SessionStage, SessionState, TenantRepository,
    User, UserRepository, UserStatus,
};
use telesafe_crypto::OpaqueToken;

use crate::error::AppError;
use crate::state::AppState;

/// The session cookie. `__Host-` binds it to this exact origin over HTTPS, path `/`.
pub const SESSION_COOKIE: &str = "__Host-telesafe_session";

/// A session is only written back when it was last seen this long ago, so reads do not
/// each cost a write; idle expiry stays accurate to within this interval.
const TOUCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// `Set-Cookie` for a new session.
pub fn session_cookie(token: &OpaqueToken, max_age_secs: u64) -> String {
    format!(
        "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}",
        token.reveal()
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session token presented in the `Cookie` header, if it has the right shape.
pub fn presented_token(parts: &Parts) -> Option<OpaqueToken> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .and_then(|(_, v)| OpaqueToken::parse(v))
}

/// A live session and its active account.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    pub session: Session,
    /// The session limits in force: the role's, shortened by the tenant's own.
    pub policy: SessionPolicy,
}

impl CurrentUser {
    pub fn role(&self) -> Role {
        self.user.role
    }

    /// Checks the synchronizer token a state-changing form carried (constant time).
    pub fn check_csrf(&self, presented: &str) -> Result<(), AppError> {
        let expected = self.session.csrf_token.as_bytes();
        if !expected.is_empty() && telesafe_crypto::constant_time_eq(expected, presented.as_bytes())
        {
            Ok(())
        } else {
            Err(AppError::CsrfRejected)
        }
    }

    /// The short id under which the sessions page names a session (a prefix of the
    /// token's hash: enough to tell the owner's sessions apart, useless as a credential).
    pub fn session_label(s: &Session) -> String {
        s.token_hash.as_str().chars().take(16).collect()
    }
}

/// Resolves the session cookie, ending expired sessions on the way.
pub async fn resolve(state: &AppState, parts: &Parts) -> Result<Option<CurrentUser>, AppError> {
    match presented_token(parts) {
        Some(token) => resolve_token(state, &token).await,
        None => Ok(None),
    }
}

/// Resolves a session token (from the cookie, or a native app's bearer header).
pub async fn resolve_token(
    state: &AppState,
    token: &OpaqueToken,
) -> Result<Option<CurrentUser>, AppError> {
    let hash = token.hash();
    let Some(session) = state.store.session_by_hash(&hash).await? else {
        return Ok(None);
    };
    let now = state.clock.now();
    let limits = state.store.tenant_session_limits(session.tenant_id).await?;
    let policy = SessionPolicy::for_role(session.role).within(limits);
    if policy.state(&session, now) != SessionState::Live {
        state.store.delete_session(session.tenant_id, &hash).await?;
        return Ok(None);
    }
    let user = state.store.user_by_id(session.tenant_id, session.user_id).await?;
    let Some(user) = user.filter(|u| u.status == UserStatus::Active) else {
        state.store.delete_session(session.tenant_id, &hash).await?;
        return Ok(None);
    };
    if now.since(session.last_seen_at) >= TOUCH_INTERVAL {
        state.store.touch_session(session.tenant_id, &hash, now).await?;
    }
    Ok(Some(CurrentUser { user, session, policy }))
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    /// Only a fully signed-in session (second factor done where required) counts.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        resolve(state, parts)
            .await?
            .filter(|me| me.session.stage == SessionStage::Full)
            .ok_or(AppError::Unauthenticated)
    }
}

/// The session's user at any sign-in stage, if any (for pages that redirect instead of
/// answering 401, and for the second-factor pages themselves).

#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<CurrentUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        resolve(state, parts).await.map(MaybeUser)
    }
}

/// Whoever is calling an API: a signed-in user (session cookie) or an integration (OAuth
/// bearer token). A bearer token that is present but not live is refused outright, never
/// treated as "no token".
#[derive(Debug, Clone)]
pub enum Caller {
    User(Box<CurrentUser>),
    Client(telesafe_core::identity::clients::AccessToken),
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        match crate::oauth::bearer(state, &parts.headers).await? {
            Some(crate::oauth::Bearer::Client(token)) => Ok(Caller::Client(token)),
            Some(crate::oauth::Bearer::Session(me)) if me.session.stage == SessionStage::Full => {
                Ok(Caller::User(me))
            }
            Some(crate::oauth::Bearer::Session(_)) => Err(AppError::InvalidToken),
            None => CurrentUser::from_request_parts(parts, state)
                .await
                .map(|me| Caller::User(Box::new(me))),
        }
    }
}
