//! OAuth 2.0 endpoints for integrations: the token endpoint for the client-credentials
//! grant (RFC 6749 §4.4), token introspection (RFC 7662) and revocation (RFC 7009).
//! Errors use the RFC 6749 §5.2 body, `{"error", "error_description"}`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use telesafe_core::identity::clients::{self, ApiClient, ClientRepository, OAuthError, Scope};
use telesafe_crypto::OpaqueToken;

use crate::error::AppError;
use crate::http::form::ValidForm;
use crate::state::AppState;

/// An RFC 6749 §5.2 error response.
#[derive(Debug)]
pub struct OAuthFailure {
    status: StatusCode,
    error: &'static str,
    description: &'static str,
    basic_challenge: bool,
}

#[derive(Serialize)]
struct OAuthErrorBody {
    error: &'static str,
    error_description: &'static str,
}

impl IntoResponse for OAuthFailure {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(OAuthErrorBody { error: self.error, error_description: self.description }),
        )
            .into_response();
        if self.basic_challenge {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"telesafe\""),
            );
        }
        resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        resp
    }
}

fn failure(error: &'static str, description: &'static str) -> OAuthFailure {
    OAuthFailure { status: StatusCode::BAD_REQUEST, error, description, basic_challenge: false }
}

fn invalid_client(used_basic: bool) -> OAuthFailure {
    OAuthFailure {
        status: StatusCode::UNAUTHORIZED,
        error: "invalid_client",
        description: "client authentication failed",
        basic_challenge: used_basic,
    }
}

fn server_error() -> OAuthFailure {
    OAuthFailure {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        error: "server_error",
        description: "the server could not complete the request",
        basic_challenge: false,
    }
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1, which every server must support)
/// or from the body. Returns (id, secret, whether Basic was used).
fn credentials(
    headers: &HeaderMap,
    body_id: Option<&str>,
    body_secret: Option<&str>,
) -> Option<(String, String, bool)> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(i, p)| (i.to_owned(), p.to_owned())));
    match (basic, body_id, body_secret) {
        (Some((id, secret)), None, None) => Some((id, secret, true)),
        (None, Some(id), Some(secret)) => Some((id.to_owned(), secret.to_owned(), false)),
        _ => None,
    }
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    body_id: Option<&str>,
    body_secret: Option<&str>,
) -> Result<ApiClient, OAuthFailure> {
    let Some((id, secret, used_basic)) = credentials(headers, body_id, body_secret) else {
        return Err(invalid_client(true));
    };
    match clients::authenticate_client(&state.store, &id, &secret).await {
        Ok(c) => Ok(c),
        Err(OAuthError::Backend) => Err(server_error()),
        Err(_) => {
            tracing::info!("client authentication failed");
            Err(invalid_client(used_basic))
        }
    }
}

#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest").field("grant_type", &self.grant_type).finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
}

/// `POST /oauth2/token`
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidForm(req): ValidForm<TokenRequest>,
) -> Result<Response, OAuthFailure> {
    match req.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return Err(failure("unsupported_grant_type", "only client_credentials is supported"));
        }
        None => return Err(failure("invalid_request", "grant_type is required")),
    }
    let client =
        authenticate(&state, &headers, req.client_id.as_deref(), req.client_secret.as_deref())
            .await?;
    let requested = match req.scope.as_deref() {
        None => None,
        Some(raw) => {
            Some(Scope::parse_list(raw).ok_or(failure("invalid_scope", "a scope is malformed"))?)
        }
    };
    let now = state.clock.now();
    let (token, record) = match clients::issue_token(&state.store, &client, requested, now).await {
        Ok(t) => t,
        Err(OAuthError::InvalidScope) => {
            return Err(failure("invalid_scope", "the client was not granted that scope"));
        }
        Err(_) => return Err(server_error()),
    };
    tracing::info!(client = %client.client_id, tenant = %client.tenant_id, "access token issued");
    let body = TokenResponse {
        access_token: token.reveal().to_owned(),
        token_type: "Bearer",
        expires_in: record.expires_at.since(now).as_secs(),
        scope: Scope::join(&record.scopes),
    };
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

#[derive(Deserialize)]
pub struct TokenParam {
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl std::fmt::Debug for TokenParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenParam").finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize)]
pub struct Introspection {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
}

/// `POST /oauth2/introspect` (RFC 7662). The caller authenticates as a client; tokens of
/// other tenants are reported inactive, as are unknown, expired and revoked ones.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidForm(req): ValidForm<TokenParam>,
) -> Result<Json<Introspection>, OAuthFailure> {
    let caller =
        authenticate(&state, &headers, req.client_id.as_deref(), req.client_secret.as_deref())
            .await?;
    let presented = req.token.ok_or(failure("invalid_request", "token is required"))?;
    let now = state.clock.now();
    let live =
        clients::active_token(&state.store, &presented, now).await.map_err(|_| server_error())?;
    Ok(Json(match live.filter(|t| t.tenant_id == caller.tenant_id) {
        Some(t) => Introspection {
            active: true,
            scope: Some(Scope::join(&t.scopes)),
            client_id: Some(t.client_id),
            token_type: Some("Bearer"),
            exp: Some(t.expires_at.unix_millis() / 1000),
            iat: Some(t.issued_at.unix_millis() / 1000),
        },
        None => Introspection {
            active: false,
            scope: None,
            client_id: None,
            token_type: None,
            exp: None,
            iat: None,
        },
    }))
}

/// `POST /oauth2/revoke` (RFC 7009): a client revokes one of its own tokens. Answers 200
/// whether or not the token existed (§2.2), so it reveals nothing.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidForm(req): ValidForm<TokenParam>,
) -> Result<StatusCode, OAuthFailure> {
    let caller =
        authenticate(&state, &headers, req.client_id.as_deref(), req.client_secret.as_deref())
            .await?;
    let presented = req.token.ok_or(failure("invalid_request", "token is required"))?;
    if let Some(token) = OpaqueToken::parse(&presented) {
        let hash = token.hash();
        let found = state.store.access_token(&hash).await.map_err(|_| server_error())?;
        if let Some(t) = found.filter(|t| t.client_id == caller.client_id) {
            state
                .store
                .revoke_access_token(t.tenant_id, &hash, state.clock.now())
                .await
                .map_err(|_| server_error())?;
            tracing::info!(client = %caller.client_id, "access token revoked");
        }
    }
    Ok(StatusCode::OK)
}

/// What a live bearer token stands for.
#[derive(Debug)]
pub enum Bearer {
    /// An OAuth access token of an API client.
    Client(clients::AccessToken),
    /// A native app's session token (from `POST /api/v1/sessions`), at any stage.
    Session(Box<crate::auth::CurrentUser>),
}

/// Reads `Authorization: Bearer <token>`: `None` without one, an error when it is
/// present but not live. Access tokens and session tokens are both 256-bit randoms,
/// looked up by hash in their own tables.
pub async fn bearer(state: &AppState, headers: &HeaderMap) -> Result<Option<Bearer>, AppError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(AppError::InvalidToken)?;
    if let Some(t) = clients::active_token(&state.store, presented, state.clock.now()).await? {
        return Ok(Some(Bearer::Client(t)));
    }
    let session = match OpaqueToken::parse(presented) {
        Some(token) => crate::auth::resolve_token(state, &token).await?,
        None => None,
    };
    session.map(|me| Some(Bearer::Session(Box::new(me)))).ok_or(AppError::InvalidToken)
}
