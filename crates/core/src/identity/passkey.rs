//! Passkeys (WebAuthn credentials): what is stored for each account, and the server-side
//! state of ceremonies in progress.
//!
//! The WebAuthn checks themselves (challenge, origin, relying-party id, signature, user
//! verification, signature counter) are webauthn-rs's, called from the server crate. This
//! module holds the rules around them: passkey names, that staff never remove their last
//! second factor, and ceremony state that is single-use, expires, is bound to the account
//! that started it, and is sealed so that someone able to write to the database cannot
//! weaken a ceremony (for example its user-verification requirement) in flight.

use std::future::Future;
use std::time::Duration;

use telesafe_crypto::OpaqueToken;
use telesafe_crypto::keys::SealingKey;
use zeroize::Zeroizing;

use super::mfa::MfaRepository;
use super::model::User;
use crate::clock::Timestamp;
use crate::ids::{PasskeyId, TenantId, UserId};
use crate::repo::RepoError;

/// How long a started ceremony may take (the browser's own timeout is the same).
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// How many passkeys one account may register.
pub const MAX_PASSKEYS: usize = 20;
const MAX_NAME_CHARS: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("give the passkey a name of at most {MAX_NAME_CHARS} characters")]
    BadName,
    #[error("this passkey is your only way to confirm it is you; add another first")]
    LastFactor,
    #[error("an account can have at most {MAX_PASSKEYS} passkeys; remove one first")]
    TooMany,
    #[error("that passkey was not found")]
    NotFound,
    #[error("the passkey request has expired or was already used; try again")]
    CeremonyExpired,
    #[error("that passkey was not accepted; try again, or use another way to confirm it is you")]
    Refused,
    #[error("passkey processing failed")]
    Crypto,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// A passkey's label, chosen by its owner ("Work laptop"): trimmed, 1–60 characters, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyName(String);

impl PasskeyName {
    pub fn parse(s: &str) -> Result<Self, PasskeyError> {
        let s = s.trim();
        let n = s.chars().count();
        if n == 0 || n > MAX_NAME_CHARS || s.chars().any(char::is_control) {
            return Err(PasskeyError::BadName);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A registered passkey.
#[derive(Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    pub id: PasskeyId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The credential id, base64url without padding (unique across the deployment).
    pub credential_id: String,
    pub name: PasskeyName,
    /// The verifier's serialised credential: public key, algorithm, signature counter and
    /// flags. Public data; nothing in it lets anyone sign.
    pub credential: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

impl std::fmt::Debug for PasskeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasskeyRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// What a ceremony was started for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyPurpose {
    /// Registering a new passkey for the signed-in account.
    Register,
    /// Signing in with a discoverable passkey alone.
    SignIn,
    /// A passkey as the second factor, at sign-in or for step-up.
    SecondFactor,
}

impl CeremonyPurpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::SignIn => "sign_in",
            Self::SecondFactor => "second_factor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Register, Self::SignIn, Self::SecondFactor].into_iter().find(|p| p.as_str() == s)
    }
}

