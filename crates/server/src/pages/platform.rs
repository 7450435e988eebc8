//! The platform operator's page: every organisation with its size (never its people or
//! patients), and creating an organisation with its first administrator, who gets a
//! one-time activation link. Creating an organisation needs a recent second factor.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use telesafe_core::identity::platform::{self, PlatformError};
use telesafe_core::identity::{DisplayName, Email, Role, TenantSlug, activation, outbox, stepup};
use telesafe_core::{RepoError, Timestamp};

use super::{PageError, Shell, failed, render, require};
use crate::auth::{CurrentUser, MaybeUser};
use crate::http::form::ValidForm;
use crate::state::AppState;

struct OrganisationLine {
    code: String,
    name: String,
    created: String,
    staff: usize,
    patients: usize,
    pending: usize,
}

/// What the operator is told about backups: one sentence, and whether it is a warning.
struct BackupLine {
    text: String,
    warn: bool,
}

/// Older than this, the newest backup is a warning.
const BACKUP_STALE_HOURS: i64 = 24;

/// From the audit log: `telesafe backup create` logs `backup` in every organisation's log,
/// the platform's included, before it copies anything. On PostgreSQL backups are made with
/// PostgreSQL's tools, which Telesafe does not see.
async fn backups(state: &AppState) -> Result<BackupLine, RepoError> {
    if state.store.backend() == telesafe_store::Backend::Postgres {
        return Ok(BackupLine {
            text: "This deployment runs on PostgreSQL: back it up with PostgreSQL's tools \
                   (pg_dump or pgBackRest), and export the erasure list with \
                   telesafe backup erasures export beside each backup (see the operations \
                   guide)."
                .into(),
            warn: false,
        });
    }
    let Some(at) = crate::audit::newest_backup_at(state).await? else {
        return Ok(BackupLine {
            text: "No backup has been taken on this deployment. Run telesafe backup create \
                   on the server, check it with telesafe backup verify, and keep backups \
                   and the root key apart, one of them offline."
                .into(),
            warn: true,
        });
    };
    let hours = (state.clock.now().unix_millis() - at).max(0) / 3_600_000;
    let age = match hours {
        0 => "less than an hour ago".to_owned(),
        1..48 => format!("{hours} hour(s) ago"),
        _ => format!("{} days ago", hours / 24),
    };
    let when = Timestamp::from_unix_millis(at).to_rfc3339();
    Ok(if hours >= BACKUP_STALE_HOURS {
        BackupLine {
            text: format!(
                "The newest backup was taken {age} ({when}). Take one at least daily: \
                 telesafe backup create on the server."
            ),
            warn: true,
        }
    } else {
        BackupLine { text: format!("The newest backup was taken {age} ({when})."), warn: false }
    })
}

#[derive(Template)]
#[template(path = "platform.html")]
struct PlatformPage {
    shell: Shell,
    organisations: Vec<OrganisationLine>,
    backup: BackupLine,
    notice: Option<&'static str>,
    error: Option<String>,
}

async fn page(
    state: &AppState,
    me: &CurrentUser,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<PlatformPage, PageError> {
    let organisations = platform::overview(&state.store)
        .await
        .map_err(failed(state))?
        .into_iter()
        .map(|s| OrganisationLine {
            code: s.tenant.slug.as_str().to_owned(),
            name: s.tenant.name.as_str().to_owned(),
            created: s.tenant.created_at.to_rfc3339(),
            staff: s.staff,
            patients: s.patients,
            pending: s.pending,
        })
        .collect();
    let backup = backups(state).await.map_err(failed(state))?;
    Ok(PlatformPage {
        shell: Shell::for_user(state, "Organisations", me, "Telesafe platform", "/platform"),
        organisations,
        backup,
        notice,
        error,
    })
}

#[derive(Debug, Deserialize)]
pub struct PlatformQuery {
    #[serde(default)]
    done: Option<String>,
}

pub async fn platform(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    Query(q): Query<PlatformQuery>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::PlatformOperator])?;
    let notice = match q.done.as_deref() {
        Some("created") => Some(
            "The organisation is ready. Its first administrator has been sent a one-time \
             activation link, valid for 72 hours.",
        ),
        _ => None,
    };
    Ok(render(&page(&state, &me, notice, None).await?, StatusCode::OK))
}

#[derive(Debug, Deserialize)]
pub struct OrganisationForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    admin_name: String,
    #[serde(default)]
    admin_email: String,
}

/// Creates an organisation and its first administrator.
pub async fn create_organisation(
    State(state): State<AppState>,
    MaybeUser(me): MaybeUser,
    ValidForm(form): ValidForm<OrganisationForm>,
) -> Result<Response, PageError> {
    let me = require(&state, me, &[Role::PlatformOperator])?;
    me.check_csrf(&form.csrf).map_err(|e| PageError::new(&state, e))?;
    let now = state.clock.now();
    if !stepup::is_fresh(&me.session, now) {
        return Ok(Redirect::to("/mfa/step-up?return=/platform").into_response());
    }
    let invalid = |msg: String| async {
        Ok::<Response, PageError>(render(
            &page(&state, &me, None, Some(msg)).await?,
            StatusCode::UNPROCESSABLE_ENTITY,
        ))
    };
    let slug = match TenantSlug::parse(&form.code) {
        Ok(s) => s,
        Err(e) => return invalid(format!("Organisation code: {e}.")).await,
    };
    let Ok(name) = DisplayName::parse(&form.name) else {
        return invalid("Organisation name: 1 to 200 characters.".into()).await;
    };
    let Ok(admin_name) = DisplayName::parse(&form.admin_name) else {
        return invalid("Administrator's name: 1 to 200 characters.".into()).await;
    };
    let admin_email = match Email::parse(&form.admin_email) {
        Ok(e) => e,
        Err(e) => return invalid(format!("Administrator's email: {e}.")).await,
    };
    let tenant = match platform::create_tenant(&state.store, slug, name, now).await {
        Ok(t) => t,
        Err(PlatformError::Repo(e)) => return Err(PageError::new(&state, e)),
        Err(e) => return invalid(super::sentence(&e.to_string())).await,
    };
    let (admin, token) = activation::create_pending_account(
        &state.store,
        tenant.id,
        Role::TenantAdmin,
        admin_name,
        admin_email,
        now,
    )
    .await
    .map_err(|e: RepoError| PageError::new(&state, e))?;
    let link = format!("{}/activate/{}", state.config.public_base(), token.reveal());
    let body = format!(
        "Hello,\n\nAn administrator account has been created for you on Telesafe, for the \
         organisation code \"{}\". Open this link within 72 hours to choose your password:\n\n\
         {link}\n\nIf you did not expect this, ignore this message.",
        tenant.slug
    );
    outbox::enqueue(
        &state.store,
        &state.outbox_key,
        tenant.id,
        admin.id,
        "Your Telesafe administrator account",
        &body,
        now,
    )
    .await
    .map_err(failed(&state))?;
    tracing::info!(operator = %me.user.id, tenant = %tenant.id, admin = %admin.id, "organisation created");
    Ok(Redirect::to("/platform?done=created").into_response())
}
