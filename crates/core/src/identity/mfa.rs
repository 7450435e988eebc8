//! Second factors: TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step for authenticator
//! clock drift) with a replay guard, and single-use recovery codes.
//!
//! Seeds are sealed (AES-256-GCM) under a key derived for this purpose, bound to tenant and
//! user so a sealed seed copied to another account does not open. Each time step is accepted
//! at most once per account: the store advances `last_step` atomically, so two requests with
//! the same code cannot both succeed. Recovery codes are stored as HMAC-SHA256 under a
//! server key, so a stolen database alone does not let anyone test guesses offline.

use std::future::Future;

use telesafe_crypto::keys::{SealingKey, SecretKey};
use telesafe_crypto::{OpaqueToken, constant_time_eq, fill_random};
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

use super::events::{AuthEvent, AuthEventKind, AuthEventRepository};
use super::model::User;
use super::repo::SessionRepository;
use super::session::{Session, SessionStage};
use crate::clock::Timestamp;
use crate::ids::{TenantId, UserId};
use crate::repo::RepoError;

/// RFC 6238 time step.
pub const STEP_SECS: i64 = 30;
/// How many recovery codes an account gets.
pub const RECOVERY_CODES: usize = 10;
/// Crockford's base32 alphabet: no I, L, O or U, so codes read aloud unambiguously.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The keys second factors need.
#[derive(Debug, Clone)]
pub struct MfaKeys {
    pub seed: SealingKey,
    pub recovery: SecretKey,
}

#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error("that code is not right; check your authenticator app and try again")]
    WrongCode,
    #[error("that code has already been used; wait for the next one")]
    Replayed,
    #[error("no authenticator is being set up; start again")]
    NoEnrollment,
    #[error("second-factor processing failed")]
    Crypto,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// A TOTP shared secret (160 bits, as RFC 4226 §4 recommends). `Debug` is redacted.
pub struct TotpSeed(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSeed([redacted])")
    }
}

impl TotpSeed {
    pub fn generate() -> Result<Self, MfaError> {
        let mut b = Zeroizing::new(vec![0u8; 20]);
        fill_random(&mut b).map_err(|_| MfaError::Crypto)?;
        Ok(Self(b))
    }

    fn totp(&self, issuer: &str, account: &str) -> Result<TOTP, MfaError> {
        TOTP::new(
            Algorithm::SHA1,
            6,
            1,
            u64::try_from(STEP_SECS).unwrap_or(30),
            self.0.to_vec(),
            Some(issuer.to_owned()),
            account.to_owned(),
        )
        .map_err(|_| MfaError::Crypto)
    }

    /// The secret in base32, as authenticator apps accept for manual entry.
    pub fn base32(&self) -> String {
        totp_rs::Secret::Raw(self.0.to_vec()).to_encoded().to_string()
    }

    /// The `otpauth://` URI an authenticator app scans from the QR code.
    pub fn otpauth_url(&self, issuer: &str, account: &str) -> Result<String, MfaError> {
        Ok(self.totp(issuer, account)?.get_url())
    }

    /// Which time step within ±1 of `now` a code belongs to, and whether that step is
    /// later than `last_step`. Compared in constant time.
    pub fn matching_step(
        &self,
        code: &str,
        now: Timestamp,
        last_step: i64,
    ) -> Result<StepMatch, MfaError> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        let totp = self.totp("telesafe", "check")?;
        let current = now.unix_millis().div_euclid(1000).div_euclid(STEP_SECS);
        for step in [current - 1, current, current + 1] {
            let t = u64::try_from(step * STEP_SECS).unwrap_or(0);
            if constant_time_eq(totp.generate(t).as_bytes(), code.as_bytes()) {
                return Ok(if step > last_step {
                    StepMatch::Fresh(step)
                } else {
                    StepMatch::Replayed
                });
            }
        }
        Ok(StepMatch::NoMatch)
    }
}

/// The outcome of matching a TOTP code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMatch {
    /// Valid, for this step, not used before.
    Fresh(i64),
    /// Valid, but its step (or a later one) was already used.
    Replayed,
    NoMatch,
}

/// A stored TOTP enrolment.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpRecord {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub sealed_seed: Vec<u8>,
    pub confirmed: bool,
    pub last_step: i64,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("user_id", &self.user_id)
            .field("confirmed", &self.confirmed)
            .field("last_step", &self.last_step)
            .finish_non_exhaustive()
    }
}

