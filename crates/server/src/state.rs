//! What every handler can reach.

use std::sync::Arc;

use telesafe_core::Clock;
use telesafe_core::identity::PasswordChecker;
use telesafe_core::identity::mfa::MfaKeys;

use telesafe_core::identity::throttle::AddressThrottle;
use telesafe_store::Store;

use crate::assets::Assets;
use crate::config::Config;
use crate::http::metrics::Metrics;

/// How this deployment protects itself, as shown on the security console.
#[derive(Debug, Clone, Default)]
pub struct Posture {
    /// `TLS (self-signed)`, `TLS (configured certificate)` or `behind a TLS proxy`.
    pub transport: String,
    /// SHA-256 fingerprint of the served certificate, when TLS is on.
    pub certificate_fingerprint: Option<String>,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Whether PostgreSQL row-level security applies to the server's database role.
    pub row_level_security: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub assets: Arc<Assets>,
    pub metrics: Arc<Metrics>,
    pub passwords: PasswordChecker,
    /// Per-address sign-in failure counts (in memory, per node).
    pub addresses: Arc<AddressThrottle>,
    /// Keys for TOTP seeds and recovery codes.
    pub mfa_keys: MfaKeys,
    /// Cedar policies: every decision on patient data.
    pub policy: Arc<telesafe_core::access::PolicyEngine>,
    /// The tamper-evident audit log (group-committed appends, signed heads, proofs).
    pub audit: telesafe_core::audit::AuditLog,
    /// Where queued messages go (SMTP or the log).
    pub mail: Arc<crate::mail::Transport>,
    /// Seals queued message bodies.
    pub outbox_key: telesafe_crypto::keys::SealingKey,
    /// Seals WebAuthn ceremony state while a passkey ceremony is in progress.
    pub ceremony_key: telesafe_crypto::keys::SealingKey,
    /// The WebAuthn relying party: this deployment's id and origin.
    pub webauthn: Arc<webauthn_rs::Webauthn>,
    pub posture: Arc<Posture>,
    /// The key hierarchy under the clinical record (tenant and patient keys, cached).
    pub keys: telesafe_core::records::keys::KeyRing,
    /// Each tenant's parsed policies, by the source they were parsed from.
    pub policy_cache: PolicyCache,
    /// Signs the answers to devices.
    pub device_signer: Arc<telesafe_crypto::sign::SeedSigner>,
    /// Each device's previous value per measurement, for the rate-of-change check. Kept in
    /// memory only (values are patient data, never stored in the clear): after a restart
    /// the first reading of each kind is judged on its range alone.
    pub device_previous: moka::sync::Cache<String, telesafe_core::devices::vitals::Previous>,
    /// Stores device batches with group commit.
    pub device_writer: crate::devices::DeviceWriter,
    /// Models, organisation codes and thresholds for the telemetry path.
    pub device_caches: crate::devices::DeviceCaches,
    /// The rooms of live video visits on this node, relayed to the other nodes.
    pub visits: crate::visits::Hub,
}

/// Tenants' parsed forbid policies, keyed by tenant, with the source they came from.
pub type PolicyCache =
    moka::sync::Cache<telesafe_core::TenantId, (String, Arc<cedar_policy::PolicySet>)>;
