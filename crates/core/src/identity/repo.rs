//! What identity needs from storage. Implemented once per backend in `telesafe-store` and
//! checked by one conformance suite.
//!
//! Every method that touches tenant data takes the `TenantId` it is scoped to; the store
//! enforces it in the query and, on PostgreSQL, again with row-level security.

use std::future::Future;

use telesafe_crypto::TokenHash;

use super::email::Email;
use super::model::{NewUser, Patient, SetupToken, Tenant, TenantSlug, User};
use super::session::Session;
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
}

pub trait SetupTokenRepository: Send + Sync {
    fn create_setup_token(
        &self,
        token: &SetupToken,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Marks the token used if it exists, is unused and has not expired at `now`; returns
    /// whether it did. Atomic: two concurrent calls never both succeed.
    fn consume_setup_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
}
