//! Loading the root key, and the purpose keys the server derives from it.

use base64::Engine;
use telesafe_core::identity::mfa::MfaKeys;
use telesafe_crypto::keys::{SealingKey, SecretKey};

use crate::config::Config;
use crate::tls;

/// The environment variable that may carry the root key (base64 of 32 bytes).
pub const ROOT_KEY_ENV: &str = "TELESAFE_ROOT_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error("{ROOT_KEY_ENV} must be the base64 encoding of exactly 32 bytes")]
    BadEnv,
    #[error("{path} must hold exactly 32 bytes (it holds {len}); restore it from your key backup")]
    BadFile { path: String, len: usize },
    #[error("cannot read or create the root key {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot create the root key: {0}")]
    Create(String),
}

/// Reads the root key from the environment or its file, creating the file (0600, in a
/// 0700 directory) on first start.
pub fn load_root_key(config: &Config) -> Result<(SecretKey, bool), KeyLoadError> {
    if let Ok(b64) = std::env::var(ROOT_KEY_ENV) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| KeyLoadError::BadEnv)?;
        return SecretKey::from_bytes(&bytes).map(|k| (k, false)).map_err(|_| KeyLoadError::BadEnv);
    }
    let path = config.root_key_path();
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => SecretKey::from_bytes(&bytes)
            .map(|k| (k, false))
            .map_err(|_| KeyLoadError::BadFile { path: shown, len: bytes.len() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate().map_err(|e| KeyLoadError::Create(e.to_string()))?;
            if let Some(dir) = path.parent() {
                tls::create_private_dir(dir).map_err(|e| KeyLoadError::Create(e.to_string()))?;
            }
            tls::write_private(&path, key.expose())
                .map_err(|e| KeyLoadError::Create(e.to_string()))?;
            Ok((key, true))
        }
        Err(source) => Err(KeyLoadError::Io { path: shown, source }),
    }
}

/// The key sealing queued message bodies (they hold one-time links).
pub fn outbox_key(root: &SecretKey) -> SealingKey {
    SealingKey::new(root.derive("telesafe/v1/outbox"), 1)
}

/// The key that signs the audit log's tree heads (Ed25519, from a seed derived from the root
/// key: it is kept, backed up and rotated with the other keys).
pub fn audit_signer(
    root: &SecretKey,
) -> Result<telesafe_core::audit::HeadSigner, telesafe_audit::sth::BadSeed> {
    telesafe_core::audit::HeadSigner::from_seed(
        root.derive("telesafe/v1/audit-head-signing").expose(),
    )
}

/// The key sealing WebAuthn ceremony state while a passkey ceremony is in progress.
pub fn ceremony_key(root: &SecretKey) -> SealingKey {
    SealingKey::new(root.derive("telesafe/v1/webauthn-ceremony"), 1)
}

/// The keys for second factors, derived from the root key.
pub fn mfa_keys(root: &SecretKey) -> MfaKeys {
    MfaKeys {
        seed: SealingKey::new(root.derive("telesafe/v1/totp-seed"), 1),
        recovery: root.derive("telesafe/v1/recovery-code"),
    }
}

/// How many patient data keys are held unwrapped at once (each well under a kilobyte).
pub const KEY_CACHE_CAPACITY: u64 = 10_000;

/// The record's key hierarchy, rooted in the root key (version 1).
pub fn key_ring(root: &SecretKey) -> telesafe_core::records::keys::KeyRing {
    let provider = telesafe_crypto::keys::LocalKeyProvider::new(root, 1);
    telesafe_core::records::keys::KeyRing::new(std::sync::Arc::new(provider), KEY_CACHE_CAPACITY)
}
