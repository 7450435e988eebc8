//! Administration: the people with access to the organisation, and adding staff and
//! patients (each gets a one-time activation link through the outbox). Adding people is
//! a sensitive action and needs a recent second factor (step-up).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use telesafe_core::RepoError;
use telesafe_core::access::TenantPolicyRepository;
use telesafe_core::identity::{
    AuthEvent, AuthEventKind, AuthEventRepository, DisplayName, Email, Role, TenantRepository,
    TenantSessionLimits, UserRepository, activation, outbox, stepup,
};

use super::home::organisation;
use super::{PageError, Shell, failed, render, require, sentence};
use crate::auth::MaybeUser;
use crate::http::form::ValidForm;
use crate::state::AppState;

struct UserLine {
    name: String,
    email: String,
    role: &'static str,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    shell: Shell,
    organisation: String,
    users: Vec<UserLine>,
    notice: Option<&'static str>,
    error: Option<String>,
    staff_roles: Vec<(&'static str, &'static str)>,
    /// The tenant's own limits as the form shows them (blank: the default).
    idle_minutes: String,
    absolute_hours: String,
    limits_error: Option<String>,
    /// The organisation's own forbid policies (Cedar), and why a change was refused.
    policy_source: String,
    policy_error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AdminQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn page(
    state: &AppState,
    me: &crate::auth::CurrentUser,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<AdminPage, PageError> {
    let org = organisation(state, me.user.tenant_id).await?;
    let limits =
        state.store.tenant_session_limits(me.user.tenant_id).await.map_err(failed(state))?;
    let users = state
        .store
        .list_users(me.user.tenant_id)
        .await
        .map_err(failed(state))?
        .into_iter()
        .map(|u| UserLine {
            name: u.display_name.as_str().to_owned(),
            email: u.email.as_str().to_owned(),
            role: u.role.label(),
            status: u.status.as_str(),
        })
        .collect();
    Ok(AdminPage {
        shell: Shell::for_user(state, "Administration", me, &org, "/admin"),
        organisation: org,
        users,
        notice,
        error,
        staff_roles: Role::TENANT
            .iter()
            .filter(|r| r.is_staff())
            .map(|r| (r.as_str(), r.label()))
            .collect(),
        idle_minutes: limits.idle.map(|d| (d.as_secs() / 60).to_string()).unwrap_or_default(),
        absolute_hours: limits
            .absolute
            .map(|d| (d.as_secs() / 3600).to_string())
            .unwrap_or_default(),
        limits_error: None,
        policy_source: state
            .store
            .tenant_policy_source(me.user.tenant_id)
            .await
            .map_err(failed(state))?,
        policy_error: None,
    })
}

pub async fn admin(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Query(q): Query<AdminQuery>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    let notice = match q.done.as_deref() {
        Some("added") => {
            Some("Done. An activation link is on its way to them; it works once, within 72 hours.")
        }
        Some("limits") => Some("The sign-in time limits are saved and apply to every session now."),
        Some("policies") => {
            Some("The organisation's policies are saved and apply to every decision now.")
        }
        _ => None,
    };
    Ok(render(&page(&state, &me, notice, None).await?, StatusCode::OK))
}

#[derive(Debug, Deserialize)]
pub struct PersonForm {
    #[serde(default)]
    csrf: String,
    /// A staff role, or `patient`.
    role: String,
    name: String,
    email: String,
}

/// Adds a staff member or a patient and queues their activation link.
pub async fn add_person(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<PersonForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let now = state.clock.now();
    if !stepup::is_fresh(&me.session, now) {
        return Ok(Redirect::to("/mfa/step-up?return=/admin").into_response());
    }
    let invalid = |msg: String| async {
        Ok::<Response, PageError>(render(
            &page(&state, &me, None, Some(msg)).await?,
            StatusCode::UNPROCESSABLE_ENTITY,
        ))
    };
    let Ok(role) = form
        .role
        .parse::<Role>()
        .and_then(|r| if Role::TENANT.contains(&r) { Ok(r) } else { Err(()) })
    else {
        return invalid("Choose a role.".into()).await;
    };
    let name = match DisplayName::parse(&form.name) {
        Ok(n) => n,
        Err(e) => return invalid(format!("Name: {e}.")).await,
    };
    let email = match Email::parse(&form.email) {
        Ok(e) => e,
        Err(e) => return invalid(format!("Email: {e}.")).await,
    };
    let tenant = me.user.tenant_id;
    let (user, token) = match activation::create_pending_account(
        &state.store,
        tenant,
        role,
        name,
        email,
        now,
    )
    .await
    {
        Ok(done) => done,
        Err(RepoError::Conflict) => {
            return invalid("Someone with that email already has an account here.".into()).await;
        }
        Err(e) => return Err(PageError::new(&state, e)),
    };
    let link = format!("{}/activate/{}", state.config.public_base(), token.reveal());
    // Nothing but a greeting and the link: no names, no clinical information.
    let body = format!(
        "Hello,\n\nAn account has been created for you on Telesafe. Open this link within 72 hours \
         to choose your password:\n\n{link}\n\nIf you did not expect this, ignore this message."
    );
    outbox::enqueue(
        &state.store,
        &state.outbox_key,
        tenant,
        user.id,
        "Your Telesafe account",
        &body,
        now,
    )
    .await
    .map_err(failed(&state))?;
    tracing::info!(admin = %me.user.id, user = %user.id, role = role.as_str(), "account created; activation queued");
    Ok(Redirect::to("/admin?done=added").into_response())
}

#[derive(Debug, Deserialize)]
pub struct LimitsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    idle_minutes: String,
    #[serde(default)]
    absolute_hours: String,
}

/// Sets the organisation's own, shorter session limits (never longer than the defaults).
/// A security setting: it needs a recent second factor and is recorded.
pub async fn set_session_limits(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<LimitsForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let now = state.clock.now();
    if !stepup::is_fresh(&me.session, now) {
        return Ok(Redirect::to("/mfa/step-up?return=/admin").into_response());
    }
    let limits = match TenantSessionLimits::parse(&form.idle_minutes, &form.absolute_hours) {
        Ok(l) => l,
        Err(e) => {
            let mut p = page(&state, &me, None, None).await?;
            p.limits_error = Some(sentence(&e.to_string()));
            p.idle_minutes = form.idle_minutes.chars().take(8).collect();
            p.absolute_hours = form.absolute_hours.chars().take(8).collect();
            return Ok(render(&p, StatusCode::UNPROCESSABLE_ENTITY));
        }
    };
    let tenant = me.user.tenant_id;
    state.store.set_tenant_session_limits(tenant, limits).await.map_err(failed(&state))?;
    let event = AuthEvent::new(
        tenant,
        now,
        AuthEventKind::SessionLimitsChanged,
        Some(me.user.id),
        &me.session.source,
        "changed",
    );
    state.store.record_auth_event(&event).await.map_err(failed(&state))?;
    tracing::info!(admin = %me.user.id, "session limits changed");
    Ok(Redirect::to("/admin?done=limits").into_response())
}

#[derive(Debug, Deserialize)]
pub struct PoliciesForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    source: String,
}

