//! The demo clinic: one tenant with staff of every role and a few patients, all sharing
//! one randomly generated password. Used by `telesafe demo` and by test fixtures.
//!
//! The people are fictional; their emails use the reserved `.test` top-level domain
//! (RFC 2606), so no message can ever reach a real mailbox.

use secrecy::{ExposeSecret, SecretString};
use telesafe_core::access::CareTeamRepository;
use telesafe_core::identity::{
    DisplayName, Email, PasswordChecker, Patient, PatientRepository, Role, Tenant,
    TenantRepository, TenantSlug, User, UserRepository, UserStatus,
};
use telesafe_core::{Clock, PatientId, RepoError, TenantId};

/// The demo tenant's organisation code.
pub const DEMO_SLUG: &str = "demo";

/// Who is in the demo clinic: (email, name, role). Patients get a patient record too.
pub const DEMO_PEOPLE: &[(&str, &str, Role)] = &[
    ("admin@demo.telesafe.test", "Alex Morgan", Role::TenantAdmin),
    ("dr.rivera@demo.telesafe.test", "Dr. Sam Rivera", Role::Clinician),
    ("nurse.kim@demo.telesafe.test", "Jo Kim", Role::Nurse),
    ("frontdesk@demo.telesafe.test", "Pat Lee", Role::FrontDesk),
    ("security@demo.telesafe.test", "Morgan Shaw", Role::SecurityOfficer),
    ("ana.lopez@demo.telesafe.test", "Ana López", Role::Patient),
    ("walter.brown@demo.telesafe.test", "Walter Brown", Role::Patient),
];

/// The demo's platform operator, in the platform tenant (organisation code `platform`).
pub const DEMO_OPERATOR: (&str, &str) = ("operator@platform.telesafe.test", "Robin Hale");

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("demo data is malformed: {0}")]
    Data(&'static str),
    #[error("could not hash the demo password")]
    Hash,
}

/// A seeded clinic.
#[derive(Debug, Clone)]
pub struct DemoClinic {
    pub tenant: Tenant,
    pub users: Vec<User>,
}

/// A fresh random demo password: 24 characters of base64url (144 bits).
pub fn generate_password() -> Result<SecretString, telesafe_crypto::RandomError> {
    let t = telesafe_crypto::OpaqueToken::generate()?;
    Ok(SecretString::from(t.reveal()[..24].to_owned()))
}

/// Creates the demo clinic unless it already exists; returns it either way.
pub async fn seed<R>(
    repo: &R,
    passwords: &PasswordChecker,
    clock: &dyn Clock,
    password: &SecretString,
) -> Result<DemoClinic, SeedError>
where
    R: TenantRepository + UserRepository + PatientRepository + CareTeamRepository,
{
    let slug = TenantSlug::parse(DEMO_SLUG).map_err(|_| SeedError::Data("slug"))?;
    seed_operator(repo, passwords, clock, password).await?;
    if let Some(tenant) = repo.tenant_by_slug(&slug).await? {
        let users = repo.list_users(tenant.id).await?;
        return Ok(DemoClinic { tenant, users });
    }
    let now = clock.now();
    let tenant = Tenant {
        id: TenantId::new_v7(),
        slug,
        name: DisplayName::parse("Riverside Demo Clinic").map_err(|_| SeedError::Data("name"))?,
        created_at: now,
    };
    repo.create_tenant(&tenant).await?;
    let hash = passwords
        .hash(SecretString::from(password.expose_secret().to_owned()))
        .await
        .map_err(|_| SeedError::Hash)?;
    let mut users = Vec::new();
    for (email, name, role) in DEMO_PEOPLE {
        let user = User::new(
            tenant.id,
            Email::parse(email).map_err(|_| SeedError::Data("email"))?,
            DisplayName::parse(name).map_err(|_| SeedError::Data("name"))?,
            *role,
            UserStatus::Active,
            Some(hash.clone()),
            now,
        );
        repo.create_user(&user).await?;
        if *role == Role::Patient {
            let p = Patient {
                id: PatientId::new_v7(),
                tenant_id: tenant.id,
                user_id: Some(user.id),
                created_at: now,
            };
            repo.create_patient(&p).await?;
        }
        users.push(user);
    }
    // A patient the clinic registered who has not (yet) activated a portal account.
    let offline =
        Patient { id: PatientId::new_v7(), tenant_id: tenant.id, user_id: None, created_at: now };
    repo.create_patient(&offline).await?;
    // Care teams: Dr. Rivera cares for every demo patient, Nurse Kim for those with an
    // account. (Front desk sees everyone's demographics by policy, not by team.)
    for p in repo.list_patients(tenant.id).await? {
        for u in &users {
            let on_team = match u.role {
                Role::Clinician => true,
                Role::Nurse => p.user_id.is_some(),
                _ => false,
            };
            if on_team {
                repo.add_to_care_team(tenant.id, p.id, u.id, now).await?;
            }
        }
    }
    Ok(DemoClinic { tenant, users })
}

/// The platform tenant and its demo operator, unless they exist.
async fn seed_operator<R>(
    repo: &R,
    passwords: &PasswordChecker,
    clock: &dyn Clock,
    password: &SecretString,
) -> Result<(), SeedError>
where
    R: TenantRepository + UserRepository,
{
    let now = clock.now();
    let platform = telesafe_core::identity::platform::platform_tenant(repo, now).await?;
    let email = Email::parse(DEMO_OPERATOR.0).map_err(|_| SeedError::Data("email"))?;
    if repo.user_by_email(platform.id, &email).await?.is_some() {
        return Ok(());
    }
    let hash = passwords
        .hash(SecretString::from(password.expose_secret().to_owned()))
        .await
        .map_err(|_| SeedError::Hash)?;
    let operator = User::new(
        platform.id,
        email,
        DisplayName::parse(DEMO_OPERATOR.1).map_err(|_| SeedError::Data("name"))?,
        Role::PlatformOperator,
        UserStatus::Active,
        Some(hash),
        now,
    );
    repo.create_user(&operator).await?;
    Ok(())
}
