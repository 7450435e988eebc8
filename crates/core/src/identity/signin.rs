//! Password sign-in.
//!
//! The answer to a failed sign-in is the same whether the organisation, the account or the
//! password was wrong, and takes the same work: an unknown account is checked against a
//! dummy hash, so neither the reply nor its timing tells an attacker which accounts exist.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use secrecy::SecretString;
use telesafe_crypto::password::Verification;
use telesafe_crypto::{OpaqueToken, PasswordHasher};
use tokio::sync::Semaphore;

use super::email::Email;
use super::events::{AuthEvent, AuthEventKind, AuthEventRepository};
use super::mfa::{self, MfaRepository};
use super::model::{TenantSlug, User, UserStatus};
use super::passkey::{PasskeyRecord, PasskeyRepository};
use super::password::normalise;
use super::repo::{SessionRepository, TenantRepository, UserRepository};
use super::session::{Session, SessionStage};

use super::throttle::{self, AddressThrottle};
use crate::clock::Clock;
use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong organisation, account, password, or an account that may not sign in (locked,
    /// not activated, backing off): deliberately one answer for all of them.
    #[error("the organisation, email or password is not right")]
    InvalidCredentials,
    /// Too many failures from this network address; says nothing about any account.
    #[error("too many attempts from your network; try again in {} seconds", retry_after.as_secs().max(1))]
    Throttled { retry_after: std::time::Duration },
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
    evaluated: Arc<AtomicU64>,
}

impl PasswordChecker {
    /// `permits` bounds concurrent hashing; one per core is a good start.
    pub async fn new(permits: usize) -> Result<Self, SignInError> {
        let hasher = PasswordHasher::owasp();
        let h = hasher.clone();
        let dummy = tokio::task::spawn_blocking(move || {
            h.hash(&SecretString::from("dummy password for timing equalisation".to_owned()))
        })
        .await
        .map_err(|_| SignInError::Hashing)?
        .map_err(|_| SignInError::Hashing)?;
        Ok(Self {
            hasher,
            permits: Arc::new(Semaphore::new(permits.max(1))),
            dummy_hash: dummy.into(),
            evaluated: Arc::default(),
        })
    }

