//! Password sign-in.
//!
//! The answer to a failed sign-in is the same whether the organisation, the account or the
//! password was wrong, and takes the same work: an unknown account is checked against a
//! dummy hash, so neither the reply nor its timing tells an attacker which accounts exist.

use std::sync::Arc;

use secrecy::SecretString;
use telesafe_crypto::password::Verification;
use telesafe_crypto::{OpaqueToken, PasswordHasher};
use tokio::sync::Semaphore;

use super::email::Email;
use super::model::{TenantSlug, User, UserStatus};
use super::repo::{SessionRepository, TenantRepository, UserRepository};
use super::session::Session;
use crate::clock::Clock;
use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong organisation, account, password, or an account that may not sign in.
    #[error("the organisation, email or password is not right")]
    InvalidCredentials,
    #[error("password checking failed")]
    Hashing,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Runs Argon2id off the async runtime, on at most `permits` blocking threads at once, so a
/// burst of sign-ins queues instead of starving every other request of CPU and threads.
#[derive(Debug, Clone)]
pub struct PasswordChecker {
    hasher: PasswordHasher,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl PasswordChecker {
    /// `permits` bounds concurrent hashing; one per core is a good start.
    pub async fn new(permits: usize) -> Result<Self, SignInError> {
        let hasher = PasswordHasher::owasp();
        let h = hasher.clone();
        let dummy = tokio::task::spawn_blocking(move || {
            h.hash(&SecretString::from(
                "dummy password for timing equalisation".to_owned(),
            ))
        })
        .await
        .map_err(|_| SignInError::Hashing)?
        .map_err(|_| SignInError::Hashing)?;
        Ok(Self {
            hasher,
            permits: Arc::new(Semaphore::new(permits.max(1))),
            dummy_hash: dummy.into(),
        })
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: SecretString) -> Result<String, SignInError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| SignInError::Hashing)?;
        let h = self.hasher.clone();
        tokio::task::spawn_blocking(move || h.hash(&password))
            .await
            .map_err(|_| SignInError::Hashing)?
            .map_err(|_| SignInError::Hashing)
    }

    /// Verifies against `stored`, or against the dummy hash when there is no account.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<&str>,
    ) -> Result<Verification, SignInError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| SignInError::Hashing)?;
        let h = self.hasher.clone();
        let real = stored.is_some();
        let stored: String = stored.unwrap_or(&self.dummy_hash).to_owned();
        let v = tokio::task::spawn_blocking(move || h.verify(&password, &stored))
            .await
            .map_err(|_| SignInError::Hashing)?
            .map_err(|_| SignInError::Hashing)?;
        Ok(if real { v } else { Verification::Mismatch })
    }
}

/// A successful sign-in: the new session and the cookie token that names it (shown once).
#[derive(Debug)]
pub struct SignIn {
    pub user: User,
    pub session: Session,
    pub token: OpaqueToken,
}

/// Checks a password sign-in and opens a session.
pub async fn sign_in<R>(
    repo: &R,
    checker: &PasswordChecker,
    clock: &dyn Clock,
    organisation: &str,
    email: &str,
    password: SecretString,
) -> Result<SignIn, SignInError>
where
    R: TenantRepository + UserRepository + SessionRepository,
{
    let user = match (TenantSlug::parse(organisation), Email::parse(email)) {
        (Ok(slug), Ok(email)) => match repo.tenant_by_slug(&slug).await? {
            Some(tenant) => repo.user_by_email(tenant.id, &email).await?,
            None => None,
        },
        _ => None,
    };
    let usable = user.as_ref().filter(|u| u.status == UserStatus::Active);
    let stored = usable.and_then(|u| u.password_hash.as_deref());
    let verdict = checker.verify(password, stored).await?;
    let user = match (verdict, usable) {
        (Verification::Match, Some(u)) => u.clone(),
        (Verification::MatchRehashed(new_hash), Some(u)) => {
            repo.set_password_hash(u.tenant_id, u.id, &new_hash).await?;
            u.clone()
        }
        _ => return Err(SignInError::InvalidCredentials),
    };
    let token = OpaqueToken::generate().map_err(|_| SignInError::Hashing)?;
    let now = clock.now();
    let session = Session {
        token_hash: token.hash(),
        tenant_id: user.tenant_id,
        user_id: user.id,
        role: user.role,
        created_at: now,
        last_seen_at: now,
    };
    repo.create_session(&session).await?;
    Ok(SignIn {
        user,
        session,
        token,
    })
}
