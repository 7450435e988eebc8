//! Server-rendered pages: the sign-in page and one home per audience (patient portal,
//! clinician console, administration, security). Handlers stay thin: identity, one domain
//! call, render.

mod account;
mod activate;
mod admin;
mod audit;
mod break_glass;
mod chart;
mod devices;
mod home;
mod mfa;
mod monitoring;
mod platform;
mod record;
mod setup;
mod signin;

use std::sync::Arc;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use telesafe_core::identity::{Role, SessionStage};

use crate::assets::Assets;
use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::http::request_id;
use crate::state::AppState;

pub use account::{
    account, change_password, delete_passkey, rename_passkey, revoke_other_sessions, revoke_session,
};
pub use activate::{activate, show_activate};

pub use admin::{add_person, admin, set_policies, set_session_limits};
pub use audit::{access_log, audit_search};
pub use break_glass::{break_glass, show_break_glass};
pub use devices::{
    add_model as add_device_model, create_enrollment as create_device_enrollment,
    devices as device_admin, release as release_device, revoke as revoke_device,
    update_model as update_device_model,
};
pub use home::{console, portal, root, security};
pub use record::display_name as patient_name;

/// The name of an organisation, for the page header.
pub async fn organisation_name(
    state: &AppState,
    tenant: telesafe_core::TenantId,
) -> Result<String, PageError> {
    home::organisation(state, tenant).await
}
pub use mfa::qr_svg;
pub(crate) use mfa::{Refusal, safe_return, second_factor};
pub use mfa::{enroll, mfa_challenge, show_enroll, show_mfa_challenge, show_step_up, step_up};
pub use monitoring::{acknowledge_alert, set_threshold};
pub use platform::{create_organisation, platform};
pub use record::{add_record, my_record, save_demographics, show_chart};
pub use setup::{setup, show_setup};
pub use signin::{show_signin, signin, signout};

/// A navigation entry.
#[derive(Debug, Clone)]
pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// Who is signed in, as the header shows it.
#[derive(Debug, Clone)]
pub struct ShellUser {
    pub name: String,
    pub role: &'static str,
    pub organisation: String,
}

/// What the layout needs on every page.
#[derive(Debug, Clone)]
pub struct Shell {
    pub title: String,
    pub css: String,
    pub js: String,
    pub nav: Vec<NavLink>,
    pub user: Option<ShellUser>,
    /// The session's synchronizer token, for every form on the page.
    pub csrf: String,
}

/// Where each role starts.
pub fn home_of(role: Role) -> &'static str {
    match role {
        Role::Patient => "/portal",
        Role::Clinician | Role::Nurse | Role::FrontDesk => "/console",
        Role::TenantAdmin => "/admin",
        Role::SecurityOfficer => "/security",
        Role::PlatformOperator => "/platform",
    }
}

fn nav_for(role: Role, current: &str) -> Vec<NavLink> {
    let (href, label) = match role {
        Role::Patient => ("/portal", "My health"),
        Role::Clinician | Role::Nurse | Role::FrontDesk => ("/console", "Clinic console"),
        Role::TenantAdmin => ("/admin", "Administration"),
        Role::SecurityOfficer => ("/security", "Security"),
        Role::PlatformOperator => ("/platform", "Organisations"),
    };
    let mut nav = vec![NavLink { href, label, current: href == current }];
    if matches!(role, Role::Clinician | Role::Nurse | Role::FrontDesk) {
        nav.push(NavLink {
            href: "/console/visits",
            label: "Video visits",
            current: current == "/console/visits",
        });
    }
    if role == Role::TenantAdmin {
        nav.push(NavLink {
            href: "/admin/devices",
            label: "Devices",
            current: current == "/admin/devices",
        });
    }
    nav.push(NavLink { href: "/account", label: "My account", current: current == "/account" });
    nav
}

impl Shell {
    pub fn anonymous(state: &AppState, title: &str) -> Self {
        Self::with_assets(&state.assets, title)
    }

    /// For a session still signing in: no navigation, but its forms carry the CSRF token.
    pub fn signing_in(state: &AppState, title: &str, me: &CurrentUser) -> Self {
        Self { csrf: me.session.csrf_token.clone(), ..Self::anonymous(state, title) }
    }