/// Replaces the organisation's own policies: `forbid` only, validated against the schema
/// first; a refused change leaves the stored policies as they were.
pub async fn set_policies(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<PoliciesForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::TenantAdmin])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let now = state.clock.now();
    if !stepup::is_fresh(&me.session, now) {
        return Ok(Redirect::to("/mfa/step-up?return=/admin").into_response());
    }
    if form.source.len() > 64 * 1024 {
        let mut p = page(&state, &me, None, None).await?;
        p.policy_error = Some("Policies can be at most 64 KiB.".into());
        return Ok(render(&p, StatusCode::UNPROCESSABLE_ENTITY));
    }
    let checked = match form.source.trim() {
        "" => Ok(()),
        src => state.policy.tenant_policies(src).map(|_| ()),
    };
    if let Err(e) = checked {
        let mut p = page(&state, &me, None, None).await?;
        p.policy_error = Some(sentence(&e.to_string()));
        p.policy_source = form.source;
        return Ok(render(&p, StatusCode::UNPROCESSABLE_ENTITY));
    }
    let tenant = me.user.tenant_id;
    state
        .store
        .set_tenant_policy_source(tenant, form.source.trim(), now)
        .await
        .map_err(failed(&state))?;
    crate::audit::record(
        &state,
        &me,
        &[crate::audit::Access {
            action: "update",
            resource_type: "Policy",
            resource_id: String::new(),
            patient_id: String::new(),
            purpose: telesafe_core::audit::Purpose::Operations,
            outcome: "success",
        }],
    )
    .await
    .map_err(|e| PageError::new(&state, e))?;
    tracing::info!(admin = %me.user.id, "organisation policies changed");
    Ok(Redirect::to("/admin?done=policies").into_response())
}
