//! The first administrator of a fresh deployment, created with the one-time setup token
//! that `telesafe init` printed (stored only as a hash, expiring, single use).

use secrecy::SecretString;
use telesafe_crypto::OpaqueToken;

use super::email::{Email, InvalidEmail};
use super::events::{AuthEvent, AuthEventKind, AuthEventRepository};
use super::model::{
    DisplayName, InvalidName, InvalidSlug, Role, Tenant, TenantSlug, User, UserStatus,
};
use super::password::{PasswordContext, PasswordProblem, check_new};
use super::repo::{SetupTokenRepository, TenantRepository, UserRepository};
use super::signin::PasswordChecker;
use crate::clock::Timestamp;
use crate::ids::TenantId;
use crate::repo::RepoError;

/// What the setup form asks for.
#[derive(Debug)]
pub struct FirstAdmin<'a> {
    pub token: &'a str,
    pub organisation_code: &'a str,
    pub organisation_name: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub password: SecretString,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "the setup token is not right, has expired or was already used; run `telesafe init` on a new data directory for a new one"
    )]
    InvalidToken,
    #[error("{0}")]
    Slug(#[from] InvalidSlug),
    #[error("{0}")]
    Name(#[from] InvalidName),
    #[error("{0}")]
    Email(#[from] InvalidEmail),
    #[error("{0}")]
    Password(#[from] PasswordProblem),
    #[error("an organisation with that code already exists")]
    SlugTaken,
    #[error("password processing failed")]
    Hashing,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Validates everything, then consumes the token, then creates the tenant and its first
/// administrator (who will enrol a second factor at first sign-in).
pub async fn create_first_admin<R>(
    repo: &R,
    checker: &PasswordChecker,
    form: FirstAdmin<'_>,
    now: Timestamp,
) -> Result<(Tenant, User), SetupError>
where
    R: SetupTokenRepository + TenantRepository + UserRepository + AuthEventRepository,
{
    let token = OpaqueToken::parse(form.token.trim()).ok_or(SetupError::InvalidToken)?;
    if !repo.setup_token_usable(&token.hash(), now).await? {
        return Err(SetupError::InvalidToken);
    }
    let slug = TenantSlug::parse(form.organisation_code)?;
    let org_name = DisplayName::parse(form.organisation_name)?;
    let name = DisplayName::parse(form.name)?;
    let email = Email::parse(form.email)?;
    let accepted =
        check_new(&form.password, PasswordContext { email: &email, name: &name, has_mfa: true })?;
    if repo.tenant_by_slug(&slug).await?.is_some() {
        return Err(SetupError::SlugTaken);
    }
    let hash = checker.hash(accepted.into_secret()).await.map_err(|_| SetupError::Hashing)?;
    if !repo.consume_setup_token(&token.hash(), now).await? {
        return Err(SetupError::InvalidToken);
    }
    let tenant = Tenant { id: TenantId::new_v7(), slug, name: org_name, created_at: now };
    repo.create_tenant(&tenant).await.map_err(|e| match e {
        RepoError::Conflict => SetupError::SlugTaken,
        e => e.into(),
    })?;
    let admin =
        User::new(tenant.id, email, name, Role::TenantAdmin, UserStatus::Active, Some(hash), now);
    repo.create_user(&admin).await?;
    repo.record_auth_event(&AuthEvent::new(
        tenant.id,
        now,
        AuthEventKind::PasswordSet,
        Some(admin.id),
        "",
        "activated",
    ))
    .await?;
    Ok((tenant, admin))
}
