//! First-run setup: the one-time token from `telesafe init` creates the organisation and
//! its first administrator.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::SecretString;
use serde::Deserialize;
use telesafe_core::identity::setup::{self, FirstAdmin, SetupError};

use super::{PageError, Shell, render};
use crate::error::AppError;
use crate::http::form::ValidForm;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    shell: Shell,
    done: bool,
    error: Option<String>,
    organisation_code: String,
    organisation_name: String,
    name: String,
    email: String,
}

pub async fn show_setup(State(state): State<AppState>) -> Response {
    let page = SetupPage {
        shell: Shell::anonymous(&state, "Set up Telesafe"),
        done: false,
        error: None,
        organisation_code: String::new(),
        organisation_name: String::new(),
        name: String::new(),
        email: String::new(),
    };
    render(&page, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct SetupForm {
    token: String,
    organisation_code: String,
    organisation_name: String,
    name: String,
    email: String,
    password: SecretString,
}

impl std::fmt::Debug for SetupForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupForm").finish_non_exhaustive()
    }
}

pub async fn setup(
    State(state): State<AppState>,
    ValidForm(f): ValidForm<SetupForm>,
) -> Result<Response, PageError> {
    let form = FirstAdmin {
        token: &f.token,
        organisation_code: &f.organisation_code,
        organisation_name: &f.organisation_name,
        name: &f.name,
        email: &f.email,
        password: f.password,
    };
    let keep = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let mut page = SetupPage {
        shell: Shell::anonymous(&state, "Set up Telesafe"),
        done: false,
        error: None,
        organisation_code: keep(&f.organisation_code, 40),
        organisation_name: keep(&f.organisation_name, 200),
        name: keep(&f.name, 200),
        email: keep(&f.email, 254),
    };
    match setup::create_first_admin(&state.store, &state.passwords, form, state.clock.now()).await {
        Ok((tenant, admin)) => {
            tracing::warn!(security_event = "first_admin_created", tenant = %tenant.id, user = %admin.id, "setup token used");
            page.done = true;
            page.organisation_code = tenant.slug.as_str().to_owned();
            Ok(render(&page, StatusCode::OK))
        }
        Err(SetupError::Repo(e)) => Err(PageError::new(&state, e)),
        Err(SetupError::Hashing) => Err(PageError::new(&state, AppError::internal("hashing"))),
        Err(e) => {
            let status = if matches!(e, SetupError::InvalidToken) {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let msg = e.to_string();
            page.error = Some(format!("{}{}.", msg[..1].to_uppercase(), &msg[1..]));
            Ok(render(&page, status))
        }
    }
}