pub trait MfaRepository: Send + Sync {
    fn totp_for(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> impl Future<Output = Result<Option<TotpRecord>, RepoError>> + Send;
    /// Stores an unconfirmed enrolment, replacing an earlier unconfirmed one. Never
    /// replaces a confirmed authenticator.
    fn save_pending_totp(
        &self,
        r: &TotpRecord,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Marks the enrolment confirmed at `step`.
    fn confirm_totp(
        &self,
        tenant: TenantId,
        user: UserId,
        step: i64,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Atomically records `step` as used, if it is later than the last used step.
    fn use_totp_step(
        &self,
        tenant: TenantId,
        user: UserId,
        step: i64,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// Replaces the account's recovery codes with these keyed hashes.
    fn replace_recovery_codes(
        &self,
        tenant: TenantId,
        user: UserId,
        hashes: &[String],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Marks the code with this hash used, if it exists and is unused.
    fn consume_recovery_code(
        &self,
        tenant: TenantId,
        user: UserId,
        hash: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    fn unused_recovery_codes(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> impl Future<Output = Result<u32, RepoError>> + Send;
    /// Whether the account has at least one registered passkey.
    fn has_passkey(
        &self,
        tenant: TenantId,
        user: UserId,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
}

fn seed_aad(tenant: TenantId, user: UserId) -> Vec<u8> {
    format!("telesafe/totp-seed/v1|{tenant}|{user}").into_bytes()
}

fn open_seed(keys: &MfaKeys, r: &TotpRecord) -> Result<TotpSeed, MfaError> {
    keys.seed
        .open(&r.sealed_seed, &seed_aad(r.tenant_id, r.user_id))
        .map(|b| TotpSeed(Zeroizing::new(b.to_vec())))
        .map_err(|_| MfaError::Crypto)
}

/// Whether the account has a confirmed authenticator app.
pub async fn has_totp<R: MfaRepository>(repo: &R, user: &User) -> Result<bool, RepoError> {
    Ok(repo.totp_for(user.tenant_id, user.id).await?.is_some_and(|r| r.confirmed))
}

/// Whether the account has a second factor: a confirmed authenticator app or a passkey.
pub async fn has_mfa<R: MfaRepository>(repo: &R, user: &User) -> Result<bool, RepoError> {
    Ok(has_totp(repo, user).await? || repo.has_passkey(user.tenant_id, user.id).await?)
}

/// Starts (or restarts) TOTP enrolment: a fresh seed, stored sealed and unconfirmed.
pub async fn begin_totp_enrollment<R: MfaRepository>(
    repo: &R,
    keys: &MfaKeys,
    user: &User,
    now: Timestamp,
) -> Result<TotpSeed, MfaError> {
    let seed = TotpSeed::generate()?;
    let sealed = keys
        .seed
        .seal(&seed.0, &seed_aad(user.tenant_id, user.id))
        .map_err(|_| MfaError::Crypto)?;
    repo.save_pending_totp(&TotpRecord {
        tenant_id: user.tenant_id,
        user_id: user.id,
        sealed_seed: sealed,
        confirmed: false,
        last_step: 0,
        created_at: now,
    })
    .await?;
    Ok(seed)
}

/// The pending seed, to show again (for example after a mistyped code).
pub async fn pending_seed<R: MfaRepository>(
    repo: &R,
    keys: &MfaKeys,
    user: &User,
) -> Result<Option<TotpSeed>, MfaError> {
    match repo.totp_for(user.tenant_id, user.id).await? {
        Some(r) if !r.confirmed => open_seed(keys, &r).map(Some),
        _ => Ok(None),
    }
}

/// Confirms enrolment with a first code; returns the new recovery codes (shown once).
pub async fn confirm_totp_enrollment<R>(
    repo: &R,
    keys: &MfaKeys,
    user: &User,
    code: &str,
    now: Timestamp,
) -> Result<Vec<String>, MfaError>
where
    R: MfaRepository,
{
    let record = repo
        .totp_for(user.tenant_id, user.id)
        .await?
        .filter(|r| !r.confirmed)
        .ok_or(MfaError::NoEnrollment)?;
    let seed = open_seed(keys, &record)?;
    match seed.matching_step(code, now, record.last_step)? {
        StepMatch::Fresh(step) => {
            if !repo.confirm_totp(user.tenant_id, user.id, step).await? {
                return Err(MfaError::NoEnrollment);
            }
        }
        StepMatch::Replayed | StepMatch::NoMatch => return Err(MfaError::WrongCode),
    }
    let codes = new_recovery_codes()?;
    let hashes: Vec<String> = codes.iter().map(|c| recovery_hash(keys, user, c)).collect();
    repo.replace_recovery_codes(user.tenant_id, user.id, &hashes, now).await?;
    Ok(codes)
}

/// Checks a TOTP code at sign-in or step-up. A valid code is accepted once.
pub async fn verify_totp<R: MfaRepository>(
    repo: &R,
    keys: &MfaKeys,
    user: &User,
    code: &str,
    now: Timestamp,
) -> Result<(), MfaError> {
    let record = repo
        .totp_for(user.tenant_id, user.id)
        .await?
        .filter(|r| r.confirmed)
        .ok_or(MfaError::WrongCode)?;
    let seed = open_seed(keys, &record)?;
    match seed.matching_step(code, now, record.last_step)? {
        StepMatch::Fresh(step) => {
            if repo.use_totp_step(user.tenant_id, user.id, step).await? {
                Ok(())
            } else {
                Err(MfaError::Replayed)
            }
        }
        StepMatch::Replayed => Err(MfaError::Replayed),
        StepMatch::NoMatch => Err(MfaError::WrongCode),
    }
}

/// Uses a recovery code in place of a TOTP code.
pub async fn use_recovery_code<R: MfaRepository>(
    repo: &R,
    keys: &MfaKeys,
    user: &User,
    code: &str,
    now: Timestamp,
) -> Result<(), MfaError> {
    let hash = recovery_hash(keys, user, code);
    if repo.consume_recovery_code(user.tenant_id, user.id, &hash, now).await? {
        Ok(())
    } else {
        Err(MfaError::WrongCode)
    }
}

/// Checks a second factor presented as a TOTP `code` or, when `recovery_code` is not
/// blank, a recovery code. Returns the event to record for success.
pub async fn verify_any<R: MfaRepository>(
    repo: &R,
    keys: &MfaKeys,
    user: &User,
    code: &str,
    recovery_code: &str,
    now: Timestamp,
) -> Result<AuthEventKind, MfaError> {
    if recovery_code.trim().is_empty() {
        verify_totp(repo, keys, user, code, now).await.map(|()| AuthEventKind::MfaVerified)
    } else {
        use_recovery_code(repo, keys, user, recovery_code, now)
            .await
            .map(|()| AuthEventKind::RecoveryCodeUsed)
    }
}

impl MfaError {
    /// The event and outcome to record for a refused code, if this is a refusal.
    pub fn refusal_event(&self) -> Option<(AuthEventKind, &'static str)> {
        match self {
            MfaError::WrongCode => Some((AuthEventKind::MfaFailed, "wrong_code")),
            MfaError::Replayed => Some((AuthEventKind::MfaReplayed, "replayed")),
            _ => None,
        }
    }
}

fn new_recovery_codes() -> Result<Vec<String>, MfaError> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut b = [0u8; 10];
            fill_random(&mut b).map_err(|_| MfaError::Crypto)?;
            let chars: String = b.iter().map(|x| CROCKFORD[usize::from(x & 31)] as char).collect();
            Ok(format!("{}-{}", &chars[..5], &chars[5..]))
        })
        .collect()
}

/// Crockford normalisation: case-insensitive, dashes and spaces ignored, O→0, I/L→1.
fn normalise_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

fn recovery_hash(keys: &MfaKeys, user: &User, code: &str) -> String {
    let msg = format!("{}|{}|{}", user.tenant_id, user.id, normalise_recovery(code));
    keys.recovery.mac(msg.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces `old` with a fresh session at stage `Full` (a new id at every privilege
/// change, OWASP session management), recording when the second factor was verified.
pub async fn complete_session<R>(
    repo: &R,
    old: &Session,
    now: Timestamp,
    mfa_verified: bool,
) -> Result<(Session, OpaqueToken), RepoError>
where
    R: SessionRepository + AuthEventRepository,
{
    let token = OpaqueToken::generate().map_err(|e| RepoError::Backend(e.to_string()))?;
    let csrf = OpaqueToken::generate().map_err(|e| RepoError::Backend(e.to_string()))?;
    let session = Session {
        token_hash: token.hash(),
        stage: SessionStage::Full,
        mfa_at: if mfa_verified { Some(now) } else { old.mfa_at },
        csrf_token: csrf.reveal().to_owned(),
        created_at: old.created_at,
        last_seen_at: now,
        ..old.clone()
    };
    repo.create_session(&session).await?;
    repo.delete_session(old.tenant_id, &old.token_hash).await?;
    Ok((session, token))
}

/// Records a second-factor event.
pub async fn record<R: AuthEventRepository>(
    repo: &R,
    session: &Session,
    now: Timestamp,
    kind: AuthEventKind,
    outcome: &'static str,
) -> Result<(), RepoError> {
    repo.record_auth_event(&AuthEvent::new(
        session.tenant_id,
        now,
        kind,
        Some(session.user_id),
        &session.source,
        outcome,
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector_and_step_window() {
        // RFC 6238 appendix B: seed "12345678901234567890", T = 59 s → 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let seed = TotpSeed(Zeroizing::new(b"12345678901234567890".to_vec()));
        let at = |s: i64| Timestamp::from_unix_millis(s * 1000);
        assert_eq!(seed.matching_step("287082", at(59), 0).unwrap(), StepMatch::Fresh(1));
        // One step of drift either way is accepted, two is not.
        assert_eq!(seed.matching_step("287082", at(59 + 30), 0).unwrap(), StepMatch::Fresh(1));
        assert_eq!(seed.matching_step("287082", at(59 + 60), 0).unwrap(), StepMatch::NoMatch);
        // A step at or before the last used one is a replay.
        assert_eq!(seed.matching_step("287082", at(59), 1).unwrap(), StepMatch::Replayed);
        assert_eq!(seed.matching_step("000000", at(59), 0).unwrap(), StepMatch::NoMatch);
        assert!(!format!("{seed:?}").contains("1234"));
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalise() {
        let codes = new_recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let set: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(set.len(), RECOVERY_CODES);
        assert!(codes.iter().all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'));
        assert_eq!(normalise_recovery("abc0o-1il z"), "ABC00111Z");
    }
}
