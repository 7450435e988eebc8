//! Tenants, users, roles and patients.

use std::fmt;
use std::str::FromStr;

use crate::clock::Timestamp;
use crate::ids::{PatientId, TenantId, UserId};
use telesafe_crypto::TokenHash;

use super::email::Email;

/// A tenant's short name, used in sign-in and in MQTT topics: 2–40 of `a-z`, `0-9`, `-`,
/// not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantSlug(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an organisation code is 2 to 40 lower-case letters, digits or hyphens")]
pub struct InvalidSlug;

impl TenantSlug {
    pub fn parse(raw: &str) -> Result<Self, InvalidSlug> {
        let s = raw.trim().to_lowercase();
        let ok = (2..=40).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok { Ok(Self(s)) } else { Err(InvalidSlug) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the platform's own tenant, which holds only platform operators.
    pub fn is_platform(&self) -> bool {
        self.0 == PLATFORM_SLUG
    }
}

/// The organisation code of the platform's own tenant: platform operators sign in with it.
/// No clinic can take it.
pub const PLATFORM_SLUG: &str = "platform";

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's or organisation's display name: 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a name is 1 to 200 characters without control characters")]
pub struct InvalidName;

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        let s = raw.trim();
        let ok = !s.is_empty() && s.chars().count() <= 200 && !s.chars().any(char::is_control);
        if ok { Ok(Self(s.to_owned())) } else { Err(InvalidName) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One organisation, isolated from every other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: TenantSlug,
    pub name: DisplayName,
    pub created_at: Timestamp,
}

/// What a user is, and so which console they see and which policies apply to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Patient,
    Clinician,
    Nurse,
    FrontDesk,
    SecurityOfficer,
    TenantAdmin,
    /// Runs the deployment above the tenants: creates organisations and their first
    /// administrator, sees their health, and sees no one's clinical data. Lives only in the
    /// platform tenant.
    PlatformOperator,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Patient,
        Role::Clinician,
        Role::Nurse,
        Role::FrontDesk,
        Role::SecurityOfficer,
        Role::TenantAdmin,
        Role::PlatformOperator,
    ];

    /// The roles an organisation's accounts can have.
    pub const TENANT: [Role; 6] = [
        Role::Patient,
        Role::Clinician,
        Role::Nurse,
        Role::FrontDesk,
        Role::SecurityOfficer,
        Role::TenantAdmin,
    ];

    /// Whether an account with this role may exist in the tenant `slug`: platform
    /// operators only in the platform tenant, and nobody else there.
    pub fn allowed_in(self, slug: &TenantSlug) -> bool {
        slug.is_platform() == (self == Role::PlatformOperator)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Clinician => "clinician",
            Role::Nurse => "nurse",
            Role::FrontDesk => "front-desk",
            Role::SecurityOfficer => "security-officer",
            Role::TenantAdmin => "tenant-admin",
            Role::PlatformOperator => "platform-operator",
        }
    }

    /// A label for people.
    pub const fn label(self) -> &'static str {
        match self {
            Role::Patient => "Patient",
            Role::Clinician => "Clinician",
            Role::Nurse => "Nurse",
            Role::FrontDesk => "Front desk",
            Role::SecurityOfficer => "Security officer",
            Role::TenantAdmin => "Administrator",
            Role::PlatformOperator => "Platform operator",
        }
    }

    pub const fn is_staff(self) -> bool {
        !matches!(self, Role::Patient)
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// Whether an account may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// Created, waiting for its owner to set a password through an activation link.
    Pending,
    Active,
    Locked,
}

impl UserStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            UserStatus::Pending => "pending",
            UserStatus::Active => "active",
            UserStatus::Locked => "locked",
        }
    }
}

impl FromStr for UserStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "pending" => Ok(UserStatus::Pending),
            "active" => Ok(UserStatus::Active),
            "locked" => Ok(UserStatus::Locked),
            _ => Err(()),
        }
    }
}

/// An account as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub display_name: DisplayName,
    pub role: Role,
    pub status: UserStatus,
    /// Argon2id PHC string; `None` until the owner activates the account.
    pub password_hash: Option<String>,
    pub created_at: Timestamp,
    /// Failed sign-in attempts counted in the current window (see `throttle`).
    pub failed_attempts: u32,
    /// When the last attempt failed (epoch when never).
    pub last_failed_at: Timestamp,
}

impl User {
    /// A new account with no sign-in history.
    #[allow(clippy::too_many_arguments, reason = "one field each; a builder would add nothing")]
    pub fn new(
        tenant_id: TenantId,
        email: Email,
        display_name: DisplayName,
        role: Role,
        status: UserStatus,
        password_hash: Option<String>,
        created_at: Timestamp,
    ) -> Self {
        Self {
            id: UserId::new_v7(),
            tenant_id,
            email,
            display_name,
            role,
            status,
            password_hash,
            created_at,
            failed_attempts: 0,
            last_failed_at: Timestamp::from_unix_millis(0),
        }
    }
}

impl fmt::Debug for User {
    // Names and emails are personal data and the hash is a secret: neither may reach a log
    // through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("role", &self.role)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// An account to create.
pub type NewUser = User;

/// A patient known to a tenant. Clinical and demographic content lives in the encrypted
/// record; this row links the patient to their account, if they have one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    pub id: PatientId,
    pub tenant_id: TenantId,
    pub user_id: Option<UserId>,
    pub created_at: Timestamp,
}

/// A one-time token that lets the first administrator set up a fresh deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupToken {
    pub hash: TokenHash,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(TenantSlug::parse(" Demo-Clinic ").unwrap().as_str(), "demo-clinic");
        for bad in ["", "a", "-x", "x-", "has space", "ünï", &"a".repeat(41)] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!(!Role::Patient.is_staff());
        assert!(Role::SecurityOfficer.is_staff());
    }

    #[test]
    fn user_debug_hides_personal_data_and_hash() {
        let u = User {
            id: UserId::new_v7(),
            tenant_id: TenantId::new_v7(),
            email: Email::parse("ana.patient@example.org").unwrap(),
            display_name: DisplayName::parse("Ana Example").unwrap(),
            role: Role::Patient,
            status: UserStatus::Active,
            password_hash: Some("$argon2id$secret".into()),
            created_at: Timestamp::from_unix_millis(0),
            failed_attempts: 0,
            last_failed_at: Timestamp::from_unix_millis(0),
        };
        let dbg = format!("{u:?}");
        for leaked in ["ana.patient", "Ana Example", "argon2id"] {
            assert!(!dbg.contains(leaked), "{dbg}");
        }
    }
}
