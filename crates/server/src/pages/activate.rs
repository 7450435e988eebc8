//! The activation page behind a one-time link: choose a password, then sign in.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::SecretString;
use serde::Deserialize;
use telesafe_core::identity::activation::{self, ActivationError};
use telesafe_core::identity::password::{MIN_SINGLE_FACTOR, MIN_WITH_MFA};

use super::{PageError, Shell, render};
use crate::error::AppError;
use crate::http::form::ValidForm;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "activate.html")]
struct ActivatePage {
    shell: Shell,
    done: bool,
    usable: bool,
    error: Option<String>,
    name: String,
    min_length: usize,
}

fn page(
    state: &AppState,
    usable: bool,
    error: Option<String>,
    name: String,
    min_length: usize,
) -> ActivatePage {
    ActivatePage {
        shell: Shell::anonymous(state, "Choose your password"),
        done: false,
        usable,
        error,
        name,
        min_length,
    }
}

pub async fn show_activate(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match activation::lookup(&state.store, &token, state.clock.now()).await {
        Ok((_, user)) => {
            let min = if user.role.is_staff() { MIN_WITH_MFA } else { MIN_SINGLE_FACTOR };
            render(
                &page(&state, true, None, user.display_name.as_str().to_owned(), min),
                StatusCode::OK,
            )
        }
        Err(e @ ActivationError::InvalidLink) => render(
            &page(&state, false, Some(e.to_string()), String::new(), 0),
            StatusCode::NOT_FOUND,
        ),
        Err(e) => axum::response::IntoResponse::into_response(PageError::new(
            &state,
            AppError::internal(e),
        )),
    }
}

#[derive(Deserialize)]
pub struct ActivateForm {
    password: SecretString,
    confirm: SecretString,
}

impl std::fmt::Debug for ActivateForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivateForm").finish_non_exhaustive()
    }
}

pub async fn activate(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ValidForm(form): ValidForm<ActivateForm>,
) -> Result<Response, PageError> {
    let now = state.clock.now();
    match activation::activate(
        &state.store,
        &state.passwords,
        &token,
        form.password,
        form.confirm,
        now,
    )
    .await
    {
        Ok(user) => {
            tracing::info!(user = %user.id, tenant = %user.tenant_id, "account activated");
            let mut p = page(&state, false, None, String::new(), 0);
            p.done = true;
            Ok(render(&p, StatusCode::OK))
        }
        Err(e @ ActivationError::InvalidLink) => Ok(render(
            &page(&state, false, Some(e.to_string()), String::new(), 0),
            StatusCode::NOT_FOUND,
        )),
        Err(e @ (ActivationError::Password(_) | ActivationError::Mismatch)) => {
            let (_, user) = activation::lookup(&state.store, &token, now)
                .await
                .map_err(|e| PageError::new(&state, AppError::internal(e)))?;
            let min = if user.role.is_staff() { MIN_WITH_MFA } else { MIN_SINGLE_FACTOR };
            let p = page(
                &state,
                true,
                Some(format!("{}.", capitalise(&e.to_string()))),
                user.display_name.as_str().to_owned(),
                min,
            );
            Ok(render(&p, StatusCode::UNPROCESSABLE_ENTITY))
        }
        Err(e) => Err(PageError::new(&state, AppError::internal(e))),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}