/// A ceremony in progress: the verifier's state, sealed.
#[derive(Clone)]
pub struct Ceremony {
    pub purpose: CeremonyPurpose,
    /// The account that started it (none for passkey-only sign-in).
    pub tenant_id: Option<TenantId>,
    pub user_id: Option<UserId>,
    pub sealed_state: Vec<u8>,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremony")
            .field("purpose", &self.purpose)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

pub trait PasskeyRepository: Send + Sync {
    /// The account's passkeys, oldest first.
    fn passkeys_of(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> impl Future<Output = Result<Vec<PasskeyRecord>, RepoError>> + Send;
    /// The passkey with this credential id, in any tenant: a discoverable sign-in names
    /// its credential before anyone knows the organisation.
    fn passkey_by_credential(
        &self,
        credential_id: &str,
    ) -> impl Future<Output = Result<Option<PasskeyRecord>, RepoError>> + Send;
    /// Stores a new passkey; `Conflict` when the credential id is already registered.
    fn add_passkey(&self, r: &PasskeyRecord) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Records a successful use, with the updated credential (new counter) when it changed.
    fn record_passkey_use(
        &self,
        tenant: TenantId,
        id: PasskeyId,
        credential: Option<&str>,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn rename_passkey(
        &self,
        tenant: TenantId,
        user: UserId,
        id: PasskeyId,
        name: &PasskeyName,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    fn delete_passkey(
        &self,
        tenant: TenantId,
        user: UserId,
        id: PasskeyId,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Stores a ceremony under the hash of its id, dropping expired ones.
    fn save_ceremony(
        &self,
        id_hash: &str,
        c: &Ceremony,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Removes and returns the ceremony: each can be finished at most once.
    fn take_ceremony(
        &self,
        id_hash: &str,
        purpose: CeremonyPurpose,
    ) -> impl Future<Output = Result<Option<Ceremony>, RepoError>> + Send;
}

fn ceremony_aad(purpose: CeremonyPurpose, id_hash: &str) -> Vec<u8> {
    format!("telesafe/webauthn-ceremony/v1|{}|{id_hash}", purpose.as_str()).into_bytes()
}

/// Starts a ceremony: seals the verifier's `state`, stores it, and returns the id the
/// browser sends back with its answer.
pub async fn start_ceremony<R: PasskeyRepository>(
    repo: &R,
    key: &SealingKey,
    purpose: CeremonyPurpose,
    user: Option<&User>,
    state: &[u8],
    now: Timestamp,
) -> Result<OpaqueToken, PasskeyError> {
    let id = OpaqueToken::generate().map_err(|_| PasskeyError::Crypto)?;
    let hash = id.hash();
    let sealed =
        key.seal(state, &ceremony_aad(purpose, hash.as_str())).map_err(|_| PasskeyError::Crypto)?;
    let ceremony = Ceremony {
        purpose,
        tenant_id: user.map(|u| u.tenant_id),
        user_id: user.map(|u| u.id),
        sealed_state: sealed,
        expires_at: now.plus(CEREMONY_TTL),
    };
    repo.save_ceremony(hash.as_str(), &ceremony, now).await?;
    Ok(id)
}

/// Finishes a ceremony: takes it (once), checks it has not expired and belongs to `user`
/// (when it was started by a signed-in account), and opens the verifier's state.
pub async fn finish_ceremony<R: PasskeyRepository>(
    repo: &R,
    key: &SealingKey,
    purpose: CeremonyPurpose,
    presented_id: &str,
    user: Option<&User>,
    now: Timestamp,
) -> Result<Zeroizing<Vec<u8>>, PasskeyError> {
    let id = OpaqueToken::parse(presented_id).ok_or(PasskeyError::CeremonyExpired)?;
    let hash = id.hash();
    let c =
        repo.take_ceremony(hash.as_str(), purpose).await?.ok_or(PasskeyError::CeremonyExpired)?;
    let owner_matches = c.tenant_id == user.map(|u| u.tenant_id) && c.user_id == user.map(|u| u.id);
    if c.expires_at <= now || !owner_matches {
        return Err(PasskeyError::CeremonyExpired);
    }
    key.open(&c.sealed_state, &ceremony_aad(purpose, hash.as_str()))
        .map_err(|_| PasskeyError::CeremonyExpired)
}

/// Checks a passkey presented as the second factor (after a password, or for step-up):
/// the credential must be one of `user`'s, and `verify` (the WebAuthn assertion check,
/// returning the credential to store back when its counter moved) must pass.
pub async fn verify_second_factor<R, F>(
    repo: &R,
    user: &User,
    credential_id: &str,
    now: Timestamp,
    verify: F,
) -> Result<(), PasskeyError>
where
    R: PasskeyRepository,
    F: FnOnce(&PasskeyRecord) -> Result<Option<String>, ()>,
{
    let record = repo
        .passkey_by_credential(credential_id)
        .await?
        .filter(|r| r.tenant_id == user.tenant_id && r.user_id == user.id)
        .ok_or(PasskeyError::Refused)?;
    let updated = verify(&record).map_err(|()| PasskeyError::Refused)?;
    repo.record_passkey_use(record.tenant_id, record.id, updated.as_deref(), now).await?;
    Ok(())
}

/// Whether `user` may remove passkey `id`: staff must keep at least one second factor.
pub async fn check_removal<R>(repo: &R, user: &User, id: PasskeyId) -> Result<(), PasskeyError>
where
    R: PasskeyRepository + MfaRepository,
{
    let keys = repo.passkeys_of(user.tenant_id, user.id).await?;
    if !keys.iter().any(|k| k.id == id) {
        return Err(PasskeyError::NotFound);
    }
    let has_totp = repo.totp_for(user.tenant_id, user.id).await?.is_some_and(|t| t.confirmed);
    if user.role.is_staff() && !has_totp && keys.len() == 1 {
        return Err(PasskeyError::LastFactor);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(PasskeyName::parse("  Work laptop ").unwrap().as_str(), "Work laptop");
        assert_eq!(PasskeyName::parse("Téléphone 📱").unwrap().as_str(), "Téléphone 📱");
        assert!(PasskeyName::parse("   ").is_err());
        assert!(PasskeyName::parse(&"a".repeat(61)).is_err());
        assert!(PasskeyName::parse(&"é".repeat(60)).is_ok());
        assert!(PasskeyName::parse("tab\there").is_err());
    }

    #[test]
    fn purposes_round_trip() {
        for p in [CeremonyPurpose::Register, CeremonyPurpose::SignIn, CeremonyPurpose::SecondFactor]
        {
            assert_eq!(CeremonyPurpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(CeremonyPurpose::parse("other"), None);
    }
}
