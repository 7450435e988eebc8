//! One-time activation links: a new account's owner follows the link and chooses a
//! password (under the NIST rules); the link works once and expires.

use std::future::Future;
use std::time::Duration;

use secrecy::SecretString;
use telesafe_crypto::{OpaqueToken, TokenHash};

use super::events::{AuthEvent, AuthEventKind, AuthEventRepository};
use super::model::{User, UserStatus};
use super::password::{PasswordContext, PasswordProblem, check_new};
use super::repo::{SessionRepository, UserRepository};
use super::signin::PasswordChecker;
use crate::clock::Timestamp;
use crate::ids::{TenantId, UserId};
use crate::repo::RepoError;

/// How long an activation link stays valid.
pub const ACTIVATION_LIFETIME: Duration = Duration::from_secs(72 * 3600);

/// A stored activation token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub token_hash: TokenHash,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

pub trait ActivationRepository: Send + Sync {
    fn create_activation(
        &self,
        a: &Activation,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// An unused activation by hash, across tenants (the link names its own tenant).
    fn activation(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<Option<Activation>, RepoError>> + Send;
    /// Marks it used; false if it was already used (exactly one caller wins).
    fn use_activation(
        &self,
        a: &Activation,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// Unknown, used or expired: one answer.
    #[error("this link has expired or was already used; ask your clinic for a new one")]
    InvalidLink,
    #[error("{0}")]
    Password(#[from] PasswordProblem),
    #[error("the two passwords are not the same")]
    Mismatch,
    #[error("password processing failed")]
    Hashing,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Creates an activation link token for a pending account.
pub async fn issue<R: ActivationRepository>(
    repo: &R,
    user: &User,
    now: Timestamp,
) -> Result<OpaqueToken, RepoError> {
    let token = OpaqueToken::generate().map_err(|e| RepoError::Backend(e.to_string()))?;
    repo.create_activation(&Activation {
        token_hash: token.hash(),
        tenant_id: user.tenant_id,
        user_id: user.id,
        created_at: now,
        expires_at: now.plus(ACTIVATION_LIFETIME),
    })
    .await?;
    Ok(token)
}

/// Creates an account awaiting activation (and, for a patient, their patient record), and
/// the activation token that goes into their link. The one path for the admin page and the
/// command line.
pub async fn create_pending_account<R>(
    repo: &R,
    tenant: TenantId,
    role: super::model::Role,
    name: super::model::DisplayName,
    email: super::email::Email,
    now: Timestamp,
) -> Result<(User, OpaqueToken), RepoError>
where
    R: ActivationRepository + UserRepository + super::repo::PatientRepository,
{
    let user = User::new(tenant, email, name, role, UserStatus::Pending, None, now);
    repo.create_user(&user).await?;
    if role == super::model::Role::Patient {
        let patient = super::model::Patient {
            id: crate::ids::PatientId::new_v7(),
            tenant_id: tenant,
            user_id: Some(user.id),
            created_at: now,
        };
        repo.create_patient(&patient).await?;
    }
    let token = issue(repo, &user, now).await?;
    Ok((user, token))
}

/// The account a presented link is for, if it is live.
pub async fn lookup<R>(
    repo: &R,
    presented: &str,
    now: Timestamp,
) -> Result<(Activation, User), ActivationError>
where
    R: ActivationRepository + UserRepository,
{
    let token = OpaqueToken::parse(presented).ok_or(ActivationError::InvalidLink)?;
    let a = repo.activation(&token.hash()).await?.ok_or(ActivationError::InvalidLink)?;
    if now >= a.expires_at {
        return Err(ActivationError::InvalidLink);
    }
    let user =
        repo.user_by_id(a.tenant_id, a.user_id).await?.ok_or(ActivationError::InvalidLink)?;
    if user.status == UserStatus::Locked {
        return Err(ActivationError::InvalidLink);
    }
    Ok((a, user))
}

/// Sets the account's password from a live link and activates it. Staff will be made to
/// enrol a second factor at their first sign-in, so their minimum is the with-MFA one.
pub async fn activate<R>(
    repo: &R,
    checker: &PasswordChecker,
    presented: &str,
    password: SecretString,
    confirm: SecretString,
    now: Timestamp,
) -> Result<User, ActivationError>
where
    R: ActivationRepository + UserRepository + SessionRepository + AuthEventRepository,
{
    use secrecy::ExposeSecret;
    let (a, user) = lookup(repo, presented, now).await?;
    if password.expose_secret() != confirm.expose_secret() {
        return Err(ActivationError::Mismatch);
    }
    let ctx = PasswordContext {
        email: &user.email,
        name: &user.display_name,
        has_mfa: user.role.is_staff(),
    };
    let accepted = check_new(&password, ctx)?;
    let hash = checker.hash(accepted.into_secret()).await.map_err(|_| ActivationError::Hashing)?;
    if !repo.use_activation(&a, now).await? {
        return Err(ActivationError::InvalidLink);
    }
    repo.set_password_hash(user.tenant_id, user.id, &hash).await?;
    repo.set_user_status(user.tenant_id, user.id, UserStatus::Active).await?;
    // A password change ends every session the account had.
    repo.delete_sessions_of_user(user.tenant_id, user.id, None).await?;
    repo.record_auth_event(&AuthEvent::new(
        user.tenant_id,
        now,
        AuthEventKind::PasswordSet,
        Some(user.id),
        "",
        "activated",
    ))
    .await?;
    Ok(User { status: UserStatus::Active, ..user })
}

/// Why a password change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("your current password is not right")]
    WrongCurrent,
    #[error("{0}")]
    Password(#[from] PasswordProblem),
    #[error("the two new passwords are not the same")]
    Mismatch,
    #[error("password processing failed")]
    Hashing,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Changes a signed-in person's password after checking the current one. Every other
/// session of the account ends; the caller replaces the current one with a new id.
#[allow(clippy::too_many_arguments, reason = "each is a distinct input of the change")]
pub async fn change_password<R>(
    repo: &R,
    checker: &PasswordChecker,
    user: &User,
    keep: &TokenHash,
    current: SecretString,
    new: SecretString,
    confirm: SecretString,
    has_mfa: bool,
    now: Timestamp,
) -> Result<(), ChangeError>
where
    R: UserRepository + SessionRepository + AuthEventRepository,
{
    use secrecy::ExposeSecret;
    let verdict = checker
        .verify(super::password::normalise(&current), user.password_hash.as_deref())
        .await
        .map_err(|_| ChangeError::Hashing)?;
    if matches!(verdict, telesafe_crypto::Verification::Mismatch) {
        return Err(ChangeError::WrongCurrent);
    }
    if new.expose_secret() != confirm.expose_secret() {
        return Err(ChangeError::Mismatch);
    }
    let ctx = PasswordContext { email: &user.email, name: &user.display_name, has_mfa };
    let accepted = check_new(&new, ctx)?;
    let hash = checker.hash(accepted.into_secret()).await.map_err(|_| ChangeError::Hashing)?;
    repo.set_password_hash(user.tenant_id, user.id, &hash).await?;
    repo.delete_sessions_of_user(user.tenant_id, user.id, Some(keep)).await?;
    repo.record_auth_event(&AuthEvent::new(
        user.tenant_id,
        now,
        AuthEventKind::PasswordSet,
        Some(user.id),
        "",
        "changed",
    ))
    .await?;
    Ok(())
}
