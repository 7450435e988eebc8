//! Sign-in and sign-out.

use crate::http::form::ValidForm;
use askama::Template;
use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::Deserialize;
use telesafe_core::identity::{
    AuthEvent, AuthEventKind, AuthEventRepository, SessionPolicy, SessionRepository, SignInAttempt,
    SignInError, sign_in,
};

use super::{PageError, Shell, home_of, render};
use crate::auth::{MaybeUser, clear_session_cookie, session_cookie};
use crate::error::AppError;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    shell: Shell,
    error: Option<String>,
    organisation: String,
    email: String,
}

pub async fn show_signin(State(state): State<AppState>, MaybeUser(me): MaybeUser) -> Response {
    if let Some(me) = me {
        return Redirect::to(super::next_page(&me)).into_response();
    }
    let page = SignInPage {
        shell: Shell::anonymous(&state, "Sign in"),
        error: None,
        organisation: String::new(),
        email: String::new(),
    };
    render(&page, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct SignInForm {
    organisation: String,
    email: String,
    password: SecretString,
}

impl std::fmt::Debug for SignInForm {
    // The email is personal data and the password a secret: print neither.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInForm").finish_non_exhaustive()
    }
}

pub async fn signin(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ValidForm(form): ValidForm<SignInForm>,
) -> Response {
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let attempt = SignInAttempt {
        organisation: &form.organisation,
        email: &form.email,
        password: form.password,
        source: peer.map(|p| p.0.0.ip()),
        user_agent,
    };
    let result =
        sign_in(&state.store, &state.passwords, &state.addresses, state.clock.as_ref(), attempt)
            .await;
    match result {
        Ok(done) => {
            tracing::info!(user = %done.user.id, tenant = %done.user.tenant_id, "signed in");
            let policy = SessionPolicy::for_role(done.user.role);
            let cookie = session_cookie(&done.token, policy.absolute.as_secs());
            let next =
                super::stage_page(done.session.stage).unwrap_or_else(|| home_of(done.user.role));
            let mut resp = Redirect::to(next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(SignInError::InvalidCredentials) => {
            tracing::info!("sign-in refused");
            let page = SignInPage {
                shell: Shell::anonymous(&state, "Sign in"),
                error: Some(SignInError::InvalidCredentials.to_string() + "."),
                organisation: form.organisation.chars().take(40).collect(),
                email: form.email.chars().take(254).collect(),
            };
            render(&page, StatusCode::UNAUTHORIZED)
        }
        Err(SignInError::Throttled { retry_after }) => {
            tracing::info!("sign-in throttled for this address");
            let page = SignInPage {
                shell: Shell::anonymous(&state, "Sign in"),
                error: Some(SignInError::Throttled { retry_after }.to_string() + "."),
                organisation: form.organisation.chars().take(40).collect(),
                email: form.email.chars().take(254).collect(),
            };
            let mut resp = render(&page, StatusCode::TOO_MANY_REQUESTS);
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Err(e) => PageError::new(&state, AppError::internal(e)).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn signout(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<CsrfForm>,
) -> Response {
    if let Some(me) = me {
        if let Err(e) = me.check_csrf(&form.csrf) {
            return e.into_response();
        }
        if let Err(e) =
            state.store.delete_session(me.session.tenant_id, &me.session.token_hash).await
        {
            return PageError::new(&state, e).into_response();
        }
        tracing::info!(user = %me.user.id, "signed out");
        let event = AuthEvent::new(
            me.user.tenant_id,
            state.clock.now(),
            AuthEventKind::SignedOut,
            Some(me.user.id),
            &me.session.source,
            "user",
        );
        if let Err(e) = state.store.record_auth_event(&event).await {
            return PageError::new(&state, e).into_response();
        }
    }
    let mut resp = Redirect::to("/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_session_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
