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

/// Demo patients' demographics, by the email of their portal account (`None`: the patient
/// registered without one): (given, family, birth date, gender).
const DEMO_RECORDS: &[(Option<&str>, &str, &str, &str, &str)] = &[
    (Some("ana.lopez@demo.telesafe.test"), "Ana", "López", "1948-05-12", "female"),
    (Some("walter.brown@demo.telesafe.test"), "Walter", "Brown", "1941-09-03", "male"),
    (None, "Maria", "Santos", "1955-02-20", "female"),
];

/// Gives every demo patient an encrypted FHIR record (demographics and a week of vital
/// signs) unless they have one. Written as the system, audited like any write.
pub async fn seed_records(
    state: &crate::state::AppState,
    clinic: &DemoClinic,
) -> Result<(), crate::fhir::FhirError> {
    use serde_json::json;
    use telesafe_core::records::ResourceRepository;
    let tenant = clinic.tenant.id;
    let patients = state.store.list_patients(tenant).await?;
    let now = state.clock.now();
    for (n, p) in patients.iter().enumerate() {
        if state.store.current(tenant, "Patient", &p.id.to_string()).await?.is_some() {
            continue;
        }
        let email = p
            .user_id
            .and_then(|u| clinic.users.iter().find(|x| x.id == u))
            .map(|u| u.email.as_str().to_owned());
        let Some((_, given, family, born, gender)) =
            DEMO_RECORDS.iter().find(|r| r.0.map(str::to_owned) == email)
        else {
            continue;
        };
        let patient = json!({
            "resourceType": "Patient",
            "identifier": [{"system": "urn:telesafe:demo:mrn", "value": format!("MRN-{:04}", 1001 + n)}],
            "active": true,
            "name": [{"use": "official", "family": family, "given": [given]}],
            "gender": gender,
            "birthDate": born,
        });
        crate::fhir::write_as_system(
            state,
            tenant,
            "Patient",
            &p.id.to_string(),
            Some(p.id),
            patient,
        )
        .await?;
        if p.user_id.is_none() {
            continue;
        }
        // A week of morning readings: heart rate and SpO2 (LOINC, UCUM).
        for day in 0..7i64 {
            let at = telesafe_core::Timestamp::from_unix_millis(
                now.unix_millis() - (7 - day) * 86_400_000,
            );
            for (code, display, value, unit, ucum) in [
                ("8867-4", "Heart rate", 68 + (day * 3) % 9, "beats/minute", "/min"),
                (
                    "59408-5",
                    "Oxygen saturation in Arterial blood by Pulse oximetry",
                    95 + day % 3,
                    "%",
                    "%",
                ),
            ] {
                let obs = json!({
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [{"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs", "display": "Vital Signs"
                    }]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display},
                    "subject": {"reference": format!("Patient/{}", p.id)},
                    "effectiveDateTime": at.to_rfc3339(),
                    "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": ucum},
                });
                let id = uuid::Uuid::now_v7().to_string();
                crate::fhir::write_as_system(state, tenant, "Observation", &id, Some(p.id), obs)
                    .await?;
            }
        }
    }
    Ok(())
}
