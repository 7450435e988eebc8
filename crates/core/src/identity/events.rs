//! Authentication events: every sign-in, failure, throttle, lockout, unlock, sign-out and
//! session revocation, with actor, source address and outcome. Ids and codes only; the
//! audit-log issue makes these tamper-evident.

use std::future::Future;

use crate::clock::Timestamp;
use crate::ids::{TenantId, UserId};
use crate::repo::RepoError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEventKind {
    SignIn,
    SignInFailed,
    SignInThrottled,
    AccountLocked,
    AccountUnlocked,
    SignedOut,
    SignedOutEverywhere,
    SessionRevoked,
    MfaEnrolled,
    MfaVerified,
    MfaFailed,
    MfaReplayed,
    RecoveryCodeUsed,
    PasswordSet,
    PasskeyAdded,
    PasskeyRemoved,
    SessionLimitsChanged,
}

impl AuthEventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::SignInFailed => "sign_in_failed",
            Self::SignInThrottled => "sign_in_throttled",
            Self::AccountLocked => "account_locked",
            Self::AccountUnlocked => "account_unlocked",
            Self::SignedOut => "signed_out",
            Self::SignedOutEverywhere => "signed_out_everywhere",
            Self::SessionRevoked => "session_revoked",
            Self::MfaEnrolled => "mfa_enrolled",
            Self::MfaVerified => "mfa_verified",
            Self::MfaFailed => "mfa_failed",
            Self::MfaReplayed => "mfa_replayed",
            Self::RecoveryCodeUsed => "recovery_code_used",
            Self::PasswordSet => "password_set",
            Self::PasskeyAdded => "passkey_added",
            Self::PasskeyRemoved => "passkey_removed",
            Self::SessionLimitsChanged => "session_limits_changed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::SignIn,
            Self::SignInFailed,
            Self::SignInThrottled,
            Self::AccountLocked,
            Self::AccountUnlocked,
            Self::SignedOut,
            Self::SignedOutEverywhere,
            Self::SessionRevoked,
            Self::MfaEnrolled,
            Self::MfaVerified,
            Self::MfaFailed,
            Self::MfaReplayed,
            Self::RecoveryCodeUsed,
            Self::PasswordSet,
            Self::PasskeyAdded,
            Self::PasskeyRemoved,
            Self::SessionLimitsChanged,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Whether a security officer should look at it.
    pub const fn is_security_event(self) -> bool {
        matches!(
            self,
            Self::AccountLocked
                | Self::AccountUnlocked
                | Self::SignInThrottled
                | Self::MfaReplayed
                | Self::RecoveryCodeUsed
                | Self::PasskeyRemoved
                | Self::SessionLimitsChanged
        )
    }
}

/// Outcome codes are a closed set written by the domain; reading maps them back to
/// statics. A code written here must be listed, or it reads back as `other`.
const OUTCOMES: &[&str] = &[
    "ok",
    "bad_credentials",
    "wrong_code",
    "replayed",
    "enrolled",
    "verified",
    "recovery_code",
    "activated",
    "changed",
    "backing_off",
    "attempts_exhausted",
    "locked",
    "not_activated",
    "unknown_account",
    "too_many_failures",
    "admin",
    "user",
    "passkey",
    "passkey_invalid",
    "unknown_passkey",
    "added",
];

/// The static outcome code for a stored one (`other` for a code this build does not know).
pub fn outcome_from_stored(s: &str) -> &'static str {
    OUTCOMES.iter().find(|o| **o == s).copied().unwrap_or("other")
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthEvent {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub at: Timestamp,
    pub kind: AuthEventKind,
    /// The account concerned, when known.
    pub user_id: Option<UserId>,
    /// The client's network address as the server saw it (empty when unknown).
    pub source: String,
    /// A short machine-readable outcome (`ok`, `bad_credentials`, `locked`, ...).
    pub outcome: &'static str,
}

impl AuthEvent {
    pub fn new(
        tenant_id: TenantId,
        at: Timestamp,
        kind: AuthEventKind,
        user_id: Option<UserId>,
        source: &str,
        outcome: &'static str,
    ) -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            tenant_id,
            at,
            kind,
            user_id,
            source: source.to_owned(),
            outcome,
        }
    }
}

pub trait AuthEventRepository: Send + Sync {
    fn record_auth_event(
        &self,
        e: &AuthEvent,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// How many events of `kinds` happened at or after `since`.
    fn count_auth_events(
        &self,
        tenant: TenantId,
        kinds: &[AuthEventKind],
        since: Timestamp,
    ) -> impl Future<Output = Result<u64, RepoError>> + Send;
    /// Newest first; `user` narrows to one account.
    fn list_auth_events(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<AuthEvent>, RepoError>> + Send;
}

/// Where the audit log's copy of the authentication events has got to: the newest event
/// copied, by (time, id).
pub type MirrorPosition = (Timestamp, uuid::Uuid);

/// Authentication events in order, for copying them into the tamper-evident audit log
/// (every tenant's: the copier runs as the platform).
pub trait AuthEventFeed: Send + Sync {
    /// Events after `after` (by time, then id) and at or before `until`, oldest first.
    fn auth_events_after(
        &self,
        after: Option<MirrorPosition>,
        until: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<AuthEvent>, RepoError>> + Send;
    fn mirror_position(
        &self,
    ) -> impl Future<Output = Result<Option<MirrorPosition>, RepoError>> + Send;
    fn set_mirror_position(
        &self,
        at: MirrorPosition,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}