    /// How many passwords have been checked against a real account's hash (dummy checks
    /// for unknown, locked or throttled accounts are not counted).
    pub fn evaluated(&self) -> u64 {
        self.evaluated.load(Ordering::Relaxed)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: SecretString) -> Result<String, SignInError> {
        let _permit = self.permits.acquire().await.map_err(|_| SignInError::Hashing)?;
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
        let _permit = self.permits.acquire().await.map_err(|_| SignInError::Hashing)?;
        let h = self.hasher.clone();
        let real = stored.is_some();
        if real {
            self.evaluated.fetch_add(1, Ordering::Relaxed);
        }
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

/// What a client presented.
#[derive(Debug)]
pub struct SignInAttempt<'a> {
    pub organisation: &'a str,
    pub email: &'a str,
    pub password: SecretString,
    pub source: Option<IpAddr>,
    pub user_agent: &'a str,
}

/// Checks a password sign-in and opens a session, applying per-address and per-account
/// throttling and recording an event for every outcome on a known organisation.
pub async fn sign_in<R>(
    repo: &R,
    checker: &PasswordChecker,
    addresses: &AddressThrottle,
    clock: &dyn Clock,
    attempt: SignInAttempt<'_>,
) -> Result<SignIn, SignInError>
where
    R: TenantRepository + UserRepository + SessionRepository + AuthEventRepository + MfaRepository,
{
    let now = clock.now();
    if let Some(until) = addresses.blocked_until(attempt.source, now) {
        return Err(SignInError::Throttled { retry_after: until.since(now) });
    }
    let source = attempt.source.map(|a| a.to_string()).unwrap_or_default();
    let tenant = match TenantSlug::parse(attempt.organisation) {
        Ok(slug) => repo.tenant_by_slug(&slug).await?,
        Err(_) => None,
    };
    let user = match (&tenant, Email::parse(attempt.email)) {
        (Some(t), Ok(email)) => repo.user_by_email(t.id, &email).await?,
        _ => None,
    };
    let event = |kind, user: Option<&User>, outcome| {
        tenant
            .as_ref()
            .map(|t| AuthEvent::new(t.id, now, kind, user.map(|u| u.id), &source, outcome))
    };

    // Whether the real hash may be evaluated, or why not.
    let (evaluate, refusal) = match &user {
        Some(u) if u.status == UserStatus::Active && u.password_hash.is_some() => {
            if throttle::account_retry_at(u.failed_attempts, u.last_failed_at) > now {
                (false, "backing_off")
            } else if repo
                .reserve_sign_in_attempt(
                    u.tenant_id,
                    u.id,
                    now,
                    throttle::ACCOUNT_WINDOW,
                    throttle::ACCOUNT_MAX_FAILURES,
                )
                .await?
            {
                (true, "bad_credentials")
            } else {
                (false, "attempts_exhausted")
            }
        }
        Some(u) if u.status == UserStatus::Locked => (false, "locked"),
        Some(_) => (false, "not_activated"),
        None => (false, "unknown_account"),
    };
    let stored =
        if evaluate { user.as_ref().and_then(|u| u.password_hash.as_deref()) } else { None };
    let verdict = checker.verify(normalise(&attempt.password), stored).await?;

    let user = match (verdict, user) {
        (Verification::Match, Some(u)) if evaluate => u,
        (Verification::MatchRehashed(new_hash), Some(u)) if evaluate => {
            repo.set_password_hash(u.tenant_id, u.id, &new_hash).await?;
            u
        }
        (_, user) => {
            addresses.record_failure(attempt.source, now);
            let kind = match refusal {
                "backing_off" | "attempts_exhausted" => AuthEventKind::SignInThrottled,
                _ => AuthEventKind::SignInFailed,
            };
            if let Some(e) = event(kind, user.as_ref(), refusal) {
                repo.record_auth_event(&e).await?;
            }
            if let (true, Some(u)) = (evaluate, &user) {
                let locked = repo
                    .record_sign_in_failure(u.tenant_id, u.id, now, throttle::ACCOUNT_MAX_FAILURES)
                    .await?;
                if locked {
                    tracing::warn!(
                        security_event = "account_locked",
                        user = %u.id,
                        tenant = %u.tenant_id,
                        "account locked after too many failed sign-ins; an administrator must unlock it"
                    );
                    if let Some(e) =
                        event(AuthEventKind::AccountLocked, Some(u), "too_many_failures")
                    {
                        repo.record_auth_event(&e).await?;
                    }
                }
            }
            return Err(SignInError::InvalidCredentials);
        }
    };

    if user.failed_attempts > 0 || evaluate {
        repo.clear_sign_in_failures(user.tenant_id, user.id).await?;
    }
    addresses.record_success(attempt.source);
    let has_mfa = mfa::has_mfa(repo, &user).await?;
    let stage = match (has_mfa, user.role.is_staff()) {
        (true, _) => SessionStage::MfaPending,
        (false, true) => SessionStage::EnrollRequired,
        (false, false) => SessionStage::Full,
    };
    open_session(repo, user, stage, None, &source, attempt.user_agent, now, "ok").await
}

/// Opens a session for `user`, who has just proved who they are, and records the sign-in.
#[allow(clippy::too_many_arguments, reason = "one call site per sign-in method")]
async fn open_session<R>(
    repo: &R,
    user: User,
    stage: SessionStage,
    mfa_at: Option<crate::clock::Timestamp>,
    source: &str,
    user_agent: &str,
    now: crate::clock::Timestamp,
    outcome: &'static str,
) -> Result<SignIn, SignInError>
where
    R: SessionRepository + AuthEventRepository,
{
    let token = OpaqueToken::generate().map_err(|_| SignInError::Hashing)?;
    let csrf = OpaqueToken::generate().map_err(|_| SignInError::Hashing)?;
    let session = Session {
        stage,
        mfa_at,
        token_hash: token.hash(),
        tenant_id: user.tenant_id,
        user_id: user.id,
        role: user.role,
        created_at: now,
        last_seen_at: now,
        csrf_token: csrf.reveal().to_owned(),
        source: source.to_owned(),
        user_agent: describe_user_agent(user_agent),
    };
    repo.create_session(&session).await?;
    repo.record_auth_event(&AuthEvent::new(
        user.tenant_id,
        now,
        AuthEventKind::SignIn,
        Some(user.id),
        source,
        outcome,
    ))
    .await?;
    Ok(SignIn { user, session, token })
}

/// What a passkey-only sign-in presented: the credential the authenticator chose and the
/// user handle it returned. The signature check itself is the caller's `verify`.
#[derive(Debug)]
pub struct PasskeyAttempt<'a> {
    pub credential_id: &'a str,
    pub user_handle: Option<uuid::Uuid>,
    pub source: Option<IpAddr>,
    pub user_agent: &'a str,
}

