//! Sign-in and sign-out.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::Deserialize;
use telesafe_core::identity::{SessionRepository, SignInError, sign_in};

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
        return Redirect::to(home_of(me.role())).into_response();
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

pub async fn signin(State(state): State<AppState>, Form(form): Form<SignInForm>) -> Response {
    let result = sign_in(
        &state.store,
        &state.passwords,
        state.clock.as_ref(),
        &form.organisation,
        &form.email,
        form.password,
    )
    .await;
    match result {
        Ok(done) => {
            tracing::info!(user = %done.user.id, tenant = %done.user.tenant_id, "signed in");
            let cookie = session_cookie(&done.token, state.sessions.absolute.as_secs());
            let mut resp = Redirect::to(home_of(done.user.role)).into_response();
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
        Err(e) => PageError::new(&state, AppError::internal(e)).into_response(),
    }
}

pub async fn signout(State(state): State<AppState>, MaybeUser(me): MaybeUser) -> Response {
    if let Some(me) = me {
        if let Err(e) = state
            .store
            .delete_session(me.session.tenant_id, &me.session.token_hash)
            .await
        {
            return PageError::new(&state, e).into_response();
        }
        tracing::info!(user = %me.user.id, "signed out");
    }
    let mut resp = Redirect::to("/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_session_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