    fn with_assets(assets: &Assets, title: &str) -> Self {
        Self {
            title: title.to_owned(),
            css: assets.url("app.css").to_owned(),
            js: assets.url("app.js").to_owned(),
            nav: Vec::new(),
            user: None,
            csrf: String::new(),
        }
    }

    pub fn for_user(
        state: &AppState,
        title: &str,
        me: &CurrentUser,
        organisation: &str,
        current: &str,
    ) -> Self {
        Self {
            nav: nav_for(me.role(), current),
            user: Some(ShellUser {
                name: me.user.display_name.as_str().to_owned(),
                role: me.role().label(),
                organisation: organisation.to_owned(),
            }),
            csrf: me.session.csrf_token.clone(),
            ..Self::anonymous(state, title)
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    shell: Shell,
    heading: String,
    message: String,
    request_id: String,
}

/// Renders a template, or a generic error when rendering itself fails.
pub fn render(t: &impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => AppError::internal(format!("template: {e}")).into_response(),
    }
}

/// An error on a page: shown as a readable page, not JSON. Unauthenticated visitors are
/// sent to sign in instead.
#[derive(Debug)]
pub enum PageError {
    Failed {
        assets: Arc<Assets>,
        err: AppError,
    },
    /// The visitor belongs elsewhere (for example, mid-way through signing in).
    Redirect(&'static str),
}

impl PageError {
    pub fn new(state: &AppState, err: impl Into<AppError>) -> Self {
        Self::Failed { assets: state.assets.clone(), err: err.into() }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (assets, err) = match self {
            PageError::Redirect(to) => return Redirect::to(to).into_response(),
            PageError::Failed { assets, err } => (assets, err),
        };
        if matches!(err, AppError::Unauthenticated) {
            return Redirect::to("/signin").into_response();
        }
        err.log();
        let heading = match err {
            AppError::NotFound => "Page not found",
            AppError::Forbidden => "This page is not available to you",
            AppError::CsrfRejected => "That request was refused",
            AppError::Internal(_) | AppError::Unavailable => "Something went wrong",
            _ => "That did not work",
        };
        let page = ErrorPage {
            shell: Shell::with_assets(&assets, heading),
            heading: heading.to_owned(),
            message: err.public_message(),
            request_id: request_id::current(),
        };
        render(&page, err.status())
    }
}

/// `map_err` adapter: any error becomes an error page.
pub fn failed<E: Into<AppError>>(state: &AppState) -> impl Fn(E) -> PageError + '_ {
    move |e| PageError::new(state, e)
}

/// Where a session at `stage` must go before anything else.
pub fn stage_page(stage: SessionStage) -> Option<&'static str> {
    match stage {
        SessionStage::Full => None,
        SessionStage::MfaPending => Some("/mfa"),
        SessionStage::EnrollRequired => Some("/mfa/enroll"),
    }
}

/// Where a signed-in user goes next: their home, or the second-factor step they owe.
pub fn next_page(me: &CurrentUser) -> &'static str {
    stage_page(me.session.stage).unwrap_or_else(|| home_of(me.role()))
}

/// Requires a fully signed-in user with one of `roles`. A session still owing its second
/// factor is sent to that step and can reach nothing else.
pub fn require(
    state: &AppState,
    me: Option<CurrentUser>,
    roles: &[Role],
) -> Result<CurrentUser, PageError> {
    match me {
        None => Err(PageError::new(state, AppError::Unauthenticated)),
        Some(me) => match stage_page(me.session.stage) {
            Some(step) => Err(PageError::Redirect(step)),
            None if roles.contains(&me.role()) => Ok(me),
            None => Err(PageError::new(state, AppError::Forbidden)),
        },
    }
}

/// The fallback for unknown paths: JSON under the APIs, a page elsewhere.
pub async fn not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    uri: axum::http::Uri,
) -> Response {
    let p = uri.path();
    if p.starts_with("/api/") || p.starts_with("/fhir") {
        AppError::NotFound.into_response()
    } else {
        PageError::new(&state, AppError::NotFound).into_response()
    }
}

/// A domain message as a sentence for a page: capital first letter, full stop.
pub(crate) fn sentence(msg: &str) -> String {
    let mut chars = msg.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}