/// Signs in with a passkey alone (a discoverable credential with user verification, so
/// possession and PIN or biometric: two factors in one step). The same rules as a
/// password apply: per-address and per-account throttling, the 100-failures-an-hour lock,
/// locked and unactivated accounts refused, one answer for every kind of failure.
///
/// `verify` runs the WebAuthn assertion check against the stored credential and returns
/// the credential to store back when its signature counter moved.
pub async fn sign_in_with_passkey<R, F>(
    repo: &R,
    addresses: &AddressThrottle,
    clock: &dyn Clock,
    attempt: PasskeyAttempt<'_>,
    verify: F,
) -> Result<SignIn, SignInError>
where
    R: UserRepository + SessionRepository + AuthEventRepository + PasskeyRepository,
    F: FnOnce(&PasskeyRecord) -> Result<Option<String>, ()>,
{
    let now = clock.now();
    if let Some(until) = addresses.blocked_until(attempt.source, now) {
        return Err(SignInError::Throttled { retry_after: until.since(now) });
    }
    let source = attempt.source.map(|a| a.to_string()).unwrap_or_default();
    let refuse = async |user: Option<&User>, kind: AuthEventKind, outcome: &'static str| {
        addresses.record_failure(attempt.source, now);
        if let Some(u) = user {
            repo.record_auth_event(&AuthEvent::new(
                u.tenant_id,
                now,
                kind,
                Some(u.id),
                &source,
                outcome,
            ))
            .await?;
        }
        Err::<SignIn, _>(SignInError::InvalidCredentials)
    };
    let Some(record) = repo.passkey_by_credential(attempt.credential_id).await? else {
        return refuse(None, AuthEventKind::SignInFailed, "unknown_passkey").await;
    };
    // The authenticator returns the user handle it stored at registration; it must name
    // the account the credential belongs to.
    if attempt.user_handle != Some(*record.user_id.as_uuid()) {
        return refuse(None, AuthEventKind::SignInFailed, "unknown_passkey").await;
    }
    let Some(user) = repo.user_by_id(record.tenant_id, record.user_id).await? else {
        return refuse(None, AuthEventKind::SignInFailed, "unknown_passkey").await;
    };
    match user.status {
        UserStatus::Active => {}
        UserStatus::Locked => {
            return refuse(Some(&user), AuthEventKind::SignInFailed, "locked").await;
        }
        _ => return refuse(Some(&user), AuthEventKind::SignInFailed, "not_activated").await,
    }
    if throttle::account_retry_at(user.failed_attempts, user.last_failed_at) > now {
        return refuse(Some(&user), AuthEventKind::SignInThrottled, "backing_off").await;
    }
    if !repo
        .reserve_sign_in_attempt(
            user.tenant_id,
            user.id,
            now,
            throttle::ACCOUNT_WINDOW,
            throttle::ACCOUNT_MAX_FAILURES,
        )
        .await?
    {
        return refuse(Some(&user), AuthEventKind::SignInThrottled, "attempts_exhausted").await;
    }
    let Ok(updated) = verify(&record) else {
        if repo
            .record_sign_in_failure(user.tenant_id, user.id, now, throttle::ACCOUNT_MAX_FAILURES)
            .await?
        {
            tracing::warn!(
                security_event = "account_locked",
                user = %user.id,
                tenant = %user.tenant_id,
                "account locked after too many failed sign-ins; an administrator must unlock it"
            );
            repo.record_auth_event(&AuthEvent::new(
                user.tenant_id,
                now,
                AuthEventKind::AccountLocked,
                Some(user.id),
                &source,
                "too_many_failures",
            ))
            .await?;
        }
        return refuse(Some(&user), AuthEventKind::SignInFailed, "passkey_invalid").await;
    };
    repo.record_passkey_use(record.tenant_id, record.id, updated.as_deref(), now).await?;
    repo.clear_sign_in_failures(user.tenant_id, user.id).await?;
    addresses.record_success(attempt.source);
    open_session(
        repo,
        user,
        SessionStage::Full,
        Some(now),
        &source,
        attempt.user_agent,
        now,
        "passkey",
    )
    .await
}

/// A short, human description of a browser for the sessions page ("Firefox on Linux"),
/// keeping nothing else of the User-Agent string.
pub fn describe_user_agent(ua: &str) -> String {
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    let os = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    match (browser, os) {
        (Some(b), Some(o)) => format!("{b} on {o}"),
        (Some(b), None) => b.to_owned(),
        (None, Some(o)) => format!("a browser on {o}"),
        (None, None) => "an unknown client".to_owned(),
    }
}
