//! What identity needs from storage. Implemented once per backend in `telesafe-store` and
//! checked by one conformance suite.
//!
//! Every method that touches tenant data takes the `TenantId` it is scoped to; the store
//! enforces it in the query and, on PostgreSQL, again with row-level security.

use crate::ids::PatientId;
use std::future::Future;

use telesafe_crypto::TokenHash;

use super::email::Email;
use super::model::{NewUser, Patient, SetupToken, Tenant, TenantSlug, User};
use super::session::{Session, TenantSessionLimits};
use crate::clock::Timestamp;
use crate::ids::{TenantId, UserId};
use crate::repo::RepoError;

pub trait TenantRepository: Send + Sync {
    fn create_tenant(&self, tenant: &Tenant) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn tenant_by_slug(
        &self,
        slug: &TenantSlug,
    ) -> impl Future<Output = Result<Option<Tenant>, RepoError>> + Send;
    fn list_tenants(&self) -> impl Future<Output = Result<Vec<Tenant>, RepoError>> + Send;
    /// The tenant's own session limits (all unset by default).
    fn tenant_session_limits(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<TenantSessionLimits, RepoError>> + Send;
    fn set_tenant_session_limits(
        &self,
        tenant: TenantId,
        limits: TenantSessionLimits,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}

pub trait UserRepository: Send + Sync {
    fn create_user(&self, user: &NewUser) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn user_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> impl Future<Output = Result<Option<User>, RepoError>> + Send;
    fn user_by_id(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> impl Future<Output = Result<Option<User>, RepoError>> + Send;
    fn list_users(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<User>, RepoError>> + Send;
    /// Reserves one sign-in attempt for the account, atomically: succeeds only when the
    /// account is active and has fewer than `max` failures in the window ending at `now`
    /// (a window older than `window` starts afresh). Returns whether it was granted.
    fn reserve_sign_in_attempt(
        &self,
        tenant: TenantId,
        id: UserId,
        now: Timestamp,
        window: std::time::Duration,
        max: u32,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Records that a reserved attempt failed at `now`; locks the account when it has
    /// reached `max` failures. Returns whether this call locked it.
    fn record_sign_in_failure(
        &self,
        tenant: TenantId,
        id: UserId,
        now: Timestamp,
        max: u32,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Forgets failures after a successful sign-in.
    fn clear_sign_in_failures(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Locks or unlocks an account (unlocking also forgets its failures).
    fn set_user_status(
        &self,
        tenant: TenantId,
        id: UserId,
        status: super::model::UserStatus,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Replaces the password hash (activation, change, or a rehash after sign-in).
    fn set_password_hash(
        &self,
        tenant: TenantId,
        id: UserId,
        hash: &str,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
}

pub trait PatientRepository: Send + Sync {
    fn create_patient(
        &self,
        patient: &Patient,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn list_patients(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<Patient>, RepoError>> + Send;
    fn patient_by_id(
        &self,
        tenant: TenantId,
        id: PatientId,
    ) -> impl Future<Output = Result<Option<Patient>, RepoError>> + Send;
    /// The patient whose portal account `user` is.
    fn patient_by_user(
        &self,
        tenant: TenantId,
        user: crate::ids::UserId,
    ) -> impl Future<Output = Result<Option<Patient>, RepoError>> + Send;
}

pub trait SessionRepository: Send + Sync {
    fn create_session(
        &self,
        session: &Session,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Looks a session up by the hash of its cookie. The only identity lookup that is not
    /// tenant-scoped, because the cookie is what tells us the tenant.
    fn session_by_hash(
        &self,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<Option<Session>, RepoError>> + Send;
    fn touch_session(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn delete_session(
        &self,
        tenant: TenantId,
        hash: &TokenHash,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// The account's sessions, most recently active first.
    fn list_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> impl Future<Output = Result<Vec<Session>, RepoError>> + Send;
    /// Ends every session of the account except `keep`; returns how many ended.
    fn delete_sessions_of_user(
        &self,
        tenant: TenantId,
        user: UserId,
        keep: Option<&TokenHash>,
    ) -> impl Future<Output = Result<u64, RepoError>> + Send;
}

pub trait SetupTokenRepository: Send + Sync {
    fn create_setup_token(
        &self,
        token: &SetupToken,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Whether the token exists, is unused and has not expired at `now` (without using it).
    fn setup_token_usable(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Marks the token used if it exists, is unused and has not expired at `now`; returns
    /// whether it did. Atomic: two concurrent calls never both succeed.
    fn consume_setup_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
}
