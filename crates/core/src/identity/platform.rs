//! The platform above the tenants: its own tenant (organisation code `platform`), which
//! holds only platform operators, and what operators do: create organisations with their
//! first administrator, and see each organisation's size and health. Operators never see
//! an organisation's people or patients; they have no account in any clinic.

use telesafe_crypto::OpaqueToken;

use super::activation::{self, ActivationRepository};
use super::email::Email;
use super::model::{DisplayName, PLATFORM_SLUG, Role, Tenant, TenantSlug, User};
use super::repo::{PatientRepository, TenantRepository, UserRepository};
use crate::clock::Timestamp;
use crate::ids::TenantId;
use crate::repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("the organisation code \"{PLATFORM_SLUG}\" is reserved")]
    Reserved,
    #[error("an organisation with that code already exists")]
    TakenSlug,
    #[error("{0}")]
    Repo(#[from] RepoError),
}

/// The platform tenant, created on first use.
pub async fn platform_tenant<R: TenantRepository>(
    repo: &R,
    now: Timestamp,
) -> Result<Tenant, RepoError> {
    let slug = TenantSlug::parse(PLATFORM_SLUG).map_err(|_| RepoError::Backend("slug".into()))?;
    if let Some(t) = repo.tenant_by_slug(&slug).await? {
        return Ok(t);
    }
    let t = Tenant {
        id: TenantId::new_v7(),
        slug: slug.clone(),
        name: DisplayName::parse("Telesafe platform")
            .map_err(|_| RepoError::Backend("name".into()))?,
        created_at: now,
    };
    match repo.create_tenant(&t).await {
        Ok(()) => Ok(t),
        // Created concurrently by another process: use theirs.
        Err(RepoError::Conflict) => repo.tenant_by_slug(&slug).await?.ok_or(RepoError::NotFound),
        Err(e) => Err(e),
    }
}

/// Creates an organisation. The platform's own code is refused.
pub async fn create_tenant<R: TenantRepository>(
    repo: &R,
    slug: TenantSlug,
    name: DisplayName,
    now: Timestamp,
) -> Result<Tenant, PlatformError> {
    if slug.is_platform() {
        return Err(PlatformError::Reserved);
    }
    let t = Tenant { id: TenantId::new_v7(), slug, name, created_at: now };
    match repo.create_tenant(&t).await {
        Ok(()) => Ok(t),
        Err(RepoError::Conflict) => Err(PlatformError::TakenSlug),
        Err(e) => Err(e.into()),
    }
}

/// Creates a platform operator (pending until they follow the returned activation link).
pub async fn create_operator<R>(
    repo: &R,
    name: DisplayName,
    email: Email,
    now: Timestamp,
) -> Result<(User, OpaqueToken), RepoError>
where
    R: TenantRepository + ActivationRepository + UserRepository + PatientRepository,
{
    let platform = platform_tenant(repo, now).await?;
    activation::create_pending_account(repo, platform.id, Role::PlatformOperator, name, email, now)
        .await
}

/// One organisation as an operator sees it: size, not content.
#[derive(Debug, Clone)]
pub struct TenantSummary {
    pub tenant: Tenant,
    pub staff: usize,
    pub patients: usize,
    pub pending: usize,
}

/// Every organisation but the platform's own, with its size.
pub async fn overview<R>(repo: &R) -> Result<Vec<TenantSummary>, RepoError>
where
    R: TenantRepository + UserRepository + PatientRepository,
{
    let mut out = Vec::new();
    for tenant in repo.list_tenants().await?.into_iter().filter(|t| !t.slug.is_platform()) {
        let users = repo.list_users(tenant.id).await?;
        let patients = repo.list_patients(tenant.id).await?.len();
        let staff = users.iter().filter(|u| u.role.is_staff()).count();
        let pending =
            users.iter().filter(|u| u.status == super::model::UserStatus::Pending).count();
        out.push(TenantSummary { tenant, staff, patients, pending });
    }
    Ok(out)
}
