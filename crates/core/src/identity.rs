//! Identity: tenants, accounts and their roles, sessions, sign-in, and the one-time setup
//! token that creates a deployment's first administrator.

pub mod activation;
pub mod clients;

mod email;

pub mod events;
pub mod mfa;
mod model;
pub mod outbox;
pub mod passkey;
pub mod password;
pub mod platform;
mod repo;
mod session;
pub mod setup;
mod signin;
pub mod stepup;
pub mod throttle;

pub use email::{Email, InvalidEmail};
pub use events::{AuthEvent, AuthEventFeed, AuthEventKind, AuthEventRepository, MirrorPosition};
pub use model::{
    DisplayName, InvalidName, InvalidSlug, NewUser, PLATFORM_SLUG, Patient, Role, SetupToken,
    Tenant, TenantSlug, User, UserStatus,
};
pub use repo::{
    PatientRepository, SessionRepository, SetupTokenRepository, TenantRepository, UserRepository,
};
pub use session::{
    LimitsError, Session, SessionPolicy, SessionStage, SessionState, TenantSessionLimits,
};

pub use signin::{
    PasskeyAttempt, PasswordChecker, SignIn, SignInAttempt, SignInError, describe_user_agent,
    sign_in, sign_in_with_passkey,
};
